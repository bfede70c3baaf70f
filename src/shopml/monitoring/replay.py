"""``shopml replay``: play a period of the shop's history day by day, as live traffic.

Each simulated day, every entity that arrives that day (orders placed, lines to deliver,
active customers, campaign recipients, products sold; see ``UseCase.arrivals``) is scored by
the champion with the features known at the start of that day, either through the API (the
real FastAPI app in-process, its clock set to the simulated time, so the prediction log, auth,
validation and metrics are the service's own) or as batch scoring. Labels arrive by
themselves: the monitor only joins a prediction to its label once ``label_delay_days`` have
passed on the simulated clock. Monitoring runs on its schedule (every ``monitor_every`` days),
and when the policy retrains, the retrain trains as of the simulated day and the service swaps
in a promoted model as it would in production.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd
from pydantic import ValidationError

from shopml.monitoring.monitor import CheckResult, RetrainFn
from shopml.monitoring.performance import LabelCache
from shopml.monitoring.run import run_checks
from shopml.monitoring.store import MonitoringStore, open_store
from shopml.runtime.answers import AnswerError, InProcess

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse
    from shopml.settings import Settings
    from shopml.usecases.base import UseCase

# Hour of the simulated day at which its traffic is scored.
TRAFFIC_HOUR = 12


class ReplayError(ValueError):
    """A replay that cannot run as asked (dates outside the data, no champion)."""


@dataclass
class ReplayResult:
    start: datetime
    days: int
    mode: str
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)

    def alerts(self, usecase: str | None = None) -> list[dict[str, Any]]:
        """Checks whose thresholds were crossed (the ones that alerted or retrained)."""
        return [
            c
            for c in self.checks
            if (usecase is None or c["usecase"] == usecase)
            and c.get("decision")
            and c["decision"].get("triggered")
        ]

    def retrains(self, usecase: str | None = None) -> list[dict[str, Any]]:
        return [
            c
            for c in self.checks
            if (usecase is None or c["usecase"] == usecase)
            and c.get("decision")
            and c["decision"].get("retrain")
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "days": self.days,
            "mode": self.mode,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 1),
            "skipped": self.skipped,
            "checks": self.checks,
        }


class _Traffic:
    """Sends the use cases' arrivals as requests of their answer kinds: through the service
    (``api``: the FastAPI app in-process, on the simulated clock) or straight to the same
    answerers with the champions loaded in this process (``batch``). Either way every answer
    is one prediction-log record written by the same code, so the two modes store the same
    outputs."""

    def __init__(
        self, settings: Settings, usecases: list[UseCase], mode: str, store: MonitoringStore
    ) -> None:
        self.settings = settings
        self.mode = mode
        self.store = store
        self.now = 0.0
        self.client: Any = None
        self.app: Any = None
        self.headers: dict[str, str] = {}
        self.usecases = usecases
        self.models: Any = None
        self.direct: InProcess | None = None
        self._answer: dict[str, tuple[Any, Any]] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> _Traffic:
        names = [uc.name for uc in self.usecases]
        if self.mode == "api":
            from fastapi.testclient import TestClient

            from shopml.serving.app import create_app

            self.app = create_app(
                self.settings, clock=lambda: self.now, usecases=self.usecases, in_process=True
            )
            keys = [*self.settings.admin_keys, *self.settings.api_keys]
            if keys:
                self.headers = {"Authorization": f"Bearer {keys[0].get_secret_value()}"}
            self.client = TestClient(self.app)
            self.client.__enter__()
            return self
        from shopml.serving.models import MlflowSource, ModelStore

        settings = self.settings
        self.models = ModelStore(names, lambda: MlflowSource(settings))
        self.models.refresh()
        self.direct = InProcess(self.models.get, lambda: self.now)
        size = settings.serve_max_batch
        for uc in self.usecases:
            schemas = uc.answer.schemas(uc, size)
            self._answer[uc.name] = (
                schemas.adapter,
                uc.answer.answerer(uc, self.direct, schemas),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.__exit__(None, None, None)

    def refresh_online(self, wh: Warehouse, as_of: datetime) -> None:
        """Materialise the features the service looks up (the entities the replayed use cases
        are keyed by) as of ``as_of``, as the pipeline does for the live service."""
        if self.app is None:
            return
        from shopml.features import build_features
        from shopml.online import ONLINE_ENTITIES, open_store

        entities = {f"{uc.entity}s": uc.key for uc in self.usecases if uc.answer.needs_rows}
        store = open_store(self.settings)
        try:
            for entity, key in entities.items():
                if entity in ONLINE_ENTITIES:
                    store.write(entity, build_features(wh, as_of, entity), key, as_of)
        finally:
            store.close()
        self.app.state.shopml.lookup.clear()

    def flush(self) -> None:
        if self.app is not None:
            self.app.state.shopml.log.flush()
        if self.direct is not None and self.direct.records:
            self.store.log_predictions(self.direct.records)
            self.direct.records.clear()

    def reload(self) -> None:
        """Pick up moved champions now (the service would on its next registry poll)."""
        if self.app is not None:
            self.app.state.shopml.models.refresh()
            if self.app.state.shopml.rollout is not None:
                self.app.state.shopml.rollout.refresh()
        if self.models is not None:
            self.models.refresh()

    # -- sending -----------------------------------------------------------------------------
    def send(self, uc: UseCase, frame: pd.DataFrame) -> tuple[int, int]:
        """Send requests for these arrivals (the key column, and features when the kind
        needs rows); returns (answered, failed) instances."""
        ok = failed = 0
        kind = uc.answer
        models = self.app.state.shopml.models if self.app is not None else self.models
        model = models.get(uc.name)  # what will answer: it says which inputs to send
        router = self.app.state.shopml.rollout if self.app is not None else None
        other = router.challengers.get(uc.name) if router is not None else None
        if model is not None and other is not None and router and router.serving(uc.name).active:
            # A rollout: either model may answer, so send what either takes (the service
            # gives each only its own).
            model = _Inputs(list(dict.fromkeys([*model.features, *other.features])))
        for body, n in kind.requests(uc, frame, self.settings.serve_max_batch, model):
            if self.client is not None:
                resp = self.client.post(kind.path(uc), json=body, headers=self.headers)
                good = resp.status_code == 200
            else:
                adapter, answer = self._answer[uc.name]
                try:
                    # The bytes the service would get: JSON parsing rounds some floats
                    # differently from Python, and the two modes must log the same inputs.
                    answer(adapter.validate_json(orjson.dumps(body)), uuid.uuid4().hex)
                    good = True
                except (AnswerError, ValidationError):
                    # What the service would answer 4xx/503 (a product it has never seen).
                    good = False
            ok, failed = (ok + n, failed) if good else (ok, failed + n)
        return ok, failed


@dataclass
class _Inputs:
    """What a replay's requests carry when two models may answer them."""

    features: list[str]


