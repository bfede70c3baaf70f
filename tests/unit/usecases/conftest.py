"""Shared fixtures for use-case tests: one small simulated shop per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
