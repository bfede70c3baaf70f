"""The control tower's actions, through the functions the CLI calls: ``shopml promote`` and
``shopml rollback`` (:func:`shopml.lifecycle.registry.promote`, :func:`~.rollback`, which
record the move on the model version), and the monitor's retrain
(:func:`shopml.flows.retraining.default_retrain`: the ``retrain`` flow in a process of its own,
or the ``retrain/shopml`` deployment on the Prefect server).

A retrain runs in a detached child process (``python -m shopml.ui.retrain``): the page answers
at once, the tower's process (the API's, when mounted) never loads training or orchestration
libraries, and the job records its outcome in ``<home>/ui/retrains/<usecase>.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopml.settings import Settings

log = logging.getLogger("shopml.ui")
UI_REASON = "manual promotion in the control tower"
UI_RETRAIN_REASON = "manual retrain in the control tower"
# The run id of a retrain asked for by hand, in the monitor's decisions: it counts for the
# cooldown, but it is not a check (the overview's status is the last check's).
MANUAL_RUN_PREFIX = "manual-"


class ActionError(ValueError):
    """An action that cannot be done as asked (the message says why); a 4xx."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def promote(settings: Settings, usecase: str, version: str, reason: str, who: str) -> str | None:
    """Make ``version`` champion (a recorded manual override, as ``shopml promote``); returns
    the previous champion's version."""
    from shopml.lifecycle.registry import RegistryError
    from shopml.lifecycle.registry import promote as do_promote
    from shopml.lifecycle.tracking import configure

    why = f"{UI_REASON} (key {who})" + (f": {reason.strip()}" if reason.strip() else "")
    try:
        previous = do_promote(configure(settings), usecase, version, why)
    except RegistryError as exc:
        raise ActionError(str(exc), 404) from None
    log.warning("%s: v%s made champion in the control tower by key %s", usecase, version, who)
    return previous


def rollback(settings: Settings, usecase: str, who: str) -> tuple[str, str]:
    """Move the champion back to the previous one (as ``shopml rollback``); (from, to)."""
    from shopml.lifecycle.registry import RegistryError
    from shopml.lifecycle.registry import rollback as do_rollback
    from shopml.lifecycle.tracking import configure

    try:
        old, new = do_rollback(configure(settings), usecase)
    except RegistryError as exc:
        raise ActionError(str(exc)) from None
    log.warning("%s: rolled back v%s -> v%s in the control tower by key %s", usecase, old, new, who)
    return old, new


# -- retrains ------------------------------------------------------------------------------------
@dataclass
class RetrainJob:
    """A retrain started from the tower, as its state file records it."""

    usecase: str
    state: str  # running | finished | failed | lost (the process died without a word)
    started_at: str | None = None  # None: the job was started by hand, not by the tower
    pid: int | None = None
    finished_at: str | None = None
    outcome: dict[str, Any] | None = None
    log: str | None = None
    who: str | None = None


def _jobs_dir(settings: Settings) -> Path:
    return settings.home / "ui" / "retrains"


def _state_path(settings: Settings, usecase: str) -> Path:
    return _jobs_dir(settings) / f"{usecase}.json"


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write a job's state under a temporary name, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, default=str))
    os.replace(tmp, path)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Children started by this process, reaped when their state is read (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def retrain_job(settings: Settings, usecase: str) -> RetrainJob | None:
    """The newest retrain started from the tower for ``usecase``, or None."""
    path = _state_path(settings, usecase)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    pid = state.get("pid")
    child = _CHILDREN.get(pid) if pid else None
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(child.pid, None)
    if state.get("state") == "running" and (
        (child is not None and child.returncode is not None) or (child is None and not _alive(pid))
    ):
        # The job writes its outcome before it exits; a running state left behind means it
        # died (killed, out of memory): say so rather than "running" forever.
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text())
        if state.get("state") == "running":
            state["state"] = "lost"
    fields = RetrainJob.__dataclass_fields__
    known = {k: v for k, v in state.items() if k in fields}
    return RetrainJob(**{**known, "usecase": usecase, "state": str(state.get("state", "lost"))})


def retrain_available() -> str | None:
    """Why a retrain cannot start from this installation, or None when it can."""
    if find_spec("prefect") is None:
        return (
            "retraining needs shopml's flows extra (Prefect), which this installation (the slim "
            "serving image) lacks: start it with `shopml ui` where shopml is installed whole, or "
            "`shopml train`"
        )
    return None


def start_retrain(
    settings: Settings,
    usecase: str,
    who: str,
    trials: int | None = None,
    timeout_s: float | None = None,
) -> RetrainJob:
    """Start the monitor's retrain of ``usecase`` in a detached child process; refused while
    one started here is still running."""
    why_not = retrain_available()
    if why_not:
        raise ActionError(why_not, 501)
    current = retrain_job(settings, usecase)
    if current is not None and current.state == "running":
        raise ActionError(
            f"a retrain of {usecase} is already running (started {current.started_at}, "
            f"pid {current.pid})"
        )
    folder = _jobs_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    log_path = folder / f"{usecase}-{stamp}.log"
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    args = [sys.executable, "-m", "shopml.ui.retrain", usecase, "--who", who]
    args += ["--log", str(log_path), "--started-at", started_at]
    if trials is not None:
        args += ["--trials", str(trials)]
    if timeout_s is not None:
        args += ["--timeout", str(timeout_s)]
    with log_path.open("wb") as out:
        child = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives a restart of the tower
            env={**os.environ, "SHOPML_HOME": str(settings.home)},
        )
    _CHILDREN[child.pid] = child
    state: dict[str, Any] = {
        "usecase": usecase,
        "state": "running",
        "started_at": started_at,
        "pid": child.pid,
        "log": str(log_path),
        "who": who,
    }
    write_state(_state_path(settings, usecase), state)
    log.warning(
        "%s: retrain started in the control tower by key %s (pid %d)", usecase, who, child.pid
    )
    return RetrainJob(**state)


def wait_for(settings: Settings, usecase: str, timeout_s: float) -> RetrainJob | None:
    """Wait until the retrain of ``usecase`` is no longer running (tests and scripts)."""
    deadline = time.monotonic() + timeout_s
    job = retrain_job(settings, usecase)
    while job is not None and job.state == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        job = retrain_job(settings, usecase)
    return job
