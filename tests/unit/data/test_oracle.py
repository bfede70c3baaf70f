"""The oracle agrees with what the simulation realised (within sampling error)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopml.data import oracle
from shopml.data.dataset import Dataset
from shopml.data.simulator import SimConfig, simulate, simulate_in_blocks
from shopml.data.warehouse import Warehouse, WarehouseError

CFG = SimConfig(customers=4000, days=365, seed=3)
CUTOFF = pd.Timestamp("2023-08-01")


@pytest.fixture(scope="module", params=["whole", "blocks"])
def sim(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Dataset, Warehouse]]:
    """The shop simulated whole, and in blocks of customers (a shop too large for memory):
    the oracle holds for both."""
    if request.param == "whole":
        ds = simulate(CFG)
    else:
        batches: list[dict[str, pd.DataFrame]] = []
        meta = simulate_in_blocks(CFG, batches.append, block_customers=1500)
        names = {n for b in batches for n in b}
        tables = {n: pd.concat([b[n] for b in batches if n in b], ignore_index=True) for n in names}
        ds = Dataset(source="simulator", tables=tables, meta=meta)
    wh = Warehouse(tmp_path_factory.mktemp("oracle") / "w.duckdb")
    ds.load(wh)
    yield ds, wh
    wh.close()


def _order_values(ds: Dataset) -> pd.DataFrame:
    o, it = ds.tables["orders"], ds.tables["order_items"]
    value = (it.unit_price * it.quantity).groupby(it.order_id).sum().rename("value")
    return o[o.status != "canceled"].join(value, on="order_id")


def _within(ds: Dataset, days: int) -> pd.DataFrame:
    ov = _order_values(ds)
    return ov[(ov.purchased_at > CUTOFF) & (ov.purchased_at <= CUTOFF + pd.Timedelta(days=days))]


def test_expected_spend_matches_realised_mean(sim: tuple[Dataset, Warehouse]) -> None:
    ds, wh = sim
    es = oracle.expected_spend(wh, CUTOFF, horizon_days=90)
    created = ds.tables["customers"].set_index("customer_id").created_at
    assert (created[es.customer_id] <= CUTOFF).all()
    real = _within(ds, 90).groupby("customer_id").value.sum().reindex(es.customer_id, fill_value=0)
    se = real.std() / np.sqrt(len(real))
    assert abs(es.expected_spend.mean() - real.mean()) < 3 * se + 0.03 * real.mean()
    assert np.corrcoef(es.expected_spend, real)[0, 1] > 0.4
    assert (es.expected_spend >= 0).all() and (es.expected_spend == 0).any()  # the churned


def test_p_large_order_matches_realised_rate(sim: tuple[Dataset, Warehouse]) -> None:
    ds, wh = sim
    pl = oracle.p_large_order(wh, CUTOFF, horizon_days=30)
    w = _within(ds, 30)
    big = w[w.value > CFG.large_order_threshold].customer_id.unique()
    real = pl.customer_id.isin(big)
    se = real.std() / np.sqrt(len(real))
    assert abs(pl.p_large_order.mean() - real.mean()) < 3 * se + 0.003
    assert pl.p_large_order.between(0, 1).all()
    # Higher thresholds are rarer.
    higher = oracle.p_large_order(wh, CUTOFF, threshold=3 * CFG.large_order_threshold)
    assert (higher.p_large_order <= pl.p_large_order + 1e-9).all()


def test_p_return_matches_realised_returns(sim: tuple[Dataset, Warehouse]) -> None:
    ds, _ = sim
    end = pd.Timestamp(CFG.start) + pd.Timedelta(days=CFG.days)
    oi = ds.tables["oracle_order_items"].merge(
        ds.tables["order_items"][["order_item_id", "order_id"]]
    )
    oi = oi.merge(ds.tables["orders"][["order_id", "delivered_at", "status"]])
    done = oi[(oi.status == "delivered") & (oi.delivered_at < end - pd.Timedelta(days=31))]
    real = done.order_item_id.isin(ds.tables["returns"].order_item_id)
    se = real.std() / np.sqrt(len(real))
    assert abs(done.p_return.mean() - real.mean()) < 3 * se
    # ... and it ranks: the top decile returns far more than the bottom one.
    decile = pd.qcut(done.p_return, 10, labels=False)
    assert real[decile == 9].mean() > 3 * real[decile == 0].mean()


def test_delivery_quantiles_cover(sim: tuple[Dataset, Warehouse]) -> None:
    ds, _ = sim
    o = ds.tables["oracle_orders"].merge(ds.tables["orders"])
    end = pd.Timestamp(CFG.start) + pd.Timedelta(days=CFG.days)
    o = o[o.delivered_at.notna() & (o.purchased_at < end - pd.Timedelta(days=80))]
    days = (o.delivered_at - o.purchased_at).dt.total_seconds() / 86400
    assert 0.88 < (days <= o.delivery_days_p90).mean() < 0.92
    assert 0.47 < (days <= o.delivery_days_p50).mean() < 0.53
    assert days.mean() == pytest.approx(o.delivery_days_mean.mean(), rel=0.03)


def test_campaign_response_probabilities(sim: tuple[Dataset, Warehouse]) -> None:
    ds, _ = sim
    cs = ds.tables["campaign_sends"].merge(ds.tables["oracle_campaign_sends"])
    t, c = cs[cs.group == "treatment"], cs[cs.group == "control"]
    assert t.responded.mean() == pytest.approx(t.p_response_treated.mean(), abs=0.015)
    assert c.responded.mean() == pytest.approx(c.p_response_control.mean(), abs=0.025)
    uplift = cs.p_response_treated - cs.p_response_control
    assert (uplift >= 0).all() and uplift.std() > 0.02  # heterogeneous


def test_purchase_scores_beat_popularity(sim: tuple[Dataset, Warehouse]) -> None:
    ds, wh = sim
    ps = oracle.purchase_scores(wh, CUTOFF, k=10)
    assert (ps.groupby("customer_id")["rank"].apply(list).map(len) == 10).all()
    o, it = ds.tables["orders"], ds.tables["order_items"]
    nxt = o[o.purchased_at > CUTOFF].sort_values("purchased_at").drop_duplicates("customer_id")
    nx = it[it.order_id.isin(nxt.order_id)].merge(o[["order_id", "customer_id"]])
    nx = nx[nx.customer_id.isin(ps.customer_id)]
    oracle_hit = nx.merge(ps, on=["customer_id", "product_id"]).customer_id.nunique()
    past = it.merge(o[["order_id", "purchased_at"]])
    top = past[past.purchased_at <= CUTOFF].product_id.value_counts().index[:10]
    pop_hit = nx[nx.product_id.isin(top)].customer_id.nunique()
    assert oracle_hit > 1.1 * pop_hit
    one = oracle.purchase_scores(wh, CUTOFF, ["C0000001"], k=5)
    assert len(one) == 5 and one.probability.is_monotonic_decreasing


def test_expected_demand_follows_price(sim: tuple[Dataset, Warehouse]) -> None:
    ds, wh = sim
    op = ds.tables["oracle_products"]
    sold = ds.tables["order_items"].quantity.sum()
    assert op.base_demand.sum() * CFG.days == pytest.approx(sold, rel=0.1)
    pid = op.product_id.iloc[0]
    ref = op.ref_price.iloc[0]
    d = oracle.expected_demand(wh, [pid, pid], [ref, 1.2 * ref], days=30)
    assert d.expected_units.iloc[0] == pytest.approx(op.base_demand.iloc[0] * 30)
    assert d.expected_units.iloc[1] < d.expected_units.iloc[0]
    with pytest.raises(ValueError, match="unknown product"):
        oracle.expected_demand(wh, ["nope"], [1.0])


def test_oracle_refuses_a_non_simulated_warehouse(tmp_path: Path) -> None:
    with Warehouse(tmp_path / "empty.duckdb") as wh, pytest.raises(WarehouseError):
        oracle.expected_spend(wh, CUTOFF)
