"""Shared fixtures: every test gets its own SHOPML_HOME and fresh settings."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopml.lifeline import guard_prefect_server
from shopml.settings import reset_settings

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Prefect's ephemeral server keeps its database under PREFECT_HOME (~/.prefect by default):
# two test runs at once (a developer's and CI's) would share, and lock, one SQLite file.
# Each pytest-xdist worker gets its own: workers inherit the controller's environment, and
# two workers' ephemeral servers on one SQLite file lock each other out.
_OURS = "SHOPML_TESTS_PREFECT_HOME"
if "PREFECT_HOME" not in os.environ or (
    os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(_OURS) == os.environ["PREFECT_HOME"]
):
    import atexit
    import shutil
    import tempfile

    os.environ["PREFECT_HOME"] = os.environ[_OURS] = tempfile.mkdtemp(
        prefix="shopml-tests-prefect-"
    )
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)


# Prefect's ephemeral server (started by flow tests in this process) stops with the test run,
# even one killed with -9 (a CI timeout): shopml.lifeline guards it as it does for `shopml run`.
guard_prefect_server()


def shared_data_dir() -> Path:
    """The public samples: SHOPML_SHARED_DATA_DIR, else ../shared/data beside the project, else
    beside the checkout this one was cloned from (a CI run on a fresh clone of a local
    repository keeps finding the samples its origin has next to it)."""
    configured = os.environ.get("SHOPML_SHARED_DATA_DIR")
    if configured:
        return Path(configured)
    beside = ROOT.parent / "shared" / "data"
    if beside.is_dir():
        return beside
    try:
        origin = subprocess.run(
            ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        origin = ""
    origin = origin.removeprefix("file://")
    if origin and Path(origin).is_absolute() and Path(origin).is_dir():
        candidate = Path(origin).resolve().parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return beside


@pytest.fixture(autouse=True)
def shopml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Isolate every test: its own home folder, no config file, no keys, development mode
    (explicitly), fresh settings."""
    home = tmp_path / "shopml-home"
    monkeypatch.setenv("SHOPML_HOME", str(home))
    monkeypatch.setenv("SHOPML_CONFIG", str(tmp_path / "no-shopml.toml"))
    for var in ("SHOPML_API_KEYS", "SHOPML_ADMIN_KEYS", "SHOPML_WAREHOUSE_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("SHOPML_INSECURE_DEV", raising=False)
    # The explicit development opt-in (a service without keys runs open, on loopback): tests
    # of the secure default remove it.
    monkeypatch.setenv("SHOPML_ENV", "development")
    reset_settings()
    yield home
    reset_settings()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop Prefect's ephemeral API server while pytest's output is still open: its exit hook
    would otherwise log "Stopping temporary server" to a closed stream (a logging traceback
    after the summary). On the xdist controller, keep each file's seconds for the next run's
    order (below)."""
    import sys

    opt = session.config.option  # a run filtered by -k or -m does not say how long files take
    whole_files = not getattr(opt, "keyword", "") and not getattr(opt, "markexpr", "")
    controller = not os.environ.get("PYTEST_XDIST_WORKER")
    cache = getattr(session.config, "cache", None)
    if _seconds and whole_files and controller and cache:
        cache.set(_FILE_SECONDS, {**cache.get(_FILE_SECONDS, {}), **_seconds})
    if "prefect.server.api.server" not in sys.modules:
        return
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    APILogWorker.drain_all(timeout=5)  # flow logs still queued go to the server while it runs
    # Its own "stopping" line must not be sent to the API it is stopping.
    with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: False}):
        for server in list(SubprocessASGIServer._instances.values()):
            server.stop()


# The order the test files are handed to pytest-xdist's workers (`make test` runs with
# `--dist loadfile --no-loadscope-reorder`; xdist's own reordering, by number of tests per file,
# would hand out the long end-to-end files, one or two tests each, last, and the run would end
# on one of them with the other worker idle). Longest first: by the seconds each file took in
# the last run that ran it (kept in pytest's cache), else files marked slow before the others.
_FILE_SECONDS = "shopml/file-seconds"


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: the order changes nothing (every worker must order alike)
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    known: dict[str, float] = cache.get(_FILE_SECONDS, {}) if cache else {}
    slow = {_file_of(i.nodeid) for i in items if i.get_closest_marker("slow")}
    first = {}  # file -> its place in the collection order
    for item in items:
        first.setdefault(_file_of(item.nodeid), len(first))

    def rank(file: str) -> tuple[int, float, int]:
        if file in known:
            return (1, -known[file], first[file])
        return (0 if file in slow else 2, 0.0, first[file])  # a new slow file: first

    order = {file: rank(file) for file in first}
    items.sort(key=lambda item: order[_file_of(item.nodeid)])  # stable within a file


_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Each file's seconds (setup, call and teardown of its tests); on the xdist controller the
    workers' reports arrive here too."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        file = _file_of(report.nodeid)
        _seconds[file] = _seconds.get(file, 0.0) + report.duration
