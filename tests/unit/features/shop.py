"""A small hand-made shop (every canonical table) for feature tests, generated with numpy."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from shopml.data.warehouse import Warehouse

START = datetime(2024, 1, 1)
CATEGORIES = ["toys", "books", "garden", "fashion", "shoes", "sofas", "phones", "kitchen"]
SIZE_BY_CATEGORY = {"fashion": "apparel", "shoes": "shoes", "sofas": "furniture",
                    "phones": "electronics"}  # fmt: skip
CARRIERS = ["post", "fastship", "cargo"]


def _ts(base: datetime, days: np.ndarray) -> pd.Series:
    """Timestamps ``days`` after ``base``, at whole seconds (as a shop's database stores them)."""
    return pd.Series(
        pd.Timestamp(base) + pd.to_timedelta(np.asarray(days) * 86400, unit="s")
    ).dt.floor("s")


def make_tables(customers: int = 200, days: int = 365, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Canonical tables for a shop of ``customers`` over ``days`` from 2024-01-01."""
    rng = np.random.default_rng(seed)
    n_c, n_s, n_p = customers, 12, 60

    cust = pd.DataFrame({
        "customer_id": [f"c{i:04d}" for i in range(n_c)],
        "created_at": _ts(START, rng.uniform(-200, days, n_c)),
        "country": "BR", "region": rng.choice(["SP", "RJ", "MG"], n_c), "city": None,
        "zip_prefix": None,
        "lat": rng.uniform(-30, -5, n_c).round(4), "lon": rng.uniform(-55, -35, n_c).round(4),
    })  # fmt: skip
    cust.loc[rng.random(n_c) < 0.05, "created_at"] = pd.NaT

    sellers = pd.DataFrame({
        "seller_id": [f"s{i:02d}" for i in range(n_s)], "country": "BR", "region": "SP",
        "city": None, "zip_prefix": None,
        "lat": rng.uniform(-30, -5, n_s).round(4), "lon": rng.uniform(-55, -35, n_s).round(4),
    })  # fmt: skip

    cats = rng.choice(CATEGORIES, n_p)
    products = pd.DataFrame({
        "product_id": [f"p{i:03d}" for i in range(n_p)], "category": cats,
        "name": None, "size_type": [SIZE_BY_CATEGORY.get(c, "none") for c in cats],
        "list_price": rng.uniform(5, 300, n_p).round(2),
        "unit_cost": rng.uniform(2, 100, n_p).round(2),
        "weight_g": rng.uniform(100, 5000, n_p).round(0),
        "length_cm": rng.uniform(5, 80, n_p).round(1),
        "height_cm": rng.uniform(2, 50, n_p).round(1),
        "width_cm": rng.uniform(5, 60, n_p).round(1),
    })  # fmt: skip
    products.loc[0, "list_price"] = np.nan

    # Orders: each customer orders a Poisson number of times after creation.
    n_orders = rng.poisson(3, n_c)
    cust_idx = np.repeat(np.arange(n_c), n_orders)
    created_day = ((cust.created_at - pd.Timestamp(START)).dt.total_seconds() / 86400).fillna(0)
    lo = np.maximum(created_day.to_numpy()[cust_idx], 0)
    day = lo + rng.random(len(cust_idx)) * (days - lo)
    n_o = len(cust_idx)
    purchased = _ts(START, day)
    approved = purchased + pd.to_timedelta(rng.uniform(0, 1, n_o), unit="D")
    shipped = approved + pd.to_timedelta(rng.uniform(0.5, 4, n_o), unit="D")
    delivered = shipped + pd.to_timedelta(rng.uniform(1, 10, n_o), unit="D")
    estimated = (purchased + pd.to_timedelta(rng.integers(5, 15, n_o), unit="D")).dt.floor("D")
    status = rng.choice(["delivered", "canceled", "shipped"], n_o, p=[0.85, 0.05, 0.10])
    canceled, in_transit = status == "canceled", status == "shipped"
    orders = pd.DataFrame({
        "order_id": [f"o{i:05d}" for i in range(n_o)],
        "customer_id": cust.customer_id.to_numpy()[cust_idx],
        "status": status, "purchased_at": purchased,
        "approved_at": approved.dt.floor("s"),
        "shipped_at": shipped.dt.floor("s").where(~canceled),
        "delivered_at": delivered.dt.floor("s").where(~canceled & ~in_transit),
        "estimated_delivery_at": estimated,
        "carrier": rng.choice(np.array(CARRIERS, dtype=object), n_o),
    })  # fmt: skip
    orders.loc[rng.random(n_o) < 0.05, "carrier"] = None

    n_lines = rng.integers(1, 4, n_o)
    o_idx = np.repeat(np.arange(n_o), n_lines)
    seq = np.concatenate([np.arange(1, k + 1) for k in n_lines])
    prod_idx = rng.integers(0, n_p, len(o_idx))
    list_price = products.list_price.fillna(50).to_numpy()
    items = pd.DataFrame({
        "order_item_id": [f"{orders.order_id[o]}-{s}" for o, s in zip(o_idx, seq, strict=True)],
        "order_id": orders.order_id.to_numpy()[o_idx], "item_seq": seq,
        "product_id": products.product_id.to_numpy()[prod_idx],
        "seller_id": sellers.seller_id.to_numpy()[rng.integers(0, n_s, len(o_idx))],
        "quantity": rng.integers(1, 4, len(o_idx)),
        "unit_price": (list_price[prod_idx] * rng.uniform(0.8, 1.1, len(o_idx))).round(2),
        "freight": rng.uniform(0, 30, len(o_idx)).round(2),
    })  # fmt: skip

    totals = items.assign(v=items.unit_price * items.quantity).groupby("order_id").v.sum()
    payments = pd.DataFrame({
        "order_id": totals.index, "payment_seq": 1,
        "method": rng.choice(["credit_card", "boleto", "voucher"], len(totals)),
        "installments": rng.integers(1, 6, len(totals)), "amount": totals.to_numpy().round(2),
    })  # fmt: skip

    done = orders[orders.delivered_at.notna()]
    rev = done.sample(frac=0.6, random_state=seed)
    rev_created = rev.delivered_at + pd.to_timedelta(rng.uniform(0, 5, len(rev)), unit="D")
    reviews = pd.DataFrame({
        "review_id": [f"r{i:05d}" for i in range(len(rev))], "order_id": rev.order_id.to_numpy(),
        "score": rng.integers(1, 6, len(rev)), "created_at": rev_created.dt.floor("s").to_numpy(),
        "answered_at": (rev_created + pd.to_timedelta(rng.uniform(0, 3, len(rev)), unit="D"))
        .dt.floor("s").to_numpy(),
        "title": None, "comment": None,
    })  # fmt: skip

    li = items.merge(done[["order_id", "delivered_at"]], on="order_id")
    ret = li[rng.random(len(li)) < 0.15]
    returns = pd.DataFrame({
        "return_id": [f"x{i:05d}" for i in range(len(ret))],
        "order_item_id": ret.order_item_id.to_numpy(),
        "returned_at": (ret.delivered_at + pd.to_timedelta(rng.uniform(1, 20, len(ret)), unit="D"))
        .dt.floor("s").to_numpy(),
        "quantity": 1, "refund_amount": ret.unit_price.to_numpy(),
        "reason": rng.choice(["size", "damaged", "changed_mind"], len(ret)),
    })  # fmt: skip

    n_e = 12 * n_c
    ev_idx = rng.integers(0, n_c, n_e)
    ev_at = _ts(START, rng.uniform(0, days, n_e))
    ev_cust = cust.customer_id.to_numpy()[ev_idx].astype(object)
    # A visitor is anonymous before their account exists (and sometimes after).
    before_account = (ev_at < cust.created_at.to_numpy()[ev_idx]).to_numpy()
    ev_cust[(rng.random(n_e) < 0.2) | before_account] = None
    web = pd.DataFrame({
        "event_id": [f"e{i:06d}" for i in range(n_e)],
        "session_id": [f"w{i:05d}" for i in rng.integers(0, n_e // 4, n_e)],
        "customer_id": ev_cust,
        "product_id": products.product_id.to_numpy()[rng.integers(0, n_p, n_e)],
        "event_type": rng.choice(["view", "add_to_cart", "purchase"], n_e, p=[0.75, 0.2, 0.05]),
        "event_at": ev_at, "order_id": None,
    })  # fmt: skip

    n_k = 5
    sent = _ts(START, np.linspace(20, days - 20, n_k))
    campaigns = pd.DataFrame({
        "campaign_id": [f"k{i}" for i in range(n_k)], "name": [f"campaign {i}" for i in range(n_k)],
        "channel": rng.choice(["email", "sms", "push"], n_k), "sent_at": sent,
        "response_window_days": 14, "discount_pct": rng.choice([5.0, 10.0, np.nan], n_k),
    })  # fmt: skip
    sends = []
    for k in range(n_k):
        # Only customers whose account existed when the campaign was assigned.
        eligible = np.flatnonzero(
            (cust.created_at.fillna(pd.Timestamp(START)) < sent[k]).to_numpy()
        )
        who = rng.choice(eligible, size=min(n_c // 3, len(eligible)), replace=False)
        responded = rng.random(len(who)) < 0.25
        at = sent[k] + pd.to_timedelta(rng.uniform(0, 14, len(who)), unit="D")
        sends.append(pd.DataFrame({
            "campaign_id": f"k{k}", "customer_id": cust.customer_id.to_numpy()[who],
            "group": rng.choice(["treatment", "control"], len(who), p=[0.8, 0.2]),
            "assigned_at": sent[k] - pd.Timedelta(hours=1), "responded": responded,
            "responded_at": pd.Series(at).dt.floor("s").where(responded).to_numpy(),
            "response_order_id": None,
        }))  # fmt: skip
    campaign_sends = pd.concat(sends, ignore_index=True)

    ph = []
    for p in range(0, n_p, 2):
        k = int(rng.integers(1, 5))
        vf = np.sort(rng.choice(np.arange(-30, days), size=k, replace=False))
        ph.append(pd.DataFrame({
            "product_id": products.product_id[p], "valid_from": _ts(START, vf + 0.5),
            "price": (list_price[p] * rng.uniform(0.7, 1.2, k)).round(2),
            "is_test": rng.random(k) < 0.2,
        }))  # fmt: skip
    price_history = pd.concat(ph, ignore_index=True)

    return {
        "customers": cust, "sellers": sellers, "products": products, "orders": orders,
        "order_items": items, "payments": payments, "reviews": reviews, "returns": returns,
        "web_events": web, "campaigns": campaigns, "campaign_sends": campaign_sends,
        "price_history": price_history,
    }  # fmt: skip


def load_warehouse(path: Path, tables: dict[str, pd.DataFrame]) -> Warehouse:
    """A warehouse at ``path`` holding exactly ``tables`` (every row must keep its contract)."""
    wh = Warehouse(path)
    report = wh.write_tables(tables, source="test", mode="dataset")
    assert report.rows_quarantined == 0, {t.table: t.by_rule for t in report.tables}
    return wh
