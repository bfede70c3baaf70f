"""Seller features at a cutoff: volume, fulfilment speed and lateness, backlog, returns, reviews."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import ibis.expr.types as ir

from shopml.features._snapshot import (
    Snapshot,
    attach,
    exact_sum,
    mean_days_between,
    ratio,
)

SELLER_COLUMNS: dict[str, str] = {
    "seller_id": "key",
    "tenure_days": "days from the seller's first sale to the cutoff; null without sales",
    "orders_total": "orders with an item from the seller, purchased before the cutoff",
    "items_sold": "order lines sold before the cutoff",
    "units_sold": "units sold before the cutoff",
    "revenue_total": "goods value sold before the cutoff",
    "distinct_products": "distinct products sold before the cutoff",
    "orders_30d": "orders in the 30 days before the cutoff",
    "backlog_7d": "orders in the 7 days before the cutoff (the load the seller is working through)",
    "n_delivered": "orders delivered before the cutoff",
    "handling_days_mean": "mean days purchase -> shipped, orders delivered before the cutoff",
    "delivery_days_mean": "mean days purchase -> delivered, orders delivered before the cutoff",
    "late_rate": "share of those deliveries later than the estimated date; null without any",
    "n_returns": "returns of the seller's items made before the cutoff",
    "return_rate": "distinct lines returned before the cutoff / items_sold; null without sales",
    "n_reviews": "reviews written before the cutoff on orders with the seller's items",
    "avg_review_score": "mean score of those reviews; null if none",
    "lat": "seller latitude",
    "lon": "seller longitude",
}


def seller_history(snap: Snapshot) -> ir.Table:
    """Per seller with any sale before the cutoff: the :data:`SELLER_COLUMNS` aggregates."""
    i = snap.items.filter(lambda t: t.seller_id.notnull())
    sales = i.group_by("seller_id").aggregate(
        first_sale_at=i.purchased_at.min(),
        orders_total=i.order_id.nunique(),
        items_sold=i.count(),
        units_sold=i.quantity.sum(),
        revenue_total=exact_sum(i.line_value),
        distinct_products=i.product_id.nunique(),
        orders_30d=i.order_id.nunique(where=i.purchased_at >= snap.ago(30)),
        backlog_7d=i.order_id.nunique(where=i.purchased_at >= snap.ago(7)),
    )
    # One row per (seller, order): an order with several of a seller's lines counts once.
    pairs = i.select("seller_id", "order_id").distinct()
    o = snap.orders  # delivered_at / shipped_at already null unless before the cutoff
    d = pairs.join(o, "order_id").filter(lambda t: t.delivered_at.notnull())
    late = d.delivered_at > d.estimated_delivery_at
    delivery = d.group_by("seller_id").aggregate(
        n_delivered=d.count(),
        handling_days_mean=mean_days_between(d.shipped_at, d.purchased_at),
        delivery_days_mean=mean_days_between(d.delivered_at, d.purchased_at),
        late_rate=late.cast("float64").mean(),
    )
    r = snap.returns.filter(lambda t: t.seller_id.notnull())
    rets = r.group_by("seller_id").aggregate(
        n_returns=r.count(), returned_items=r.order_item_id.nunique()
    )
    rv = snap.reviews.join(pairs, "order_id")
    reviews = rv.group_by("seller_id").aggregate(
        n_reviews=rv.count(), avg_review_score=rv.score.cast("float64").mean()
    )
    t = attach(sales, [delivery, rets, reviews], "seller_id")
    # Every seller here sold something, so a seller with no return has a rate of 0, not null.
    return t.mutate(
        return_rate=ratio(t.returned_items.fill_null(0), t.items_sold),
    )


def seller_features(backend: Any, cutoff: datetime | date | str) -> ir.Table:
    """One row per seller, with :data:`SELLER_COLUMNS` as known strictly before ``cutoff``.

    Every seller in the ``sellers`` table appears (the table carries no creation time); one
    with no sale yet has 0 counts and null means and rates. Delivery statistics use only
    orders whose ``delivered_at`` is before the cutoff, so an order in transit at the cutoff
    reveals nothing about its delivery. Missing ``returns`` or ``reviews`` tables give 0/null.
    """
    snap = Snapshot(backend, cutoff)
    base = snap.table("sellers").select("seller_id", "lat", "lon")
    t = attach(base, [seller_history(snap)], "seller_id")
    counts = ["orders_total", "items_sold", "units_sold", "distinct_products", "orders_30d",
              "backlog_7d", "n_delivered", "n_returns", "n_reviews"]  # fmt: skip
    t = t.mutate(
        **{c: t[c].cast("int64").fill_null(0) for c in counts},
        revenue_total=t.revenue_total.cast("float64").fill_null(0.0),
    )
    return t.select(
        "seller_id",
        tenure_days=snap.days_before_cutoff(t.first_sale_at),
        orders_total=t.orders_total,
        items_sold=t.items_sold,
        units_sold=t.units_sold,
        revenue_total=t.revenue_total,
        distinct_products=t.distinct_products,
        orders_30d=t.orders_30d,
        backlog_7d=t.backlog_7d,
        n_delivered=t.n_delivered,
        handling_days_mean=t.handling_days_mean,
        delivery_days_mean=t.delivery_days_mean,
        late_rate=t.late_rate,
        n_returns=t.n_returns,
        return_rate=t.return_rate,
        n_reviews=t.n_reviews,
        avg_review_score=t.avg_review_score,
        lat=t.lat,
        lon=t.lon,
    )
