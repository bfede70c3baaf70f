"""ShopSim: complete and clean tables, determinism, realism signals, scenarios."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopml.data.contracts import CANONICAL_TABLES, CONTRACTS, ORACLE_TABLES
from shopml.data.dataset import Dataset
from shopml.data.scenarios import SCENARIOS, get_scenario
from shopml.data.simulator import SimConfig, simulate
from shopml.data.warehouse import Warehouse

SMALL = SimConfig(customers=2000, days=365, seed=11)


@pytest.fixture(scope="module")
def small() -> Dataset:
    return simulate(SMALL)


def _order_value(ds: Dataset) -> pd.Series:
    it = ds.tables["order_items"]
    return (it.unit_price * it.quantity).groupby(it.order_id).sum()


def test_every_table_with_exactly_the_contract_columns(small: Dataset) -> None:
    assert set(small.tables) == set(CANONICAL_TABLES) | set(ORACLE_TABLES)
    for name, df in small.tables.items():
        assert list(df.columns) == CONTRACTS[name].column_names, name
    assert len(small.tables["orders"]) > 5000
    for key in (
        "seed",
        "scenario",
        "scenario_start",
        "start",
        "days",
        "sim_config",
        "large_order_threshold",
        "seasonality",
    ):
        assert key in small.meta


def test_rows_keep_their_contracts(small: Dataset, tmp_path: Path) -> None:
    with Warehouse(tmp_path / "w.duckdb") as wh:
        report = small.load(wh)
    assert report.rows_quarantined == 0, {t.table: t.by_rule for t in report.tables}


def test_same_config_same_tables_and_data_versions(small: Dataset, tmp_path: Path) -> None:
    again = simulate(SMALL)
    for name, df in small.tables.items():
        pd.testing.assert_frame_equal(df, again.tables[name], check_exact=True)
    versions = []
    for i, ds in enumerate((small, again)):
        with Warehouse(tmp_path / f"w{i}.duckdb") as wh:
            ds.load(wh)
            versions.append(wh.dataset_version())
    assert versions[0] == versions[1]
    other = simulate(SimConfig(customers=2000, days=365, seed=12))
    assert not other.tables["orders"].equals(small.tables["orders"])


def test_progress_reports_stages() -> None:
    seen: list[tuple[str, float]] = []
    simulate(SimConfig(customers=100, days=60), progress=lambda s, f: seen.append((s, f)))
    assert seen[0][1] == 0.0 and seen[-1] == ("done", 1.0)
    assert [f for _, f in seen] == sorted(f for _, f in seen)


def test_unknown_scenario_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="carrier-strike"):
        SimConfig(scenario="meteor")
    with pytest.raises(ValueError, match="price-inflation"):
        get_scenario("meteor")
    assert all(s.description for s in SCENARIOS.values())


def test_holiday_peak_and_weekly_pattern(small: Dataset) -> None:
    o = small.tables["orders"]
    per_day = o.groupby(o.purchased_at.dt.normalize()).size()
    black_friday = pd.Timestamp("2023-11-24")
    november = per_day[(per_day.index.month == 11) & (per_day.index.day < 20)]
    assert per_day[black_friday] > 2 * november.median()


def test_long_tailed_repeat_purchasing(small: Dataset) -> None:
    counts = small.tables["orders"].groupby("customer_id").size()
    assert counts.max() > 10 * counts.median()
    assert (counts > 1).mean() > 0.4


def test_late_deliveries_raise_returns_and_lower_reviews(small: Dataset) -> None:
    o = small.tables["orders"]
    late = (o.delivered_at > o.estimated_delivery_at).rename("late")
    o = o.assign(late=late)[o.delivered_at.notna()]
    assert 0.03 < o.late.mean() < 0.3
    r = small.tables["reviews"].merge(o[["order_id", "late"]])
    assert r[r.late].score.mean() < r[~r.late].score.mean() - 0.5
    it = small.tables["order_items"].merge(o[["order_id", "late"]])
    it["returned"] = it.order_item_id.isin(small.tables["returns"].order_item_id)
    assert it[it.late].returned.mean() > 1.3 * it[~it.late].returned.mean()


def test_returns_within_30_days_of_delivery(small: Dataset) -> None:
    ret = small.tables["returns"].merge(small.tables["order_items"][["order_item_id", "order_id"]])
    ret = ret.merge(small.tables["orders"][["order_id", "delivered_at"]])
    gap = (ret.returned_at - ret.delivered_at).dt.total_seconds() / 86400
    assert gap.between(0, 30).all()
    it = small.tables["order_items"].merge(small.tables["products"][["product_id", "category"]])
    it["returned"] = it.order_item_id.isin(ret.order_item_id)
    by_cat = it.groupby("category").returned.mean()
    assert by_cat["fashion"] > 2 * by_cat["books"]


def test_campaign_treatment_responds_more_than_control(small: Dataset) -> None:
    cs = small.tables["campaign_sends"]
    assert set(cs.group) == {"treatment", "control"}
    rates = cs.groupby("group").responded.mean()
    assert rates["treatment"] > rates["control"] + 0.03
    resp = cs[cs.responded]
    assert (resp.responded_at >= resp.assigned_at).all()


def test_web_purchase_events_tie_to_orders(small: Dataset) -> None:
    ev = small.tables["web_events"]
    purchases = ev[ev.event_type == "purchase"]
    assert purchases.order_id.notna().all()
    assert set(purchases.order_id) == set(small.tables["orders"].order_id)
    assert ev[ev.event_type != "purchase"].order_id.isna().all()
    assert (ev.event_type == "view").sum() > (ev.event_type == "add_to_cart").sum()


def test_history_predicts_the_future(small: Dataset) -> None:
    o = small.tables["orders"]
    cut = pd.Timestamp("2023-07-01")
    past = o[o.purchased_at <= cut].groupby("customer_id").size()
    future = o[o.purchased_at > cut].groupby("customer_id").size().reindex(past.index, fill_value=0)
    assert past.corr(future, method="spearman") > 0.2
    value = _order_value(small).rename("value")
    ov = o[["order_id", "customer_id", "purchased_at"]].join(value, on="order_id")
    before = ov[ov.purchased_at <= cut].groupby("customer_id").value.mean()
    after = ov[ov.purchased_at > cut].groupby("customer_id").value.mean()
    both = pd.concat([before, after], axis=1, keys=["b", "a"]).dropna()
    assert both.b.corr(both.a, method="spearman") > 0.2


def test_price_tests_and_margin(small: Dataset) -> None:
    ph = small.tables["price_history"]
    assert ph.is_test.any() and (~ph.is_test).any()
    p = small.tables["products"]
    assert (p.unit_cost < p.list_price).all()


# -- scenarios -----------------------------------------------------------------------------------

SCEN = dict(customers=1500, days=365, seed=5)


@pytest.fixture(scope="module")
def baseline() -> Dataset:
    return simulate(SimConfig(**SCEN))


def _onset() -> pd.Timestamp:
    return pd.Timestamp(SimConfig(**SCEN).onset)


def _delivery_days(ds: Dataset) -> tuple[float, float]:
    o = ds.tables["oracle_orders"].merge(ds.tables["orders"][["order_id", "purchased_at"]])
    on = _onset()
    before = o[o.purchased_at < on].delivery_days_mean.mean()
    after = o[(o.purchased_at >= on) & (o.purchased_at < on + timedelta(days=45))]
    return before, after.delivery_days_mean.mean()


def _new_region_share(ds: Dataset) -> tuple[float, float]:
    c = ds.tables["customers"]
    far = c.region.isin(["AK", "HI"])
    on = _onset() + timedelta(hours=1)  # created_at is an hour before the first order
    return far[c.created_at < on - timedelta(days=1)].mean(), far[c.created_at >= on].mean()


def _mean_price(ds: Dataset) -> tuple[float, float]:
    ph = ds.tables["price_history"].sort_values(["product_id", "valid_from"])
    on = _onset()
    before = ph[ph.valid_from < on].groupby("product_id").price.last()
    after = ph[ph.valid_from <= on + timedelta(days=40)].groupby("product_id").price.last()
    return before.mean(), after.mean()


def _return_rate(ds: Dataset) -> tuple[float, float]:
    it = ds.tables["oracle_order_items"].merge(ds.tables["order_items"])
    it = it.merge(ds.tables["orders"][["order_id", "purchased_at"]])
    it = it.merge(ds.tables["products"][["product_id", "category"]])
    it = it[it.category.isin(["fashion", "shoes", "electronics"])]
    on = _onset()
    return it[it.purchased_at < on].p_return.mean(), it[it.purchased_at >= on].p_return.mean()


@pytest.mark.parametrize(
    ("name", "measure", "min_ratio"),
    [
        ("carrier-strike", _delivery_days, 1.5),
        ("price-inflation", _mean_price, 1.12),
        ("return-policy-change", _return_rate, 1.5),
    ],
)
def test_scenario_changes_its_target_after_onset_only(
    baseline: Dataset, name: str, measure, min_ratio: float
) -> None:
    ds = simulate(SimConfig(**SCEN, scenario=name))
    base_before, base_after = measure(baseline)
    before, after = measure(ds)
    assert before == pytest.approx(base_before, rel=0.03), "changed before onset"
    assert after > min_ratio * base_after, "no change after onset"


def test_new_region_scenario_shifts_customer_mix(baseline: Dataset) -> None:
    ds = simulate(SimConfig(**SCEN, scenario="new-region"))
    assert _new_region_share(baseline) == (0.0, 0.0)
    before, after = _new_region_share(ds)
    assert before == 0.0 and after > 0.25
    # ... and deliveries to the far region are slower
    o = ds.tables["orders"].merge(ds.tables["customers"][["customer_id", "region"]])
    o = o[o.delivered_at.notna()]
    days = (o.delivered_at - o.purchased_at).dt.total_seconds() / 86400
    assert (
        days[o.region.isin(["AK", "HI"])].mean() > 1.5 * days[~o.region.isin(["AK", "HI"])].mean()
    )


def test_price_inflation_lowers_order_rate() -> None:
    cfg = dict(customers=1500, days=365, seed=5, scenario_start=date(2023, 7, 1))
    base = simulate(SimConfig(**cfg)).tables["orders"]
    infl = simulate(SimConfig(**cfg, scenario="price-inflation")).tables["orders"]
    on = pd.Timestamp("2023-07-01")
    ratio = (infl.purchased_at >= on).sum() / (base.purchased_at >= on).sum()
    assert ratio < 0.95
    assert np.isclose((infl.purchased_at < on).sum(), (base.purchased_at < on).sum(), rtol=0.03)
