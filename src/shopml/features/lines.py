"""Order-line history as of each line's own moment, not as of one cutoff for every line.

:func:`~shopml.features.order_item_features` gives every line the history known at one cutoff:
right when lines are scored in a batch at that cutoff, stale by up to the batch window when a
use case predicts each line at its own moment (its delivery, say: a line delivered on the 27th
day of a four-week window would otherwise not know the 26 days of returns before it).

:func:`line_history_as_of` computes the same history columns, with the same definitions, as of
each line's own timestamp, strictly before it: for a line whose moment equals a cutoff the
values are exactly those :func:`order_item_features` gives at that cutoff. Each entity's events
(sales, first returns of a line, return rows, deliveries, orders) are stacked with the lines
that ask, ordered by time with the asking line before any event at the same instant, and
summed with a cumulative window: one pass per entity, on any backend Ibis compiles window
functions for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import ibis
import ibis.expr.types as ir

from shopml.features._snapshot import (
    EXACT_PLACES,
    SECONDS_PER_DAY,
    Snapshot,
    attach,
    days_between,
    epoch_seconds,
    ratio,
)

# Measures summed in whole millionths (money); the others are whole numbers (counts, seconds).
SCALED = {"value": 10**EXACT_PLACES}

# Far enough ahead that the snapshot holds every fact: the window does the point-in-time part.
_EVERYTHING = datetime(9999, 1, 1)

LINE_HISTORY_COLUMNS: dict[str, str] = {
    "product_units_sold": "units of the product sold before the line's moment",
    "product_return_rate": "the product's returned lines / lines sold before the line's moment",
    "category_return_rate": "the category's returned lines / lines sold before the moment",
    "seller_return_rate": "the line's seller's returned lines / lines sold before the moment",
    "seller_late_rate": "the seller's share of late deliveries completed before the moment",
    "seller_delivery_days_mean": "the seller's mean purchase->delivered days, same deliveries",
    "customer_orders": "the customer's orders purchased before the moment",
    "customer_spend": "the customer's goods value before the moment",
    "customer_n_returns": "the customer's returns made before the moment",
    "customer_return_rate": "the customer's returned lines / lines before the moment",
    "customer_recency_days": "days from the customer's last order before the moment to it",
}


def _cumulative(
    lines: ir.Table,
    at: str,
    key: str,
    events: list[ir.Table],
    sums: list[str],
    maxes: tuple[str, ...] = (),
) -> ir.Table:
    """Per line (``order_item_id``), the sums of ``sums`` (and maxima of ``maxes``) over the
    ``events`` of its ``key`` strictly before its ``at``; events carry ``k``, ``t`` and the
    measures (missing ones count 0)."""
    measures = {m: ibis.literal(0.0) for m in sums} | {m: ibis.null("timestamp") for m in maxes}

    def shaped(t: ir.Table, asking: bool) -> ir.Table:
        cols: dict[str, Any] = {
            "k": t.k,
            "t": t.t.cast("timestamp"),
            # An asking line sorts before an event at the same instant: strictly before.
            "ord": ibis.literal(0 if asking else 1, type="int8"),
            "qid": t.qid if asking else ibis.null("string"),
        }
        for m, zero in measures.items():
            value = t[m] if m in t.columns else zero
            # Sums run over integers: exact, so the same whatever order the engine adds a
            # key's rows in (rows at the same instant are peers of each other).
            if m in maxes:
                cols[m] = value.cast("timestamp")
            elif m in SCALED:
                cols[m] = (value.cast("float64") * SCALED[m]).round().cast("int64")
            else:
                cols[m] = value.cast("int64")
        return t.select(**cols)

    ask = lines.filter(lines[key].notnull(), lines[at].notnull()).select(
        k=lines[key], t=lines[at], qid=lines.order_item_id
    )
    parts = [shaped(ask, True)] + [shaped(e.filter(e.k.notnull()), False) for e in events]
    u = parts[0]
    for p in parts[1:]:
        u = u.union(p)
    w = ibis.cumulative_window(group_by=u.k, order_by=[u.t, u.ord])
    out = u.mutate(
        **{f"cum_{m}": u[m].sum().over(w).cast("float64") / SCALED.get(m, 1) for m in sums},
        **{f"max_{m}": u[m].max().over(w) for m in maxes},
    )
    out = out.filter(out.ord == 0)
    return out.select(
        order_item_id=out.qid,
        **{f"cum_{m}": out[f"cum_{m}"] for m in sums},
        **{f"max_{m}": out[f"max_{m}"] for m in maxes},
        t=out.t,
    )


def line_history_as_of(backend: Any, lines: ir.Table, at: str = "as_of") -> ir.Table:
    """One row per line of ``lines`` (``order_item_id``, ``product_id``, ``seller_id``,
    ``customer_id`` and the timestamp column ``at``) with :data:`LINE_HISTORY_COLUMNS`, each
    from the facts strictly before that line's ``at``.

    Definitions are those of :func:`~shopml.features.order_item_features`: a line counts as
    sold at its order's purchase, as returned at its first return, a delivery at its
    ``delivered_at`` (once per seller and order), an order at its purchase. A line's own order,
    purchased before its moment (a line scored at delivery), is part of its history.
    """
    snap = Snapshot(backend, _EVERYTHING)
    p = snap.table("products").select("product_id", "category")
    items = attach(snap.items, [p], "product_id")
    sold = items.select(
        "order_item_id",
        "product_id",
        "category",
        "seller_id",
        "customer_id",
        t=items.purchased_at,
        sold=ibis.literal(1.0),
        units=items.quantity.cast("float64"),
        value=items.line_value.cast("float64"),
    )
    r = snap.returns
    first = r.group_by("order_item_id").aggregate(t=r.returned_at.min())
    first = first.join(
        sold.select("order_item_id", "product_id", "category", "seller_id", "customer_id"),
        "order_item_id",
    ).mutate(returned=ibis.literal(1.0))
    rows = r.select(k=r.customer_id, t=r.returned_at, n_returns=ibis.literal(1.0))
    pairs = snap.items.filter(lambda t: t.seller_id.notnull()).select("seller_id", "order_id")
    d = pairs.distinct().join(snap.orders, "order_id").filter(lambda t: t.delivered_at.notnull())
    deliveries = d.select(
        k=d.seller_id,
        t=d.delivered_at,
        delivered=ibis.literal(1.0),
        late=(d.delivered_at > d.estimated_delivery_at).cast("float64"),
        seconds=epoch_seconds(d.delivered_at) - epoch_seconds(d.purchased_at),
    )
    o = snap.orders
    orders = o.select(
        k=o.customer_id, t=o.purchased_at, orders=ibis.literal(1.0), last=o.purchased_at
    )

    def by(table: ir.Table, key: str, *measures: str) -> ir.Table:
        return table.select(k=table[key], t=table.t, **{m: table[m] for m in measures})

    q = lines.select("order_item_id", "product_id", "seller_id", "customer_id", at)
    q = attach(q, [p], "product_id")
    product = _cumulative(
        q, at, "product_id", [by(sold, "product_id", "sold", "units"),
                              by(first, "product_id", "returned")],
        ["sold", "units", "returned"],
    )  # fmt: skip
    category = _cumulative(
        q, at, "category", [by(sold, "category", "sold"), by(first, "category", "returned")],
        ["sold", "returned"],
    )  # fmt: skip
    seller = _cumulative(
        q, at, "seller_id", [by(sold, "seller_id", "sold"), by(first, "seller_id", "returned"),
                             deliveries],
        ["sold", "returned", "delivered", "late", "seconds"],
    )  # fmt: skip
    customer = _cumulative(
        q, at, "customer_id", [orders, by(sold, "customer_id", "sold", "value"),
                               by(first, "customer_id", "returned"), rows],
        ["orders", "sold", "value", "returned", "n_returns"], ("last",),
    )  # fmt: skip
    pr = product.select(
        "order_item_id",
        product_units_sold=product.cum_units.cast("int64"),
        product_return_rate=ratio(product.cum_returned, product.cum_sold),
    )
    cr = category.select(
        "order_item_id", category_return_rate=ratio(category.cum_returned, category.cum_sold)
    )
    sr = seller.select(
        "order_item_id",
        seller_return_rate=ratio(seller.cum_returned, seller.cum_sold),
        seller_late_rate=ratio(seller.cum_late, seller.cum_delivered),
        seller_delivery_days_mean=ratio(seller.cum_seconds, seller.cum_delivered) / SECONDS_PER_DAY,
    )
    cu = customer.select(
        "order_item_id",
        customer_orders=customer.cum_orders.cast("int64"),
        customer_spend=customer.cum_value,
        customer_n_returns=customer.cum_n_returns.cast("int64"),
        customer_return_rate=ratio(customer.cum_returned, customer.cum_sold),
        customer_recency_days=days_between(customer.t, customer.max_last),
    )
    t = attach(q.select("order_item_id"), [pr, cr, sr, cu], "order_item_id")
    return t.select(
        "order_item_id",
        product_units_sold=t.product_units_sold.fill_null(0),
        product_return_rate=t.product_return_rate,
        category_return_rate=t.category_return_rate,
        seller_return_rate=t.seller_return_rate,
        seller_late_rate=t.seller_late_rate,
        seller_delivery_days_mean=t.seller_delivery_days_mean,
        customer_orders=t.customer_orders.fill_null(0),
        customer_spend=t.customer_spend.fill_null(0.0),
        customer_n_returns=t.customer_n_returns.fill_null(0),
        customer_return_rate=t.customer_return_rate,
        customer_recency_days=t.customer_recency_days,
    )
