"""ShopSim in blocks of customers: a shop too large for memory, written as it is made."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopml.data.contracts import CANONICAL_TABLES, CONTRACTS, ORACLE_TABLES
from shopml.data.dataset import Dataset
from shopml.data.simulator import SimConfig, simulate, simulate_in_blocks
from shopml.data.warehouse import Warehouse

CFG = SimConfig(customers=3000, days=365, seed=5)
BLOCK = 1100  # three blocks, the last one short


def in_blocks(
    config: SimConfig, block: int
) -> tuple[list[dict[str, pd.DataFrame]], dict[str, str]]:
    batches: list[dict[str, pd.DataFrame]] = []
    meta = simulate_in_blocks(config, batches.append, block_customers=block)
    return batches, meta


def joined(batches: list[dict[str, pd.DataFrame]], meta: dict[str, str]) -> Dataset:
    names = {n for b in batches for n in b}
    tables = {
        n: pd.concat([b[n] for b in batches if n in b], ignore_index=True) for n in sorted(names)
    }
    return Dataset(source="simulator", tables=tables, meta=meta)


@pytest.fixture(scope="module")
def blocked() -> tuple[list[dict[str, pd.DataFrame]], Dataset]:
    batches, meta = in_blocks(CFG, BLOCK)
    return batches, joined(batches, meta)


def _digest(ds: Dataset) -> str:
    h = hashlib.sha256()
    for name in sorted(ds.tables):
        h.update(name.encode())
        h.update(pd.util.hash_pandas_object(ds.tables[name], index=False).to_numpy().tobytes())
    return h.hexdigest()


def test_a_shop_that_fits_one_block_is_simulate_itself() -> None:
    whole = simulate(CFG)
    batches, meta = in_blocks(CFG, CFG.customers)
    assert len(batches) == 1 and meta == whole.meta
    for name, df in whole.tables.items():
        pd.testing.assert_frame_equal(batches[0][name], df, check_exact=True)


def test_batches_come_shop_tables_first_then_each_block_then_oracle_products(blocked) -> None:
    batches, ds = blocked
    assert set(batches[0]) == {"sellers", "products", "campaigns", "price_history"}
    assert list(batches[-1]) == ["oracle_products"]
    assert len(batches) == 2 + 3
    assert set(ds.tables) == set(CANONICAL_TABLES) | set(ORACLE_TABLES)
    for batch in batches:
        for name, df in batch.items():
            assert list(df.columns) == CONTRACTS[name].column_names, name
    assert [len(b["customers"]) for b in batches[1:-1]] == [1100, 1100, 800]


def test_deterministic_for_seed_and_block_size(blocked) -> None:
    _, ds = blocked
    again = joined(*in_blocks(CFG, BLOCK))
    assert _digest(again) == _digest(ds)
    other = joined(*in_blocks(CFG, 1000))
    assert _digest(other) != _digest(ds)


def test_ids_continue_across_blocks(blocked) -> None:
    batches, ds = blocked
    t = ds.tables
    expected = [f"C{i:07d}" for i in range(1, CFG.customers + 1)]
    assert t["customers"].customer_id.tolist() == expected
    assert t["oracle_customers"].customer_id.tolist() == expected
    for name, col in [
        ("orders", "order_id"),
        ("order_items", "order_item_id"),
        ("reviews", "review_id"),
        ("returns", "return_id"),
        ("web_events", "event_id"),
    ]:
        ids = t[name][col]
        assert ids.is_unique, name
    n_o = len(t["orders"])
    assert sorted(t["orders"].order_id) == [f"O{i:08d}" for i in range(1, n_o + 1)]
    # A browsing session belongs to one block: no session id is reused by a later block.
    block_of = pd.concat(
        [b["web_events"].session_id.drop_duplicates().to_frame().assign(k=k)
         for k, b in enumerate(batches[1:-1])]
    )  # fmt: skip
    assert block_of.session_id.is_unique
    # Each block's customers order only in their own block.
    for b in batches[1:-1]:
        assert b["orders"].customer_id.isin(b["customers"].customer_id).all()


def test_rows_keep_their_contracts_and_load_block_by_block(blocked, tmp_path: Path) -> None:
    batches, ds = blocked
    with Warehouse(tmp_path / "w.duckdb") as wh:
        report = ds.load(wh)
        assert report.rows_quarantined == 0, {t.table: t.by_rule for t in report.tables}
        whole_version = wh.dataset_version()
    with Warehouse(tmp_path / "b.duckdb") as wh:
        for k, batch in enumerate(batches):
            part = Dataset(source="simulator", tables=batch, meta=ds.meta)
            report = part.load(wh, mode="upsert") if k else part.load(wh)
            assert report.rows_quarantined == 0, k
        assert wh.dataset_version() == whole_version


def test_same_world_as_the_whole_shop_and_oracle_consistent_with_events(blocked) -> None:
    _, ds = blocked
    whole = simulate(CFG)
    t, w = ds.tables, whole.tables
    # The latent world is the whole shop's: the oracle rebuilds it from the configuration.
    latent = ["customer_id", "purchase_rate", "dropout_prob", "order_value_mean",
              "returner_propensity", "taste_cluster"]  # fmt: skip
    pd.testing.assert_frame_equal(t["oracle_customers"][latent], w["oracle_customers"][latent])
    for name in ("customers", "products", "sellers", "campaigns", "price_history"):
        pd.testing.assert_frame_equal(t[name], w[name], check_exact=True)
    # A churned customer's churn time is the time of one of their own orders.
    oc = t["oracle_customers"].dropna(subset=["churned_at"])
    pairs = set(zip(t["orders"].customer_id, t["orders"].purchased_at, strict=True))
    assert len(oc) > 500
    assert all(p in pairs for p in zip(oc.customer_id, oc.churned_at, strict=True))
    # Product demand counts every block's lines: as many units as were sold, like the whole shop.
    sold = t["order_items"].quantity.sum()
    assert t["oracle_products"].base_demand.sum() * CFG.days == pytest.approx(sold, rel=0.1)
    assert len(t["orders"]) == pytest.approx(len(w["orders"]), rel=0.05)
    assert int(ds.meta["sim_orders"]) == len(t["orders"])
    assert int(ds.meta["sim_order_items"]) == len(t["order_items"])
    assert ds.meta["sim_block_customers"] == str(BLOCK)
    assert float(ds.meta["sim_realised_return_rate"]) == pytest.approx(
        float(whole.meta["sim_realised_return_rate"]), abs=0.02
    )
    assert np.isfinite(t["oracle_orders"].delivery_days_p90).all()


def test_block_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="block_customers"):
        simulate_in_blocks(CFG, lambda t: None, block_customers=0)
