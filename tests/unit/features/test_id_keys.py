"""The warehouse's integer id keys: stored on every write, invisible to reads and data versions,
used by the customer features when every table has them, and never a source of wrong answers
(a table edited in SQL is refreshed; keys that collide are dropped and the ids are used)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import ibis
import pandas as pd
import pytest

from shopml.data import contracts
from shopml.data.contracts import CONTRACTS, get_contract, key_column
from shopml.data.warehouse import Warehouse
from shopml.features import customer_features, to_frame
from shopml.features._snapshot import Snapshot

Tables = dict[str, pd.DataFrame]
CUTOFF = datetime(2024, 9, 1)


def features(wh: Warehouse) -> pd.DataFrame:
    return to_frame(customer_features(wh.ibis(), CUTOFF).order_by("customer_id"))


def columns(wh: Warehouse, table: str) -> list[str]:
    return [d[0] for d in wh.con.execute(f'SELECT * FROM "{table}" LIMIT 0').description]


def without_keys(wh: Warehouse) -> None:
    """Turn ``wh`` into a warehouse as an older shopml wrote it: no key columns."""
    for name, contract in CONTRACTS.items():
        for c in contract.keyed_columns:
            if wh.exists(name) and key_column(c) in columns(wh, name):
                wh.con.execute(f'ALTER TABLE "{name}" DROP COLUMN "{key_column(c)}"')


def test_keys_are_stored_but_not_read(
    warehouse_factory: Callable[..., Warehouse], shop_tables: Tables
) -> None:
    wh = warehouse_factory(shop_tables)
    assert "order_id__key" in columns(wh, "order_items")
    assert "product_id__key" in columns(wh, "order_items")
    for name in shop_tables:
        assert list(wh.read(name).columns) == get_contract(name).column_names
    keys = wh.sql("SELECT DISTINCT customer_id, customer_id__key FROM orders")
    assert keys.customer_id.is_unique and keys.customer_id__key.is_unique
    # The same id has the same key in every table, however and whenever each was written.
    joined = wh.sql(
        "SELECT count(*) AS n FROM orders o JOIN customers c "
        "ON o.customer_id__key = c.customer_id__key AND o.customer_id <> c.customer_id"
    )
    assert joined.n.iloc[0] == 0


def test_customer_features_join_on_the_keys(
    warehouse_factory: Callable[..., Warehouse], shop_tables: Tables
) -> None:
    wh = warehouse_factory(shop_tables)
    snap = Snapshot(wh.ibis(), CUTOFF, keys=True)
    assert snap.keyed
    assert not Snapshot(wh.ibis(), CUTOFF).keyed  # only for builders that ask for them
    sql = ibis.to_sql(customer_features(wh.ibis(), CUTOFF))
    assert "customer_id__key" in sql and "order_id__key" in sql
    out = features(wh)
    assert out.customer_id.map(type).eq(str).all()
    assert set(out.customer_id) <= set(shop_tables["customers"].customer_id)


def test_the_same_features_with_or_without_keys(
    warehouse_factory: Callable[..., Warehouse], shop_tables: Tables
) -> None:
    keyed = warehouse_factory(shop_tables)
    plain = warehouse_factory(shop_tables)
    without_keys(plain)
    assert not Snapshot(plain.ibis(), CUTOFF, keys=True).keyed
    assert "customer_id__key" not in ibis.to_sql(customer_features(plain.ibis(), CUTOFF))
    expected = features(plain)
    assert len(expected) > 0
    pd.testing.assert_frame_equal(features(keyed), expected)
    # An older warehouse gets its keys (and keeps its versions) with refresh().
    versions = plain.versions()
    plain.refresh()
    assert Snapshot(plain.ibis(), CUTOFF, keys=True).keyed
    assert plain.versions() == versions == keyed.versions()
    pd.testing.assert_frame_equal(features(plain), expected)


def test_an_edit_in_sql_is_refreshed(
    warehouse_factory: Callable[..., Warehouse], shop_tables: Tables
) -> None:
    """Move every order of one customer to another with SQL: after refresh() the features are
    those of a warehouse written with the edit, and so is the data version."""
    a, b = shop_tables["orders"].customer_id.value_counts().index[:2]
    wh = warehouse_factory(shop_tables)
    wh.con.execute("UPDATE orders SET customer_id = ? WHERE customer_id = ?", [b, a])
    edited = dict(shop_tables)
    edited["orders"] = shop_tables["orders"].replace({"customer_id": {a: b}})
    expected = warehouse_factory(edited)
    stale = features(wh)  # the keys still say the orders are a's
    assert stale.set_index("customer_id").loc[a, "frequency_orders"] > 0
    before = wh.versions()["orders"]
    wh.refresh(["orders"])
    assert wh.versions()["orders"] == expected.versions()["orders"] != before
    pd.testing.assert_frame_equal(features(wh), features(expected))
    assert features(wh).set_index("customer_id").loc[a, "frequency_orders"] == 0


def test_colliding_keys_are_dropped(
    warehouse_factory: Callable[..., Warehouse],
    shop_tables: Tables,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ids that share a key (forced here with a 2-value key) lose it: the features are then
    built on the ids and stay exact."""
    expected = features(warehouse_factory(shop_tables))
    monkeypatch.setattr(contracts, "KEY_SQL", "(md5_number_lower({}) % 2)")
    wh = warehouse_factory(shop_tables)
    assert "customer_id__key" not in columns(wh, "customers")
    assert "customer_id__key" in columns(wh, "orders")
    assert not Snapshot(wh.ibis(), CUTOFF, keys=True).keyed
    pd.testing.assert_frame_equal(features(wh), expected)
    wh.refresh()  # checks again, and the keys still collide
    assert "customer_id__key" not in columns(wh, "customers")


def test_an_upsert_checks_the_keys_it_wrote(
    warehouse_factory: Callable[..., Warehouse],
    shop_tables: Tables,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wh = warehouse_factory(shop_tables)
    new = shop_tables["customers"].head(2).assign(customer_id=["n1", "n2"])
    wh.write_tables({"customers": new.head(1)}, source="test", mode="upsert")
    assert "customer_id__key" in columns(wh, "customers")
    # A new id whose key is an existing customer's: the table drops its key.
    taken = int(wh.sql("SELECT max(customer_id__key) AS k FROM customers").k.iloc[0])
    monkeypatch.setattr(contracts, "KEY_SQL", f"(md5_number_lower({{}}) * 0 + {taken})")
    wh.write_tables({"customers": new.tail(1)}, source="test", mode="upsert")
    assert "customer_id__key" not in columns(wh, "customers")
    assert not Snapshot(wh.ibis(), CUTOFF, keys=True).keyed


def test_refresh_needs_canonical_tables(
    warehouse_factory: Callable[..., Warehouse], shop_tables: Tables, tmp_path: Path
) -> None:
    wh = warehouse_factory(shop_tables)
    with pytest.raises(Exception, match="not canonical table"):
        wh.refresh(["features_customers"])
    with pytest.raises(Exception, match="read-only"):
        wh.close()
        Warehouse(wh.path, read_only=True).refresh()
