from __future__ import annotations

import pandas as pd
import pytest

from shopml.data.contracts import (
    CANONICAL_TABLES,
    CONTRACTS,
    ContractError,
    get_contract,
    required_tables,
    validate,
)


def _customers(**overrides: list) -> pd.DataFrame:
    base = {
        "customer_id": ["a", "b", "c"],
        "created_at": ["2024-01-01", "2024-01-02 10:00:00", None],
        "country": ["BR", "BR", "UK"],
        "region": [None, "SP", None],
        "city": [None, None, None],
        "zip_prefix": ["01000", "02000", None],
        "lat": [-23.5, -23.6, 51.5],
        "lon": [-46.6, -46.7, -0.1],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_every_canonical_table_has_a_contract_with_a_key() -> None:
    for name in (
        "customers",
        "sellers",
        "products",
        "orders",
        "order_items",
        "payments",
        "reviews",
        "returns",
        "web_events",
        "campaigns",
        "campaign_sends",
        "price_history",
    ):
        assert name in CANONICAL_TABLES
        assert get_contract(name).primary_key


def test_references_point_to_known_tables_and_parents_come_first() -> None:
    order = list(CONTRACTS)
    for contract in CONTRACTS.values():
        for fk in contract.foreign_keys:
            parent = get_contract(fk.table)
            for col in fk.ref_columns:
                parent.column(col)
            assert order.index(fk.table) < order.index(contract.table)


def test_clean_rows_are_accepted_and_typed() -> None:
    res = validate("customers", _customers())
    assert len(res.accepted) == 3 and res.quarantined.empty
    assert str(res.accepted["created_at"].dtype) == "datetime64[ns]"
    assert res.rows_read == 3


def test_each_broken_rule_is_named() -> None:
    df = _customers(
        customer_id=["a", "a", None],
        created_at=["2024-01-01", "not a date", None],
        lat=[-23.5, 100.0, 51.5],
    )
    res = validate("customers", df)
    assert len(res.accepted) == 1
    rules = dict(
        zip(res.quarantined["customer_id"].fillna("<null>"), res.quarantined["rules"], strict=True)
    )
    assert rules["a"] == "type:created_at; range:lat"
    assert rules["<null>"] == "null:customer_id"
    assert res.by_rule == {"type:created_at": 1, "range:lat": 1, "null:customer_id": 1}


def test_duplicate_keys_keep_the_first_clean_row() -> None:
    res = validate("customers", _customers(customer_id=["a", "a", "b"]))
    assert list(res.accepted["customer_id"]) == ["a", "b"]
    assert list(res.quarantined["rules"]) == ["duplicate_key"]


def test_orphans_are_quarantined_against_parent_keys() -> None:
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2"],
            "customer_id": ["a", "zzz"],
            "status": ["delivered"] * 2,
            "purchased_at": ["2024-01-05"] * 2,
            "approved_at": [None] * 2,
            "shipped_at": [None] * 2,
            "delivered_at": ["2024-01-09", "2024-01-01"],
            "estimated_delivery_at": [None] * 2,
            "carrier": [None] * 2,
        }
    )
    parents = {"customers": pd.DataFrame({"customer_id": ["a"]})}
    res = validate("orders", orders, parents)
    assert list(res.accepted["order_id"]) == ["o1"]
    assert set(res.quarantined.iloc[0]["rules"].split("; ")) == {
        "check:delivered_at>=purchased_at",
        "orphan:customer_id->customers",
    }
    assert res.repairs.empty, "a quarantined row is not also counted as repaired"


def _orders(**columns: list) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base: dict[str, list] = {
        "order_id": [f"o{i}" for i in range(n)],
        "customer_id": ["a"] * n,
        "status": ["delivered"] * n,
        "purchased_at": ["2018-01-10 12:00:00"] * n,
        "approved_at": [None] * n,
        "shipped_at": [None] * n,
        "delivered_at": [None] * n,
        "estimated_delivery_at": [None] * n,
        "carrier": [None] * n,
    }
    base.update(columns)
    return pd.DataFrame(base)


