"""Small order histories with what real shops' data contains and simulated data does not: only
one-time buyers, free and refunded orders, a single customer or product, one day of data, huge
outliers, duplicate timestamps, customers whose every purchase came back. Each is a dict of
canonical tables, built from a list of purchases."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

START = datetime(2024, 1, 1)
DAYS = 420
# Purchase: (customer, day after START, product, quantity, unit price).
Purchase = tuple[str, float, str, int, float]


def tables(
    purchases: Iterable[Purchase],
    returns: Iterable[tuple[int, float]] = (),
    idle_customers: Iterable[str] = (),
    products: int = 30,
) -> dict[str, pd.DataFrame]:
    """Canonical tables for ``purchases`` (one order per customer and timestamp), ``returns``
    ((index of the purchase, days after it)) and customers who never ordered."""
    rows = list(purchases)
    at = [START + timedelta(days=float(d)) for _, d, _, _, _ in rows]
    lines = pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "at": pd.Series(at, dtype="datetime64[ns]").dt.floor("s"),
            "product_id": [r[2] for r in rows],
            "quantity": [r[3] for r in rows],
            "unit_price": [r[4] for r in rows],
        }
    )
    order_key = lines["customer_id"] + "|" + lines["at"].astype(str)
    codes, _ = pd.factorize(order_key)
    lines["order_id"] = [f"o{c:05d}" for c in codes]
    lines["item_seq"] = lines.groupby("order_id").cumcount() + 1
    lines["order_item_id"] = lines["order_id"] + "-" + lines["item_seq"].astype(str)
    catalogue = sorted(set(lines["product_id"]) | {f"p{i:02d}" for i in range(products)})
    customer_ids = sorted(set(lines["customer_id"]) | set(idle_customers))
    orders = lines.groupby("order_id", sort=True).agg(
        customer_id=("customer_id", "first"), purchased_at=("at", "first")
    )
    orders = orders.reset_index().assign(
        status="delivered",
        approved_at=pd.NaT,
        shipped_at=pd.NaT,
        delivered_at=orders["purchased_at"].to_numpy() + np.timedelta64(3, "D"),
        estimated_delivery_at=orders["purchased_at"].to_numpy() + np.timedelta64(5, "D"),
        carrier=None,
    )
    ret = list(returns)
    returned = pd.DataFrame(
        {
            "return_id": [f"r{i:04d}" for i in range(len(ret))],
            "order_item_id": [lines["order_item_id"].iloc[i] for i, _ in ret],
            "returned_at": [lines["at"].iloc[i] + timedelta(days=d) for i, d in ret],
            "quantity": [int(lines["quantity"].iloc[i]) for i, _ in ret],
            "refund_amount": [
                float(lines["quantity"].iloc[i] * lines["unit_price"].iloc[i]) for i, _ in ret
            ],
            "reason": None,
        }
    )
    return {
        "customers": pd.DataFrame(
            {
                "customer_id": customer_ids,
                "created_at": pd.NaT,
                "country": "GB",
                "region": None,
                "city": None,
                "zip_prefix": None,
                "lat": np.nan,
                "lon": np.nan,
            }
        ),
        "sellers": pd.DataFrame(
            {
                "seller_id": ["shop"],
                "country": "GB",
                "region": None,
                "city": None,
                "zip_prefix": None,
                "lat": np.nan,
                "lon": np.nan,
            }
        ),
        "products": pd.DataFrame(
            {
                "product_id": catalogue,
                "category": [f"cat{i % 4}" for i in range(len(catalogue))],
                "name": None,
                "size_type": "none",
                "list_price": np.nan,
                "unit_cost": np.nan,
                "weight_g": np.nan,
                "length_cm": np.nan,
                "height_cm": np.nan,
                "width_cm": np.nan,
            }
        ),
        "orders": orders,
        "order_items": lines[
            ["order_item_id", "order_id", "item_seq", "product_id", "quantity", "unit_price"]
        ].assign(seller_id="shop", freight=np.nan),
        "returns": returned,
    }


def _customers(n: int, prefix: str = "c") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def one_time_buyers(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Every customer bought once, never again."""
    return tables(
        (c, float(rng.uniform(0, DAYS)), f"p{rng.integers(30):02d}", 1, float(rng.uniform(5, 50)))
        for c in _customers(40)
    )


