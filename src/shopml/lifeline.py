"""Child processes that do not outlive the shopml command that started them, and the clean-up
of what a killed command left behind.

``kill -9`` gives a process no chance to stop its children. Two kinds were left running by a
killed command: Prefect's ephemeral API server (a uvicorn process holding a port and ~200 MB,
started by ``shopml run``, ``shopml train`` and the tests) and the server workers of
``shopml serve --workers N`` (still answering on the port). Linux's parent-death signal would
fire when the *thread* that started the child ends, not the process, so it cannot be used with
Prefect's server (started by whichever thread first needs the API). Instead:

- :func:`guard` starts a tiny watchdog process (its own session, so a Ctrl-C aimed at the
  command does not reach it) that stops the child when its parent is gone: SIGTERM, then
  SIGKILL after a grace period. It checks the child's command line before signalling, so a
  recycled process id is never hit. :func:`guard_prefect_server` wraps Prefect's ephemeral
  server start so that every server it starts is guarded.
- A ``shopml serve`` worker runs :func:`exit_with_parent`: a thread that asks the worker to
  shut down (SIGTERM, uvicorn's graceful path, which drains the prediction log) when the
  supervising ``shopml serve`` process has died.
- Folders a killed process owned (``<home>/prometheus-<pid>-*`` of a multi-worker service) are
  named after its process id; :func:`remove_stale_dirs` removes those whose owner is dead, at
  the next start.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("shopml.lifeline")

# Environment variable a supervisor sets for its workers: its own process id.
SUPERVISOR_ENV = "SHOPML_SUPERVISOR_PID"
PREFECT_SERVER_MARKER = "prefect.server.api.server:create_app"

# The watchdog: argv = parent pid, child pid, a string the child's command line contains,
# grace seconds. Plain Python, no imports of shopml: it starts in a few milliseconds.
_WATCHDOG = r"""
import os, signal, sys, time
parent, child, marker, grace = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])

def alive():
    try:
        os.kill(child, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

def is_the_child():
    try:
        with open(f"/proc/{child}/cmdline", "rb") as fh:
            return marker.encode() in fh.read()
    except FileNotFoundError:
        return alive() and not os.path.isdir("/proc")
    except OSError:
        return False

while os.getppid() == parent:
    if not alive():
        sys.exit(0)
    time.sleep(0.5)
if is_the_child():
    os.kill(child, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and is_the_child():
        time.sleep(0.2)
    if is_the_child():
        os.kill(child, signal.SIGKILL)
"""


def guard(child_pid: int, marker: str, grace_s: float = 10.0) -> subprocess.Popen[bytes]:
    """Stop process ``child_pid`` (whose command line contains ``marker``) when this process
    dies, however it dies. Returns the watchdog, which exits by itself with the child."""
    args = [str(os.getpid()), str(child_pid), marker, str(grace_s)]
    watchdog = subprocess.Popen(
        [sys.executable, "-I", "-c", _WATCHDOG, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    # Reap it when it exits, so it does not linger as a zombie of a long-lived command.
    threading.Thread(target=watchdog.wait, name="shopml-lifeline-reaper", daemon=True).start()
    return watchdog


def guard_prefect_server() -> None:
    """Make every Prefect ephemeral server this process starts stop when the process dies.

    Wraps ``SubprocessASGIServer._run_uvicorn_command`` (Prefect 3), the one place the server
    process is started: now if Prefect's server module is imported, else as soon as it is (the
    module costs seconds to import; a command that never starts the server never pays).
    Idempotent.
    """
    module = sys.modules.get(PREFECT_SERVER_MODULE)
    if module is not None:
        _wrap_server_start(module)
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())


PREFECT_SERVER_MODULE = "prefect.server.api.server"


def _wrap_server_start(module: Any) -> None:
    cls = getattr(module, "SubprocessASGIServer", None)
    start: Callable[..., Any] | None = getattr(cls, "_run_uvicorn_command", None)
    if cls is None or start is None or getattr(start, "_shopml_guarded", False):
        log.debug("Prefect's ephemeral server start not found or already guarded")
        return

    def run_guarded(self: Any) -> Any:
        proc = start(self)
        guard(proc.pid, PREFECT_SERVER_MARKER)
        return proc

    run_guarded._shopml_guarded = True  # type: ignore[attr-defined]
    cls._run_uvicorn_command = run_guarded


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs :func:`_wrap_server_start` right after Prefect's server module is imported."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != PREFECT_SERVER_MODULE:
            return None
        sys.meta_path.remove(self)  # once, and not for the lookup below
        spec = importlib.util.find_spec(name)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            _wrap_server_start(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> threading.Thread:
    """In a worker process: SIGTERM this process (a graceful shutdown) once ``parent_pid`` is no
    longer its parent, i.e. the supervisor died."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        log.warning("supervisor %s is gone: shutting this worker down", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="shopml-exit-with-parent", daemon=True)
    thread.start()
    return thread


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (a zombie counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owned_dir(parent: Path, prefix: str) -> Path:
    """A new folder ``<parent>/<prefix><pid>-<random>`` owned by this process."""
    import tempfile

    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


_PIDS_IN_FILES = re.compile(r"_(\d+)\.db$")  # prometheus_client's multiprocess files


def remove_stale_dirs(parent: Path, prefix: str) -> list[Path]:
    """Remove the ``<prefix>*`` folders under ``parent`` whose owning process is dead: the one
    named in the folder (``<prefix><pid>-...``), else (older names) every process that wrote a
    ``*_<pid>.db`` file in it. Returns what was removed."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for folder in parent.glob(f"{prefix}*"):
        if not folder.is_dir():
            continue
        head = folder.name[len(prefix) :].split("-", 1)[0]
        if head.isdigit():
            owners = {int(head)}
        else:
            owners = {
                int(m.group(1)) for f in folder.iterdir() if (m := _PIDS_IN_FILES.search(f.name))
            }
        if any(pid_alive(pid) for pid in owners):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        log.info("removed %d folder(s) left by stopped processes: %s", len(removed), removed)
    return removed