def test_an_inconsistent_optional_field_is_nulled_and_recorded_not_quarantined() -> None:
    orders = _orders(
        shipped_at=["2018-01-10 09:00:00", "2018-01-11 09:00:00", None, "2018-01-12"],
        delivered_at=["2018-01-15", "2018-01-16", "2018-01-09", "2018-01-11"],
        estimated_delivery_at=["2018-01-20", "2018-01-05", None, None],
    )
    res = validate("orders", orders)
    assert res.quarantined.empty
    kept = res.accepted.set_index("order_id")
    # o0: the carrier hand-over three hours before the purchase: that field alone is dropped,
    # the delivery (the label) stays.
    assert pd.isna(kept.loc["o0", "shipped_at"])
    assert kept.loc["o0", "delivered_at"] == pd.Timestamp("2018-01-15")
    # o1: a promised date before the purchase.
    assert pd.isna(kept.loc["o1", "estimated_delivery_at"])
    assert kept.loc["o1", "shipped_at"] == pd.Timestamp("2018-01-11 09:00")
    # o2: delivered before it was bought: no delivery label is kept.
    assert pd.isna(kept.loc["o2", "delivered_at"])
    # o3: delivered before the hand-over to the carrier: the hand-over goes, the delivery stays.
    assert pd.isna(kept.loc["o3", "shipped_at"])
    assert kept.loc["o3", "delivered_at"] == pd.Timestamp("2018-01-11")
    assert res.rows_repaired == 4 and res.rows_clean == 0
    rep = res.repairs.assign(order_id=lambda d: res.accepted["order_id"].iloc[d["row"]].to_numpy())
    assert sorted(zip(rep.order_id, rep.column, rep.rule, strict=True)) == [
        ("o0", "shipped_at", "check:shipped_at>=purchased_at"),
        ("o1", "estimated_delivery_at", "check:estimated_delivery_at>=purchased_at"),
        ("o2", "delivered_at", "check:delivered_at>=purchased_at"),
        ("o3", "shipped_at", "check:delivered_at>=shipped_at"),
    ]
    assert rep.set_index("order_id").loc["o0", "original"] == "2018-01-10 09:00:00"
    assert res.repaired_by_rule["check:shipped_at>=purchased_at"] == 1


def test_a_row_with_a_fatal_problem_lists_its_repairable_rules_too() -> None:
    orders = _orders(status=["delivered", "lost"], shipped_at=["2018-01-01", "2018-01-01"])
    res = validate("orders", orders)
    assert list(res.accepted["order_id"]) == ["o0"] and res.rows_repaired == 1
    assert set(res.quarantined.iloc[0]["rules"].split("; ")) == {
        "allowed:status",
        "check:shipped_at>=purchased_at",
    }
    assert res.by_rule == {"allowed:status": 1, "check:shipped_at>=purchased_at": 1}


def test_descriptive_fields_out_of_range_are_repaired_keys_and_amounts_are_not() -> None:
    res = validate("customers", _customers(lat=[-23.5, 123.0, "north"]))
    assert len(res.accepted) == 3 and res.quarantined.empty
    assert res.accepted["lat"].isna().tolist() == [False, True, True]
    assert sorted(res.repaired_by_rule) == ["range:lat", "type:lat"]
    items = pd.DataFrame(
        {
            "order_item_id": ["o-1"],
            "order_id": ["o"],
            "item_seq": [1],
            "product_id": ["p"],
            "seller_id": [None],
            "quantity": [1],
            "unit_price": [-1.0],
            "freight": [None],
        }
    )
    assert validate("order_items", items).by_rule == {"range:unit_price": 1}


def test_repairs_of_a_duplicate_are_not_counted() -> None:
    orders = _orders(shipped_at=["2018-01-01", "2018-01-01"])
    orders["order_id"] = ["o0", "o0"]
    res = validate("orders", orders)
    assert len(res.accepted) == 1
    assert list(res.quarantined["rules"]) == ["duplicate_key; check:shipped_at>=purchased_at"]
    assert res.rows_repaired == 1 and list(res.repairs["row"]) == [0]


def test_allowed_values_and_integer_types() -> None:
    items = pd.DataFrame(
        {
            "order_item_id": ["o-1", "o-2", "o-3"],
            "order_id": ["o"] * 3,
            "item_seq": [1, 2, 3],
            "product_id": ["p"] * 3,
            "seller_id": [None] * 3,
            "quantity": [1, 0, 1.5],
            "unit_price": [1.0, 2.0, -1.0],
            "freight": [None] * 3,
        }
    )
    res = validate("order_items", items)
    assert list(res.quarantined["rules"]) == ["range:quantity", "type:quantity; range:unit_price"]


def test_missing_column_is_one_clear_error() -> None:
    with pytest.raises(ContractError, match=r"customers.*missing column\(s\): lat"):
        validate("customers", _customers().drop(columns=["lat"]))


def test_unknown_table() -> None:
    with pytest.raises(ContractError, match="unknown table 'nope'"):
        required_tables(["customers", "nope"])
