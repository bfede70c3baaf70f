"""Shared fixtures: every test gets its own SHOPML_HOME and fresh settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopml.settings import reset_settings

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def shared_data_dir() -> Path:
    """The public samples beside the project (../shared/data), or SHOPML_SHARED_DATA_DIR."""
    configured = os.environ.get("SHOPML_SHARED_DATA_DIR")
    return Path(configured) if configured else (ROOT.parent / "shared" / "data")


@pytest.fixture(autouse=True)
def shopml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Isolate every test: its own home folder, no config file, fresh settings."""
    home = tmp_path / "shopml-home"
    monkeypatch.setenv("SHOPML_HOME", str(home))
    monkeypatch.setenv("SHOPML_CONFIG", str(tmp_path / "no-shopml.toml"))
    for var in ("SHOPML_ENV", "SHOPML_API_KEYS", "SHOPML_ADMIN_KEYS", "SHOPML_WAREHOUSE_PATH"):
        monkeypatch.delenv(var, raising=False)
    reset_settings()
    yield home
    reset_settings()
