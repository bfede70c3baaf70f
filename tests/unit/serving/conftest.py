"""Shared fixtures for the serving tests: one small shop, its champions trained once per session
(tiny budgets), and its online features materialised; each test builds its own app on them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from shopml.settings import Settings

# The use cases the serving unit tests train (one of each kind of route and entity).
SERVED = ["returns", "clv", "segments", "recommender", "pricing"]
AS_OF = datetime(2025, 1, 1)


_BUILT: list[Path] = []  # the session's served home, shared with tests/integration


@pytest.fixture(scope="session")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with a small simulated shop, champions for :data:`SERVED` and online features."""
    return build_served_home(tmp_path_factory)


def build_served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`served_home`, built once per test session whichever folder asks first.

    Under pytest-xdist it is built once per run, not once per worker: the first worker to ask
    builds it in the run's shared temporary folder (the others wait on a lock), and each worker
    serves a copy of its own (tests promote and roll back versions in it)."""
    if not _BUILT:
        if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("SHOPML_TEST_SERVED_HOME"):
            shared = _built_once_per_run(tmp_path_factory.getbasetemp().parent)
            _BUILT.append(copy_home(shared, tmp_path_factory.mktemp("served")))
        else:
            _BUILT.append(_build(tmp_path_factory.mktemp("served")))
    return _BUILT[0]


def _built_once_per_run(run_tmp: Path) -> Path:
    """The served home in ``run_tmp`` (the folder every worker's temporary folder is in), built
    there by whichever worker gets the lock first."""
    import fcntl

    home = run_tmp / "served-home"
    with (run_tmp / "served-home.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (home / _DONE).exists():
                shutil.rmtree(home, ignore_errors=True)  # a worker that died half-way
                _build(home)
                (home / _DONE).touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return home


_DONE = ".built"


def copy_home(source: Path, target: Path) -> Path:
    """A copy of a served home at ``target`` that refers only to itself: MLflow keeps absolute
    artifact locations (in its database and in each model's MLmodel file), rewritten here."""
    import sqlite3

    old, new = str(source.resolve()), str(target.resolve())
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(_DONE))
    for mlmodel in target.rglob("MLmodel"):
        mlmodel.write_text(mlmodel.read_text().replace(old, new))
    con = sqlite3.connect(target / "mlflow.db")
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                if "CHAR" in column[2].upper() or "TEXT" in column[2].upper():
                    con.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?)'
                        f' WHERE instr("{column[1]}", ?) > 0',
                        (old, new, old),
                    )
        con.commit()
        con.execute("VACUUM")  # no old text left in free pages either
    finally:
        con.close()
    left = [str(p) for p in target.rglob("*") if p.is_file() and old.encode() in p.read_bytes()]
    assert not left, f"the copied served home still refers to {old}: {left}"
    return target


def _build(home: Path) -> Path:
    from shopml.data.simulator import SimConfig, simulate
    from shopml.data.warehouse import Warehouse
    from shopml.features import build_features
    from shopml.lifecycle.train import TrainConfig, train_usecase
    from shopml.online.store import SQLiteOnlineStore
    from shopml.usecases import get_usecase

    reuse = os.environ.get("SHOPML_TEST_SERVED_HOME")  # a developer's cache between runs
    if reuse and (Path(reuse) / "online.sqlite").exists():
        return Path(reuse)
    home = Path(reuse) if reuse else home
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home)
    wh = Warehouse(home / "warehouse.duckdb")
    simulate(SimConfig(customers=600, days=600, seed=11)).load(wh)
    for name in SERVED:
        result = train_usecase(get_usecase(name), wh, settings, TrainConfig(trials=0))
        assert result.status == "promoted", (name, result.reason)
    store = SQLiteOnlineStore(home / "online.sqlite")
    for entity, key in (
        ("customers", "customer_id"),
        ("products", "product_id"),
        ("sellers", "seller_id"),
    ):
        store.write(entity, build_features(wh, AS_OF, entity), key, AS_OF)
    store.close()
    wh.close()
    return home


def serving_settings(home: Path, **overrides: Any) -> Settings:
    """Settings on the shared home, with fast polling for tests."""
    values: dict[str, Any] = {
        "home": home,
        "registry_poll_seconds": 0.2,
        "prediction_log_flush_seconds": 0.05,
    }
    values.update(overrides)
    return Settings(**values)


def registry_client(home: Path) -> Any:
    """An MLflow client on the home's registry. Both URIs are given: a client given only the
    tracking URI reads the registry of whatever ``mlflow.set_registry_uri`` an earlier test in
    the process set (MLflow's process-wide registry URI wins over the client's tracking URI)."""
    from mlflow import MlflowClient

    settings = serving_settings(home)
    uri = settings.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=settings.mlflow_registry_uri or uri)


@pytest.fixture
def client_factory(served_home: Path) -> Iterator[Any]:
    """``make(**settings overrides) -> TestClient`` (started; closed after the test)."""
    from fastapi.testclient import TestClient

    from shopml.serving import create_app

    opened: list[Any] = []

    def make(app_kwargs: dict[str, Any] | None = None, **overrides: Any) -> Any:
        app = create_app(
            serving_settings(served_home, **overrides), usecases=SERVED, **(app_kwargs or {})
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(client_factory: Any) -> Any:
    return client_factory()


def a_customer(home: Path) -> str:
    import duckdb

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        row = con.execute(
            "SELECT customer_id FROM orders GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return str(row[0])
