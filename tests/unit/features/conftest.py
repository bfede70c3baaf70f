"""Fixtures for feature tests: the hand-made shop and throwaway warehouses."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from shopml.data.warehouse import Warehouse

from .shop import load_warehouse, make_tables


@pytest.fixture(scope="session")
def shop_tables() -> dict[str, pd.DataFrame]:
    return make_tables()


@pytest.fixture
def warehouse_factory(tmp_path: Path) -> Iterator[Callable[..., Warehouse]]:
    """Call with a dict of tables to get an open warehouse (a new file each call)."""
    opened: list[Warehouse] = []
    counter = itertools.count()

    def factory(tables: dict[str, pd.DataFrame], name: str = "wh") -> Warehouse:
        wh = load_warehouse(tmp_path / f"{name}-{next(counter)}.duckdb", tables)
        opened.append(wh)
        return wh

    yield factory
    for wh in opened:
        wh.close()
