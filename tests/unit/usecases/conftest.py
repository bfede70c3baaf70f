"""Shared fixtures for use-case tests: one small simulated shop per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shopml.data.warehouse import Warehouse


@pytest.fixture(scope="session")
def small_sim_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated shop (2,000 customers, 200 products, two years) with its oracle
    tables, written once per session. Copy the file before writing to it."""
    from shopml.data.simulator import SimConfig, simulate

    path = tmp_path_factory.mktemp("small_sim") / "shop.duckdb"
    wh = Warehouse(path)
    simulate(SimConfig(customers=2000, days=730, seed=7)).load(wh)
    wh.close()
    return path


@pytest.fixture(scope="session")
def small_sim_wh(small_sim_path: Path) -> Iterator[Warehouse]:
    """The small simulated shop, opened read-only (safe to share between tests)."""
    wh = Warehouse(small_sim_path, read_only=True)
    yield wh
    wh.close()


@pytest.fixture
def shop_copy(small_sim_path: Path, tmp_path: Path) -> Iterator[Warehouse]:
    """A writable copy of the small simulated shop (drop tables, train, register...)."""
    import shutil

    path = tmp_path / "shop.duckdb"
    shutil.copy(small_sim_path, path)
    wh = Warehouse(path)
    yield wh
    wh.close()


def train(usecase: str | Any, wh: Warehouse, trials: int = 0, timeout_s: float = 10.0) -> Any:
    """Train a use case through the generic lifecycle (MLflow under the test's SHOPML_HOME)."""
    from shopml.lifecycle.train import TrainConfig, train_usecase
    from shopml.settings import get_settings
    from shopml.usecases import get_usecase

    uc = get_usecase(usecase) if isinstance(usecase, str) else usecase
    return train_usecase(uc, wh, get_settings(), TrainConfig(trials=trials, timeout_s=timeout_s))
