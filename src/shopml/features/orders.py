"""Order and order-item features: what an order is at purchase, plus history as of a cutoff.

An order's own attributes (its lines, weight, distance, promised delivery, calendar, carrier)
are known the moment it is placed, so the order itself may be purchased after the cutoff: that
is how a model scores new orders. Everything about *other* orders (the seller's speed, lateness,
backlog and returns, the customer's history) comes from strictly before the cutoff.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import ibis
import ibis.expr.types as ir

from shopml.data.contracts import SIZE_TYPES
from shopml.features._snapshot import Snapshot, attach, days_between, exact_sum, ratio
from shopml.features.customers import customer_order_history
from shopml.features.products import product_sales
from shopml.features.sellers import seller_history

EARTH_RADIUS_KM = 6371.0
SIZE_TYPE_CODES = {s: i for i, s in enumerate(sorted(SIZE_TYPES))}  # fixed: never data-driven
_SIZE_CODE_TEXT = ", ".join(f"{i}={s}" for s, i in SIZE_TYPE_CODES.items())
HOLIDAY_SEASON_DAYS = 35  # from about Black Friday to Christmas

ORDER_COLUMNS: dict[str, str] = {
    "order_id": "key",
    "customer_id": "the ordering customer (a key, not a feature)",
    "n_items": "order lines",
    "total_quantity": "units ordered",
    "total_price": "goods value (sum of unit_price * quantity)",
    "total_freight": "freight charged",
    "total_weight_g": "sum of product weight * quantity, in grams",
    "total_volume_cm3": "sum of product volume * quantity, in cm3",
    "n_sellers": "distinct sellers shipping the order",
    "distance_km": "great-circle km from customer to seller (the farthest seller)",
    "estimated_delivery_days": "days from purchase to the promised delivery date",
    "purchase_dow": "day of week of purchase, 0 = Monday",
    "purchase_month": "month of purchase, 1-12",
    "purchase_hour": "hour of purchase, 0-23",
    "days_to_christmas": "days from the purchase date to the next 25 December",
    "is_holiday_season": f"1 if purchased {HOLIDAY_SEASON_DAYS} days or less before Christmas",
    "carrier_code": "carrier as a stable code (order of first use before the cutoff); -1 unknown",
    "seller_orders_total": "orders of the order's seller(s) before the cutoff (the largest)",
    "seller_handling_days_mean": "seller's mean days to ship, deliveries before cutoff",
    "seller_delivery_days_mean": "seller's mean days to deliver, before cutoff",
    "seller_late_rate": "seller's share of late deliveries before the cutoff (max over sellers)",
    "seller_backlog_7d": "seller's orders in the 7 days before the cutoff (max over sellers)",
    "seller_return_rate": "seller's return rate before the cutoff (max over sellers)",
    "customer_orders": "the customer's orders before the cutoff",
    "customer_spend": "the customer's goods value before the cutoff",
    "customer_n_returns": "the customer's returns before the cutoff",
    "customer_return_rate": "the customer's returned lines / lines before the cutoff",
    "customer_recency_days": "days from the customer's last order before the cutoff to the cutoff",
}

# Order-level columns repeated on each item row (the seller ones are replaced by the item's own
# seller's history there).
_ITEM_ORDER_COLUMNS = [c for c in ORDER_COLUMNS if not c.startswith("seller_")
                       and c not in ("order_id", "customer_id")]  # fmt: skip

ORDER_ITEM_COLUMNS: dict[str, str] = {
    "order_item_id": "key",
    "order_id": "the line's order (a key, not a feature)",
    "product_id": "the product (a key, not a feature)",
    "seller_id": "the seller (a key, not a feature)",
    "customer_id": "the customer (a key, not a feature)",
    "item_seq": "position of the line in its order",
    "unit_price": "price paid per unit",
    "quantity": "units on the line",
    "line_value": "unit_price * quantity",
    "freight": "freight charged on the line",
    "price_vs_list": "unit_price / the product's list price",
    "category": "product category (string)",
    "category_code": "category as a stable code (order of first sale before the cutoff); -1 if new",
    "size_type": "size system (string)",
    "size_type_code": "size system as a fixed code: " + _SIZE_CODE_TEXT,
    "product_units_sold": "units of the product sold before the cutoff",
    "product_return_rate": "the product's returned lines / lines sold before the cutoff",
    "category_return_rate": "the category's returned lines / lines sold before the cutoff",
    "seller_return_rate": "the line's seller's return rate before the cutoff",
    "seller_late_rate": "the line's seller's share of late deliveries before the cutoff",
    "seller_delivery_days_mean": "the line's seller's mean purchase->delivered days",
    **{c: ORDER_COLUMNS[c] for c in _ITEM_ORDER_COLUMNS},
}


def _haversine_km(
    lat1: ir.FloatingValue, lon1: ir.FloatingValue, lat2: ir.FloatingValue, lon2: ir.FloatingValue
) -> ir.FloatingValue:
    p1, p2 = lat1.radians(), lat2.radians()
    dlat, dlon = (lat2 - lat1).radians(), (lon2 - lon1).radians()
    a = (dlat / 2).sin() ** 2 + p1.cos() * p2.cos() * (dlon / 2).sin() ** 2
    return 2 * EARTH_RADIUS_KM * a.sqrt().asin()


def first_seen_codes(values: ir.Table, column: str, at: str, name: str) -> ir.Table:
    """Code each distinct ``column`` value 0, 1, ... in order of its first ``at``.

    Codes learned at one cutoff stay the same at later cutoffs (new values only get higher
    codes), so a model trained earlier reads later features the same way, and no value seen
    only after the cutoff influences the coding.
    """
    v = values.filter(values[column].notnull())
    first = v.group_by(column).aggregate(_first_at=v[at].min())
    return first.select(
        column,
        **{name: ibis.row_number().over(order_by=[first._first_at, first[column]]).cast("int64")},
    )


def _days_to_christmas(at: ir.TimestampValue) -> ir.IntegerValue:
    day = at.date()
    this_year = ibis.date(at.year(), 12, 25).delta(day, unit="day")
    next_year = ibis.date(at.year() + 1, 12, 25).delta(day, unit="day")
    return (this_year >= 0).ifelse(this_year, next_year)


def _order_lines(snap: Snapshot, o: ir.Table, items: ir.Table | None) -> ir.Table:
    """The lines of orders ``o`` with product size and the customer-seller distance."""
    li = snap.table("order_items") if items is None else items
    li = li.join(o.select("order_id", "customer_id"), "order_id")
    p = snap.table("products")
    prod = p.select("product_id", "weight_g", volume_cm3=p.length_cm * p.height_cm * p.width_cm)
    s = snap.table("sellers")
    sel = s.select("seller_id", s_lat=s.lat, s_lon=s.lon)
    c = snap.table("customers")
    cust = c.select("customer_id", c_lat=c.lat, c_lon=c.lon)
    li = attach(attach(attach(li, [prod], "product_id"), [sel], "seller_id"), [cust], "customer_id")
    return li.mutate(distance_km=_haversine_km(li.c_lat, li.c_lon, li.s_lat, li.s_lon))


def _customer_history_columns(snap: Snapshot) -> ir.Table:
    h = customer_order_history(snap)
    return h.select(
        "customer_id",
        customer_orders=h.frequency_orders,
        customer_spend=h.monetary_total,
        customer_n_returns=h.n_returns,
        customer_return_rate=ratio(h.returned_items.fill_null(0), h.items_total),
        customer_recency_days=snap.days_before_cutoff(h.last_order_at),
    )


def _order_table(snap: Snapshot, orders: ir.Table | None) -> ir.Table:
    o = snap.orders if orders is None else orders
    # Only what is fixed at purchase; any status or later milestone of the order is ignored.
    return o.select("order_id", "customer_id", "purchased_at", "estimated_delivery_at", "carrier")


def order_features(
    backend: Any,
    cutoff: datetime | date | str,
    orders: ir.Table | None = None,
    *,
    items: ir.Table | None = None,
) -> ir.Table:
    """One row per order in ``orders`` with :data:`ORDER_COLUMNS`.

    ``orders`` defaults to every order purchased before the cutoff; pass any table with the
    canonical order columns (for example orders placed after the cutoff, to score them) and,
    for orders not in the warehouse, their lines as ``items``. Only purchase-time attributes of
    those orders are read (never their status or later timestamps). Seller and customer history
    uses facts strictly before the cutoff: for an order purchased before the cutoff that history
    includes the order itself, so a model predicting an order's outcome should take orders
    purchased at or after the cutoff. A seller with no delivery before the cutoff gives null
    history; missing ``returns`` gives 0/null return features.
    """
    snap = Snapshot(backend, cutoff)
    o = _order_table(snap, orders)
    li = _order_lines(snap, o, items)
    own = li.group_by("order_id").aggregate(
        n_items=li.count(),
        total_quantity=li.quantity.sum(),
        total_price=exact_sum(li.unit_price * li.quantity),
        total_freight=exact_sum(li.freight),
        total_weight_g=exact_sum(li.weight_g * li.quantity),
        total_volume_cm3=exact_sum(li.volume_cm3 * li.quantity),
        n_sellers=li.seller_id.nunique(),
        distance_km=li.distance_km.max(),
    )
    sh = seller_history(snap)
    ls = li.select("order_id", "seller_id").distinct().join(sh, "seller_id")
    sellers = ls.group_by("order_id").aggregate(
        seller_orders_total=ls.orders_total.max(),
        seller_handling_days_mean=ls.handling_days_mean.max(),
        seller_delivery_days_mean=ls.delivery_days_mean.max(),
        seller_late_rate=ls.late_rate.max(),
        seller_backlog_7d=ls.backlog_7d.max(),
        seller_return_rate=ls.return_rate.max(),
    )
    carriers = first_seen_codes(snap.orders, "carrier", "purchased_at", "carrier_code")
    t = attach(o, [own, sellers], "order_id")
    t = attach(t, [carriers], "carrier")
    t = attach(t, [_customer_history_columns(snap)], "customer_id")
    to_xmas = _days_to_christmas(t.purchased_at)
    return t.select(
        "order_id",
        "customer_id",
        n_items=t.n_items.cast("int64").fill_null(0),
        total_quantity=t.total_quantity.cast("int64").fill_null(0),
        total_price=t.total_price.cast("float64").fill_null(0.0),
        total_freight=t.total_freight.cast("float64"),
        total_weight_g=t.total_weight_g.cast("float64"),
        total_volume_cm3=t.total_volume_cm3.cast("float64"),
        n_sellers=t.n_sellers.cast("int64").fill_null(0),
        distance_km=t.distance_km,
        estimated_delivery_days=days_between(t.estimated_delivery_at, t.purchased_at),
        purchase_dow=t.purchased_at.day_of_week.index().cast("int64"),
        purchase_month=t.purchased_at.month().cast("int64"),
        purchase_hour=t.purchased_at.hour().cast("int64"),
        days_to_christmas=to_xmas.cast("int64"),
        is_holiday_season=(to_xmas <= HOLIDAY_SEASON_DAYS).cast("int64"),
        carrier_code=t.carrier_code.fill_null(-1),
        seller_orders_total=t.seller_orders_total.cast("int64").fill_null(0),
        seller_handling_days_mean=t.seller_handling_days_mean,
        seller_delivery_days_mean=t.seller_delivery_days_mean,
        seller_late_rate=t.seller_late_rate,
        seller_backlog_7d=t.seller_backlog_7d.cast("int64").fill_null(0),
        seller_return_rate=t.seller_return_rate,
        customer_orders=t.customer_orders.cast("int64").fill_null(0),
        customer_spend=t.customer_spend.cast("float64").fill_null(0.0),
        customer_n_returns=t.customer_n_returns.cast("int64").fill_null(0),
        customer_return_rate=t.customer_return_rate,
        customer_recency_days=t.customer_recency_days,
    )


def order_item_features(
    backend: Any,
    cutoff: datetime | date | str,
    items: ir.Table | None = None,
    *,
    orders: ir.Table | None = None,
) -> ir.Table:
    """One row per order line in ``items`` with :data:`ORDER_ITEM_COLUMNS`, for per-item models.

    ``items`` defaults to the lines of orders purchased before the cutoff; given lines are
    looked up in ``orders`` (default: the warehouse's orders). The line's own attributes are
    known at purchase; product, category, seller and customer return history come from before
    the cutoff, as in :func:`order_features`.
    """
    snap = Snapshot(backend, cutoff)
    if items is None:
        li = snap.items.select(*[c for c in snap.table("order_items").columns])
        o = snap.orders if orders is None else orders
    else:
        li = items
        o = snap.table("orders") if orders is None else orders
    o = o.semi_join(li, "order_id")
    of = order_features(backend, cutoff, o, items=li)
    of = of.select("order_id", *_ITEM_ORDER_COLUMNS)

    p = snap.table("products").select("product_id", "category", "size_type", "list_price")
    ps = product_sales(snap).select(
        "product_id", product_units_sold=lambda t: t.units_sold, product_return_rate="return_rate"
    )
    sold = snap.items.join(p.select("product_id", "category"), "product_id")
    returned = snap.returns.join(p.select("product_id", "category"), "product_id")
    cat_lines = sold.group_by("category").aggregate(cat_items=sold.count())
    cat_returned = returned.group_by("category").aggregate(
        cat_returned=returned.order_item_id.nunique()
    )
    cats = attach(cat_lines, [cat_returned], "category")
    cats = cats.select(
        "category", category_return_rate=ratio(cats.cat_returned.fill_null(0), cats.cat_items)
    )
    cat_codes = first_seen_codes(sold, "category", "purchased_at", "category_code")
    sh = seller_history(snap).select("seller_id", "return_rate", "late_rate", "delivery_days_mean")
    sh = sh.rename(
        seller_return_rate="return_rate",
        seller_late_rate="late_rate",
        seller_delivery_days_mean="delivery_days_mean",
    )
    li = li.join(o.select("order_id", "customer_id"), "order_id")
    t = attach(li, [p, ps], "product_id")
    t = attach(t, [cats, cat_codes], "category")
    t = attach(t, [sh], "seller_id")
    t = attach(t, [of], "order_id")
    return t.select(
        "order_item_id",
        "order_id",
        "product_id",
        "seller_id",
        "customer_id",
        item_seq=t.item_seq.cast("int64"),
        unit_price=t.unit_price,
        quantity=t.quantity.cast("int64"),
        line_value=t.unit_price * t.quantity,
        freight=t.freight,
        price_vs_list=ratio(t.unit_price, t.list_price),
        category=t.category,
        category_code=t.category_code.fill_null(-1),
        size_type=t.size_type,
        size_type_code=t.size_type.substitute(SIZE_TYPE_CODES, else_=-1).cast("int64"),
        product_units_sold=t.product_units_sold.cast("int64").fill_null(0),
        product_return_rate=t.product_return_rate,
        category_return_rate=t.category_return_rate,
        seller_return_rate=t.seller_return_rate,
        seller_late_rate=t.seller_late_rate,
        seller_delivery_days_mean=t.seller_delivery_days_mean,
        **{c: t[c] for c in _ITEM_ORDER_COLUMNS},
    )
