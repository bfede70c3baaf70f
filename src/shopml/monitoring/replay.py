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

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.monitoring.monitor import CheckResult, RetrainFn
from shopml.monitoring.performance import LabelCache
from shopml.monitoring.run import run_checks, usecase_names
from shopml.monitoring.store import MonitoringStore, open_store

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse
    from shopml.settings import Settings
    from shopml.usecases.base import UseCase

# Hour of the simulated day at which its traffic is scored.
TRAFFIC_HOUR = 12
RECOMMEND_K = 10


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


def _clean(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(value, (np.integer, int, np.bool_, bool)):
        return float(value)
    return None  # a non-numeric feature (the service takes numbers)


class _Traffic:
    """Sends one use case's arrivals, through the API or as batch scoring."""

    def __init__(
        self, settings: Settings, names: list[str], mode: str, store: MonitoringStore
    ) -> None:
        self.settings = settings
        self.mode = mode
        self.store = store
        self.now = 0.0
        self.client: Any = None
        self.app: Any = None
        self.headers: dict[str, str] = {}
        self._scorers: dict[str, tuple[str, Any]] = {}
        self.names = names

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> _Traffic:
        if self.mode == "api":
            from fastapi.testclient import TestClient

            from shopml.serving.app import create_app

            self.app = create_app(
                self.settings, clock=lambda: self.now, usecases=self.names, in_process=True
            )
            keys = [*self.settings.admin_keys, *self.settings.api_keys]
            if keys:
                self.headers = {"Authorization": f"Bearer {keys[0].get_secret_value()}"}
            self.client = TestClient(self.app)
            self.client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.__exit__(None, None, None)

    def refresh_online(self, wh: Warehouse, usecases: list[UseCase], as_of: datetime) -> None:
        """Materialise the features the service looks up (the entities the replayed use cases
        name) as of ``as_of``, as the pipeline does for the live service."""
        if self.app is None:
            return
        from shopml.features import build_features
        from shopml.online import open_store
        from shopml.serving.features import ONLINE_ENTITIES

        entities = {f"{uc.entity}s": uc.key for uc in usecases}
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

    def reload(self) -> None:
        """Pick up moved champions now (the service would on its next registry poll)."""
        if self.client is not None:
            self.app.state.shopml.models.refresh()
        self._scorers.clear()

    # -- batch scoring -----------------------------------------------------------------------
    def _scorer(self, usecase: str) -> tuple[str, Any]:
        if usecase not in self._scorers:
            from shopml.lifecycle.registry import CHAMPION, alias_version
            from shopml.lifecycle.tracking import configure, model_name
            from shopml.runtime.pyfunc import load_scorer

            client = configure(self.settings)
            mv = alias_version(client, usecase, CHAMPION)
            if mv is None:
                raise ReplayError(f"no {usecase} champion to replay with")
            self._scorers[usecase] = (
                str(mv.version),
                load_scorer(f"models:/{model_name(usecase)}/{mv.version}"),
            )
        return self._scorers[usecase]

    def _log(self, rows: list[tuple[Any, ...]]) -> None:
        self.store.log_predictions(rows)

    # -- sending -----------------------------------------------------------------------------
    def score(self, uc: UseCase, frame: pd.DataFrame, features: list[str]) -> tuple[int, int]:
        """Score rows (key + features); returns (answered, failed)."""
        if frame.empty:
            return 0, 0
        if self.mode == "batch":
            version, scorer = self._scorer(uc.name)
            out = scorer.predict_frame(frame)
            ts = datetime.fromtimestamp(self.now, UTC)
            names = list(scorer.features)
            values = frame.reindex(columns=names)
            rows = []
            for i, (entity, outputs) in enumerate(
                zip(frame[uc.key].astype(str), out.to_dict("records"), strict=True)
            ):
                rows.append(
                    (
                        uuid.uuid4().hex,
                        ts,
                        uc.name,
                        version,
                        uc.key,
                        entity,
                        {n: _clean(v) for n, v in zip(names, values.iloc[i], strict=True)},
                        {k: _clean(v) for k, v in outputs.items()},
                    )
                )
            self._log(rows)
            return len(rows), 0
        ok = failed = 0
        size = self.settings.serve_max_batch
        records = frame.to_dict("records")
        for i in range(0, len(records), size):
            chunk = records[i : i + size]
            body = {
                "instances": [
                    {
                        uc.key: str(r[uc.key]),
                        "features": {f: _clean(r.get(f)) for f in features if f in r},
                    }
                    for r in chunk
                ]
            }
            resp = self.client.post(f"/v1/{uc.name}/predict", json=body, headers=self.headers)
            if resp.status_code == 200:
                ok += len(chunk)
            else:
                failed += len(chunk)
        return ok, failed

    def recommend(self, customers: list[str]) -> tuple[int, int]:
        ok = failed = 0
        if self.mode == "batch":
            version, scorer = self._scorer("recommender")
            ts = datetime.fromtimestamp(self.now, UTC)
            rows = []
            for c in customers:
                recs = scorer.recommend(c, RECOMMEND_K)
                rows.append(
                    (
                        uuid.uuid4().hex,
                        ts,
                        "recommender",
                        version,
                        "customer_id",
                        c,
                        None,
                        {"k": RECOMMEND_K},
                        {"products": [p for p, _ in recs]},
                    )
                )
            self._log(rows)
            return len(rows), 0
        for c in customers:
            resp = self.client.post(
                "/v1/recommender/recommend",
                json={"customer_id": c, "k": RECOMMEND_K},
                headers=self.headers,
            )
            ok, failed = (ok + 1, failed) if resp.status_code == 200 else (ok, failed + 1)
        return ok, failed

    def suggest(self, products: list[str]) -> tuple[int, int]:
        ok = failed = 0
        if self.mode == "batch":
            version, scorer = self._scorer("pricing")
            ts = datetime.fromtimestamp(self.now, UTC)
            rows: list[tuple[Any, ...]] = []
            for p in products:
                try:
                    out = scorer.suggest(p)
                except KeyError:
                    failed += 1
                    continue
                rows.append(
                    (uuid.uuid4().hex, ts, "pricing", version, "product_id", p, None, {}, out)
                )
            self._log(rows)
            return len(rows), failed
        for p in products:
            resp = self.client.post(
                "/v1/pricing/suggest", json={"product_id": p}, headers=self.headers
            )
            # 404: a product the model has not seen yet (new in the catalogue).
            ok, failed = (ok + 1, failed) if resp.status_code == 200 else (ok, failed + 1)
        return ok, failed


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
    arrivals); ``act`` lets the monitor alert and retrain. ``feature_refresh_days`` is how
    often the features are rebuilt (1: every day, as a daily feature pipeline; 7: weekly, much
    faster, the features a few days staler).
    """
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.registry import CHAMPION, alias_version
    from shopml.lifecycle.tracking import configure
    from shopml.settings import get_settings
    from shopml.usecases import get_usecases

    if mode not in ("api", "batch"):
        raise ReplayError(f"mode must be 'api' or 'batch', got {mode!r}")
    if days < 1 or monitor_every < 1 or feature_refresh_days < 1:
        raise ReplayError("days, monitor_every and feature_refresh_days must be at least 1")
    settings = settings or get_settings()
    known = get_usecases()
    try:
        names = usecase_names(usecases)
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
        row = wh.con.execute("SELECT min(purchased_at), max(purchased_at) FROM orders").fetchone()
        if not row or row[0] is None:
            raise ReplayError("the warehouse has no orders to replay")
        first, last = row
        end = start + timedelta(days=days)
        if start < first or end > _day(last) + timedelta(days=1):
            raise ReplayError(
                f"the replay {start:%Y-%m-%d}..{end:%Y-%m-%d} is outside the data "
                f"({first:%Y-%m-%d}..{last:%Y-%m-%d})"
            )
        features: dict[str, tuple[datetime, Any]] = {}
        with _Traffic(settings, names, mode, store) as traffic:
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
                            traffic.refresh_online(wh, [known[n] for n in names], built)
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
                    if any(_promoted(c) for c in checks):
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

    if uc.name in ("recommender", "pricing"):
        assert arrivals is not None, f"{uc.name} must say what arrives for it"
        ids = list(sample(arrivals.iloc[:, 0].astype(str)))
        return traffic.recommend(ids) if uc.name == "recommender" else traffic.suggest(ids)
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
    return traffic.score(uc, rows[[uc.key, *data.features]], list(data.features))
