"""Customer x product implicit feedback before a cutoff, for the recommender."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import ibis
import ibis.expr.types as ir

from shopml.features._snapshot import Snapshot, as_cutoff

INTERACTION_COLUMNS: dict[str, str] = {
    "customer_id": "key",
    "product_id": "key",
    "n_purchases": "orders of the product by the customer in [since, cutoff)",
    "n_views": "views of the product by the customer in [since, cutoff) (0 without web_events)",
    "n_add_to_cart": "add-to-cart events in [since, cutoff)",
    "last_at": "time of the latest of those interactions",
    "weight": "implicit-feedback strength: weighted sum of purchases, add-to-carts and views",
}


def interactions(
    backend: Any,
    cutoff: datetime | date | str,
    since: datetime | date | str | None = None,
    *,
    purchase_weight: float = 1.0,
    cart_weight: float = 0.3,
    view_weight: float = 0.1,
) -> ir.Table:
    """One row per (customer, product) with a purchase, view or add-to-cart in [since, cutoff).

    Purchases come from orders and their lines (the source of truth); web events supply views
    and add-to-carts (their ``purchase`` events would double count and are ignored). Anonymous
    events (no customer) are skipped. ``weight`` is a confidence-style strength for implicit
    ALS (which typically uses ``1 + alpha * weight``). Without ``web_events`` only purchases
    remain.
    """
    snap = Snapshot(backend, cutoff)
    lo = None if since is None else ibis.literal(as_cutoff(since), type="timestamp")
    i = snap.items
    if lo is not None:
        i = i.filter(i.purchased_at >= lo)
    bought = i.select(
        "customer_id", "product_id", "order_id", kind=ibis.literal("purchase"), at=i.purchased_at
    )
    e = snap.web_events.filter(
        lambda t: (
            t.customer_id.notnull()
            & t.product_id.notnull()
            & t.event_type.isin(["view", "add_to_cart"])
        )
    )
    if lo is not None:
        e = e.filter(e.event_at >= lo)
    seen = e.select(
        "customer_id",
        "product_id",
        order_id=ibis.null("string"),
        kind=e.event_type,
        at=e.event_at,
    )
    u = bought.union(seen)
    g = u.group_by("customer_id", "product_id").aggregate(
        n_purchases=u.order_id.nunique(where=u.kind == "purchase"),
        n_views=u.count(where=u.kind == "view"),
        n_add_to_cart=u.count(where=u.kind == "add_to_cart"),
        last_at=u.at.max(),
    )
    return g.select(
        "customer_id",
        "product_id",
        n_purchases=g.n_purchases.cast("int64"),
        n_views=g.n_views.cast("int64"),
        n_add_to_cart=g.n_add_to_cart.cast("int64"),
        last_at=g.last_at,
        weight=purchase_weight * g.n_purchases
        + cart_weight * g.n_add_to_cart
        + view_weight * g.n_views,
    )
