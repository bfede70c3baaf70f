"""No feature may depend on anything that happened at or after its cutoff.

Three warehouses are compared at the same cutoff: the full shop; the shop as it stood at the
cutoff (every row with a time at or after it deleted, and every later milestone of an earlier
row, such as a delivery or a campaign response, blanked); and the shop with its future
scrambled (later rows and later fields of earlier rows changed, new later returns added, every
order's current status shuffled). Every feature builder must give identical output on all three.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shopml.data.contracts import ORDER_STATUSES
from shopml.data.warehouse import Warehouse
from shopml.features import FEATURE_SETS, build_features

from .shop import START, load_warehouse, make_tables

Tables = dict[str, pd.DataFrame]


def _later(s: pd.Series, cutoff: pd.Timestamp) -> pd.Series:
    return s.notna() & (s >= cutoff)


def as_of(tables: Tables, cutoff: datetime) -> Tables:
    """The shop as its database looked at ``cutoff``: later rows gone, later fields blank."""
    c = pd.Timestamp(cutoff)
    t = {k: v.copy() for k, v in tables.items()}
    orders = t["orders"]
    orders = orders[orders.purchased_at < c].copy()
    for col in ("approved_at", "shipped_at", "delivered_at"):
        orders.loc[_later(orders[col], c), col] = pd.NaT
    orders["status"] = "processing"  # what it said then is unknowable; any value must do
    t["orders"] = orders
    kept = set(orders.order_id)
    t["order_items"] = t["order_items"][t["order_items"].order_id.isin(kept)]
    t["payments"] = t["payments"][t["payments"].order_id.isin(kept)]
    rv = t["reviews"]
    rv = rv[(rv.created_at < c) & rv.order_id.isin(kept)].copy()
    rv.loc[_later(rv.answered_at, c), "answered_at"] = pd.NaT
    t["reviews"] = rv
    r = t["returns"]
    t["returns"] = r[
        (r.returned_at < c) & r.order_item_id.isin(set(t["order_items"].order_item_id))
    ]
    t["web_events"] = t["web_events"][t["web_events"].event_at < c]
    t["campaigns"] = t["campaigns"][t["campaigns"].sent_at < c]
    s = t["campaign_sends"]
    s = s[(s.assigned_at < c) & s.campaign_id.isin(set(t["campaigns"].campaign_id))].copy()
    later = _later(s.responded_at, c)
    s.loc[later, "responded_at"] = pd.NaT
    s.loc[later, "responded"] = False
    t["campaign_sends"] = s
    t["price_history"] = t["price_history"][t["price_history"].valid_from < c]
    cust = t["customers"]
    referenced = (
        set(orders.customer_id) | set(s.customer_id) | set(t["web_events"].customer_id.dropna())
    )
    t["customers"] = cust[
        cust.created_at.isna() | (cust.created_at < c) | cust.customer_id.isin(referenced)
    ]
    return t


def scramble_future(tables: Tables, cutoff: datetime, seed: int) -> Tables:
    """The same past, a different future: change every later row and later field of a row."""
    rng = np.random.default_rng(seed)
    c = pd.Timestamp(cutoff)
    t = {k: v.copy() for k, v in tables.items()}

    def later_times(n: int) -> pd.Series:
        return pd.Series(c + pd.to_timedelta(rng.uniform(0, 40, n), unit="D")).dt.floor("s")

    customers = t["customers"].customer_id.to_numpy()
    cust = t["customers"]
    new = _later(cust.created_at, c)
    cust.loc[new, "created_at"] = later_times(int(new.sum())).to_numpy()
    cust.loc[new, "lat"] = rng.uniform(-30, -5, int(new.sum()))

    o = t["orders"]
    o["status"] = rng.choice(sorted(ORDER_STATUSES), len(o))  # current status: all of them
    fut = (o.purchased_at >= c).to_numpy()
    n = int(fut.sum())
    o.loc[fut, "customer_id"] = rng.choice(customers, n)
    o.loc[fut, "purchased_at"] = later_times(n).to_numpy()
    o.loc[fut, "estimated_delivery_at"] = (
        o.loc[fut, "purchased_at"] + pd.Timedelta(days=9)
    ).to_numpy()
    o.loc[fut, "carrier"] = rng.choice(["post", "rocket", None], n)
    for col in ("approved_at", "shipped_at", "delivered_at"):
        # Later milestones: moved, or not happened yet; never before the purchase.
        change = fut | _later(o[col], c).to_numpy()
        k = int(change.sum())
        when = pd.Series(later_times(k).to_numpy() + pd.Timedelta(days=41))
        when[rng.random(k) < 0.3] = pd.NaT
        o.loc[change, col] = when.to_numpy()
    fut_orders = set(o.order_id[fut])

    it = t["order_items"]
    f = it.order_id.isin(fut_orders).to_numpy()
    k = int(f.sum())
    it.loc[f, "quantity"] = rng.integers(1, 9, k)
    it.loc[f, "unit_price"] = rng.uniform(1, 999, k).round(2)
    it.loc[f, "freight"] = rng.uniform(0, 99, k).round(2)
    it.loc[f, "product_id"] = rng.choice(t["products"].product_id.to_numpy(), k)
    it.loc[f, "seller_id"] = rng.choice(t["sellers"].seller_id.to_numpy(), k)
    pay = t["payments"]
    f = pay.order_id.isin(fut_orders).to_numpy()
    pay.loc[f, "amount"] = rng.uniform(1, 999, int(f.sum())).round(2)

    rv = t["reviews"]
    f = (rv.created_at >= c).to_numpy()
    rv.loc[f, "score"] = rng.integers(1, 6, int(f.sum()))
    rv.loc[f, "created_at"] = later_times(int(f.sum())).to_numpy()
    rv["answered_at"] = pd.NaT  # later answers (and all others) vanish: never read
    rv.loc[f, "answered_at"] = (rv.loc[f, "created_at"] + pd.Timedelta(hours=5)).to_numpy()
    t["reviews"] = rv

    r = t["returns"]
    f = (r.returned_at >= c).to_numpy()
    r.loc[f, "returned_at"] = later_times(int(f.sum())).to_numpy() + pd.Timedelta(days=41)
    r.loc[f, "refund_amount"] = rng.uniform(0, 500, int(f.sum())).round(2)
    # New returns after the cutoff of lines sold before it: the future reveals more returns.
    past_items = it[~it.order_id.isin(fut_orders)].order_item_id.to_numpy()
    extra = rng.choice(past_items, min(25, len(past_items)), replace=False)
    t["returns"] = pd.concat([r, pd.DataFrame({
        "return_id": [f"late{i}" for i in range(len(extra))], "order_item_id": extra,
        "returned_at": later_times(len(extra)).to_numpy() + pd.Timedelta(days=45), "quantity": 1,
        "refund_amount": 1.0, "reason": "late",
    })], ignore_index=True)  # fmt: skip

    e = t["web_events"]
    f = (e.event_at >= c).to_numpy()
    k = int(f.sum())
    e.loc[f, "event_type"] = rng.choice(["view", "add_to_cart", "purchase"], k)
    e.loc[f, "customer_id"] = rng.choice(customers, k)
    e.loc[f, "product_id"] = rng.choice(t["products"].product_id.to_numpy(), k)
    e.loc[f, "event_at"] = later_times(k).to_numpy()

    camp = t["campaigns"]
    fut_camps = set(camp.campaign_id[camp.sent_at >= c])
    s = t["campaign_sends"]
    f = s.campaign_id.isin(fut_camps).to_numpy()
    s.loc[f, "group"] = rng.choice(["treatment", "control"], int(f.sum()))
    # Responses not known at the cutoff: the flag (current state) and any later time change.
    unknown = (s.responded_at.isna() | (s.responded_at >= c)).to_numpy()
    k = int(unknown.sum())
    flip = rng.random(k) < 0.5
    s.loc[unknown, "responded"] = flip
    at = np.maximum(later_times(k).to_numpy(), s.assigned_at[unknown].to_numpy())
    at = at + pd.Timedelta(days=2)
    s.loc[unknown, "responded_at"] = np.where(flip, at, np.datetime64("NaT"))
    s["responded_at"] = pd.to_datetime(s.responded_at)

    ph = t["price_history"]
    f = (ph.valid_from >= c).to_numpy()
    ph.loc[f, "price"] = rng.uniform(1, 999, int(f.sum())).round(2)
    ph.loc[f, "is_test"] = rng.random(int(f.sum())) < 0.5
    return t


def _all_features(wh: Warehouse, cutoff: datetime) -> dict[str, pd.DataFrame]:
    return {entity: build_features(wh, cutoff, entity) for entity in FEATURE_SETS}


def _assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame], what: str) -> None:
    """Same rows, keys, nulls, integers, strings and timestamps; floats to 1e-12 relative.

    Float sums are not bit-for-bit reproducible: DuckDB's parallel hash joins may feed a
    group's rows to ``sum`` in another order when the table holds other rows, which moves the
    last bit. A leak moves a feature by far more than 1e-12 of its value.
    """
    for entity, left in a.items():
        pd.testing.assert_frame_equal(
            left, b[entity], check_exact=False, rtol=1e-12, atol=1e-12,
            obj=f"{entity} features ({what})",
        )  # fmt: skip
        for col in left.columns:
            if not pd.api.types.is_float_dtype(left[col]):
                assert left[col].equals(b[entity][col]), (entity, col, what)


def _check_cutoff(
    tables: Tables,
    cutoff: datetime,
    seed: int,
    factory: Callable[..., Warehouse],
    tag: str,
    full_wh: Warehouse | None = None,
) -> None:
    full = _all_features(full_wh or factory(tables, f"full{tag}"), cutoff)
    assert len(full["customers"]) > 10 and len(full["orders"]) > 10  # a meaningful check
    past = _all_features(factory(as_of(tables, cutoff), f"past{tag}"), cutoff)
    _assert_same(full, past, "future deleted")
    other = _all_features(factory(scramble_future(tables, cutoff, seed), f"other{tag}"), cutoff)
    _assert_same(full, other, "future scrambled")


@pytest.fixture(scope="module")
def full_shop(shop_tables: Tables, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """The whole shop, loaded once and only read: every cutoff below checks against it."""
    wh = load_warehouse(tmp_path_factory.mktemp("full") / "full.duckdb", shop_tables)
    yield wh
    wh.close()


@pytest.mark.parametrize(
    "cutoff", [datetime(2024, 5, 17, 13, 45, 10), datetime(2024, 11, 29)], ids=str
)
def test_features_ignore_the_future(
    shop_tables: Tables,
    full_shop: Warehouse,
    warehouse_factory: Callable[..., Warehouse],
    cutoff: datetime,
) -> None:
    _check_cutoff(shop_tables, cutoff, 7, warehouse_factory, "", full_wh=full_shop)


@pytest.mark.slow
@settings(
    max_examples=3,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: each example ~7 s
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    day=st.floats(min_value=90, max_value=350),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_features_ignore_the_future_at_any_cutoff(
    warehouse_factory: Callable[..., Warehouse], day: float, seed: int
) -> None:
    tables = make_tables(customers=150, seed=seed)
    cutoff = (START + timedelta(days=day)).replace(microsecond=0)
    _check_cutoff(tables, cutoff, seed, warehouse_factory, str(seed))
