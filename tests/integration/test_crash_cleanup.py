"""A command killed with ``kill -9`` leaks nothing the next one does not clean up: Prefect's
ephemeral API server started by ``shopml run`` stops with it, the workers of ``shopml serve
--workers 2`` stop with their supervisor, and the metrics folder a killed service left is
removed by the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# Generous: a loaded 2-core machine is slow, and each wait returns as soon as it holds.
BOUND_S = 300.0

# `shopml run` on the warehouse with two toy use cases; the second hangs in training (when
# SHOPML_TEST_HANG names a marker file), so the run is killed in the middle of its work.
RUN = """
import os, sys, time
from pathlib import Path
import shopml.usecases
from tests.support.toy import ToyUseCase

class Hanging(ToyUseCase):
    name = "toy-hang"
    def plots(self, scorer, data, outdir):
        marker = os.environ.get("SHOPML_TEST_HANG")
        if marker:
            Path(marker).write_text("training")
            time.sleep(900)
        return []

usecases = {"toy": ToyUseCase(), "toy-hang": Hanging()}
shopml.usecases.get_usecases = lambda: usecases
from shopml import cli
sys.argv = ["shopml", "run", "--source", "warehouse", "--trials", "0", "--timeout", "5", "--json"]
cli.main()
"""


def wait_for(what: str, check: Callable[[], bool], bound: float = BOUND_S) -> None:
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, f"{what}: still not so after {bound:.0f} s"
        time.sleep(0.3)


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found.extend(int(k) for k in kids)
        todo.extend(int(k) for k in kids)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def gone(pid: int) -> bool:
    # A killed process's children are re-parented and reaped by init; a zombie has no cmdline.
    return cmdline(pid) == ""


def prefect_servers(prefect_home: Path | None = None) -> set[int]:
    """Prefect ephemeral servers running now; with ``prefect_home``, only those started with
    that PREFECT_HOME (another test process's servers come and go meanwhile)."""

    def ours(pid: int) -> bool:
        if prefect_home is None:
            return True
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"PREFECT_HOME={prefect_home}".encode() in env

    return {
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and "-m uvicorn" in (line := cmdline(int(p.name)))
        and "prefect.server.api.server:create_app" in line
        and ours(int(p.name))
    }


@pytest.fixture
def env(shopml_home: Path, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SHOPML_HOME": str(shopml_home),
        "PYTHONPATH": str(ROOT),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # A fresh Prefect home: this test's ephemeral servers are not the suite's own.
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_kill_9_of_shopml_run_leaves_no_prefect_server(env: dict[str, str], tmp_path: Path) -> None:
    sim = subprocess.run(
        [sys.executable, "-m", "shopml.cli", "simulate", "--customers", "150", "--days", "400"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=BOUND_S, check=False,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr[-2000:]
    marker = tmp_path / "hanging"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN],
        env={**env, "SHOPML_TEST_HANG": str(marker)},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for("the hanging use case started training", lambda: marker.exists() or bool(
            proc.poll() is not None))  # fmt: skip
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        servers = [p for p in children(proc.pid) if p in prefect_servers()]
        assert len(servers) == 1, "the run should have started one ephemeral Prefect server"
        server = servers[0]
        proc.send_signal(signal.SIGKILL)  # the run only: not its process group
        proc.wait()
        wait_for("the orphaned Prefect server stopped", lambda: gone(server))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The next run works and, once finished, leaves no server behind either.
    again = subprocess.run(
        [sys.executable, "-c", RUN], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=BOUND_S * 2, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    home = Path(env["PREFECT_HOME"])
    wait_for("no ephemeral server left", lambda: not prefect_servers(home), bound=60)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_kill_9_of_shopml_serve_stops_its_workers_and_the_next_start_cleans_up(
    env: dict[str, str], shopml_home: Path, tmp_path: Path
) -> None:
    def serve(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "shopml.cli", "serve", "--workers", "2", "--port", str(port)],
            env={**env, "SHOPML_ENV": "development"},
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    port = services.free_port()
    proc = serve(port)
    try:
        services.wait_http(f"http://127.0.0.1:{port}/health", timeout=BOUND_S, proc=proc)
        workers = [p for p in children(proc.pid) if "multiprocessing.spawn" in cmdline(p)]
        assert len(workers) == 2
        folders = list(shopml_home.glob("prometheus-*"))
        assert len(folders) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for worker in workers:
            wait_for(f"worker {worker} stopped", lambda w=worker: gone(w))
        assert not services.port_open("127.0.0.1", port)
        assert folders[0].exists()  # nobody could remove it: the next start does
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    port = services.free_port()
    proc = serve(port)
    try:
        services.wait_http(f"http://127.0.0.1:{port}/health", timeout=BOUND_S, proc=proc)
        assert not folders[0].exists()
        assert len(list(shopml_home.glob("prometheus-*"))) == 1  # its own
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=BOUND_S)
    assert list(shopml_home.glob("prometheus-*")) == []
