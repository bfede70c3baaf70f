"""Delivery time on real order histories: purchase-time features with history as of each
purchase (never a delivery that completes later), and the time-split evaluation against the
shop's promise and a constant."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopml.data.warehouse import Warehouse
from shopml.usecases.delivery_time import (
    LABEL,
    PURCHASE_TIME_FEATURES,
    DeliveryTime,
    history_as_of_purchase,
    purchase_time_frame,
    real_data_evaluation,
)

REGIONS = {
    "SP": ("01000", -23.5, -46.6),
    "RJ": ("20000", -22.9, -43.2),
    "AM": ("69000", -3.1, -60.0),
}
DAYS = {"SP": 3.0, "RJ": 6.0, "AM": 20.0}  # the region decides the delivery time


def shop(n_orders: int = 240, seed: int = 1) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    start = datetime(2018, 1, 1)
    customers = pd.DataFrame(
        [
            {"customer_id": f"c{i}", "created_at": start, "country": "BR", "region": r,
             "city": None, "zip_prefix": REGIONS[r][0], "lat": REGIONS[r][1],
             "lon": REGIONS[r][2]}
            for i, r in enumerate(rng.choice(list(REGIONS), n_orders))
        ]
    )  # fmt: skip
    sellers = pd.DataFrame(
        [{"seller_id": "s1", "country": "BR", "region": "SP", "city": None,
          "zip_prefix": "01310", "lat": -23.56, "lon": -46.65}]
    )  # fmt: skip
    products = pd.DataFrame(
        [{"product_id": "p1", "category": "x", "name": None, "size_type": "none",
          "list_price": 10.0, "unit_cost": None, "weight_g": 500.0, "length_cm": None,
          "height_cm": None, "width_cm": None}]
    )  # fmt: skip
    purchased = [
        start + timedelta(hours=int(h)) for h in np.sort(rng.integers(0, 24 * 300, n_orders))
    ]
    days = [DAYS[r] * rng.uniform(0.8, 1.25) for r in customers["region"]]
    orders = pd.DataFrame(
        {
            "order_id": [f"o{i:04d}" for i in range(n_orders)],
            "customer_id": customers["customer_id"],
            "status": "delivered",
            "purchased_at": purchased,
            "approved_at": None,
            "shipped_at": None,
            "delivered_at": [p + timedelta(days=d) for p, d in zip(purchased, days, strict=True)],
            # A cautious promise: four weeks for everyone.
            "estimated_delivery_at": [p + timedelta(days=28) for p in purchased],
            "carrier": None,
        }
    )
    items = pd.DataFrame(
        {
            "order_item_id": orders["order_id"] + "-1",
            "order_id": orders["order_id"],
            "item_seq": 1,
            "product_id": "p1",
            "seller_id": "s1",
            "quantity": 2,
            "unit_price": 10.0,
            "freight": None,
        }
    )
    return {"customers": customers, "sellers": sellers, "products": products,
            "orders": orders, "order_items": items}  # fmt: skip


def test_history_counts_only_deliveries_before_each_purchase() -> None:
    t = pd.Timestamp
    orders = pd.DataFrame(
        {
            "order_id": ["a", "b", "c", "d"],
            "region": ["SP", "SP", "SP", "RJ"],
            "purchased_at": [t("2018-01-01"), t("2018-01-02"), t("2018-01-10"), t("2018-01-11")],
            "delivered_at": [t("2018-01-05"), t("2018-01-10"), t("2018-01-12"), t("2018-01-13")],
        }
    )
    orders[LABEL] = (orders["delivered_at"] - orders["purchased_at"]).dt.days.astype(float)
    h = history_as_of_purchase(orders, ["region"], "region").set_index("order_id")
    assert h.loc["a", "region_n"] == 0 and np.isnan(h.loc["a", "region_mean_days"])
    assert h.loc["b", "region_n"] == 0  # a is delivered on 01-05, after b was bought
    # c is bought at the very moment b is delivered: b is not known yet; a is.
    assert h.loc["c", "region_n"] == 1 and h.loc["c", "region_mean_days"] == 4.0
    assert h.loc["d", "region_n"] == 0  # another region
    every = history_as_of_purchase(orders, None, "hist").set_index("order_id")
    assert every.loc["d", "hist_n"] == 2 and every.loc["d", "hist_mean_days"] == 6.0


def test_purchase_time_frame(tmp_path: Path) -> None:
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.write_tables(shop(60), source="test", mode="dataset")
        f = purchase_time_frame(wh)
    assert len(f) == 60 and set(PURCHASE_TIME_FEATURES) <= set(f.columns)
    assert f["promise_days"].eq(28.0).all()
    assert f["seller_zip_prefix"].eq(1310).all() and f["n_items"].eq(1).all()
    assert f["total_weight_g"].eq(1000.0).all()
    sp = f.loc[f["customer_zip_prefix"] == 1000]
    assert sp["distance_km"].max() < 10  # same city as the seller
    # Later purchases know more history, never the future.
    assert f["hist_n"].is_monotonic_increasing
    for row in f.itertuples():
        known = f.loc[f["delivered_at"] < row.purchased_at]
        assert row.hist_n == len(known)


def test_real_data_evaluation_learns_what_the_promise_ignores(tmp_path: Path) -> None:
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.write_tables(shop(), source="test", mode="dataset")
        frame = purchase_time_frame(wh)
    ev = real_data_evaluation(frame)
    assert ev.rows["test"] == len(ev.test) > 40
    # No training label from after the cutoff; every test order was bought after it.
    assert ev.rows["train"] + ev.rows["valid"] == int((frame["delivered_at"] < ev.cutoff).sum())
    assert (ev.test.frame["purchased_at"] >= ev.cutoff).all()
    uc = DeliveryTime()
    scores = {name: uc.score(ev.test, p) for name, p in ev.answers.items()}
    assert set(ev.answers) == {"model", "promise", "constant"}
    # The region decides the delivery time; only the model reads it.
    assert scores["model"]["mae"] < 0.5 * scores["constant"]["mae"]
    assert scores["model"]["mae"] < 0.5 * scores["promise"]["mae"]
    assert scores["promise"]["coverage_p90"] > 0.9  # a cautious promise covers, but is far off


def test_too_few_orders_is_said(tmp_path: Path) -> None:
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.write_tables(shop(20), source="test", mode="dataset")
        frame = purchase_time_frame(wh)
    with pytest.raises(ValueError, match="20 delivered orders: too few"):
        real_data_evaluation(frame)
