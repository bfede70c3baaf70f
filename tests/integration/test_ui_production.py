"""The control tower on the production profile: the registry on an MLflow tracking server, the
flows on a Prefect server (both processes on loopback), the monitoring store and the prediction
log on PostgreSQL (the machine's, database ``test``, a schema of this test's own, dropped
afterwards).

A tiny simulated shop; ``returns`` trained by the tower's own retrain job (the ``retrain`` flow
run on the Prefect server, the model on the MLflow server); the API with the tower mounted
answers scoring requests (their log goes to PostgreSQL); two monitoring checks are stored in
PostgreSQL as ``shopml monitor`` stores them. Then every section of the overview and of the use
case's page shows data, and its links point at the servers, where the run and the flow run are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import services
from tests.support.services import Processes
from tests.support.tower import write_history

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

USECASE = "returns"
SCORE, ADMIN = f"s-{uuid.uuid4().hex}", f"a-{uuid.uuid4().hex}"
HTML = {"accept": "text/html"}
REQUESTS = 12


@pytest.fixture(scope="module")
def monitoring_uri() -> Iterator[str]:
    """A schema of our own in the machine's database ``test`` (its tables made there by the
    store, through the connection's search path), dropped with them afterwards."""
    import psycopg

    services.ensure_postgres()  # skips, saying why, when PostgreSQL is down
    schema = f"shopml_ui_{uuid.uuid4().hex[:10]}"
    conninfo = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as con:
            con.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL's database test is not reachable: {exc}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An MLflow tracking server and a Prefect server, stopped (with their children) after."""
    logs = tmp_path_factory.mktemp("tower-servers")
    procs = Processes(logs)
    try:
        mlflow_port = procs.start_server(
            "mlflow",
            lambda p: services.mlflow_server_cmd(
                p, f"sqlite:///{logs / 'mlflow.db'}", str(logs / "artifacts")
            ),
            {
                **os.environ,
                **services.MLFLOW_SERVER_ENV,
                "PATH": f"{services.BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            ready="/api/2.0/mlflow/experiments/search?max_results=1",
        )
        prefect_port = procs.start_server(
            "prefect",
            lambda p: [
                str(services.BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(p),
            ],
            {
                **os.environ,
                "PREFECT_HOME": str(logs / "prefect-server-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "false",
                "PREFECT_API_URL": "",
            },
            ready="/api/health",
        )
        yield {
            "mlflow": f"http://127.0.0.1:{mlflow_port}",
            "prefect": f"http://127.0.0.1:{prefect_port}",
            "logs": str(logs),
        }
    finally:
        procs.stop_all()
        assert procs.alive() == [], f"servers left running: {procs.alive()}"


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _train(home: Path, servers: dict[str, str], monitoring_uri: str) -> dict[str, Any]:
    """``returns`` trained by the tower's retrain job (the ``retrain`` flow, on the servers)."""
    env = {
        **os.environ,
        "SHOPML_HOME": str(home),
        "SHOPML_MLFLOW_TRACKING_URI": servers["mlflow"],
        "SHOPML_MONITORING_STORE_URI": monitoring_uri,
        "PREFECT_API_URL": f"{servers['prefect']}/api",
        "PREFECT_HOME": str(home / "prefect-client"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "shopml.ui.retrain", USECASE, "--trials", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "promoted", outcome
    return outcome


def test_the_tower_on_the_production_profile(
    servers: dict[str, str],
    monitoring_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi.testclient import TestClient

    from shopml.api import create_app
    from shopml.data.simulator import SimConfig, simulate
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.tracking import FLOW_RUN_TAG, configure
    from shopml.monitoring.store import MonitoringStore
    from shopml.settings import Settings

    home = tmp_path / "home"
    home.mkdir()
    wh = Warehouse(home / "warehouse.duckdb")
    simulate(SimConfig(customers=600, days=600, seed=11)).load(wh)
    wh.close()
    outcome = _train(home, servers, monitoring_uri)
    version = str(outcome["version"])

    # The tower reads Prefect's address where production sets it (PREFECT_API_URL).
    monkeypatch.setenv("PREFECT_API_URL", f"{servers['prefect']}/api")
    settings = Settings(
        home=home,
        mlflow_tracking_uri=servers["mlflow"],
        monitoring_store_uri=monitoring_uri,
        api_keys=[SCORE],
        admin_keys=[ADMIN],
        serve_ui=True,
        registry_poll_seconds=0.5,
        prediction_log_flush_seconds=0.05,
    )
    bearer = {"authorization": f"Bearer {SCORE}"}
    app = create_app(settings, usecases=[USECASE])
    with TestClient(app) as client:
        ready = client.get("/ready", headers=bearer)
        assert str(ready.json()["models"][USECASE]) == version, ready.text
        for i in range(REQUESTS):
            r = client.post(
                f"/v1/{USECASE}/predict",
                json={"features": {"unit_price": 5.0 + i, "delivery_delay_days": i % 4}},
                headers=bearer,
            )
            assert r.status_code == 200, r.text
        # The prediction log reaches PostgreSQL (written by the service's own writer thread).
        store = MonitoringStore(monitoring_uri, home)
        deadline = time.monotonic() + 120
        while store.count_predictions(USECASE) < REQUESTS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.count_predictions(USECASE) == REQUESTS
        assert store.kind == "postgres"
        store.close()
        write_history(home, USECASE, monitoring_uri, version)

        # The overview: every column has a figure.
        rows = client.get("/ui/?format=json", headers=bearer).json()
        assert [r["usecase"] for r in rows] == [USECASE]
        row = rows[0]
        assert row["status"] == "alert" and row["status_reasons"]
        assert row["champion"]["version"] == version
        assert row["live"]["value"] == pytest.approx(0.63) and row["live"]["n"] == 320
        assert row["test"]["value"] is not None and row["test"]["low"] is not None
        assert row["baseline"]["value"] is not None
        assert row["oracle"]["value"] == pytest.approx(0.8) and row["oracle_source"] == "live"
        assert row["traffic_7d"] == REQUESTS
        assert row["latency"]["requests"] >= REQUESTS and row["latency"]["p50_ms"] > 0
        assert row["last_check"] is not None
        assert row["last_retrain"]["version"] == version
        assert row["last_retrain"]["verdict"] == "promoted"
        overview = client.get("/ui/", headers={**bearer, **HTML})
        assert overview.status_code == 200
        assert f'<tr data-usecase="{USECASE}">' in overview.text

        # The use case's page: every section has data.
        page = client.get(f"/ui/u/{USECASE}", headers={**bearer, **HTML})
        assert page.status_code == 200, page.text
        html = page.text
        script = html.split('<script type="application/json" id="charts">')[1]
        charts = json.loads(script.split("</script>")[0])
        assert {f["feature"] for f in charts["drift_features"]} == {"price", "freight"}
        assert all(len(points) == 2 for points in charts["drift_series"].values())
        assert set(charts["drift_series"]) == {
            "share of watched features drifted",
            "prediction drift score",
        }
        assert set(charts["performance_series"]) == {"live", "at test", "oracle"}
        assert all(len(p) == 2 for p in charts["performance_series"].values())
        for plot in ("chart-drift-features", "chart-drift-time", "chart-performance"):
            assert f'data-testid="{plot}"' in html, plot
        history = html.split('data-testid="gate-history"')[1].split("</table>")[0]
        assert f'data-version="{version}"' in history and "v-promoted" in history
        alerts = html.split('data-testid="alerts"')[1].split("</table>")[0]
        assert alerts.count("<tr>") == 2  # the head and the one alert
        assert 'data-testid="rollout-card"' in html and "The champion answers every" in html
        assert 'data-testid="checks"' in html

        # The links point at the servers, where the run and the flow run are.
        mlflow_client = configure(settings)
        mv = mlflow_client.get_model_version(f"shopml-{USECASE}", version)
        run_link = _href(html, "link-mlflow")
        assert run_link.startswith(f"{servers['mlflow']}/#/experiments/")
        assert run_link.endswith(f"/runs/{mv.run_id}")
        run = _get_json(f"{servers['mlflow']}/api/2.0/mlflow/runs/get?run_id={mv.run_id}")
        assert run["run"]["info"]["status"] == "FINISHED"
        flow_run = mlflow_client.get_run(mv.run_id).data.tags[FLOW_RUN_TAG]
        assert _href(html, "link-prefect") == f"{servers['prefect']}/runs/flow-run/{flow_run}"
        found = _get_json(f"{servers['prefect']}/api/flow_runs/{flow_run}")
        assert found["state_type"] == "COMPLETED", found
        report = _href(html, "link-evidently")
        answer = client.get(report.removeprefix("http://testserver"), headers=bearer)
        assert answer.status_code == 200 and "freight" in answer.text  # a compared column
        assert answer.headers["content-security-policy"].startswith("sandbox")


def _href(html: str, testid: str) -> str:
    """The href of the link with ``data-testid=testid`` (Jinja escapes & as &amp;)."""
    marker = f'data-testid="{testid}" href="'
    assert marker in html, f"no {testid} link on the page"
    return html.split(marker)[1].split('"', maxsplit=1)[0].replace("&amp;", "&")
