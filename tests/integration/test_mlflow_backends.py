"""The same lifecycle code against the MLflow set-ups shopml supports beside the embedded store
(SQLite and local files, which the lifecycle unit tests run on): a PostgreSQL backend store, an
S3 artifact store (moto on loopback) and a tracking server over HTTP. Each trains, registers,
gates and loads the champion back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shopml.lifecycle import registry
from shopml.lifecycle.tracking import configure, model_name
from shopml.lifecycle.train import TrainConfig, train_usecase
from shopml.runtime.pyfunc import load_scorer
from shopml.settings import get_settings, reset_settings
from tests.support import services
from tests.support.toy import ToyUseCase, toy_warehouse

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CONFIG = TrainConfig(trials=0, timeout_s=5)


def _exercise(tmp_path: Path) -> None:
    settings = get_settings()
    with toy_warehouse(tmp_path / "toy.duckdb") as wh:
        first = train_usecase(ToyUseCase(strength=0.7), wh, settings, CONFIG)
        assert first.status == "promoted", first.reason
        second = train_usecase(ToyUseCase(strength=0.0), wh, settings, CONFIG)
        assert second.status == "challenger", second.reason
    client = configure(settings)
    summary = registry.describe(client, "toy")
    assert summary.champion is not None and summary.champion.version == first.version
    assert summary.challenger is not None and summary.challenger.version == second.version
    scorer = load_scorer(f"models:/{model_name('toy')}@champion")
    assert scorer.features == ["x_signal", "x_noise"]


@pytest.fixture
def configure_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    yield monkeypatch
    reset_settings()


def test_postgresql_backend_store(tmp_path: Path, configure_env: pytest.MonkeyPatch) -> None:
    with services.postgres_database() as url:
        configure_env.setenv("SHOPML_MLFLOW_TRACKING_URI", url)
        reset_settings()
        _exercise(tmp_path)
        import psycopg

        dbname = url.rsplit("/", 1)[1]
        with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={dbname}") as con:
            n = con.execute("SELECT count(*) FROM model_versions").fetchone()
        assert n is not None and n[0] == 2


def test_s3_artifact_store(tmp_path: Path, configure_env: pytest.MonkeyPatch) -> None:
    import boto3

    with services.s3_server("shopml-artifacts") as endpoint:
        configure_env.setenv("SHOPML_S3_ENDPOINT_URL", endpoint)
        configure_env.setenv("SHOPML_MLFLOW_ARTIFACT_ROOT", "s3://shopml-artifacts/mlflow")
        configure_env.setenv("AWS_ACCESS_KEY_ID", "testing")
        configure_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        configure_env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        reset_settings()
        _exercise(tmp_path)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="shopml-artifacts")["Contents"]]
        assert any(k.endswith("scorer.pkl") for k in keys)
        assert not any((get_settings().home / "mlartifacts").rglob("scorer.pkl"))


def test_tracking_server_over_http(tmp_path: Path, configure_env: pytest.MonkeyPatch) -> None:
    with services.mlflow_server(tmp_path) as url:
        configure_env.setenv("SHOPML_MLFLOW_TRACKING_URI", url)
        reset_settings()
        _exercise(tmp_path)
        assert any((tmp_path / "server-artifacts").rglob("scorer.pkl")), (
            "artifacts must go through the server"
        )
