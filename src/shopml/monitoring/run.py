"""Run the checks of several use cases, and the ways the loop can retrain."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def _outcome(summary: Any) -> dict[str, Any]:
    rows = summary.usecases if hasattr(summary, "usecases") else summary.get("usecases", [])
    row = rows[0] if rows else None
    if row is None:
        return {"status": "failed", "reason": "the retrain flow returned no result"}
    get = (lambda k: getattr(row, k, None)) if not isinstance(row, dict) else row.get
    return {
        "status": get("status"),
        "version": get("version"),
        "reason": get("reason"),
        "champion_version": get("champion_version"),
        "metric": get("metric"),
        "champion_metric": get("champion_metric"),
    }


def retrain_inline(trials: int = RETRAIN_TRIALS, timeout_s: float = RETRAIN_TIMEOUT_S) -> RetrainFn:
    """Run the ``retrain`` flow in this process (a subflow when called from a flow)."""

    def retrain(usecase: str, as_of: datetime | None) -> dict[str, Any]:
        from shopml.flows.pipeline import retrain as retrain_flow

        summary = retrain_flow(usecase=usecase, trials=trials, timeout_s=timeout_s, as_of=as_of)
        return _outcome(summary)

    return retrain


def retrain_deployment(
    trials: int = RETRAIN_TRIALS, timeout_s: float = RETRAIN_TIMEOUT_S, wait_s: float = 3600
) -> RetrainFn:
    """Start the ``retrain/shopml`` deployment on the Prefect server and wait for it."""

    def retrain(usecase: str, as_of: datetime | None) -> dict[str, Any]:
        from prefect.deployments import run_deployment

        params: dict[str, Any] = {"usecase": usecase, "trials": trials, "timeout_s": timeout_s}
        if as_of is not None:
            params["as_of"] = as_of.isoformat()
        run: Any = run_deployment("retrain/shopml", parameters=params, timeout=wait_s)
        state = run.state
        if state is None or not state.is_final():
            return {"status": "started", "reason": f"flow run {run.id} still running"}
        if not state.is_completed():
            return {"status": "failed", "reason": f"flow run {run.id}: {state.name}"}
        return _outcome(state.result())

    return retrain


def default_retrain(settings: Settings) -> RetrainFn | None:
    if settings.monitor_retrain == "off":
        return None
    if settings.monitor_retrain == "deployment":
        return retrain_deployment()
    return retrain_inline()


def usecase_names(usecases: list[str] | None) -> list[str]:
    """The use cases named (default: all), or ValueError naming the unknown ones."""
    from shopml.usecases import get_usecases

    known = list(get_usecases())
    names = list(usecases or known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown use case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def _data_end(wh: Warehouse) -> datetime | None:
    row = wh.con.execute("SELECT max(purchased_at) FROM orders").fetchone()
    return row[0] if row and row[0] is not None else None


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

    On the wall clock, a retrain trains on the warehouse's data as it is; with an explicit
    ``now`` inside the data (a replay), it trains as of ``now``.
    """
    from shopml.data.warehouse import Warehouse
    from shopml.settings import get_settings
    from shopml.usecases import get_usecases

    settings = settings or get_settings()
    known = get_usecases()
    names = usecase_names(usecases)
    explicit_now = now is not None
    now = now or datetime.now(UTC).replace(tzinfo=None)
    own_wh = wh is None
    own_store = store is None
    wh = wh or Warehouse.open(settings)
    store = store or open_store(settings)
    cache = cache or LabelCache()
    if act and retrain is None:
        retrain = default_retrain(settings)
    try:
        end = _data_end(wh)
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
            except Exception as exc:  # one use case failing does not stop the others
                log.exception("monitoring %s failed", name)
                results.append(
                    CheckResult(name, now, "failed", notes=[f"{type(exc).__name__}: {exc}"])
                )
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
