"""Scenario experiments: does the loop notice a changed world, and does it recover?

:func:`run_scenario` simulates a shop whose world changes on a date (a ShopSim scenario),
trains a use case as of shortly before the change, replays the period as traffic with the
monitor and its retrain loop running on schedule, and summarises what happened: when the
change was first detected, which alerts went out, which retrained models passed the gate, and
how the live metric compared with the best possible (the simulator's oracle on the same
predictions) before, during and after. The end-to-end test and the scenario benchmark both run
it; the docs' table comes from the benchmark.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from shopml.monitoring.replay import ReplayResult, replay


@dataclass
class ScenarioOutcome:
    scenario: str
    usecase: str
    onset: datetime
    metric: str
    higher_is_better: bool
    checks: int = 0
    detected_at: datetime | None = None
    detection_reasons: list[str] = field(default_factory=list)
    alerts_sent: int = 0
    alerts_triggered: int = 0
    retrains: int = 0
    promotions: list[tuple[str, str]] = field(default_factory=list)  # (date, version)
    before: float | None = None  # live metric, judged windows wholly before the onset
    during: float | None = None  # the first model after the onset
    after: float | None = None  # models promoted by the loop
    oracle_before: float | None = None
    oracle_during: float | None = None
    oracle_after: float | None = None
    series: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    requests: int = 0
    failed_requests: int = 0

    @property
    def detection_days(self) -> float | None:
        if self.detected_at is None:
            return None
        return (self.detected_at - self.onset).total_seconds() / 86400

    def gap(self, phase: str) -> float | None:
        """Live metric over the oracle's on the same predictions (1 = the best possible)."""
        live, best = getattr(self, phase), getattr(self, f"oracle_{phase}")
        if live is None or best is None or best == 0:
            return None
        return live / best if not self.higher_is_better else best / live

    @property
    def recovery(self) -> float | None:
        """The share of the gap to the best possible that the change opened and the promoted
        models closed again (1: back to the level before the change; 0: no better)."""
        during, after = self.gap("during"), self.gap("after")
        if during is None or after is None:
            return None
        before = self.gap("before") or 1.0
        if during <= before:
            return None  # the change opened no gap to close
        return (during - after) / (during - before)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["detection_days"] = self.detection_days
        out["recovery"] = self.recovery
        for phase in ("before", "during", "after"):
            out[f"gap_{phase}"] = self.gap(phase)
        return out


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def summarise(
    result: ReplayResult, scenario: str, usecase: str, onset: datetime, initial_version: str
) -> ScenarioOutcome:
    from shopml.usecases import get_usecase

    uc = get_usecase(usecase)
    metric, higher_is_better = uc.monitored_metric()
    out = ScenarioOutcome(scenario, usecase, onset, metric, higher_is_better)
    out.seconds = result.seconds
    out.requests = result.requests.get(usecase, 0)
    out.failed_requests = result.errors.get(usecase, 0)
    phases: dict[str, list[tuple[float, float | None]]] = {"before": [], "during": [], "after": []}
    for c in result.checks:
        if c["usecase"] != usecase:
            continue
        out.checks += 1
        d = c.get("decision") or {}
        now = datetime.fromisoformat(c["now"])
        if d.get("triggered") and d.get("confirmed", True) and d.get("action") != "wait":
            out.alerts_triggered += 1
            if out.detected_at is None and now >= onset:
                out.detected_at = now
                out.detection_reasons = list(d.get("reasons") or [])
        if (d.get("alert") or {}).get("sent"):
            out.alerts_sent += 1
        r = d.get("retrain") or {}
        if r:
            out.retrains += 1
            if r.get("status") == "promoted":
                out.promotions.append((now.date().isoformat(), str(r.get("version"))))
        perf = c.get("performance") or {}
        live = (perf.get("live") or {}).get(metric)
        best = (perf.get("oracle") or {}).get(metric)
        window = perf.get("window")
        out.series.append(
            {
                "checked": now.date().isoformat(),
                "model_version": c.get("model_version"),
                "status": c.get("status"),
                "drift_share": (c.get("drift") or {}).get("share"),
                "live": live,
                "oracle": best,
                "labelled": perf.get("labelled"),
                "action": d.get("action"),
                "outcome": d.get("outcome"),
            }
        )
        if live is None or not window:
            continue
        start, end = (datetime.fromisoformat(w) for w in window)
        if end <= onset:
            phases["before"].append((live, best))
        elif start >= onset and c.get("model_version") == initial_version:
            phases["during"].append((live, best))
        elif start >= onset:
            phases["after"].append((live, best))
    for phase, values in phases.items():
        setattr(out, phase, _mean([v[0] for v in values]))
        setattr(out, f"oracle_{phase}", _mean([v[1] for v in values if v[1] is not None]))
    return out


def run_scenario(
    home: Path,
    scenario: str,
    usecase: str,
    *,
    onset: date,
    replay_start: date,
    days: int,
    customers: int = 3000,
    sim_days: int = 1000,
    seed: int = 42,
    monitor_every: int = 14,
    feature_refresh_days: int = 7,
    mode: str = "api",
    webhook: str | None = None,
    policy: dict[str, Any] | None = None,
    retrain_trials: int = 0,
    retrain_timeout_s: float = 10.0,
) -> ScenarioOutcome:
    """Simulate, train as of ``replay_start``, replay ``days`` days with the loop, summarise.

    Everything lives under ``home`` (its own warehouse, registry and monitoring store).
    """
    from shopml.data.simulator import SimConfig, simulate
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.train import TrainConfig, train_usecase
    from shopml.monitoring.run import retrain_in_process
    from shopml.settings import Settings
    from shopml.usecases import get_usecase

    started = time.perf_counter()
    home.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {"home": home, "alert_webhook_url": webhook}
    if policy:
        values["monitor_policy"] = {usecase: policy}
    # Everything below is given these settings explicitly (the retrain too): the experiment's
    # home is its own, whatever the process's settings say.
    settings = Settings(**values)
    wh = Warehouse(settings.warehouse)
    config = SimConfig(
        customers=customers,
        start=date(2023, 1, 1),
        days=sim_days,
        seed=seed,
        scenario=scenario,
        scenario_start=onset,
    )
    simulate(config).load(wh)
    uc = get_usecase(usecase)
    first = train_usecase(uc, wh, settings, TrainConfig(trials=0, as_of=_midnight(replay_start)))
    wh.close()
    if first.version is None:
        raise RuntimeError(f"the first {usecase} model was not trained: {first.reason}")
    if first.status != "promoted":
        # The experiment needs a model in service before the change: an operator's manual
        # promotion, recorded as such in the registry (`shopml promote`).
        from shopml.lifecycle.registry import promote
        from shopml.lifecycle.tracking import configure

        promote(
            configure(settings),
            usecase,
            first.version,
            reason=f"the experiment's starting model (the gate said: {first.reason})",
        )
    result = replay(
        _midnight(replay_start),
        days,
        usecases=[usecase],
        mode=mode,
        monitor_every=monitor_every,
        feature_refresh_days=feature_refresh_days,
        retrain=retrain_in_process(settings, retrain_trials, retrain_timeout_s),
        settings=settings,
    )
    out = summarise(result, scenario, usecase, _midnight(onset), first.version)
    out.seconds = time.perf_counter() - started
    return out


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def days_between(a: date, b: date) -> int:
    return (b - a) // timedelta(days=1)
