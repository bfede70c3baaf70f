"""Real servers for integration tests: check the machine's services and start them if down,
and start throwaway servers (an S3 endpoint, an MLflow tracking server) on loopback ports.

A throwaway server runs in its own process group (stopped as a group, children included) and
is waited for by readiness with a generous bound. Its port is picked free before it starts; on
a busy machine a slow server can lose that port to another process before it binds it, and a
readiness probe would then be answered by a stranger. :meth:`Processes.start_server` checks
that the process answering is the one it started (Linux's /proc) and retries on another port.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(RuntimeError):
    """The port picked for a server was taken by another process before the server bound it."""


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers with success; with ``proc``, fail as soon as it exits and
    check that the answer came from it (or its children), not from another process that holds
    the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                pass
        except Exception:
            time.sleep(0.3)
            continue
        if proc is not None:
            _check_owner(url, proc)
        return
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def _check_owner(url: str, proc: subprocess.Popen) -> None:
    port = urllib.parse.urlsplit(url).port
    if port is None or not os.path.isdir("/proc/self/fd"):
        return
    owners = listening_pids(port)
    if owners and not any(proc.pid in _ancestry(pid) for pid in owners):
        raise PortTaken(f"port {port} is held by pid {sorted(owners)}, not by pid {proc.pid}")


def listening_pids(port: int) -> set[int]:
    """Processes with a socket listening on ``port`` (any address), from /proc."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    pids: set[int] = set()
    if not inodes:
        return pids
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        pids.add(int(pid))
                        break
    return pids


def _ancestry(pid: int) -> list[int]:
    chain = [pid]
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        chain.append(pid)
    return chain


class Processes:
    """Servers started in their own process groups, logged to files, stopped as groups (also
    their children: uvicorn workers, job runners, flow runs)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=self.logs,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        tie_to_this_process(proc)
        self.procs[name] = proc
        return proc

    def start_server(
        self,
        name: str,
        cmd: Callable[[int], list[str]],
        env: dict[str, str],
        ready: str = "/",
        timeout: float = 300.0,
    ) -> int:
        """Start ``cmd(port)`` on a free loopback port and wait until it answers ``ready``;
        another port is tried when the picked one was lost before the server bound it.
        Returns the port. The log and the state of the process are in the error otherwise."""
        for attempt in range(3):
            port = free_port()
            proc = self.start(name, cmd(port), env)
            try:
                wait_http(f"http://127.0.0.1:{port}{ready}", timeout=timeout, proc=proc)
                return port
            except (PortTaken, RuntimeError) as exc:
                self.stop(name)
                lost = isinstance(exc, PortTaken) or "address already in use" in self.log(name)
                if not lost or attempt == 2:
                    raise AssertionError(f"{name}: {exc}\n{self.log(name)}") from None
            except TimeoutError as exc:
                alive = self.procs[name].poll() is None
                raise AssertionError(
                    f"{name}: {exc} (process {'running' if alive else 'exited'})\n{self.log(name)}"
                ) from None
        raise AssertionError("unreachable")

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def check(self, name: str) -> None:
        """Fail with the server's log when it is no longer running."""
        proc = self.procs[name]
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; its children (uvicorn workers, flow runs) may not be yet.
            if not group_alive(proc.pid):
                break
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def alive(self) -> list[str]:
        for p in self.procs.values():
            p.poll()  # reap a finished leader: a zombie still counts for killpg
        return [n for n, p in self.procs.items() if group_alive(p.pid)]


# A watchdog per process group: if the test process dies without its teardown (killed, or a
# Ctrl-C that stops an xdist worker), the group it started would keep running, orphaned. The
# watchdog ends with the group, or stops the group (TERM, then KILL) when its parent is gone.
_WATCHDOG = """
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
while group_alive(group):
    if os.getppid() != parent:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 10
            while group_alive(group) and time.monotonic() < deadline:
                time.sleep(0.2)
        break
    time.sleep(1)
"""


