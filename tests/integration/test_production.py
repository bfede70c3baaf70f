"""The production profile, for real, on loopback.

``deploy/production.env`` (the settings compose and Kubernetes use) with its hosts swapped for
servers started here: PostgreSQL (the machine's; fresh databases for MLflow, Prefect and
monitoring, dropped afterwards), Redis (the machine's; a database index of our own, flushed
afterwards), an S3 endpoint (moto), an MLflow tracking server on PostgreSQL that proxies its
artifacts to S3, a Prefect server on PostgreSQL, ``shopml worker``, ``shopml serve``, and
Prometheus with a node exporter as in compose. Then, as an operator would:

``shopml doctor`` -> ``shopml deploy`` -> the pipeline deployment run through the worker
(a tiny simulated shop) -> predictions from the API with features from Redis -> the monitor
deployment -> Prometheus scrapes the API and the monitor's gauges -> a file dropped into the S3
landing prefix is ingested -> ``shopml doctor`` with the MLflow server stopped names it -> the
API restarted while the registry is down answers from its serving cache (``/ready`` degraded,
with the reason), also when pointed at a PostgreSQL registry that cannot be reached.

Every server runs in its own process group and is stopped by a finalizer, also when the test
fails; the test checks that none is left. Servers are waited for by readiness with generous
bounds (the machine may be busy), and the process answering on a port is checked to be the one
started there (``services.Processes.start_server``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import services
from tests.support.services import Processes

# A bound for a hung run, not a timing: 14-18 min were measured here at load 18-25.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
BUCKET = "shopml"
USECASES = ["segments", "pricing"]  # the quickest two that read customer and product features
API_KEY = f"k-{uuid.uuid4().hex}"


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(BIN))
    if path is None:
        pytest.skip(f"{name} is not installed (`make test` fetches it from Debian's package)")
    return path


def _get(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait(what: str, ok: Callable[[], Any], timeout: float, why: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ok()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{why()}")


# -- the profile -------------------------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


COMPOSE_HOSTS = re.compile(r"//(mlflow|redis|postgres|minio|prefect-server)[:/]")


def loopback_profile(hosts: dict[str, str]) -> dict[str, str]:
    """deploy/production.env with each compose host:port (and database) replaced."""
    profile = read_env_file(DEPLOY / "production.env")
    out = {}
    for key, value in profile.items():
        swapped = value
        for old, new in hosts.items():
            swapped = swapped.replace(old, new)
        assert not COMPOSE_HOSTS.search(swapped), f"{key}={swapped}: a host the test did not map"
        out[key] = swapped
    return out


# -- the servers ---------------------------------------------------------------------------------
@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    pytest.importorskip("asyncpg", reason="Prefect's PostgreSQL database needs asyncpg")
    prometheus, node_exporter = _tool("prometheus"), _tool("prometheus-node-exporter")
    import boto3
    import redis

    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    with ExitStack() as stack:
        mlflow_db = stack.enter_context(services.postgres_database())
        prefect_db = stack.enter_context(services.postgres_database())
        monitoring_db = stack.enter_context(services.postgres_database())

        # Redis: a database index nobody uses, claimed with a key, flushed afterwards.
        redis_url = services.ensure_redis()
        index = None
        for i in range(15, 0, -1):
            r = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{i}")
            if r.set("shopml-test:claim", "1", nx=True):
                if r.dbsize() == 1:
                    index = i
                    stack.callback(r.flushdb)
                    break
                r.delete("shopml-test:claim")  # someone else's data is in there
        assert index is not None, "no free Redis database index"
        # Last in, first out: the servers stop before their databases are dropped.
        stack.callback(procs.stop_all)

        aws = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        s3_port = procs.start_server(
            "s3",
            lambda port: [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            dict(os.environ),
            ready="/moto-api/",
            timeout=120,
        )
        s3_url = f"http://127.0.0.1:{s3_port}"
        s3 = boto3.client("s3", endpoint_url=s3_url, **_boto(aws))
        s3.create_bucket(Bucket=BUCKET)

        base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SHOPML_", "PREFECT_", "MLFLOW_", "AWS_", "PROMETHEUS_"))
        }
        base_env["PATH"] = f"{BIN}{os.pathsep}{base_env.get('PATH', '')}"

        # Both servers start at once; MLflow is up once its store answers (the first call
        # creates the schema in PostgreSQL).
        pool = stack.enter_context(ThreadPoolExecutor(2))
        mlflow_started = pool.submit(
            procs.start_server,
            "mlflow",
            lambda port: services.mlflow_server_cmd(
                port, mlflow_db, f"s3://{BUCKET}/mlflow", "--serve-artifacts"
            ),
            {**base_env, **aws, **services.MLFLOW_SERVER_ENV, "MLFLOW_S3_ENDPOINT_URL": s3_url},
            ready="/api/2.0/mlflow/experiments/search?max_results=1",
        )
        prefect_started = pool.submit(
            procs.start_server,
            "prefect-server",
            lambda port: [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            {
                **base_env,
                "PREFECT_HOME": str(tmp_path / "prefect-server-home"),
                "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db.replace(
                    "postgresql+psycopg://", "postgresql+asyncpg://"
                ),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "false",
            },
            ready="/api/health",
        )
        mlflow_port, prefect_port = mlflow_started.result(), prefect_started.result()

        pg = "postgresql://postgres@127.0.0.1:5432"
        profile = loopback_profile(
            {
                "mlflow:5000": f"127.0.0.1:{mlflow_port}",
                "redis:6379/0": f"127.0.0.1:6379/{index}",
                "shopml@postgres:5432/shopml_monitoring": monitoring_db.split("://", 1)[1],
                "minio:9000": f"127.0.0.1:{s3_port}",
                "prefect-server:4200": f"127.0.0.1:{prefect_port}",
            }
        )
        home = tmp_path / "home"
        env = {
            **base_env,
            **profile,
            **aws,
            "SHOPML_HOME": str(home),
            "SHOPML_CONFIG": str(tmp_path / "no-shopml.toml"),
            "SHOPML_API_KEYS": API_KEY,
            "SHOPML_LANDING_POLL_SECONDS": "1",
            "SHOPML_PREDICTION_LOG_FLUSH_SECONDS": "0.2",
            "PREFECT_HOME": str(tmp_path / "prefect-client-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        assert profile["SHOPML_MONITORING_STORE_URI"].startswith(f"{pg}/shopml_test_")
        yield {
            "env": env,
            "procs": procs,
            "s3": s3,
            "home": home,
            "tmp": tmp_path,
            "mlflow": f"http://127.0.0.1:{mlflow_port}",
            "prefect": f"http://127.0.0.1:{prefect_port}/api",
            "monitoring_db": profile["SHOPML_MONITORING_STORE_URI"],
            "redis": profile["SHOPML_ONLINE_STORE_URI"],
            "prometheus": prometheus,
            "node_exporter": node_exporter,
        }


def _boto(aws: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": aws["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"],
        "region_name": aws["AWS_DEFAULT_REGION"],
    }


def shopml(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "shopml"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=env["SHOPML_HOME"].rsplit("/", 1)[0],
    )


# -- Prefect -----------------------------------------------------------------------------------
def _client(api: str) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api)


def _runs(api: str, flow: str) -> list[Any]:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with _client(api) as client:
        return list(client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow]))))


def _run_deployment(api: str, name: str, parameters: dict[str, Any]) -> str:
    with _client(api) as client:
        deployment = client.read_deployment_by_name(name)
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
    return str(run.id)


def _final_state(api: str, run_id: str) -> Any:
    with _client(api) as client:
        run = client.read_flow_run(uuid.UUID(run_id))
    return run.state if run.state and run.state.is_final() else None


def _wait_run(stack: dict[str, Any], run_id: str, what: str, timeout: float) -> None:
    procs = stack["procs"]

    def done() -> Any:
        assert procs.procs["worker"].poll() is None, procs.log("worker")
        return _final_state(stack["prefect"], run_id)

    state = _wait(what, done, timeout, lambda: procs.log("worker"))
    assert state.is_completed(), f"{what}: {state.type} {state.message}\n{procs.log('worker')}"


# -- the test ----------------------------------------------------------------------------------
def test_the_production_profile_end_to_end(stack: dict[str, Any]) -> None:
    env, procs, s3, home = stack["env"], stack["procs"], stack["s3"], stack["home"]
    api = stack["prefect"]

    # 1. The doctor sees every store of the profile, and nothing is wrong.
    # A generous timeout: the first artifact listing makes the server start its S3 client, on a
    # shared machine that can take a while. Step 8 checks that a server down costs seconds.
    doctor = shopml(env, "doctor", "--json", "--timeout", "20")
    report = json.loads(doctor.stdout)
    status = {c["component"]: c for c in report["checks"]}
    assert doctor.returncode == 0 and report["healthy"], doctor.stdout + doctor.stderr
    for name in (
        "settings",
        "mlflow-tracking",
        "mlflow-artifacts",
        "online-store",
        "monitoring-store",
        "landing",
        "batch-scores",
    ):
        assert status[name]["status"] == "ok", status[name]
    assert status["prefect"]["status"] == "warn"  # the work pool comes with `shopml deploy`
    assert "proxied" in status["mlflow-artifacts"]["target"]
    assert status["online-store"]["detail"].startswith("Redis ")

    # 2. Deployments, and the worker that runs them.
    deployed = shopml(
        env, "deploy", "--trials", "0", "--timeout", "2", "--json",
        *[a for uc in USECASES for a in ("--usecase", uc)],
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert {d["name"] for d in json.loads(deployed.stdout)} == {
        "pipeline/shopml",
        "retrain/shopml",
        "monitor/shopml",
        "ingest/shopml",
    }
    procs.start("worker", [str(BIN / "shopml"), "worker"], env)

    # 3. The pipeline deployment on a tiny simulated shop, run by the worker.
    run = _run_deployment(api, "pipeline/shopml", {"source": "simulate", "customers": 300})
    _wait_run(stack, run, "pipeline run", 600)

    from mlflow import MlflowClient

    procs.check("mlflow")  # a server that died says so, with its log
    mlflow = MlflowClient(stack["mlflow"], registry_uri=stack["mlflow"])
    for uc in USECASES:
        champion = mlflow.get_model_version_by_alias(f"shopml-{uc}", "champion")
        assert champion.source.startswith(("models:/", "mlflow-artifacts:")), champion.source
    stored = s3.list_objects_v2(Bucket=BUCKET, Prefix="mlflow/")
    assert stored.get("KeyCount", 0) > 0, "the tracking server put no artifact in S3"
    scores = {
        o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="scores/").get("Contents", [])
    }
    assert scores == {f"scores/{uc}.parquet" for uc in USECASES}
    import redis

    online = redis.Redis.from_url(stack["redis"])
    assert online.hget("shopml:online:customers", "rows") is not None

    # 4. The API, answering from the registry on the server and features in Redis.
    port = procs.start_server(
        "api",
        lambda port: [str(BIN / "shopml"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        ready="/health",
        timeout=300,
    )
    base = f"http://127.0.0.1:{port}"
    _wait("API ready", lambda: _ready(base), 120, lambda: procs.log("api"))
    import io

    import pandas as pd

    body = s3.get_object(Bucket=BUCKET, Key="scores/segments.parquet")["Body"].read()
    customers = pd.read_parquet(io.BytesIO(body))["customer_id"].astype(str).tolist()[:5]
    for customer in customers:
        code, answer = _post(f"{base}/v1/segments/predict", {"customer_id": customer}, API_KEY)
        assert code == 200, answer
        assert answer["feature_age_seconds"] is not None  # looked up in the online store
    code, answer = _post(f"{base}/v1/segments/predict", {"customer_id": "nobody"}, API_KEY)
    assert code == 404, answer
    code, _ = _post(f"{base}/v1/segments/predict", {"customer_id": customers[0]}, "wrong")
    assert code == 401

    # 5. The monitor deployment: checks into PostgreSQL, gauges for the node exporter.
    run = _run_deployment(api, "monitor/shopml", {})
    _wait_run(stack, run, "monitor run", 300)
    import psycopg

    with psycopg.connect(stack["monitoring_db"]) as con:
        logged = con.execute(
            "SELECT count(*) FROM prediction_log WHERE usecase = 'segments'"
        ).fetchone()
        checks = con.execute("SELECT count(DISTINCT usecase) FROM monitor_metrics").fetchone()
    assert logged and logged[0] >= len(customers)
    assert checks and checks[0] >= 1
    gauges = home / "reports" / "monitoring" / "metrics.prom"
    assert "shopml_monitor_last_check_timestamp_seconds" in gauges.read_text()

    # 6. Prometheus scrapes the API and the node exporter with deploy/'s own configuration.
    query = _prometheus(stack, port, gauges.parent)
    counted = query('sum by (job) (shopml_requests_total{route="/v1/segments/predict"})')
    assert [r["metric"]["job"] for r in counted] == ["shopml"], counted
    assert float(counted[0]["value"][1]) >= len(customers) + 2
    # The API serves the monitor's gauges too: wait for the node exporter's own series.
    monitored = query('shopml_monitor_last_check_timestamp_seconds{job="shopml-monitor"}')
    assert {r["metric"]["usecase"] for r in monitored} >= {"segments"}, monitored
    # Both targets scraped and up (each job's first scrape may come a few seconds apart).
    up = query('up{job=~"shopml|shopml-monitor"} == 1', lambda rs: len(rs) == 2)
    assert {r["metric"]["job"] for r in up} == {"shopml", "shopml-monitor"}, up

    # 7. A shop's export dropped into the S3 landing prefix (CDNOW's layout, 120 customers):
    #    claimed, imported, then the pipeline on the new data.
    key = "landing/cdnow/orders.txt"
    s3.put_object(Bucket=BUCKET, Key=key, Body=cdnow_text(120).encode())
    ingests = _wait(
        "ingest run triggered by the landed file",
        lambda: _runs(api, "ingest"),
        120,
        lambda: procs.log("worker"),
    )
    assert len(ingests) == 1
    _wait_run(stack, str(ingests[0].id), "ingest run", 600)
    assert not s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount")
    pipelines = _runs(api, "pipeline")
    assert len(pipelines) == 2 and all(r.state.is_completed() for r in pipelines)

    # 8. One component down: the doctor names it and fails. (A refused connection fails at
    # once; the timeout is generous for the servers still up on a busy machine.)
    procs.stop("mlflow")
    down = shopml(env, "doctor", "--json", "--timeout", "20")
    assert down.returncode == 1, down.stdout + down.stderr
    verdict = {c["component"]: c["status"] for c in json.loads(down.stdout)["checks"]}
    assert verdict.pop("mlflow-tracking") == "fail" and verdict.pop("mlflow-artifacts") == "fail"
    assert "fail" not in verdict.values(), down.stdout
    text = shopml(env, "doctor", "--timeout", "20")
    (stack["tmp"] / "logs" / "doctor.txt").write_text(text.stdout)
    lines = text.stdout.splitlines()
    assert text.returncode == 1 and len(lines) == len(verdict) + 3
    assert lines[-1].startswith(
        "8 of 10 components usable; failing: mlflow-tracking, mlflow-artifacts"
    )

    # 9. The registry down, the service restarted: it answers with the champions in its
    #    serving cache, and /ready says degraded and why.
    models = _get(f"{base}/ready", timeout=30)["models"]  # every use case: None if untrained
    served = {uc: v for uc, v in models.items() if v is not None}
    assert set(served) == set(USECASES), models
    body = s3.get_object(Bucket=BUCKET, Key="scores/segments.parquet")["Body"].read()
    latest = pd.read_parquet(io.BytesIO(body))["customer_id"].astype(str).tolist()[:3]

    def restart_api(extra: dict[str, str]) -> tuple[str, dict[str, Any]]:
        procs.stop("api")
        port = procs.start_server(
            "api",
            lambda p: [str(BIN / "shopml"), "serve", "--host", "127.0.0.1", "--port", str(p)],
            {**env, **extra},
            ready="/health",
            timeout=300,
        )
        url = f"http://127.0.0.1:{port}"
        _wait("API ready from its cache", lambda: _ready(url), 120, lambda: procs.log("api"))
        ready = _get(f"{url}/ready", timeout=30)
        assert ready["status"] == "degraded" and ready["registry"]["ok"] is False, ready
        assert ready["models"] == models, ready
        for customer in latest:
            code, answer = _post(f"{url}/v1/segments/predict", {"customer_id": customer}, API_KEY)
            assert code == 200 and answer["model_version"] == served["segments"], answer
        return url, ready

    _, ready = restart_api({})
    cached = ", ".join(f"{uc} v{served[uc]}" for uc in sorted(served))
    assert ready["problems"][0].startswith("registry unreachable: "), ready
    assert ready["problems"][0].endswith(f"serving cached champions: {cached}"), ready

    #    A PostgreSQL registry that cannot be reached: refused by a quick probe, not after
    #    MLflow's two minutes of retries; the start waits for it SHOPML_REGISTRY_START_SECONDS
    #    at most either way.
    closed = services.free_port()
    _, ready = restart_api(
        {
            "SHOPML_MLFLOW_TRACKING_URI": f"postgresql+psycopg://shopml@127.0.0.1:{closed}/mlflow",
            "SHOPML_REGISTRY_START_SECONDS": "10",
        }
    )
    assert f"postgresql registry at 127.0.0.1:{closed}" in ready["problems"][0], ready

    # Everything stops, and nothing is left running.
    procs.stop_all()
    assert procs.alive() == []
    from shopml.data.warehouse import Warehouse

    with Warehouse(home / "warehouse.duckdb", read_only=True) as wh:
        assert wh.get_meta("source") == "cdnow"
        assert wh.sql("SELECT count(*) AS n FROM customers")["n"][0] == 120


def cdnow_text(customers: int, seed: int = 5) -> str:
    """A CDNOW sample-layout export (id, id, date, CDs, dollars) over 18 months."""
    from datetime import date, timedelta

    import numpy as np

    rng = np.random.default_rng(seed)
    start, lines = date(1997, 1, 1), []
    for c in range(1, customers + 1):
        for day in sorted(rng.integers(0, 545, size=int(rng.integers(2, 9)))):
            when = start + timedelta(days=int(day))
            cds = int(rng.integers(1, 5))
            lines.append(f" {c:05d} {c:04d} {when:%Y%m%d}  {cds}   {cds * rng.uniform(9, 16):.2f}")
    return "\n".join(lines) + "\n"


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/ready", timeout=5) as resp:
            return resp.status == 200
    except Exception:
        return False


def _prometheus(stack: dict[str, Any], api_port: int, textfiles: Path) -> Callable[..., list]:
    """Start the node exporter (as compose runs it) and Prometheus with
    deploy/prometheus/prometheus.yml pointed at loopback; returns a query function that waits
    for an answer."""
    procs, tmp = stack["procs"], stack["tmp"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())

    def node_flags(port: int) -> list[str]:
        return [
            f"--web.listen-address=127.0.0.1:{port}"
            if f.startswith("--web.listen-address")
            else f"--collector.textfile.directory={textfiles}"
            if f.startswith("--collector.textfile.directory")
            else f
            for f in compose["services"]["node-exporter"]["command"]
        ]

    node_port = procs.start_server(
        "node-exporter",
        lambda port: [stack["node_exporter"], *node_flags(port)],
        stack["env"],
        ready="/metrics",
        timeout=120,
    )

    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {"shopml": f"127.0.0.1:{api_port}", "shopml-monitor": f"127.0.0.1:{node_port}"}
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    for job in config["scrape_configs"]:
        job["scrape_interval"] = "1s"
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    folder = tmp / "prometheus"
    folder.mkdir()
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", folder / "alerts.yml")
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = procs.start_server(
        "prometheus",
        lambda port: [
            stack["prometheus"],
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stack["env"],
        ready="/-/ready",
        timeout=120,
    )
    url = f"http://127.0.0.1:{port}"

    def query(expr: str, enough: Callable[[list], bool] = bool) -> list:
        """The answer to ``expr`` once it is ``enough`` (default: not empty)."""

        def answer() -> list:
            q = urllib.parse.urlencode({"query": expr})
            result = list(_get(f"{url}/api/v1/query?{q}")["data"]["result"])
            return result if enough(result) else []

        return list(_wait(f"Prometheus: {expr}", answer, 120, lambda: procs.log("prometheus")))

    return query