def regulars(rng: np.random.Generator, customers: int = 40) -> list[Purchase]:
    """Customers who buy every few weeks from their first day to the end: nobody is ever seen
    to drop out (BG/NBD's likelihood then peaks at a -> 0)."""
    out: list[Purchase] = []
    for c in _customers(customers):
        day, gap = float(rng.uniform(0, 60)), float(rng.uniform(10, 40))
        while day < DAYS:
            out.append((c, day, f"p{rng.integers(30):02d}", 1, float(rng.uniform(5, 50))))
            day += gap * float(rng.uniform(0.7, 1.3))
    return out


def never_dropping_out(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    return tables(regulars(rng))


def free_and_refunded(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Free orders (price 0), including customers whose repeat purchases were all free (mean
    repeat spend 0), and refunds: every line of some customers came back."""
    rows = regulars(rng, 30)
    rows += [
        ("free1", 10.0, "p01", 1, 20.0),
        ("free1", 40.0, "p02", 1, 0.0),
        ("free1", 90.0, "p03", 2, 0.0),
        ("free2", 5.0, "p04", 1, 0.0),
        ("free2", 200.0, "p05", 1, 0.0),
    ]
    refunded = [i for i, r in enumerate(rows) if r[0] in ("c000", "c001")]
    return tables(rows, returns=[(i, 2.0) for i in refunded])


def single_customer(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    return tables(r for r in regulars(rng, 1))


def one_product(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    return tables(((c, d, "p00", q, v) for c, d, _, q, v in regulars(rng, 30)), products=1)


def one_day(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Every order on the same day (a shop that just opened)."""
    return tables(
        (c, 200.0 + float(rng.uniform(0, 0.9)), f"p{rng.integers(30):02d}", 1, 10.0)
        for c in _customers(30)
        for _ in range(int(rng.integers(1, 4)))
    )


def huge_outliers(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Ordinary customers and two who spend a billion (a wholesaler, a data-entry error)."""
    rows = regulars(rng, 30)
    rows += [("whale", float(d), "p07", 10_000, 100_000.0) for d in (30, 150, 300)]
    rows += [("typo", 100.0, "p08", 1, 999_999_999.0)]
    return tables(rows)


def duplicate_timestamps(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Many orders stamped at the same second: batch-imported orders, a till closing at
    midnight; for one customer and across customers."""
    rows = [
        (c, float(day), f"p{rng.integers(30):02d}", 1, 12.5)
        for c in _customers(25)
        for day in (50, 50, 50, 180, 180, 330)
    ]
    return tables(rows)


def only_returns(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Customers whose every purchase came back, customers who never ordered, and a few
    ordinary ones."""
    rows = regulars(rng, 12)
    returners = [
        (f"r{i:02d}", float(rng.uniform(0, DAYS - 10)), f"p{i:02d}", 1, 30.0) for i in range(15)
    ]
    start = len(rows)
    rows += returners
    return tables(
        rows,
        returns=[(start + i, 3.0) for i in range(len(returners))],
        idle_customers=_customers(10, "idle"),
    )


HISTORIES: dict[str, Callable[[np.random.Generator], dict[str, pd.DataFrame]]] = {
    "one-time buyers": one_time_buyers,
    "nobody drops out": never_dropping_out,
    "free and refunded orders": free_and_refunded,
    "a single customer": single_customer,
    "one product": one_product,
    "one day of data": one_day,
    "huge outliers": huge_outliers,
    "duplicate timestamps": duplicate_timestamps,
    "customers with only returns": only_returns,
}
