"""clv emitted a pandas FutureWarning on every training on real data: a shop without web
events gets its web-history columns back all null, as object, and filling them made pandas
warn. The smallest history without web events, with FutureWarning as an error."""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
from tests.unit.usecases.nasty import START, one_time_buyers

from shopml.data.warehouse import Warehouse
from shopml.usecases import get_usecase


def test_clv_dataset_of_a_shop_without_web_events_warns_nothing(tmp_path: Path) -> None:
    with Warehouse(tmp_path / "once.duckdb") as wh:
        wh.write_tables(one_time_buyers(np.random.default_rng(0)), source="test", mode="dataset")
        assert not wh.exists("web_events")
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            data = get_usecase("clv").dataset(wh, START + timedelta(days=300))
    assert len(data) and data.y.dtype == "float64"
