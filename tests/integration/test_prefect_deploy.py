"""Deployments, schedules and the landing trigger against a real Prefect server.

Starts ``prefect server start`` on a loopback port with its database in a fresh PostgreSQL
database, runs ``shopml deploy`` and ``shopml worker``, drops a small CDNOW-format file into the
landing folder, and waits for the triggered ingest run and the pipeline it starts to complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.support import services

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent


def cdnow_file(path: Path, customers: int = 250, seed: int = 3) -> Path:
    """A CDNOW sample-layout file: id, id, date, CDs, dollars; 18 months of purchases."""
    rng = np.random.default_rng(seed)
    start = date(1997, 1, 1)
    lines = []
    for c in range(1, customers + 1):
        n = int(rng.integers(1, 9))
        for day in sorted(rng.integers(0, 545, size=n)):
            cds = int(rng.integers(1, 5))
            dollars = round(cds * float(rng.uniform(9, 16)), 2)
            when = start + timedelta(days=int(day))
            lines.append(f" {c:05d} {c:04d} {when:%Y%m%d}  {cds}   {dollars:.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    pytest.importorskip("asyncpg", reason="Prefect's PostgreSQL database needs asyncpg")
    with services.postgres_database() as url:
        db = url.replace("postgresql+psycopg://", "postgresql+asyncpg://")
        port = services.free_port()
        env = {
            **os.environ,
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_API_DATABASE_CONNECTION_URL": db,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_API_URL": "",
        }
        log = (tmp_path / "prefect-server.log").open("w")
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        services.tie_to_this_process(proc)
        api = f"http://127.0.0.1:{port}/api"
        try:
            services.wait_http(f"{api}/health", timeout=180, proc=proc)
            yield api
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


def _runs(api: str, flow_name: str) -> list[tuple[str, str | None]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return [
        (r.state_type.value if r.state_type else "", r.parent_task_run_id and "sub") for r in runs
    ]


def test_deploy_worker_and_landing_trigger(
    prefect_server: str, tmp_path: Path, shopml_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "SHOPML_HOME": str(shopml_home),
        "SHOPML_LANDING_POLL_SECONDS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    deployed = subprocess.run(
        [str(BIN / "shopml"), "deploy", "--trials", "0", "--timeout", "5", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "ingest/shopml" in deployed.stdout and "0 3 * * *" in deployed.stdout

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            monitor = client.read_deployment_by_name("monitor/shopml")
            assert [s.schedule.cron for s in monitor.schedules] == ["0 * * * *"]
            pool = client.read_work_pool("shopml")
            assert pool.type == "process" and pool.concurrency_limit == 1

    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [str(BIN / "shopml"), "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    services.tie_to_this_process(worker)
    try:
        landing = shopml_home / "landing" / "cdnow"
        landing.mkdir(parents=True)
        # Written aside, then renamed in: the watcher never sees half a file.
        staged = cdnow_file(tmp_path / "week.txt")
        staged.rename(landing / "week.txt")

        deadline = time.monotonic() + 720
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            while time.monotonic() < deadline:
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                ingests = _runs(prefect_server, "ingest")
                pipelines = _runs(prefect_server, "pipeline")
                if any(s in ("FAILED", "CRASHED") for s, _ in ingests + pipelines):
                    break
                if [s for s, _ in ingests] == ["COMPLETED"] and [s for s, _ in pipelines] == [
                    "COMPLETED"
                ]:
                    break
                time.sleep(2)
        assert [s for s, _ in ingests] == ["COMPLETED"], (
            ingests,
            (tmp_path / "worker.log").read_text()[-4000:],
        )
        assert pipelines == [("COMPLETED", "sub")]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()

    # The file was claimed once, and the warehouse holds its data.
    assert not list(landing.iterdir())
    processed = list((shopml_home / "landing" / "processed" / "cdnow").iterdir())
    assert len(processed) == 1 and processed[0].name.endswith("-week.txt")
    from shopml.data.warehouse import Warehouse

    with Warehouse(shopml_home / "warehouse.duckdb", read_only=True) as wh:
        assert wh.get_meta("source") == "cdnow"
        assert wh.sql("SELECT count(DISTINCT customer_id) AS n FROM orders")["n"][0] == 250
    assert (shopml_home / "reports" / "monitoring" / "latest.json").exists()