def _day(value: datetime) -> datetime:
    return datetime(value.year, value.month, value.day)


def replay(
    start: datetime,
    days: int,
    *,
    usecases: list[str] | None = None,
    mode: str = "api",
    monitor_every: int = 7,
    max_per_day: int = 400,
    feature_refresh_days: int = 1,
    act: bool = True,
    retrain: RetrainFn | None = None,
    settings: Settings | None = None,
    progress: Callable[[str, float], None] | None = None,
    seed: int = 0,
) -> ReplayResult:
    """Replay ``days`` days from ``start`` as traffic, monitoring every ``monitor_every`` days.

    ``max_per_day`` caps each use case's requests per day (a random sample of the day's
    arrivals); ``act`` lets the monitor alert, and retrain through ``retrain`` when given (the
    caller's way to retrain). ``feature_refresh_days`` is how often the features are rebuilt
    (1: every day, as a daily feature pipeline; 7: weekly, much faster, the features a few
    days staler).
    """
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.registry import CHAMPION, alias_version
    from shopml.lifecycle.tracking import configure
    from shopml.settings import get_settings
    from shopml.usecases import get_usecases, select_usecases

    if mode not in ("api", "batch"):
        raise ReplayError(f"mode must be 'api' or 'batch', got {mode!r}")
    if days < 1 or monitor_every < 1 or feature_refresh_days < 1:
        raise ReplayError("days, monitor_every and feature_refresh_days must be at least 1")
    settings = settings or get_settings()
    known = get_usecases()
    try:
        names = select_usecases(usecases)
    except ValueError as exc:
        raise ReplayError(str(exc)) from None
    start = _day(start)
    say = progress or (lambda msg, frac: None)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    result = ReplayResult(start, days, mode)

    client = configure(settings)
    missing = [n for n in names if alias_version(client, n, CHAMPION) is None]
    if missing and not usecases and len(missing) < len(names):
        # By default, every use case that has a champion; the others are said, not fatal.
        names = [n for n in names if n not in missing]
        result.skipped = {n: "no champion" for n in missing}
        missing = []
    if missing:
        raise ReplayError(
            f"no champion for {', '.join(missing)}: train first, as of the replay's start "
            f"(`shopml train {' '.join(missing)} --as-of {start:%Y-%m-%d}`)"
        )
    wh = Warehouse.open(settings)
    store = open_store(settings)
    cache = LabelCache(max_entries=4096)
    try:
        span = wh.order_span()
        if span is None:
            raise ReplayError("the warehouse has no orders to replay")
        first, last = span
        end = start + timedelta(days=days)
        if start < first or end > _day(last) + timedelta(days=1):
            raise ReplayError(
                f"the replay {start:%Y-%m-%d}..{end:%Y-%m-%d} is outside the data "
                f"({first:%Y-%m-%d}..{last:%Y-%m-%d})"
            )
        features: dict[str, tuple[datetime, Any]] = {}
        with _Traffic(settings, [known[n] for n in names], mode, store) as traffic:
            for i in range(days):
                day = start + timedelta(days=i)
                built = start + timedelta(days=(i // feature_refresh_days) * feature_refresh_days)
                # The naive day is UTC: convert explicitly, not through the local zone.
                traffic.now = pd.Timestamp(
                    day + timedelta(hours=TRAFFIC_HOUR), tz="UTC"
                ).timestamp()
                say(f"{day:%Y-%m-%d}: traffic", i / days)
                for name in names:
                    uc = known[name]
                    if name not in features or features[name][0] != built:
                        features[name] = (built, None)
                        if name == names[0]:
                            traffic.refresh_online(wh, built)
                    ok, failed = _send_day(
                        uc, wh, day, traffic, cache, max_per_day, rng, features, built
                    )
                    result.requests[name] = result.requests.get(name, 0) + ok
                    result.errors[name] = result.errors.get(name, 0) + failed
                traffic.flush()
                if (i + 1) % monitor_every == 0:
                    now = day + timedelta(days=1)
                    say(f"{day:%Y-%m-%d}: monitoring", (i + 0.5) / days)
                    checks = run_checks(
                        names,
                        settings=settings,
                        now=now,
                        act=act,
                        retrain=retrain,
                        wh=wh,
                        store=store,
                        cache=cache,
                    )
                    result.checks += [_brief(c) for c in checks]
                    if any(_promoted(c) or _rollout_ended(c) for c in checks):
                        traffic.reload()
        result.seconds = time.perf_counter() - started
        say("done", 1.0)
        return result
    finally:
        wh.close()
        store.close()


def _promoted(check: CheckResult) -> bool:
    r = (check.decision or {}).get("retrain") or {}
    return r.get("status") == "promoted"


def _rollout_ended(check: CheckResult) -> bool:
    return (check.rollout or {}).get("status") in ("promoted", "rolled back")


def _brief(check: CheckResult) -> dict[str, Any]:
    out = check.to_dict()
    if out.get("drift"):
        d = out["drift"]
        out["drift"] = {
            "share": d["share"],
            "drifted": d["drifted"],
            "sample_note": d["sample_note"],
            "prediction": [(c["column"], c["score"]) for c in d["outputs"]],
        }
    return out


def _send_day(
    uc: UseCase,
    wh: Warehouse,
    day: datetime,
    traffic: _Traffic,
    cache: LabelCache,
    max_per_day: int,
    rng: np.random.Generator,
    features: dict[str, tuple[datetime, Any]],
    built: datetime,
) -> tuple[int, int]:
    arrivals = uc.arrivals(wh, day, day + timedelta(days=1))
    if arrivals is not None and arrivals.empty:
        return 0, 0

    def sample(ids: pd.Series) -> pd.Series:
        if len(ids) > max_per_day:
            return ids.iloc[np.sort(rng.choice(len(ids), max_per_day, replace=False))]
        return ids

    if not uc.answer.needs_rows:  # asked by id: who arrives is the request
        if arrivals is None:
            raise ReplayError(f"{uc.name} answers by id: it must say what arrives for it")
        ids = sample(arrivals.iloc[:, 0].astype(str))
        return traffic.send(uc, pd.DataFrame({uc.key: ids.to_numpy()}))
    data = features[uc.name][1]
    if data is None:  # the features as of the last refresh, built once per refresh
        data = uc.dataset(wh, built)
        features[uc.name] = (built, data)
    frame = data.frame
    if uc.key not in frame.columns or frame.empty:
        return 0, 0
    keys = frame[uc.key].astype(str)
    if arrivals is None:  # the whole population: a sample of it each day
        ids = sample(keys.drop_duplicates().reset_index(drop=True))
    else:
        ids = sample(arrivals.iloc[:, 0].astype(str))
    rows = frame[keys.isin(set(ids))].drop_duplicates(uc.key)
    # Keep what the monitor will need to judge these predictions when their labels are in.
    from shopml.usecases.base import LabelledData

    cache.put(
        uc,
        day,
        LabelledData(
            rows.reset_index(drop=True), data.keys, data.features, data.labels, data.oracle
        ),
    )
    return traffic.send(uc, rows[[uc.key, *data.features]])
