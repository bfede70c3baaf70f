from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shopml.data.warehouse import Warehouse, WarehouseError


def _customers(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ids,
            "created_at": ["2024-01-01"] * len(ids),
            "country": ["BR"] * len(ids),
            "region": [None] * len(ids),
            "city": [None] * len(ids),
            "zip_prefix": [None] * len(ids),
            "lat": [0.0] * len(ids),
            "lon": [0.0] * len(ids),
        }
    )


def _orders(rows: list[tuple[str, str]]) -> pd.DataFrame:
    n = len(rows)
    return pd.DataFrame(
        {
            "order_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "status": ["delivered"] * n,
            "purchased_at": ["2024-02-01"] * n,
            "approved_at": [None] * n,
            "shipped_at": [None] * n,
            "delivered_at": [None] * n,
            "estimated_delivery_at": [None] * n,
            "carrier": [None] * n,
        }
    )


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    w = Warehouse(tmp_path / "w.duckdb")
    yield w
    w.close()


def test_write_reconciles_and_quarantines(wh: Warehouse) -> None:
    report = wh.write_tables(
        {"customers": _customers(["a", "b"]), "orders": _orders([("o1", "a"), ("o2", "x")])},
        source="test",
        mode="dataset",
    )
    orders = report.table("orders")
    assert (orders.rows_read, orders.rows_accepted, orders.rows_quarantined) == (2, 1, 1)
    assert orders.by_rule == {"orphan:customer_id->customers": 1}
    q = wh.quarantine("orders")
    assert len(q) == 1 and '"order_id":"o2"' in q.iloc[0]["row_json"]
    loads = wh.loads()
    assert set(loads.table_name) == {"customers", "orders"}


def test_versions_depend_on_content_only(wh: Warehouse, tmp_path: Path) -> None:
    wh.write_tables({"customers": _customers(["a", "b"])}, source="t", mode="replace")
    v1 = wh.versions()["customers"]
    wh.write_tables({"customers": _customers(["b", "a"])}, source="t", mode="replace")
    assert wh.versions()["customers"] == v1, "row order must not change the version"
    wh.write_tables({"customers": _customers(["a", "c"])}, source="t", mode="replace")
    assert wh.versions()["customers"] != v1
    other = Warehouse(tmp_path / "other.duckdb")
    other.write_tables({"customers": _customers(["a", "c"])}, source="t", mode="replace")
    assert other.versions()["customers"] == wh.versions()["customers"]
    other.close()


def test_reimport_is_idempotent(wh: Warehouse) -> None:
    batch = {"customers": _customers(["a", "a", "b"])}
    wh.write_tables(batch, source="t", mode="dataset")
    v = wh.versions()
    wh.write_tables(batch, source="t", mode="dataset")
    assert wh.versions() == v
    assert len(wh.quarantine()) == 1, "quarantine must not double on re-import"


def test_upsert_replaces_existing_keys(wh: Warehouse) -> None:
    wh.write_tables({"customers": _customers(["a", "b"])}, source="t", mode="replace")
    new = _customers(["b", "c"]).assign(country="UK")
    report = wh.write_tables({"customers": new}, source="t", mode="upsert")
    assert report.table("customers").rows_after == 3
    df = wh.read("customers").set_index("customer_id")
    assert df.loc["a", "country"] == "BR" and df.loc["b", "country"] == "UK"


def test_upsert_checks_references_against_existing_rows(wh: Warehouse) -> None:
    wh.write_tables({"customers": _customers(["a"])}, source="t", mode="replace")
    report = wh.write_tables(
        {"orders": _orders([("o1", "a"), ("o2", "b")])}, source="t", mode="upsert"
    )
    assert report.table("orders").rows_accepted == 1


def test_dataset_mode_removes_tables_of_the_previous_dataset(wh: Warehouse) -> None:
    wh.write_tables(
        {"customers": _customers(["a"]), "orders": _orders([("o1", "a")])},
        source="first",
        mode="dataset",
    )
    wh.write_tables(
        {"customers": _customers(["a"])},
        source="first",
        mode="dataset",
        meta={"rows_read:orders": "1"},
    )
    report = wh.write_tables({"customers": _customers(["z"])}, source="second", mode="dataset")
    assert wh.get_meta("rows_read:orders") is None, "meta of the previous dataset must go"
    assert wh.get_meta("last_source") == "second"
    assert report.removed == []
    assert not wh.exists("orders")
    assert "orders" not in wh.versions()


def test_a_failed_write_leaves_the_old_state(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh.write_tables(
        {"customers": _customers(["a"]), "orders": _orders([("o1", "a")])},
        source="old",
        mode="dataset",
    )
    before = (wh.versions(), wh.read("orders"))

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    # Crash after the customers table has been replaced inside the transaction.
    monkeypatch.setattr(Warehouse, "_quarantine", staticmethod(crash))
    with pytest.raises(RuntimeError, match="disk full"):
        wh.write_tables(
            {"customers": _customers(["b", "b"]), "orders": _orders([("o9", "b")])},
            source="new",
            mode="dataset",
        )
    assert wh.versions() == before[0]
    pd.testing.assert_frame_equal(wh.read("orders"), before[1])
    assert list(wh.read("customers").customer_id) == ["a"]


def test_read_only_open_of_a_missing_warehouse_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match=r"no warehouse at .*shopml simulate"):
        _ = Warehouse(tmp_path / "missing.duckdb", read_only=True).con


def test_require_names_missing_tables(wh: Warehouse) -> None:
    with pytest.raises(WarehouseError, match="no table\\(s\\) orders"):
        wh.require("orders")


def test_write_frame_refuses_canonical_names(wh: Warehouse) -> None:
    from shopml.data.contracts import ContractError

    with pytest.raises(ContractError):
        wh.write_frame("orders", pd.DataFrame({"x": [1]}))
    wh.write_frame("features_customers", pd.DataFrame({"x": [1, 2]}))
    assert len(wh.read("features_customers")) == 2
