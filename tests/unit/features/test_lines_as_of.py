"""Line history as of each line's own moment: the snapshot definitions, at every moment, and
nothing from that moment on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import ibis
import numpy as np
import pandas as pd
import pytest

from shopml.data.warehouse import Warehouse
from shopml.features import order_item_features
from shopml.features.lines import LINE_HISTORY_COLUMNS, line_history_as_of

from .shop import START, load_warehouse
from .test_point_in_time import Tables, as_of, scramble_future

COLUMNS = list(LINE_HISTORY_COLUMNS)


@pytest.fixture(scope="module")
def shop(shop_tables: Tables, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    wh = load_warehouse(tmp_path_factory.mktemp("lines") / "shop.duckdb", shop_tables)
    yield wh
    wh.close()


def _asking(tables: Tables, moments: pd.Series) -> pd.DataFrame:
    """Every line of the shop, asking as of ``moments`` (one per line)."""
    lines = tables["order_items"].merge(
        tables["orders"][["order_id", "customer_id"]], on="order_id"
    )[["order_item_id", "product_id", "seller_id", "customer_id"]]
    return lines.assign(as_of=moments.to_numpy()[: len(lines)])


def _history(wh: Warehouse, asking: pd.DataFrame) -> pd.DataFrame:
    t = ibis.memtable(asking.assign(as_of=pd.to_datetime(asking["as_of"])))
    out = line_history_as_of(wh.ibis(), t).to_pandas()
    return out.set_index("order_item_id").sort_index()


def _snapshot(wh: Warehouse, cutoff: datetime, ids: list[str]) -> pd.DataFrame:
    items = wh.ibis().table("order_items")
    f = order_item_features(wh.ibis(), cutoff, items.filter(items.order_item_id.isin(ids)))
    return f.to_pandas().set_index("order_item_id").sort_index()[COLUMNS]


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        a[COLUMNS].astype("float64"), b[COLUMNS].astype("float64"), rtol=1e-12, atol=1e-12
    )


def test_at_one_cutoff_it_is_the_snapshot_history(shop: Warehouse, shop_tables: Tables) -> None:
    cutoff = datetime(2024, 7, 1, 8, 30)
    n = len(shop_tables["order_items"])
    got = _history(shop, _asking(shop_tables, pd.Series([cutoff] * n)))
    want = _snapshot(shop, cutoff, list(got.index))
    assert len(got) == n and got["product_return_rate"].notna().sum() > 50
    _same(got, want)


def test_each_line_gets_the_history_of_its_own_moment(shop: Warehouse, shop_tables: Tables) -> None:
    rng = np.random.default_rng(3)
    n = len(shop_tables["order_items"])
    moments = [START + timedelta(days=float(d)) for d in (40.5, 133.25, 200.0, 301.7, 364.0)]
    picked = pd.Series(rng.choice(moments, n))
    got = _history(shop, _asking(shop_tables, picked))
    asked = _asking(shop_tables, picked).set_index("order_item_id")["as_of"]
    for moment in moments:
        ids = sorted(asked.index[asked == moment])
        _same(got.loc[ids], _snapshot(shop, moment, ids))


def test_nothing_at_or_after_a_lines_moment_changes_it(
    shop: Warehouse, shop_tables: Tables, warehouse_factory: Callable[..., Warehouse]
) -> None:
    """The shop as it stood at each moment, and with its future scrambled, give the same."""
    for moment in (datetime(2024, 5, 17, 13, 45, 10), datetime(2024, 10, 3)):
        n = len(shop_tables["order_items"])
        asking = _asking(shop_tables, pd.Series([moment] * n))
        full = _history(shop, asking)
        past = _history(warehouse_factory(as_of(shop_tables, moment), "past"), asking)
        other = _history(
            warehouse_factory(scramble_future(shop_tables, moment, 11), "other"), asking
        )
        # Lines ordered after the moment exist only in the full shop: compare the others.
        known = past.index
        assert len(known) > 100
        _same(full.loc[known], past)
        _same(full.loc[known], other.loc[known])
