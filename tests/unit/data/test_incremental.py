"""A shop's daily data flow: shopml's own canonical format, and incremental loads (--append,
landed files under append/) that upsert by key with the same contracts and reconciliation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from shopml.data.importers import IMPORTERS, ImportFormatError, read_canonical
from shopml.data.importers.canonical import table_of
from shopml.data.warehouse import Warehouse
from shopml.settings import get_settings
from tests.unit.data.test_importers import CDNOW_MASTER, assert_reconciles
from tests.unit.data.test_ingest_cli import shopml

CUSTOMERS = [
    {"customer_id": 101, "created_at": "2026-11-01T09:00:00Z", "country": "FR", "lat": 48.8},
    {"customer_id": 102, "created_at": "2026-11-15 10:00:00", "country": "FR", "lat": ""},
]
PRODUCTS = pd.DataFrame(
    {
        "product_id": ["p1", "p2"],
        "category": ["shoes", "books"],
        "size_type": ["shoes", "none"],
        "list_price": [79.0, 12.5],
    }
)
ORDERS_DAY1 = [
    {"order_id": "A1", "customer_id": 101, "status": "shipped", "purchased_at": "2026-12-01 10:00"},
    {"order_id": "A2", "customer_id": "102", "status": "delivered",
     "purchased_at": "2026-12-01 11:00", "delivered_at": "2026-12-03 09:00"},
]  # fmt: skip
ITEMS_DAY1 = (
    "order_item_id,order_id,item_seq,product_id,quantity,unit_price\n"
    "A1-1,A1,1,p1,1,79.0\n"
    "A2-1,A2,1,p2,2,12.5\n"
)


def jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def export_day1(folder: Path) -> Path:
    """What a shop's own systems export: a mix of CSV, JSON lines and Parquet."""
    folder.mkdir(parents=True)
    pd.DataFrame(CUSTOMERS).to_csv(folder / "customers.csv", index=False)
    PRODUCTS.to_parquet(folder / "products.parquet", index=False)
    jsonl(folder / "orders.jsonl", ORDERS_DAY1)
    (folder / "order_items.csv.gz").write_bytes(gzip.compress(ITEMS_DAY1.encode()))
    (folder / "README.txt").write_text("exported nightly")  # not a table: ignored
    return folder


def test_table_names_with_dates_and_stamps() -> None:
    assert table_of("orders.jsonl") == "orders"
    assert table_of("orders-2026-12-01.jsonl") == "orders"
    assert table_of("20261201T060000-order_items.csv.gz") == "order_items"
    assert table_of("campaign_sends_2026-12-01.parquet") == "campaign_sends"
    assert table_of("oracle_orders.csv") is None  # the simulator's truth is not a shop's data
    assert table_of("ordersx.csv") is None and table_of("orders.txt") is None
    assert IMPORTERS["canonical"] is read_canonical


def test_canonical_folder_maps_types_and_reconciles(tmp_path: Path) -> None:
    ds = read_canonical(export_day1(tmp_path / "export"))
    assert ds.source == "canonical"
    assert sorted(ds.tables) == ["customers", "order_items", "orders", "products"]
    customers = ds.tables["customers"].set_index("customer_id")
    assert list(customers.index) == ["101", "102"]  # ids are text, whatever the export
    assert pd.isna(customers.loc["102", "lat"]) and customers["region"].isna().all()
    assert ds.tables["orders"]["customer_id"].tolist() == ["101", "102"]
    with Warehouse(tmp_path / "w.duckdb") as wh:
        report = ds.load(wh)
        assert_reconciles(ds, report)
        assert report.rows_quarantined == 0 and report.rows_repaired == 0
        orders = wh.read("orders").set_index("order_id")
        assert orders.loc["A2", "delivered_at"] == pd.Timestamp("2026-12-03 09:00")
        created = wh.read("customers").set_index("customer_id")["created_at"]
        assert created.loc["101"] == pd.Timestamp("2026-11-01 09:00")  # Z: already UTC
        assert wh.read("order_items")["seller_id"].isna().all()  # a shop with no sellers


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("orders.jsonl", '{"order_id": "A1"}\n{"order_id": \n', r"orders.jsonl: line 2, column"),
        ("orders.jsonl", '["A1", "101"]\n', "line 1 is a JSON list, expected an object"),
        ("orders.csv", "order_id,customer_id,status\nA1,101,shipped\n",
         "needs column.*purchased_at"),
        ("orders.csv", "order_id,customer_id,status,purchased_at,delivery_at\n",
         r"unknown column\(s\) delivery_at \(did you mean delivered_at\?\)"),
        ("invoices.csv", "a,b\n1,2\n", "invoices.csv is not named after a canonical table"),
        ("orders.jsonl", "", "is empty"),
        ("orders.jsonl",
         '{"order_id": "A1", "customer_id": "1", "status": "created", "purchased_at": "2026"}\n'
         '\n{"order_id": "A2", "customer_id": {"id": 1}, "status": "created",'
         ' "purchased_at": "2026"}\n',
         r"line 3, column customer_id holds a nested value"),
    ],
)  # fmt: skip
def test_canonical_format_errors_name_file_line_and_column(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ImportFormatError, match=message) as err:
        read_canonical(path)
    assert name in str(err.value)


