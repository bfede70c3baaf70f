"""Field-level repairs end to end: an Olist-layout order whose carrier hand-over is dated before
its purchase is kept with that field nulled, counted as repaired, shown by `shopml repairs`,
and its delivery label survives; nothing is derived from the nulled field."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from shopml.data.importers import read_olist
from shopml.data.warehouse import Warehouse
from shopml.settings import get_settings
from tests.unit.data.test_importers import assert_reconciles, write_olist
from tests.unit.data.test_ingest_cli import shopml

BAD_CARRIER = {
    "order_id": "o4",
    "customer_id": "c1",
    "order_status": "delivered",
    "order_purchase_timestamp": "2017-12-05 10:00:00",
    "order_approved_at": "2017-12-05 10:20:00",
    # A clock or time-zone artefact: handed to the carrier three hours before it was bought.
    "order_delivered_carrier_date": "2017-12-05 07:00:00",
    "order_delivered_customer_date": "2017-12-12 15:00:00",
    "order_estimated_delivery_date": "2017-12-22 00:00:00",
}


def olist_with_bad_carrier_date(folder: Path) -> Path:
    write_olist(folder)
    orders = pd.read_csv(folder / "olist_orders_dataset.csv", dtype=str, keep_default_na=False)
    pd.concat([orders, pd.DataFrame([BAD_CARRIER])]).to_csv(
        folder / "olist_orders_dataset.csv", index=False
    )
    items = pd.read_csv(folder / "olist_order_items_dataset.csv", dtype=str, keep_default_na=False)
    extra = items.iloc[[0]].assign(order_id="o4", price="15.0")
    pd.concat([items, extra]).to_csv(folder / "olist_order_items_dataset.csv", index=False)
    return folder


def test_olist_order_with_carrier_date_before_purchase_is_kept_and_repaired(
    tmp_path: Path,
) -> None:
    ds = read_olist(olist_with_bad_carrier_date(tmp_path / "olist"))
    with Warehouse(tmp_path / "w.duckdb") as wh:
        report = ds.load(wh)
        assert_reconciles(ds, report)
        orders = report.table("orders")
        assert orders.rows_repaired == 1
        assert orders.repaired_by_rule == {"check:shipped_at>=purchased_at": 1}
        assert orders.by_rule == {"orphan:customer_id->customers": 1}  # o3, as before
        assert report.table("order_items").rows_accepted == 4  # o4's item is kept with it
        row = wh.sql("SELECT * FROM orders WHERE order_id = 'o4'").iloc[0]
        assert pd.isna(row["shipped_at"])
        assert row["delivered_at"] == pd.Timestamp("2017-12-12 15:00")
        assert row["approved_at"] == pd.Timestamp("2017-12-05 10:20")
        repairs = wh.repairs("orders")
        assert len(repairs) == 1
        r = repairs.iloc[0]
        assert json.loads(r["row_key"]) == {"order_id": "o4"}
        assert (r["column_name"], r["original"]) == ("shipped_at", "2017-12-05 07:00:00")
        assert [t.repaired for t in wh.info() if t.table == "orders"] == [1]

        # The delivery label is kept: 7.2 days from purchase to delivery.
        from shopml.usecases.delivery_time import DeliveryTime

        data = DeliveryTime().dataset(wh, datetime(2017, 12, 1))
        labels = data.frame.set_index("order_id")["delivery_days"]
        assert labels.loc["o4"] == pytest.approx(7 + 5 / 24)
        # Nothing is derived from the nulled field: the seller's handling time, computed from
        # hand-over dates, has no o4 in it (o1's 2.4 days is the only hand-over before).
        from shopml.features import seller_features

        sellers = seller_features(wh.ibis(), datetime(2017, 12, 20)).to_pandas()
        handling = sellers.set_index("seller_id").loc["s1", "handling_days_mean"]
        assert handling == pytest.approx(
            (
                pd.Timestamp("2017-10-04 19:55:00") - pd.Timestamp("2017-10-02 10:56:33")
            ).total_seconds()
            / 86400
        )


def test_ingest_and_repairs_commands(tmp_path: Path, capsys, monkeypatch) -> None:
    folder = olist_with_bad_carrier_date(tmp_path / "olist")
    code, out, err = shopml(["ingest", "olist", str(folder), "--json"], capsys, monkeypatch)
    assert code == 0, err
    tables = {t["table"]: t for t in json.loads(out)["tables"]}
    assert tables["orders"]["rows_repaired"] == 1
    assert (
        tables["orders"]["rows_canonical"]
        == 4
        == (
            tables["orders"]["rows_accepted"]
            + tables["orders"]["rows_repaired"]
            + tables["orders"]["rows_quarantined"]
        )
    )
    code, out, err = shopml(["repairs", "--json"], capsys, monkeypatch)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["counts"] == [
        {
            "table_name": "orders",
            "column_name": "shipped_at",
            "rule": "check:shipped_at>=purchased_at",
            "rows": 1,
        }
    ]
    assert shown["rows"][0]["key"] == {"order_id": "o4"}
    code, out, _ = shopml(["repairs"], capsys, monkeypatch)
    assert code == 0 and "shipped_at" in out
    code, out, _ = shopml(["tables", "--json"], capsys, monkeypatch)
    assert {t["table"]: t["repaired"] for t in json.loads(out)["tables"]}["orders"] == 1
    # Importing again replaces the repairs, it does not double them.
    shopml(["ingest", "olist", str(folder)], capsys, monkeypatch)
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        assert len(wh.repairs()) == 1


def test_a_warehouse_written_before_repairs_is_upgraded(tmp_path: Path) -> None:
    """Load logs of an older shopml (no repair or set-aside columns, no repairs table) gain
    them on the next write, and old rows keep their figures."""
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE _shopml_loads (batch_id VARCHAR, source VARCHAR, table_name VARCHAR, "
        "mode VARCHAR, rows_read BIGINT, rows_accepted BIGINT, rows_quarantined BIGINT, "
        "by_rule VARCHAR, loaded_at TIMESTAMP)"
    )
    con.execute(
        "INSERT INTO _shopml_loads VALUES ('b0', 'cdnow', 'orders', 'dataset', 5, 5, 0, '{}', "
        "TIMESTAMP '2026-01-01')"
    )
    con.close()
    with Warehouse(path, read_only=True) as wh:
        assert wh.repairs().empty  # reading an old warehouse does not need the new table
    ds = read_olist(olist_with_bad_carrier_date(tmp_path / "olist"))
    with Warehouse(path) as wh:
        ds.load(wh)
        loads = wh.loads().set_index("batch_id")
        assert loads.loc["b0", "rows_read"] == 5 and pd.isna(loads.loc["b0", "rows_repaired"])
        new = loads.loc[loads.index != "b0"].set_index("table_name")
        assert new.loc["orders", "rows_repaired"] == 1
        assert json.loads(new.loc["orders", "repaired_by_rule"]) == {
            "check:shipped_at>=purchased_at": 1
        }
        assert len(wh.repairs()) == 1
