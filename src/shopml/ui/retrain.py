"""The retrain job the control tower starts: ``python -m shopml.ui.retrain USECASE``.

Runs the monitor's retrain (:mod:`shopml.flows.retraining`: the ``retrain`` flow in this
process, or the ``retrain/shopml`` deployment when ``SHOPML_MONITOR_RETRAIN=deployment``) and
records its outcome (the gate's verdict, the new version) in the job's state file, which the
tower reads, and in the monitor's decisions (action ``retrain``: the monitor's cooldown then
counts it, as it counts its own). A version the retrain registered carries who asked for it
(a ``shopml.requested`` tag, :func:`shopml.lifecycle.registry.record_request`) beside the
gate's own record, as a promotion in the tower carries its override.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from shopml.lifecycle.registry import REGISTERED
from shopml.ui.actions import MANUAL_RUN_PREFIX, UI_RETRAIN_REASON, _state_path, write_state


def _requested_by(state: dict[str, Any]) -> str:
    who = state.get("who")
    return f"control tower, key {who}" if who else "python -m shopml.ui.retrain, by hand"


def _record(settings: Any, usecase: str, version: str, state: dict[str, Any]) -> str:
    """Tag the new version with who asked for it; what was recorded, or why it was not."""
    from shopml.lifecycle.registry import record_request
    from shopml.lifecycle.tracking import configure

    by = _requested_by(state)
    try:
        record_request(configure(settings), usecase, version, by, UI_RETRAIN_REASON)
    except Exception as exc:  # the retrain stands; the page says the record is missing
        print(f"v{version} not tagged with its request: {exc}", file=sys.stderr)
        return f"not recorded: {type(exc).__name__}: {exc}"
    return by


def _decide(settings: Any, usecase: str, outcome: dict[str, Any], by: str) -> str | None:
    """Record the retrain in the monitor's decisions, as the monitor records its own: the
    history ``shopml monitor`` and the tower show, and the one its cooldown reads (a retrain
    asked for by hand starts the cooldown as one the monitor started would). Returns why it
    could not be recorded, or None."""
    from shopml.monitoring.store import open_store

    status = str(outcome.get("status") or "unknown")
    version = outcome.get("version")
    told = f"manual retrain: {status}" + (f" v{version}" if version else "")
    if outcome.get("reason"):
        told += f" ({outcome['reason']})"
    now = datetime.now(UTC)
    try:
        with open_store(settings) as store:
            store.write_decision(
                f"{MANUAL_RUN_PREFIX}{now:%Y%m%dT%H%M%S}-{os.getpid()}",
                usecase,
                str(version) if version else None,
                now,
                False,  # not triggered by a check: asked for
                "retrain",
                told,
                [f"{UI_RETRAIN_REASON} ({by})"],
                {"retrain": outcome, "requested_by": by},
            )
    except Exception as exc:  # the retrain stands; the job's state says what is missing
        print(f"retrain of {usecase} not recorded in the decisions: {exc}", file=sys.stderr)
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Retrain one use case and record the outcome; exit 0 when the retrain ran (whatever the
    gate said), 1 when it failed."""
    parser = argparse.ArgumentParser(prog="python -m shopml.ui.retrain")
    parser.add_argument("usecase")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--who", default=None, help="the key id of who asked (the tower's)")
    parser.add_argument("--log", default=None, help="where the tower sends this job's output")
    parser.add_argument("--started-at", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from shopml.lifeline import guard_prefect_server

    # A job killed with -9 must not leave Prefect's ephemeral server running.
    guard_prefect_server()

    from shopml.flows.retraining import retrain_deployment, retrain_inline
    from shopml.monitoring.run import RETRAIN_TIMEOUT_S, RETRAIN_TRIALS
    from shopml.settings import get_settings

    settings = get_settings()
    path = _state_path(settings, args.usecase)
    # The job's own record of itself (the tower writes the same at the start, for its refusal
    # of a second retrain meanwhile); run by hand, it has no key and no log of the tower's.
    state: dict[str, Any] = {
        "usecase": args.usecase,
        "pid": os.getpid(),
        "started_at": args.started_at or datetime.now(UTC).isoformat(timespec="seconds"),
        "who": args.who,
        "log": args.log,
    }
    state["state"] = "running"
    write_state(path, state)
    trials = RETRAIN_TRIALS if args.trials is None else args.trials
    timeout = RETRAIN_TIMEOUT_S if args.timeout is None else args.timeout
    # The way the monitor retrains, whether or not the monitor itself may ("off" only stops the
    # loop from retraining by itself; someone asked for this one).
    if settings.monitor_retrain == "deployment":
        retrain = retrain_deployment(trials, timeout)
    else:
        retrain = retrain_inline(trials, timeout)
    try:
        outcome = retrain(args.usecase, None)
        state["state"] = "failed" if outcome.get("status") == "failed" else "finished"
    except Exception as exc:  # recorded for the page, and printed to the job's log
        outcome = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        state["state"] = "failed"
        print(f"retrain of {args.usecase} failed: {outcome['reason']}", file=sys.stderr)
    if outcome.get("status") in REGISTERED and outcome.get("version"):
        outcome["requested"] = _record(settings, args.usecase, str(outcome["version"]), state)
    missing = _decide(settings, args.usecase, outcome, _requested_by(state))
    if missing:
        outcome["decision_not_recorded"] = missing
    state["outcome"] = outcome
    state["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_state(path, state)
    print(json.dumps(outcome, default=str))
    return 0 if state["state"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
