"""Auth, hot swap under load, registry outage, the prediction log, batch scoring, slim imports
and the serving Dockerfile."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shopml.serving.models import MlflowSource, VersionInfo
from tests.unit.serving.conftest import SERVED, a_customer, registry_client, serving_settings

ROOT = Path(__file__).resolve().parents[3]
SCORE_KEY, ADMIN_KEY = "score-key-4c1f9a", "admin-key-77d2e0"


def test_auth_scopes_and_keys_never_logged(
    client_factory: Any, served_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_factory(api_keys=[SCORE_KEY], admin_keys=[ADMIN_KEY])
    body = {"customer_id": a_customer(served_home)}
    assert client.post("/v1/clv/predict", json=body).status_code == 401
    r = client.post("/v1/clv/predict", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "wrong" not in r.text
    ok = {"Authorization": f"Bearer {SCORE_KEY}"}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert client.post("/v1/clv/predict", json=body, headers=ok).status_code == 200
    assert client.post("/v1/clv/predict", json=body, headers=admin).status_code == 200
    assert client.get("/v1/models").status_code == 401
    assert client.post("/v1/admin/reload").status_code == 401
    assert client.post("/v1/admin/reload", headers=ok).status_code == 403
    reload = client.post("/v1/admin/reload", headers=admin)
    assert reload.status_code == 200 and reload.json()["registry_ok"] is True
    assert client.get("/health").status_code == 200  # liveness needs no key
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert SCORE_KEY not in logged and ADMIN_KEY not in logged


def test_refuses_to_run_open_outside_development(served_home: Path) -> None:
    from shopml.serving import ServingConfigError, create_app

    with pytest.raises(ServingConfigError, match="SHOPML_API_KEYS"):
        create_app(serving_settings(served_home, env="production"), usecases=SERVED)
    create_app(
        serving_settings(served_home, env="production", api_keys=[SCORE_KEY]), usecases=SERVED
    )


def test_hot_swap_under_concurrent_requests(client: Any, served_home: Path) -> None:

    settings = serving_settings(served_home)
    mlc = registry_client(settings.home)
    name = "shopml-segments"
    v1 = mlc.get_model_version_by_alias(name, "champion")
    # A new version of the same model (a retrain would do the same, slower).
    v2 = mlc.create_model_version(name, v1.source, run_id=v1.run_id)
    cid = a_customer(served_home)
    errors: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            r = client.post("/v1/segments/predict", json={"customer_id": cid})
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")
            else:
                versions.append(r.json()["model_version"])

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(0.5)
        mlc.set_registered_model_alias(name, "champion", str(v2.version))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not versions or versions[-1] != str(v2.version)):
            time.sleep(0.1)
        time.sleep(0.3)
        # Read before the alias moves back (the poller would follow it within 0.2 s).
        text = client.get("/metrics").text
    finally:
        stop.set()
        thread.join()
        mlc.set_registered_model_alias(name, "champion", str(v1.version))
    assert not errors, errors[:3]
    assert versions[0] == str(v1.version) and versions[-1] == str(v2.version)
    assert len(versions) > 20
    info = 'shopml_model_version_info{{usecase="segments",version="{}"}} 1.0'
    assert info.format(v2.version) in text
    # The alias moved back: so does the info metric.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and info.format(v1.version) not in text:
        time.sleep(0.1)
        text = client.get("/metrics").text
    assert info.format(v1.version) in text and info.format(v2.version) not in text


class FlakySource:
    """The real registry, which can be switched off."""

    def __init__(self, inner: MlflowSource) -> None:
        self.inner = inner
        self.down = False

    def alias_version(self, usecase: str, alias: str) -> VersionInfo | None:
        if self.down:
            raise ConnectionError("registry at 127.0.0.1:5000 refused the connection")
        return self.inner.alias_version(usecase, alias)

    def load(self, usecase: str, version: str) -> Any:
        return self.inner.load(usecase, version)


def test_registry_outage_keeps_serving_and_ready_says_so(
    client_factory: Any, served_home: Path
) -> None:
    flaky: list[FlakySource] = []

    def factory() -> FlakySource:
        flaky.append(FlakySource(MlflowSource(serving_settings(served_home))))
        return flaky[-1]

    client = client_factory({"source_factory": factory})
    assert client.get("/ready").json()["status"] == "ready"
    flaky[0].down = True
    time.sleep(0.6)  # a few polls
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded" and ready.json()["registry"]["ok"] is False
    assert "registry unreachable" in ready.json()["problems"][0]
    r = client.post("/v1/clv/predict", json={"customer_id": a_customer(served_home)})
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    assert "shopml_registry_up 0.0" in client.get("/metrics").text
    flaky[0].down = False
    time.sleep(0.6)
    assert client.get("/ready").json()["status"] == "ready"


def test_prediction_log_is_batched_and_flushed_on_shutdown(
    client_factory: Any, served_home: Path, tmp_path: Path
) -> None:
    db = tmp_path / "monitoring.sqlite"
    client = client_factory(
        monitoring_store_uri=f"sqlite:///{db}",
        prediction_log_flush_seconds=3600,
        prediction_log_batch=10_000,
    )
    cid = a_customer(served_home)
    for _ in range(25):
        assert client.post("/v1/clv/predict", json={"customer_id": cid}).status_code == 200
    client.post("/v1/segments/predict", json={"instances": [{"customer_id": cid}] * 3})
    client.post("/v1/recommender/recommend", json={"customer_id": cid, "k": 3})
    # Queued, not written: the requests did no I/O for it.
    assert client.get("/ready").json()["prediction_log"]["pending"] == 29
    client.__exit__(None, None, None)  # graceful shutdown drains the queue
    con = sqlite3.connect(db)
    rows = con.execute("SELECT usecase, count(*) FROM prediction_log GROUP BY 1").fetchall()
    one = con.execute(
        "SELECT request_id, ts, entity_key, entity_id, features, output, "
        "model_version FROM prediction_log WHERE usecase = 'clv' LIMIT 1"
    ).fetchone()
    con.close()
    assert dict(rows) == {"clv": 25, "segments": 3, "recommender": 1}
    assert one[2:4] == ("customer_id", cid) and one[6] == "1"
    assert '"recency_days"' in one[4] and "predicted_spend_90d" in one[5]


def test_batch_score_matches_the_service(client: Any, served_home: Path, tmp_path: Path) -> None:
    import duckdb
    import pandas as pd

    from shopml.serving.batch import score_batch

    con = duckdb.connect(str(served_home / "warehouse.duckdb"), read_only=True)
    ids = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT customer_id FROM orders ORDER BY 1 LIMIT 40"
        ).fetchall()
    ]
    con.close()
    src = tmp_path / "customers.csv"
    pd.DataFrame({"customer_id": ids}).to_csv(src, index=False)
    out = tmp_path / "clv.parquet"
    seen: list[int] = []
    result = score_batch(
        serving_settings(served_home),
        "clv",
        str(out),
        input_path=str(src),
        chunk_rows=15,
        progress=lambda done, total: seen.append(done),
    )
    assert result.rows == 40 and seen == [15, 30, 40]
    scored = pd.read_parquet(out)
    assert list(scored.columns) == [
        "customer_id",
        "predicted_spend_90d",
        "expected_spend_90d",
        "model_version",
    ]
    served = client.post("/v1/clv/predict", json={"customer_id": ids[0]}).json()["prediction"]
    assert scored.iloc[0]["predicted_spend_90d"] == pytest.approx(served["predicted_spend_90d"])


def test_score_command(served_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPML_HOME", str(served_home))
    out = tmp_path / "rec.csv"
    proc = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [
            sys.executable,
            "-m",
            "shopml.cli",
            "score",
            "recommender",
            "--table",
            "customers",
            "--output",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**__import__("os").environ, "SHOPML_HOME": str(served_home)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import pandas as pd

    scored = pd.read_csv(out)
    assert list(scored.columns) == ["customer_id", "recommendations", "model_version"]
    assert len(scored) > 100 and scored["recommendations"].str.count(",").min() >= 1
    bad = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [
            sys.executable,
            "-m",
            "shopml.cli",
            "score",
            "clv",
            "--input",
            "nope.csv",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "nope.csv" in bad.stderr


FORBIDDEN = (
    "shopml.lifecycle",
    "shopml.flows",
    "shopml.monitoring",
    "optuna",
    "prefect",
    "evidently",
    "sklearn",
    "implicit",
    "pymc",
    "pymc_marketing",
    "mlflow",
)


def test_serving_imports_are_slim() -> None:
    code = (
        "import sys\n"
        "from shopml.serving import create_app\n"
        "create_app()\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} "
        f"or any(m.startswith(p + '.') or m == p for p in {FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ""


def test_serves_without_training_libraries(served_home: Path) -> None:
    """Models load and score with sklearn, optuna, prefect and friends made unimportable, as
    in the slim image."""
    code = f"""
