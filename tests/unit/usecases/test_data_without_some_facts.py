"""Imported shops lack facts the simulator has: no delivery dates (Online Retail, CDNOW), one
product (CDNOW). The use cases adapt or skip with a reason instead of failing."""

from __future__ import annotations

from shopml.data.warehouse import Warehouse
from shopml.usecases import get_usecase


def test_without_delivery_dates(shop_copy: Warehouse) -> None:
    shop_copy.con.execute("UPDATE orders SET delivered_at = NULL")
    reason = get_usecase("delivery-time").skip_reason(shop_copy)
    assert reason is not None and "no delivery dates" in reason
    returns = get_usecase("returns")
    assert returns.skip_reason(shop_copy) is None
    data = returns.dataset(shop_copy, returns.split(shop_copy).test_cutoff)
    assert len(data) > 0 and data.frame["returned"].sum() > 0
    assert data.frame["delivery_delay_days"].isna().all()


def test_a_single_product_catalogue_has_nothing_to_rank(shop_copy: Warehouse) -> None:
    shop_copy.con.execute(
        "UPDATE order_items SET product_id = (SELECT min(product_id) FROM products)"
    )
    shop_copy.refresh(["order_items"])  # an edit in SQL: recompute the id keys and version
    reason = get_usecase("recommender").skip_reason(shop_copy)
    assert reason is not None and "only 1 product(s)" in reason
