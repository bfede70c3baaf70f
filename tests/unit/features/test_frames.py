"""Customer features against an independent pandas implementation, and ``to_frame``.

The pandas implementation is the benchmark's peer (``benchmarks/bench_features.py``): written
separately with filters, groupbys and merges, it must agree with the Ibis builder on every
column of every customer, here on the hand-made shop at cutoffs inside and at the edges of its
year, the same check the benchmark makes on a million orders.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from benchmarks.bench_features import TABLES, pandas_customer_features

from shopml.data.warehouse import Warehouse
from shopml.features import FEATURE_SETS, customer_features, to_frame

from .shop import load_warehouse

Tables = dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def shop(shop_tables: Tables, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    wh = load_warehouse(tmp_path_factory.mktemp("frames") / "shop.duckdb", shop_tables)
    yield wh
    wh.close()


@pytest.mark.parametrize(
    "cutoff",
    [datetime(2023, 12, 1), datetime(2024, 2, 10, 6, 30), datetime(2024, 7, 1),
     datetime(2024, 12, 31, 23, 59, 59), datetime(2025, 6, 1)],
    ids=str,
)  # fmt: skip
def test_customer_features_agree_with_pandas(shop: Warehouse, cutoff: datetime) -> None:
    tables = {name: shop.read(name) for name in TABLES}
    peer = pandas_customer_features(tables, cutoff)
    ours = to_frame(customer_features(shop.ibis(), cutoff).order_by("customer_id"))
    assert list(ours.columns) == list(peer.columns)
    assert list(ours.customer_id) == list(peer.customer_id)
    assert len(ours) > 0
    for col in ours.columns[1:]:
        np.testing.assert_allclose(
            ours[col].astype("float64").to_numpy(),
            peer[col].astype("float64").to_numpy(),
            rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=col,
        )  # fmt: skip


@pytest.mark.parametrize("entity", list(FEATURE_SETS))
def test_to_frame_is_the_same_frame_as_to_pandas(shop: Warehouse, entity: str) -> None:
    fs = FEATURE_SETS[entity]
    # At mid-year, and before the shop's first order (no rows for most entities).
    for cutoff in (datetime(2024, 7, 1), datetime(2023, 1, 1)):
        table = fs.builder(shop.ibis(), cutoff).order_by(list(fs.key))
        expected = table.to_pandas()
        got = to_frame(table)
        if entity == "customers" and cutoff.year == 2024:
            assert expected.isna().any().any()  # nulls: where the two conversions differ
        pd.testing.assert_frame_equal(got, expected)
