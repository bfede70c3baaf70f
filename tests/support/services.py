"""Real servers for integration tests: check the machine's services and start them if down,
and start throwaway servers (an S3 endpoint, an MLflow tracking server) on loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

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


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


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
def s3_server(bucket: str = "shopml") -> Iterator[str]:
    """A moto S3 server on a loopback port with one bucket; yields its endpoint URL."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/", proc=proc)
        boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=bucket)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def mlflow_server(workdir: Path, backend_uri: str | None = None) -> Iterator[str]:
    """``mlflow server`` on a loopback port (artifacts proxied by the server)."""
    port = free_port()
    backend = backend_uri or f"sqlite:///{workdir / 'server.db'}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (workdir / "mlflow-server.log").open("w")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(workdir / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=120, proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