import importlib.abc, sys
BLOCKED = {("sklearn", "optuna", "prefect", "evidently", "implicit", "pymc", "pymc_marketing")!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'{{name}} is not in the serving image')
        return None
sys.meta_path.insert(0, Block())
from fastapi.testclient import TestClient
from shopml.serving import create_app
from shopml.settings import Settings
app = create_app(Settings(home={str(served_home)!r}), usecases={SERVED!r})
with TestClient(app) as c:
    r = c.post('/v1/segments/predict', json={{'features': {{'recency_days': 3.0}}}})
    assert r.status_code == 200, r.text
    r = c.post('/v1/returns/predict', json={{'features': {{'unit_price': 3.0}}}})
    assert r.status_code == 200, r.text
    assert c.get('/ready').json()['status'] == 'ready', c.get('/ready').text
print('ok')
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_serving_dockerfile_is_consistent() -> None:
    import re
    import tomllib

    text = (ROOT / "deploy" / "Dockerfile.serve").read_text()
    for src in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"COPY {part}: no such file"
    assert re.search(r"^USER\s+(?!root)\S+", text, re.M), "the image must not run as root"
    expose = re.search(r"^EXPOSE\s+(\d+)", text, re.M)
    assert expose is not None
    assert f'--port", "{expose.group(1)}"' in text or f"--port {expose.group(1)}" in text
    assert ".[serve]" in text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "serve" in extras
    from shopml.settings import Settings

    for var in re.findall(r"\b(SHOPML_[A-Z_]+)=", text):
        field = var.removeprefix("SHOPML_").lower()
        assert field in Settings.model_fields, f"{var} is not a setting"
