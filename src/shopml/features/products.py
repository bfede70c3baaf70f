"""Product features at a cutoff: sales, returns, funnel, price as it stood, catalogue attributes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import ibis
import ibis.expr.types as ir

from shopml.features._snapshot import Snapshot, attach, exact_sum, ratio

PRODUCT_COLUMNS: dict[str, str] = {
    "product_id": "key",
    "category": "catalogue category (string)",
    "size_type": "size system: none, apparel, shoes, furniture or electronics (string)",
    "list_price": "catalogue list price",
    "unit_cost": "unit cost, if the shop records it",
    "weight_g": "weight in grams",
    "volume_cm3": "length * height * width in cm3",
    "current_price": "price in force: latest price_history row before the cutoff, else list_price",
    "price_vs_list": "current_price / list_price; null without a list price",
    "price_changes": "price_history rows valid from before the cutoff (0 without price_history)",
    "days_since_price_change": "days from the latest such row to the cutoff; null if none",
    "units_sold": "units sold before the cutoff",
    "orders_total": "orders containing the product, purchased before the cutoff",
    "revenue_total": "goods value sold before the cutoff",
    "units_30d": "units sold in the 30 days before the cutoff",
    "orders_30d": "orders in the 30 days before the cutoff",
    "avg_selling_price_90d": "revenue / units in the 90 days before the cutoff; null if none sold",
    "n_returns": "returns of the product made before the cutoff",
    "return_rate": "distinct lines returned before the cutoff / lines sold; null without sales",
    "views_30d": "product views in the 30 days before the cutoff (0 without web_events)",
    "add_to_cart_30d": "add-to-cart events in the 30 days before the cutoff",
    "conversion_30d": "orders_30d / views_30d; null without views",
    "n_reviews": "reviews written before the cutoff on orders containing the product",
    "avg_review_score": "mean score of those reviews; null if none",
}


def product_sales(snap: Snapshot) -> ir.Table:
    """Per product sold before the cutoff: sales volume and return counts."""
    i = snap.items
    in_30d = i.purchased_at >= snap.ago(30)
    in_90d = i.purchased_at >= snap.ago(90)
    sales = i.group_by("product_id").aggregate(
        units_sold=i.quantity.sum(),
        items_sold=i.count(),
        orders_total=i.order_id.nunique(),
        revenue_total=exact_sum(i.line_value),
        units_30d=i.quantity.sum(where=in_30d),
        orders_30d=i.order_id.nunique(where=in_30d),
        revenue_90d=exact_sum(i.line_value, where=in_90d),
        units_90d=i.quantity.sum(where=in_90d),
    )
    r = snap.returns
    rets = r.group_by("product_id").aggregate(
        n_returns=r.count(), returned_items=r.order_item_id.nunique()
    )
    t = attach(sales, [rets], "product_id")
    # Only sold products are here: no return means a rate of 0.
    return t.mutate(
        returned_items=t.returned_items.fill_null(0),
        return_rate=ratio(t.returned_items.fill_null(0), t.items_sold),
    )


def product_features(backend: Any, cutoff: datetime | date | str) -> ir.Table:
    """One row per catalogue product, with :data:`PRODUCT_COLUMNS` as known before ``cutoff``.

    The current price is the latest ``price_history`` row with ``valid_from`` before the
    cutoff, else the list price. Missing ``price_history``, ``web_events``, ``returns`` or
    ``reviews`` tables give 0 counts and null rates (and the list price as current price).
    """
    snap = Snapshot(backend, cutoff)
    ph = snap.price_history
    prices = ph.group_by("product_id").aggregate(
        hist_price=ph.price.argmax(ph.valid_from),
        price_changes=ph.count(),
        last_price_change_at=ph.valid_from.max(),
    )
    e = snap.web_events.filter(lambda t: t.product_id.notnull() & (t.event_at >= snap.ago(30)))
    web = e.group_by("product_id").aggregate(
        views_30d=e.count(where=e.event_type == "view"),
        add_to_cart_30d=e.count(where=e.event_type == "add_to_cart"),
    )
    pairs = snap.items.select("product_id", "order_id").distinct()
    rv = snap.reviews.join(pairs, "order_id")
    reviews = rv.group_by("product_id").aggregate(
        n_reviews=rv.count(), avg_review_score=rv.score.cast("float64").mean()
    )
    p = snap.table("products")
    t = attach(p, [prices, product_sales(snap), web, reviews], "product_id")
    counts = ["price_changes", "units_sold", "orders_total", "units_30d", "orders_30d",
              "n_returns", "views_30d", "add_to_cart_30d", "n_reviews"]  # fmt: skip
    t = t.mutate(
        **{c: t[c].cast("int64").fill_null(0) for c in counts},
        revenue_total=t.revenue_total.cast("float64").fill_null(0.0),
        current_price=ibis.coalesce(t.hist_price, t.list_price),
    )
    return t.select(
        "product_id",
        "category",
        "size_type",
        "list_price",
        "unit_cost",
        "weight_g",
        volume_cm3=t.length_cm * t.height_cm * t.width_cm,
        current_price=t.current_price,
        price_vs_list=ratio(t.current_price, t.list_price),
        price_changes=t.price_changes,
        days_since_price_change=snap.days_before_cutoff(t.last_price_change_at),
        units_sold=t.units_sold,
        orders_total=t.orders_total,
        revenue_total=t.revenue_total,
        units_30d=t.units_30d,
        orders_30d=t.orders_30d,
        avg_selling_price_90d=ratio(t.revenue_90d, t.units_90d),
        n_returns=t.n_returns,
        return_rate=t.return_rate,
        views_30d=t.views_30d,
        add_to_cart_30d=t.add_to_cart_30d,
        conversion_30d=ratio(t.orders_30d, t.views_30d),
        n_reviews=t.n_reviews,
        avg_review_score=t.avg_review_score,
    )
