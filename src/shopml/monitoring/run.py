"""Run the checks of several use cases; retrain in process when the caller asks to.

Monitoring does not orchestrate: a retrain is a callable the caller injects (``shopml
monitor`` and the monitor flow pass the flows' own, ``shopml.flows.retraining``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopml.monitoring.arms import judge_arms
from shopml.monitoring.monitor import CheckResult, RetrainFn, check_usecase
from shopml.monitoring.performance import LabelCache
from shopml.monitoring.store import MonitoringStore, open_store

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse
    from shopml.settings import Settings

log = logging.getLogger("shopml.monitoring")

# The tuning budget of a retrain the loop starts (the pipeline's `shopml run` budget).
RETRAIN_TRIALS = 3
RETRAIN_TIMEOUT_S = 15.0


def train_outcome(result: Any) -> dict[str, Any]:
    """A training's result (a ``TrainResult``, or its dict) as a check records it."""
    get = result.get if isinstance(result, dict) else (lambda k: getattr(result, k, None))
    return {
        "status": get("status"),
        "version": get("version"),
        "reason": get("reason"),
        "champion_version": get("champion_version"),
        "metric": get("metric"),
        "champion_metric": get("champion_metric"),
    }


def retrain_in_process(
    settings: Settings, trials: int = RETRAIN_TRIALS, timeout_s: float = RETRAIN_TIMEOUT_S
) -> RetrainFn:
    """Retrain through the lifecycle in this process, on the warehouse, registry and home of
    ``settings`` (given explicitly: an experiment's home is not the process's). The gate
    decides what is promoted. The orchestrated ways (a Prefect subflow, a deployment) are in
    ``shopml.flows.retraining``."""

    def retrain(usecase: str, as_of: datetime | None) -> dict[str, Any]:
        from shopml.data.warehouse import Warehouse
        from shopml.lifecycle.train import TrainConfig, train_usecase
        from shopml.usecases import get_usecase

        config = TrainConfig(trials=trials, timeout_s=timeout_s, seed=settings.seed, as_of=as_of)
        with Warehouse.open(settings) as wh:
            return train_outcome(train_usecase(get_usecase(usecase), wh, settings, config))

    return retrain


def run_checks(
    usecases: list[str] | None = None,
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
    act: bool = True,
    retrain: RetrainFn | None = None,
    wh: Warehouse | None = None,
    store: MonitoringStore | None = None,
    cache: LabelCache | None = None,
) -> list[CheckResult]:
    """Check each use case (default: all) and write the gauges' text page.

    ``retrain`` is how a check that calls for it retrains (none: the checks alert only);
    on the wall clock it trains on the warehouse's data as it is, with an explicit ``now``
    inside the data (a replay) as of ``now``.
    """
    from shopml.data.warehouse import Warehouse
    from shopml.settings import get_settings
    from shopml.usecases import get_usecases, select_usecases

    settings = settings or get_settings()
    known = get_usecases()
    names = select_usecases(usecases)
    explicit_now = now is not None
    now = now or datetime.now(UTC).replace(tzinfo=None)
    own_wh = wh is None
    own_store = store is None
    wh = wh or Warehouse.open(settings)
    store = store or open_store(settings)
    cache = cache or LabelCache()
    try:
        span = wh.order_span()
        end = span[1] if span else None
        base_retrain = retrain

        def retrain_as_of(usecase: str, when: datetime | None) -> dict[str, Any]:
            assert base_retrain is not None
            # Inside the data (a replay), train as of the monitor's clock; past its end (the
            # usual case: the data lags the clock), on everything there is.
            as_of = when if explicit_now and end is not None and when and when <= end else None
            wh.close()  # the retrain opens the warehouse itself (it reopens here on next use)
            return base_retrain(usecase, as_of)

        results = []
        for name in names:
            try:
                results.append(
                    check_usecase(
                        known[name],
                        wh,
                        settings,
                        store,
                        now=now,
                        act=act,
                        retrain=retrain_as_of if retrain is not None else None,
                        cache=cache,
                    )
                )
            except Exception as exc:  # one use case failing does not stop the others (logged)
                log.exception("monitoring %s failed", name)
                results.append(
                    CheckResult(name, now, "failed", notes=[f"{type(exc).__name__}: {exc}"])
                )
            try:  # a live rollout of the challenger: judge its arms on the labels in
                arms = judge_arms(known[name], wh, settings, store, now=now, act=act, cache=cache)
                if arms.status != "no-rollout" or arms.reasons:
                    results[-1].rollout = arms.to_dict()
            except Exception as exc:
                log.exception("judging the rollout of %s failed", name)
                results[-1].rollout = {
                    "status": "failed",
                    "reasons": [f"{type(exc).__name__}: {exc}"],
                }
        write_gauges(settings)
        return results
    finally:
        if own_wh:
            wh.close()
        if own_store:
            store.close()


def write_gauges(settings: Settings) -> Path:
    """The gauges' text page under the reports folder (atomic), for a textfile collector."""
    from shopml.gauges import render_text

    folder = settings.reports_dir / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metrics.prom"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(render_text(settings.monitoring_store_uri, settings.home))
    tmp.replace(path)
    return path
