"""How the monitor's retrain runs when it is orchestrated: the ``retrain`` flow in this process
(a subflow when called from a flow), or the ``retrain/shopml`` deployment on a Prefect server.

Monitoring takes these as an injected callable (``run_checks(retrain=...)``) and never imports
this package: orchestration sits above monitoring, not beside it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from shopml.monitoring.monitor import RetrainFn
from shopml.monitoring.run import RETRAIN_TIMEOUT_S, RETRAIN_TRIALS, train_outcome

if TYPE_CHECKING:
    from shopml.settings import Settings


def _outcome(summary: Any) -> dict[str, Any]:
    """The first use case of a retrain flow's summary (an object, or its dict from a server)."""
    rows = summary.usecases if hasattr(summary, "usecases") else summary.get("usecases", [])
    if not rows:
        return {"status": "failed", "reason": "the retrain flow returned no result"}
    return train_outcome(rows[0])


def retrain_inline(trials: int = RETRAIN_TRIALS, timeout_s: float = RETRAIN_TIMEOUT_S) -> RetrainFn:
    """Run the ``retrain`` flow in this process (a subflow when called from a flow): train,
    gate, and rescore the champion, on the process's settings."""

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
        from shopml.flows.tasks import result_of

        return _outcome(result_of(state))

    return retrain


def default_retrain(settings: Settings) -> RetrainFn | None:
    """The retrain ``SHOPML_MONITOR_RETRAIN`` names: ``inline`` (the flow in this process),
    ``deployment`` (on the Prefect server) or ``off`` (None: the checks only alert)."""
    if settings.monitor_retrain == "off":
        return None
    if settings.monitor_retrain == "deployment":
        return retrain_deployment()
    return retrain_inline()