def test_canonical_folder_without_tables(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(ImportFormatError, match="holds no canonical table files"):
        read_canonical(tmp_path)


def test_replacing_with_rows_whose_parents_are_missing_is_refused(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    orders = jsonl(tmp_path / "orders.jsonl", ORDERS_DAY1)
    code, _, err = shopml(["ingest", "canonical", str(orders)], capsys, monkeypatch)
    assert code == 2 and "orders refer to customers" in err and "--append" in err
    assert not get_settings().warehouse.exists()


def test_a_day_appended_upserts_by_key(tmp_path: Path, capsys, monkeypatch) -> None:
    code, out, err = shopml(
        ["ingest", "canonical", str(export_day1(tmp_path / "d1")), "--json"], capsys, monkeypatch
    )
    assert code == 0, err
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        before = wh.versions()
    day2 = tmp_path / "d2"
    day2.mkdir()
    jsonl(
        day2 / "orders-2026-12-02.jsonl",
        [
            # A1 arrived: the same key, its new state.
            {"order_id": "A1", "customer_id": "101", "status": "delivered",
             "purchased_at": "2026-12-01 10:00", "delivered_at": "2026-12-02 16:00"},
            {"order_id": "B1", "customer_id": "103", "status": "created",
             "purchased_at": "2026-12-02 08:00"},
            {"order_id": "B2", "customer_id": "999", "status": "created",
             "purchased_at": "2026-12-02 09:00"},  # nobody: quarantined
            {"order_id": "B3", "customer_id": "102", "status": "delivered",
             "purchased_at": "2026-12-02 09:30", "shipped_at": "2026-12-02 07:00",
             "delivered_at": "2026-12-04 12:00"},  # carrier before purchase: repaired
        ],
    )  # fmt: skip
    # A new customer, and an old one seen again whose export says "created today".
    pd.DataFrame(
        [
            {"customer_id": "103", "created_at": "2026-12-02 08:00"},
            {"customer_id": "101", "created_at": "2026-12-02 00:00", "country": "BE"},
        ]
    ).to_csv(day2 / "customers-2026-12-02.csv", index=False)
    code, out, err = shopml(
        ["ingest", "canonical", str(day2), "--append", "--json"], capsys, monkeypatch
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["mode"] == "upsert"
    t = {x["table"]: x for x in report["tables"]}
    assert (t["orders"]["rows_read"], t["orders"]["rows_accepted"]) == (4, 2)
    assert (t["orders"]["rows_repaired"], t["orders"]["rows_quarantined"]) == (1, 1)
    assert t["orders"]["rows_after"] == 4  # A1 replaced, not doubled; B2 refused
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        orders = wh.read("orders").set_index("order_id")
        assert sorted(orders.index) == ["A1", "A2", "B1", "B3"]
        assert orders.loc["A1", "status"] == "delivered"
        customers = wh.read("customers").set_index("customer_id")
        # The first-seen time never moves forward; the other fields take the new export.
        assert customers.loc["101", "created_at"] == pd.Timestamp("2026-11-01 09:00")
        assert customers.loc["101", "country"] == "BE"
        assert len(customers) == 3
        after = wh.versions()
        assert after["orders"] != before["orders"] and after["customers"] != before["customers"]
        assert after["products"] == before["products"]  # not in the day's files: untouched
        assert wh.get_meta("source") == "canonical"
        assert len(wh.quarantine("orders")) == 1 and len(wh.repairs("orders")) == 1
    # The same day loaded again changes nothing but the log.
    code, out, err = shopml(["ingest", "canonical", str(day2), "--append"], capsys, monkeypatch)
    assert code == 0, err
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        assert wh.versions() == after
        assert len(wh.repairs("orders")) == 1  # replaced with its row, not doubled


def test_cdnow_days_appended(tmp_path: Path, capsys, monkeypatch) -> None:
    lines = CDNOW_MASTER.splitlines()
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    # CDNOW numbers a customer's orders within a day, so a day's lines come in one file.
    first.write_text("\n".join(lines[:1]) + "\n")
    second.write_text("\n".join(lines[1:]) + "\n")
    assert shopml(["ingest", "cdnow", str(first)], capsys, monkeypatch)[0] == 0
    code, _, err = shopml(["ingest", "cdnow", str(second), "--append"], capsys, monkeypatch)
    assert code == 0, err
    # Two days appended give what one file of both gives.
    (tmp_path / "all.txt").write_text(CDNOW_MASTER)
    with Warehouse(tmp_path / "whole.duckdb") as wh:
        IMPORTERS["cdnow"](tmp_path / "all.txt").load(wh)
        expected_orders = wh.read("orders").sort_values("order_id")
        expected_customers = wh.read("customers").sort_values("customer_id")
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        pd.testing.assert_frame_equal(
            wh.read("orders").sort_values("order_id").reset_index(drop=True),
            expected_orders.reset_index(drop=True),
        )
        # Each customer's first purchase, whichever file it came in.
        pd.testing.assert_frame_equal(
            wh.read("customers").sort_values("customer_id").reset_index(drop=True),
            expected_customers.reset_index(drop=True),
        )


def test_append_to_another_source_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    code, _, err = shopml(
        ["simulate", "--customers", "30", "--days", "30", "--json"], capsys, monkeypatch
    )
    assert code == 0, err
    path = tmp_path / "cdnow.txt"
    path.write_text(CDNOW_MASTER)
    code, _, err = shopml(["ingest", "cdnow", str(path), "--append"], capsys, monkeypatch)
    assert code == 2 and "holds simulator data" in err
    # Canonical rows are not added to the simulated shop either, but can follow an import.
    folder = export_day1(tmp_path / "d1")
    code, _, err = shopml(["ingest", "canonical", str(folder), "--append"], capsys, monkeypatch)
    assert code == 2 and "holds simulator data" in err
    assert shopml(["ingest", "cdnow", str(path)], capsys, monkeypatch)[0] == 0
    code, _, err = shopml(["ingest", "canonical", str(folder), "--append"], capsys, monkeypatch)
    assert code == 0, err
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        assert wh.get_meta("source") == "cdnow"  # still a CDNOW shop, with rows added


def test_a_file_landed_under_append_is_added(tmp_path: Path) -> None:
    """The landing flow's task: a file claimed from landing/append/... upserts."""
    from shopml.flows.tasks import ingest_file

    landed = tmp_path / "landing" / "processed" / "append" / "canonical"
    landed.mkdir(parents=True)
    folder = export_day1(tmp_path / "d1")
    out = ingest_file.fn(str(folder), "canonical")
    assert out["mode"] == "replace"
    path = jsonl(
        landed / "20261202T060000-orders.jsonl",
        [{"order_id": "C1", "customer_id": "101", "status": "created",
          "purchased_at": "2026-12-02 10:00"}],
    )  # fmt: skip
    out = ingest_file.fn(str(path), "canonical")
    assert out["mode"] == "append"
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        assert sorted(wh.read("orders")["order_id"]) == ["A1", "A2", "C1"]
    # Without append/ the same file would replace the dataset, and is refused: its customers
    # are not in it.
    plain = tmp_path / "landing" / "processed" / "canonical"
    plain.mkdir(parents=True)
    with pytest.raises(Exception, match="orders refer to customers"):
        ingest_file.fn(str(path.rename(plain / path.name)), "canonical")


def test_append_without_a_warehouse_is_a_first_load(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "cdnow.txt"
    path.write_text(CDNOW_MASTER)
    code, _, err = shopml(["ingest", "cdnow", str(path), "--append"], capsys, monkeypatch)
    assert code == 0, err
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        assert wh.get_meta("source") == "cdnow" and len(wh.read("orders")) == 4


def test_online_retail_cancellations_match_purchases_loaded_earlier(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from tests.unit.data.test_importers import retail_frame

    lines = retail_frame()
    early = pd.to_datetime(lines["InvoiceDate"]) <= pd.Timestamp("2010-01-05 23:59")
    lines.loc[early].to_csv(tmp_path / "days-1-5.csv", index=False)
    lines.loc[~early].to_csv(tmp_path / "days-6-8.csv", index=False)
    lines.to_csv(tmp_path / "all.csv", index=False)
    assert (
        shopml(["ingest", "online-retail", str(tmp_path / "days-1-5.csv")], capsys, monkeypatch)[0]
        == 0
    )
    code, out, err = shopml(
        ["ingest", "online-retail", str(tmp_path / "days-6-8.csv"), "--append", "--json"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    report = json.loads(out)
    returns = next(t for t in report["tables"] if t["table"] == "returns")
    # The three cancellations of earlier purchases are returns, not "unmatched".
    assert returns["rows_accepted"] == 3
    assert returns["rows_read"] == returns["rows_canonical"] + returns["rows_set_aside"]
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        appended = wh.read("returns").sort_values("return_id").reset_index(drop=True)
        versions = wh.versions()
    with Warehouse(tmp_path / "whole.duckdb") as wh:
        IMPORTERS["online-retail"](tmp_path / "all.csv").load(wh)
        whole = wh.read("returns").sort_values("return_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(appended, whole)
    # Appending the same day again: the same returns, nothing counted twice.
    code, _, err = shopml(
        ["ingest", "online-retail", str(tmp_path / "days-6-8.csv"), "--append"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        assert wh.versions() == versions