def tie_to_this_process(proc: subprocess.Popen[Any]) -> None:
    """Stop ``proc``'s process group (started with ``start_new_session=True``) if this process
    dies before stopping it: a watchdog outside the group watches both."""
    # The script gets group_alive's own source: one definition of "the group is alive".
    script = f"import os\n{inspect.getsource(group_alive)}\n{_WATCHDOG}"
    subprocess.Popen(
        [sys.executable, "-c", script, str(os.getpid()), str(proc.pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (its leader reaped by poll or wait first)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# MLflow's server starts a job runner and eight Huey consumers for GenAI jobs shopml never
# submits (compose turns them off too): on a busy machine they only slow its start.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server_cmd(port: int, backend: str, artifacts: str, *extra: str) -> list[str]:
    """``mlflow server`` on a loopback port, one worker, artifacts proxied by the server."""
    return [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--workers",
        "1",
        *extra,
    ]


def _start(cmd: list[str], check: tuple[str, int], wait: float = 20.0) -> None:
    if shutil.which(cmd[0]) is None:
        return
    subprocess.run(cmd, check=False, capture_output=True, timeout=60)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not port_open(*check):
        time.sleep(0.5)


def ensure_postgres() -> str:
    """The machine's PostgreSQL (started if down) as a base URL, or skip the test."""
    if not port_open("127.0.0.1", 5432):
        versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
        if versions:
            _start(
                ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "start"],
                ("127.0.0.1", 5432),
            )
    if not port_open("127.0.0.1", 5432):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432 and could not be started")
    return "postgresql+psycopg://postgres@127.0.0.1:5432"


def ensure_redis() -> str:
    """The machine's Redis (started if down) as a URL, or skip the test."""
    if not port_open("127.0.0.1", 6379):
        _start(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            ("127.0.0.1", 6379),
        )
    if not port_open("127.0.0.1", 6379):
        pytest.skip("Redis is not running on 127.0.0.1:6379 and could not be started")
    return "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def redis_database() -> Iterator[str]:
    """A Redis database index nobody uses (claimed with a key, so two test processes never
    share one), flushed afterwards; yields its URL."""
    import redis

    base = ensure_redis().rsplit("/", 1)[0]
    for i in range(15, 0, -1):
        r = redis.Redis.from_url(f"{base}/{i}")
        if r.set("shopml-test:claim", "1", nx=True):
            if r.dbsize() == 1:
                try:
                    yield f"{base}/{i}"
                finally:
                    r.flushdb()
                    r.close()
                return
            r.delete("shopml-test:claim")  # someone else's data is in there
        r.close()
    pytest.fail("no free Redis database index (1-15) on 127.0.0.1:6379")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    import psycopg

    base = ensure_postgres()
    name = f"shopml_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
    ) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
        ) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def s3_server(bucket: str = "shopml", logs: Path | None = None) -> Iterator[str]:
    """A moto S3 server on a loopback port with one bucket; yields its endpoint URL."""
    import tempfile

    import boto3

    with contextlib.ExitStack() as stack:
        folder = logs or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        procs = Processes(folder)
        stack.callback(procs.stop_all)
        port = procs.start_server(
            "s3",
            lambda p: [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(p)],
            dict(os.environ),
            ready="/moto-api/",
            timeout=120,
        )
        url = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=bucket)
        yield url


@contextlib.contextmanager
def mlflow_server(workdir: Path, backend_uri: str | None = None) -> Iterator[str]:
    """``mlflow server`` on a loopback port (artifacts proxied by the server, into
    ``workdir/server-artifacts``), stopped with its children afterwards; its log is
    ``workdir/mlflow.log``."""
    procs = Processes(workdir)
    backend = backend_uri or f"sqlite:///{workdir / 'server.db'}"
    env = {
        **os.environ,
        **MLFLOW_SERVER_ENV,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    try:
        port = procs.start_server(
            "mlflow",
            lambda p: mlflow_server_cmd(p, backend, str(workdir / "server-artifacts")),
            env,
            # Up once its store answers (the first request opens the database).
            ready="/api/2.0/mlflow/experiments/search?max_results=1",
            timeout=300,
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop_all()
