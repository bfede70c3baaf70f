"""Feature values checked by hand on a tiny shop, optional tables, and the registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import pandas as pd
import pytest

from shopml.data.warehouse import Warehouse
from shopml.features import FEATURE_SETS, build_features, order_features

from .shop import load_warehouse

CUTOFF = datetime(2024, 3, 1)
Features = Callable[[str], pd.DataFrame]  # entity -> its features on the tiny shop
T = pd.Timestamp


def tiny_shop() -> dict[str, pd.DataFrame]:
    geo = {"country": "BR", "region": None, "city": None, "zip_prefix": None}
    customers = pd.DataFrame({
        "customer_id": ["c1", "c2", "c3"],
        "created_at": [T("2024-01-01"), T("2024-02-01"), T("2024-06-01")],
        **geo, "lat": [0.0, 1.0, 2.0], "lon": [0.0, 0.0, 0.0],
    })  # fmt: skip
    sellers = pd.DataFrame({"seller_id": ["s1"], **geo, "lat": [0.0], "lon": [1.0]})
    products = pd.DataFrame({
        "product_id": ["p1", "p2"], "category": ["toys", "shoes"], "name": None,
        "size_type": ["none", "shoes"], "list_price": [10.0, 20.0], "unit_cost": [5.0, 8.0],
        "weight_g": [100.0, 500.0], "length_cm": [10.0, 30.0], "height_cm": [10.0, 10.0],
        "width_cm": [10.0, 20.0],
    })  # fmt: skip
    orders = pd.DataFrame({
        "order_id": ["o1", "o2", "o3", "o4"], "customer_id": ["c1", "c1", "c1", "c2"],
        "status": ["delivered", "delivered", "created", "approved"],
        "purchased_at": [T("2024-01-10"), T("2024-02-20"), T("2024-03-10"), T("2024-02-25")],
        "approved_at": [T("2024-01-10 01:00"), T("2024-02-20 01:00"), None, T("2024-02-25 1:00")],
        "shipped_at": [T("2024-01-12"), T("2024-02-22"), None, None],
        "delivered_at": [T("2024-01-15"), T("2024-03-05"), None, None],  # o2 lands after cutoff
        "estimated_delivery_at": [T("2024-01-14"), T("2024-03-01"), T("2024-03-20"),
                                  T("2024-03-05")],
        "carrier": ["post", "post", "post", "fastship"],
    })  # fmt: skip
    items = pd.DataFrame({
        "order_item_id": ["o1-1", "o1-2", "o2-1", "o3-1", "o4-1"],
        "order_id": ["o1", "o1", "o2", "o3", "o4"], "item_seq": [1, 2, 1, 1, 1],
        "product_id": ["p1", "p2", "p1", "p2", "p2"], "seller_id": "s1",
        "quantity": [2, 1, 1, 5, 1], "unit_price": [10.0, 20.0, 12.0, 20.0, 18.0],
        "freight": [1.0, 2.0, 3.0, 4.0, 5.0],
    })  # fmt: skip
    returns = pd.DataFrame({
        "return_id": ["x1", "x2"], "order_item_id": ["o1-2", "o2-1"],
        "returned_at": [T("2024-01-25"), T("2024-03-08")], "quantity": 1,
        "refund_amount": [20.0, 12.0], "reason": None,
    })  # fmt: skip
    reviews = pd.DataFrame({
        "review_id": ["r1", "r2"], "order_id": ["o1", "o2"], "score": [2, 5],
        "created_at": [T("2024-01-16"), T("2024-03-06")], "answered_at": None,
        "title": None, "comment": None,
    })  # fmt: skip
    web = pd.DataFrame({
        "event_id": ["e1", "e2", "e3", "e4"], "session_id": ["w1", "w1", "w0", "w2"],
        "customer_id": "c1", "product_id": ["p1", "p1", "p2", "p2"],
        "event_type": ["view", "add_to_cart", "view", "view"],
        "event_at": [T("2024-02-15"), T("2024-02-15 00:05"), T("2024-01-05"), T("2024-03-02")],
        "order_id": None,
    })  # fmt: skip
    campaigns = pd.DataFrame({
        "campaign_id": ["k1"], "name": ["winter"], "channel": ["email"],
        "sent_at": [T("2024-02-01")], "response_window_days": [14], "discount_pct": [10.0],
    })  # fmt: skip
    sends = pd.DataFrame({
        "campaign_id": "k1", "customer_id": ["c1", "c2"], "group": "treatment",
        "assigned_at": T("2024-02-01"), "responded": [True, True],
        "responded_at": [T("2024-02-03"), T("2024-03-03")], "response_order_id": None,
    })  # fmt: skip
    prices = pd.DataFrame({
        "product_id": "p1", "valid_from": [T("2024-01-01"), T("2024-02-15"), T("2024-03-15")],
        "price": [11.0, 9.0, 15.0], "is_test": False,
    })  # fmt: skip
    payments = pd.DataFrame({
        "order_id": ["o1", "o2", "o3", "o4"], "payment_seq": 1, "method": "credit_card",
        "installments": 1, "amount": [40.0, 12.0, 100.0, 18.0],
    })  # fmt: skip
    return {
        "customers": customers, "sellers": sellers, "products": products, "orders": orders,
        "order_items": items, "payments": payments, "reviews": reviews, "returns": returns,
        "web_events": web, "campaigns": campaigns, "campaign_sends": sends,
        "price_history": prices,
    }  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """One tiny warehouse for the module: the tests only read it."""
    wh = load_warehouse(tmp_path_factory.mktemp("tiny") / "tiny.duckdb", tiny_shop())
    yield wh
    wh.close()


@pytest.fixture(scope="module")
def tiny_features(tiny: Warehouse) -> Features:
    """``build_features(tiny, CUTOFF, entity)``, built once per entity for the module."""
    built: dict[str, pd.DataFrame] = {}

    def get(entity: str) -> pd.DataFrame:
        if entity not in built:
            built[entity] = build_features(tiny, CUTOFF, entity)
        return built[entity].copy()

    return get


def _row(df: pd.DataFrame, key: str, value: str) -> pd.Series:
    return df.set_index(key).loc[value]


def test_customer_features_by_hand(tiny_features: Features) -> None:
    df = tiny_features("customers")
    assert list(df.customer_id) == ["c1", "c2"]  # c3 joins in June
    c1 = _row(df, "customer_id", "c1")
    assert c1.frequency_orders == 2 and c1.monetary_total == pytest.approx(52.0)
    assert c1.avg_order_value == pytest.approx(26.0)
    assert c1.recency_days == pytest.approx(10.0)  # 20 Feb -> 1 Mar 2024 (leap year)
    assert c1.tenure_days == pytest.approx(60.0)
    assert c1.days_between_orders_mean == pytest.approx(41.0)
    assert (c1.orders_30d, c1.spend_30d, c1.orders_90d) == (1, 12.0, 2)
    assert (c1.items_total, c1.n_returns, c1.return_rate) == (3, 1, pytest.approx(1 / 3))
    assert (c1.views_30d, c1.add_to_cart_30d, c1.sessions_30d) == (1, 1, 1)
    assert (c1.campaigns_received, c1.campaign_responses, c1.campaign_response_rate) == (1, 1, 1.0)
    assert (c1.n_reviews, c1.avg_review_score, c1.distinct_categories) == (1, 2.0, 2)
    c2 = _row(df, "customer_id", "c2")
    assert c2.frequency_orders == 1 and c2.recency_days == pytest.approx(5.0)
    assert c2.campaign_response_rate == 0.0  # the response on 3 March is not known yet
    assert c2.return_rate == 0.0 and pd.isna(c2.avg_review_score)


def test_seller_and_product_features_by_hand(tiny_features: Features) -> None:
    s1 = _row(tiny_features("sellers"), "seller_id", "s1")
    assert (s1.orders_total, s1.items_sold, s1.backlog_7d) == (3, 4, 1)
    assert s1.n_delivered == 1  # o2 is delivered only after the cutoff
    assert s1.delivery_days_mean == pytest.approx(5.0)
    assert s1.handling_days_mean == pytest.approx(2.0)
    assert s1.late_rate == 1.0 and s1.return_rate == pytest.approx(0.25)
    products = tiny_features("products")
    p1 = _row(products, "product_id", "p1")
    assert (p1.current_price, p1.price_changes, p1.units_sold) == (9.0, 2, 3)
    assert p1.return_rate == 0.0 and p1.price_vs_list == pytest.approx(0.9)
    p2 = _row(products, "product_id", "p2")
    assert (p2.current_price, p2.units_sold, p2.return_rate) == (20.0, 2, 0.5)
    assert p1.volume_cm3 == 1000.0


def test_order_and_interaction_features_by_hand(tiny_features: Features) -> None:
    orders = tiny_features("orders")
    assert list(orders.order_id) == ["o1", "o2", "o4"]
    o1 = _row(orders, "order_id", "o1")
    assert (o1.n_items, o1.total_quantity, o1.total_price, o1.total_freight) == (2, 3, 40.0, 3.0)
    assert o1.total_weight_g == 700.0
    assert o1.distance_km == pytest.approx(111.195, abs=0.01)  # one degree of longitude at 0
    assert o1.estimated_delivery_days == pytest.approx(4.0)
    assert (o1.purchase_dow, o1.purchase_month, o1.days_to_christmas) == (2, 1, 350)
    assert o1.carrier_code == 0 and _row(orders, "order_id", "o4").carrier_code == 1
    assert o1.seller_delivery_days_mean == pytest.approx(5.0)
    assert (o1.customer_orders, o1.customer_n_returns) == (2, 1)

    inter = tiny_features("interactions").set_index(["customer_id", "product_id"])
    assert inter.loc[("c1", "p1"), ["n_purchases", "n_views", "n_add_to_cart"]].tolist() == [
        2,
        1,
        1,
    ]
    assert inter.loc[("c1", "p1"), "weight"] == pytest.approx(2.4)
    assert inter.loc[("c1", "p2"), "n_views"] == 1  # the 2 March view is after the cutoff
    assert len(inter) == 3


def test_orders_after_the_cutoff_are_scored_with_history_before_it(tiny: Warehouse) -> None:
    backend = tiny.ibis()
    new = backend.table("orders").filter(lambda t: t.order_id == "o3")
    o3 = order_features(backend, CUTOFF, new).to_pandas().iloc[0]
    assert (o3.total_price, o3.total_quantity) == (100.0, 5)
    assert o3.customer_orders == 2 and o3.seller_delivery_days_mean == pytest.approx(5.0)
    assert o3.estimated_delivery_days == pytest.approx(10.0)


def test_missing_optional_tables_give_zeros_and_nulls(
    warehouse_factory: Callable[..., Warehouse],
) -> None:
    core = ("customers", "sellers", "products", "orders", "order_items")
    wh = warehouse_factory({k: v for k, v in tiny_shop().items() if k in core})
    c1 = _row(build_features(wh, CUTOFF, "customers"), "customer_id", "c1")
    assert (c1.views_30d, c1.campaigns_received, c1.n_returns, c1.n_reviews) == (0, 0, 0, 0)
    assert pd.isna(c1.campaign_response_rate) and c1.return_rate == 0.0
    p1 = _row(build_features(wh, CUTOFF, "products"), "product_id", "p1")
    assert p1.current_price == 10.0 and p1.price_changes == 0
    for entity in FEATURE_SETS:
        assert len(build_features(wh, CUTOFF, entity)) > 0


def test_every_feature_set_outputs_its_declared_columns(tiny_features: Features) -> None:
    for entity, fs in FEATURE_SETS.items():
        df = tiny_features(entity)
        assert list(df.columns) == list(fs.columns), entity
        assert all(desc for desc in fs.columns.values())
        assert not df.duplicated(list(fs.key)).any(), entity
