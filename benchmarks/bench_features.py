"""Customer features for ~1M orders: shopml's Ibis builder on DuckDB vs a pandas peer.

The pandas peer computes the same customer features the way a data scientist typically would
(filter by the cutoff, groupby, merge) from frames already in memory; shopml's builder runs its
Ibis expression on the warehouse's DuckDB and hands back a pandas frame. Both run in the same
process on the same data, and the script checks that they agree before reporting times.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import Result, best_of
from shopml.data.contracts import get_contract
from shopml.data.warehouse import Warehouse
from shopml.features import customer_features

START = datetime(2023, 1, 1)
DAYS = 730
CUTOFF = START + timedelta(days=640)
CATEGORIES = np.array([f"cat{i:02d}" for i in range(40)], dtype=object)


def _ts(days: np.ndarray) -> np.ndarray:
    """Whole-second timestamps ``days`` after START."""
    secs = (np.asarray(days) * 86400).astype("int64")
    return np.datetime64(START, "s") + secs.astype("timedelta64[s]")


def make_tables(n_orders: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Canonical tables (the ones customer features read) with about ``n_orders`` orders."""
    rng = np.random.default_rng(seed)
    n_c, n_p = max(n_orders // 4, 10), max(n_orders // 200, 20)
    cid = np.array([f"c{i:07d}" for i in range(n_c)], dtype=object)
    pid = np.array([f"p{i:06d}" for i in range(n_p)], dtype=object)
    customers = pd.DataFrame({
        "customer_id": cid, "created_at": _ts(rng.uniform(-100, DAYS, n_c)), "country": "BR",
        "region": None, "city": None, "zip_prefix": None,
        "lat": rng.uniform(-30, -5, n_c), "lon": rng.uniform(-55, -35, n_c),
    })  # fmt: skip
    products = pd.DataFrame({
        "product_id": pid, "category": rng.choice(CATEGORIES, n_p), "name": None,
        "size_type": "none", "list_price": rng.uniform(5, 300, n_p), "unit_cost": None,
        "weight_g": None, "length_cm": None, "height_cm": None, "width_cm": None,
    })  # fmt: skip
    cust_of = rng.integers(0, n_c, n_orders)
    created = (customers.created_at.to_numpy() - np.datetime64(START)) / np.timedelta64(1, "D")
    lo = np.maximum(created[cust_of], 0)
    purchased = _ts(lo + rng.random(n_orders) * (DAYS - lo))
    oid = np.array([f"o{i:08d}" for i in range(n_orders)], dtype=object)
    orders = pd.DataFrame({
        "order_id": oid, "customer_id": cid[cust_of], "status": "delivered",
        "purchased_at": purchased, "approved_at": None, "shipped_at": None,
        "delivered_at": purchased + np.timedelta64(5, "D"),
        "estimated_delivery_at": None, "carrier": None,
    })  # fmt: skip
    n_lines = rng.integers(1, 4, n_orders)
    o_idx = np.repeat(np.arange(n_orders), n_lines)
    seq = np.arange(len(o_idx)) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines) + 1
    items = pd.DataFrame({
        "order_item_id": oid[o_idx] + "-" + seq.astype(str).astype(object),
        "order_id": oid[o_idx], "item_seq": seq,
        "product_id": pid[rng.integers(0, n_p, len(o_idx))],
        "seller_id": None, "quantity": rng.integers(1, 4, len(o_idx)),
        "unit_price": rng.uniform(5, 300, len(o_idx)).round(2), "freight": None,
    })  # fmt: skip
    ret = rng.random(len(items)) < 0.1
    returns = pd.DataFrame({
        "return_id": [f"x{i:08d}" for i in range(int(ret.sum()))],
        "order_item_id": items.order_item_id.to_numpy()[ret],
        "returned_at": purchased[o_idx[ret]] + (rng.uniform(6, 40, int(ret.sum())) * 86400)
        .astype("int64").astype("timedelta64[s]"),
        "quantity": 1, "refund_amount": items.unit_price.to_numpy()[ret], "reason": None,
    })  # fmt: skip
    rv = rng.random(n_orders) < 0.5
    reviews = pd.DataFrame({
        "review_id": [f"r{i:08d}" for i in range(int(rv.sum()))], "order_id": oid[rv],
        "score": rng.integers(1, 6, int(rv.sum())),
        "created_at": purchased[rv] + np.timedelta64(7, "D"), "answered_at": None,
        "title": None, "comment": None,
    })  # fmt: skip
    n_e = 3 * n_orders
    ev_cust = cid[rng.integers(0, n_c, n_e)]
    web = pd.DataFrame({
        "event_id": [f"e{i:09d}" for i in range(n_e)],
        "session_id": [f"w{i:08d}" for i in rng.integers(0, n_e // 4, n_e)],
        "customer_id": ev_cust, "product_id": pid[rng.integers(0, n_p, n_e)],
        "event_type": rng.choice(np.array(["view", "add_to_cart", "purchase"], dtype=object), n_e,
                                 p=[0.8, 0.15, 0.05]),
        "event_at": _ts(rng.uniform(0, DAYS, n_e)), "order_id": None,
    })  # fmt: skip
    n_k = 24
    sent = _ts(np.linspace(10, DAYS - 10, n_k))
    campaigns = pd.DataFrame({
        "campaign_id": [f"k{i}" for i in range(n_k)], "name": "c", "channel": "email",
        "sent_at": sent, "response_window_days": 14, "discount_pct": 10.0,
    })  # fmt: skip
    per = max(n_c // 10, 1)
    k_idx = np.repeat(np.arange(n_k), per)
    who = np.concatenate([rng.choice(n_c, per, replace=False) for _ in range(n_k)])
    responded = rng.random(len(k_idx)) < 0.1
    r_at = sent[k_idx] + (rng.uniform(0, 14, len(k_idx)) * 86400).astype("int64").astype(
        "timedelta64[s]"
    )
    sends = pd.DataFrame({
        "campaign_id": campaigns.campaign_id.to_numpy()[k_idx], "customer_id": cid[who],
        "group": rng.choice(np.array(["treatment", "control"], dtype=object), len(k_idx)),
        "assigned_at": sent[k_idx], "responded": responded,
        "responded_at": np.where(responded, r_at, np.datetime64("NaT")),
        "response_order_id": None,
    })  # fmt: skip
    return {
        "customers": customers, "products": products, "orders": orders, "order_items": items,
        "returns": returns, "reviews": reviews, "web_events": web, "campaigns": campaigns,
        "campaign_sends": sends,
    }  # fmt: skip


def load(path: Path, tables: dict[str, pd.DataFrame]) -> Warehouse:
    """Bulk-load the tables with their canonical DDL (contract checks are not what is timed)."""
    wh = Warehouse(path)
    for name, df in tables.items():
        contract = get_contract(name)
        wh.con.execute(contract.ddl())
        wh.con.register("_staged", df[contract.column_names])
        wh.con.execute(f'INSERT INTO "{name}" SELECT * FROM _staged')
        wh.con.unregister("_staged")
    return wh


def pandas_customer_features(t: dict[str, pd.DataFrame], cutoff: datetime) -> pd.DataFrame:
    """The same customer features, written in plain pandas (the peer)."""
    c = pd.Timestamp(cutoff)

    def days_before(s: pd.Series) -> pd.Series:
        return (c - s).dt.total_seconds() / 86400

    orders = t["orders"][t["orders"].purchased_at < c][["order_id", "customer_id", "purchased_at"]]
    items = t["order_items"].merge(orders, on="order_id")
    items["line_value"] = items.unit_price * items.quantity
    value = items.groupby("order_id", as_index=False).line_value.sum()
    o = orders.merge(value, on="order_id", how="left").fillna({"line_value": 0.0})
    g = o.groupby("customer_id")
    # Indexed by every customer, so features of customers without orders still align.
    feats = pd.DataFrame({
        "frequency_orders": g.size(), "monetary_total": g.line_value.sum(),
        "max_order_value": g.line_value.max(),
        "first_order_at": g.purchased_at.min(), "last_order_at": g.purchased_at.max(),
    }).reindex(t["customers"].customer_id)  # fmt: skip
    for d in (30, 90, 365):
        recent = o[o.purchased_at >= c - pd.Timedelta(days=d)].groupby("customer_id")
        feats[f"orders_{d}d"] = recent.size()
        feats[f"spend_{d}d"] = recent.line_value.sum()
    items = items.merge(t["products"][["product_id", "category"]], on="product_id", how="left")
    gi = items.groupby("customer_id")
    feats["items_total"] = gi.size()
    feats["units_total"] = gi.quantity.sum()
    feats["distinct_products"] = gi.product_id.nunique()
    feats["distinct_categories"] = gi.category.nunique()
    r = t["returns"][t["returns"].returned_at < c]
    r = r[["order_item_id", "refund_amount"]].merge(
        items[["order_item_id", "customer_id"]], on="order_item_id"
    )
    gr = r.groupby("customer_id")
    feats["n_returns"] = gr.size()
    feats["returned_items"] = gr.order_item_id.nunique()
    feats["refund_total"] = gr.refund_amount.sum()
    e = t["web_events"]
    e = e[e.customer_id.notna() & (e.event_at < c)]
    recent = e[e.event_at >= c - pd.Timedelta(days=30)]
    feats["views_30d"] = recent[recent.event_type == "view"].groupby("customer_id").size()
    feats["add_to_cart_30d"] = (
        recent[recent.event_type == "add_to_cart"].groupby("customer_id").size()
    )
    feats["sessions_30d"] = recent.groupby("customer_id").session_id.nunique()
    feats["last_visit_at"] = e.groupby("customer_id").event_at.max()
    s = t["campaign_sends"].merge(t["campaigns"][["campaign_id", "sent_at"]], on="campaign_id",
                                  how="left")  # fmt: skip
    s = s[(s.assigned_at < c) & (s.sent_at.fillna(s.assigned_at) < c) & (s.group == "treatment")]
    s = s.assign(resp=(s.responded_at < c))
    gs = s.groupby("customer_id")
    feats["campaigns_received"] = gs.size()
    feats["campaign_responses"] = gs.resp.sum()
    rv = t["reviews"][t["reviews"].created_at < c].merge(orders[["order_id", "customer_id"]],
                                                         on="order_id")  # fmt: skip
    grv = rv.groupby("customer_id")
    feats["n_reviews"] = grv.size()
    feats["avg_review_score"] = grv.score.mean()

    cust = t["customers"][["customer_id", "created_at", "lat", "lon"]]
    out = cust.merge(feats, left_on="customer_id", right_index=True, how="left")
    counts = ["frequency_orders", "orders_30d", "orders_90d", "orders_365d", "items_total",
              "units_total", "distinct_products", "distinct_categories", "n_returns",
              "returned_items", "views_30d", "add_to_cart_30d", "sessions_30d",
              "campaigns_received", "campaign_responses", "n_reviews"]  # fmt: skip
    out[counts] = out[counts].fillna(0).astype("int64")
    sums = ["monetary_total", "spend_30d", "spend_90d", "spend_365d", "refund_total"]
    out[sums] = out[sums].fillna(0.0)
    out = out[(out.created_at < c) | (out.frequency_orders > 0)].copy()
    since = out[["created_at", "first_order_at"]].min(axis=1)
    res = pd.DataFrame({
        "customer_id": out.customer_id,
        "tenure_days": days_before(since),
        "recency_days": days_before(out.last_order_at),
        "days_since_first_order": days_before(out.first_order_at),
        "frequency_orders": out.frequency_orders, "monetary_total": out.monetary_total,
        "avg_order_value": out.monetary_total / out.frequency_orders.replace(0, np.nan),
        "max_order_value": out.max_order_value,
        "days_between_orders_mean": (out.last_order_at - out.first_order_at).dt.total_seconds()
        / 86400 / (out.frequency_orders - 1).replace(0, np.nan),
    })  # fmt: skip
    for col in ["orders_30d", "orders_90d", "orders_365d", "spend_30d", "spend_90d",
                "spend_365d", "items_total", "units_total", "distinct_products",
                "distinct_categories", "n_returns", "returned_items"]:  # fmt: skip
        res[col] = out[col]
    res["return_rate"] = out.returned_items / out.items_total.replace(0, np.nan)
    for col in ["refund_total", "views_30d", "add_to_cart_30d", "sessions_30d"]:
        res[col] = out[col]
    res["days_since_last_visit"] = days_before(out.last_visit_at)
    res["campaigns_received"] = out.campaigns_received
    res["campaign_responses"] = out.campaign_responses
    res["campaign_response_rate"] = out.campaign_responses / out.campaigns_received.replace(
        0, np.nan
    )
    res["n_reviews"] = out.n_reviews
    res["avg_review_score"] = out.avg_review_score
    res["lat"], res["lon"] = out.lat, out.lon
    return res.sort_values("customer_id").reset_index(drop=True)


COMPARED = ["frequency_orders", "monetary_total", "recency_days", "spend_90d", "return_rate",
            "views_30d", "sessions_30d", "campaign_response_rate", "distinct_categories",
            "days_between_orders_mean", "avg_review_score", "tenure_days"]  # fmt: skip


def run(quick: bool = False) -> Result:
    """Time both implementations on the same data and check they agree."""
    n_orders = 20_000 if quick else 1_000_000
    tables = make_tables(n_orders)
    with tempfile.TemporaryDirectory() as tmp:
        wh = load(Path(tmp) / "bench.duckdb", tables)
        try:

            def ibis_run() -> pd.DataFrame:
                return customer_features(wh.ibis(), CUTOFF).order_by("customer_id").to_pandas()

            ours = ibis_run()  # warm-up, and the frame checked below
            peer = pandas_customer_features(tables, CUTOFF)
            for col in COMPARED:
                np.testing.assert_allclose(
                    ours[col].astype("float64").to_numpy(),
                    peer[col].astype("float64").to_numpy(),
                    rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=col,
                )  # fmt: skip
            assert list(ours.customer_id) == list(peer.customer_id)
            repeat = 3 if quick else 2
            t_ibis = best_of(ibis_run, repeat)
            t_pandas = best_of(lambda: pandas_customer_features(tables, CUTOFF), repeat)
        finally:
            wh.close()
    rows = {name: len(df) for name, df in tables.items()}
    speedup = t_pandas / t_ibis
    markdown = (
        f"Customer features at one cutoff, {n_orders:,} orders "
        f"({rows['order_items']:,} lines, {rows['web_events']:,} web events, "
        f"{rows['campaign_sends']:,} campaign sends, {len(ours):,} customers out), "
        f"best of {repeat}:\n\n"
        "| implementation | seconds |\n| --- | ---: |\n"
        f"| shopml `customer_features` (Ibis on DuckDB, to pandas) | {t_ibis:.2f} |\n"
        f"| pandas groupby/merge peer (frames already in memory) | {t_pandas:.2f} |\n\n"
        f"Speed-up: **{speedup:.1f}x** (goal: at least 5x). The two agree on "
        f"{len(COMPARED)} columns ({', '.join(COMPARED[:4])}, ...)."
    )
    return Result(
        name="features",
        title="Point-in-time customer features: Ibis/DuckDB vs pandas",
        markdown=markdown,
        figures={
            "n_orders": n_orders, "rows": rows, "customers_out": len(ours),
            "seconds_ibis": round(t_ibis, 3), "seconds_pandas": round(t_pandas, 3),
            "speedup": round(speedup, 2), "columns_compared": COMPARED,
        },
    )  # fmt: skip
