"""Importers on tiny hand-written files: every mapping rule, set-aside reason and format error."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from shopml.data import importers
from shopml.data.dataset import Dataset
from shopml.data.importers import (
    IMPORTERS,
    ImportFormatError,
    canonical,
    cdnow,
    olist,
    online_retail,
    read_cdnow,
    read_olist,
    read_online_retail,
)
from shopml.data.warehouse import Warehouse, WriteReport


def assert_reconciles(ds: Dataset, report: WriteReport) -> None:
    """raw lines = canonical rows + set aside, and canonical rows = accepted + repaired +
    quarantined, each term as the report gives it."""
    for load in report.tables:
        assert load.rows_canonical == len(ds.tables[load.table])
        assert load.rows_canonical == (
            load.rows_accepted + load.rows_repaired + load.rows_quarantined
        )
        aside = sum(ds.set_aside.get(load.table, {}).values())
        assert load.rows_set_aside == aside and load.set_aside == ds.set_aside.get(load.table, {})
        assert load.rows_read == load.rows_canonical + load.rows_set_aside, load.table
        key = f"rows_read:{load.table}"
        assert load.raw_lines == (key in ds.meta)
        if key in ds.meta:
            assert int(ds.meta[key]) == load.rows_read, load.table


def load(ds: Dataset, tmp_path: Path, name: str = "w.duckdb") -> tuple[Warehouse, WriteReport]:
    wh = Warehouse(tmp_path / name)
    report = ds.load(wh)
    assert_reconciles(ds, report)
    return wh, report


def test_registry_and_aliases() -> None:
    expected = {
        "olist": olist.read,
        "online-retail": online_retail.read,
        "cdnow": cdnow.read,
        "canonical": canonical.read,
    }
    assert expected == IMPORTERS
    assert read_olist is olist.read
    assert read_online_retail is online_retail.read
    assert read_cdnow is cdnow.read
    assert issubclass(ImportFormatError, ValueError)
    assert "ImportFormatError" in importers.__all__


# -- Online Retail -----------------------------------------------------------------------------

II_HEADER = [
    "Invoice",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "Price",
    "Customer ID",
    "Country",
]
OLD_HEADER = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]
UK = "United Kingdom"
CAKESTAND = "REGENCY CAKESTAND 3 TIER"
HEART = "WHITE HANGING HEART T-LIGHT HOLDER"
RETAIL_LINES = [
    ("100", "85123A", HEART, 6, "2010-01-01 10:00:00", 2.55, "13085", UK),
    ("100", "22423", CAKESTAND, 2, "2010-01-01 10:00:00", 12.75, "13085", UK),
    ("100", "POST", "POSTAGE", 1, "2010-01-01 10:00:00", 18.0, "13085", UK),  # adjustment
    ("100", "22423", CAKESTAND, 2, "2010-01-01 10:00:00", 12.75, "13085", UK),  # duplicate
    ("101", "22423", CAKESTAND, 5, "2010-01-05 09:00:00", 12.75, "13085", UK),
    ("101", "85123a", HEART, 1, "2010-01-05 09:00:00", 2.55, "13085", UK),  # lower-case code
    ("102", "85123A", HEART, 3, "2010-01-02 11:00:00", 2.55, "", UK),  # no customer
    (
        "103",
        "21212",
        "PACK OF 72 RETROSPOT CAKE CASES",
        10,
        "2010-01-03 12:00:00",
        0.0,
        "14000",
        "France",
    ),  # free: kept at price 0
    ("A300", "B", "Adjust bad debt", 1, "2010-01-07 10:00:00", -100.0, "", UK),  # adjustment
    # Cancellations, processed in date order:
    ("C201", "22423", CAKESTAND, -4, "2010-01-04 10:00:00", 12.75, "13085", UK),  # none covers 4
    ("C200", "22423", CAKESTAND, -2, "2010-01-06 10:00:00", 12.75, "13085", UK),  # -> 101-1
    ("C202", "99999", "UNKNOWN THING", -1, "2010-01-06 10:00:00", 1.0, "13085", UK),  # unmatched
    ("C203", "D", "Discount", -1, "2010-01-06 10:00:00", 5.0, "13085", UK),  # adjustment
    ("C204", "22423", CAKESTAND, -3, "2010-01-07 10:00:00", 12.75, "13085", UK),  # -> 101-1
    ("C205", "22423", CAKESTAND, -1, "2010-01-08 10:00:00", 12.75, "13085", UK),  # -> 100-2
]


def retail_frame(header: list[str] = II_HEADER) -> pd.DataFrame:
    return pd.DataFrame(RETAIL_LINES, columns=header)


def write_retail(path: Path, header: list[str] = II_HEADER) -> Path:
    df = retail_frame(header)
    if path.name.endswith(".xlsx"):
        df["Customer ID" if "Customer ID" in header else "CustomerID"] = pd.to_numeric(
            df[header[6]].replace("", None)
        )  # a spreadsheet holds ids as numbers: 13085.0
        df.to_excel(path, index=False, sheet_name="Year 2009-2010")
    elif path.name.endswith(".parquet"):
        df[header[6]] = pd.to_numeric(df[header[6]].replace("", None))
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, compression="gzip" if path.name.endswith(".gz") else None)
    return path


def check_retail(ds: Dataset) -> None:
    t = ds.tables
    items = t["order_items"].set_index("order_item_id")
    assert sorted(items.index) == ["100-1", "100-2", "101-1", "101-2", "103-1"]
    assert items.loc["101-2", "product_id"] == "85123A"  # codes upper-cased
    assert items.loc["103-1", "unit_price"] == 0.0
    assert set(items["seller_id"]) == {"shop"}
    orders = t["orders"].set_index("order_id")
    assert sorted(orders.index) == ["100", "101", "103"]
    assert set(orders["status"]) == {"delivered"}
    assert orders["delivered_at"].isna().all()
    assert orders.loc["101", "purchased_at"] == pd.Timestamp("2010-01-05 09:00")
    customers = t["customers"].set_index("customer_id")
    assert sorted(customers.index) == ["13085", "14000"]  # strings, no ".0"
    assert customers.loc["14000", "country"] == "France"
    products = t["products"].set_index("product_id")
    assert sorted(products.index) == ["21212", "22423", "85123A"]
    assert products.loc["85123A", "category"] == "candles_and_lighting"
    assert products.loc["22423", "category"] == "kitchen_and_dining"
    assert products.loc["22423", "list_price"] == 12.75
    assert pd.isna(products.loc["21212", "list_price"])  # only ever given away
    assert set(products["size_type"]) == {"none"}
    returns = t["returns"].set_index("return_id")
    assert returns["order_item_id"].to_dict() == {
        "C200-1": "101-1",
        "C204-1": "101-1",
        "C205-1": "100-2",
    }
    assert returns.loc["C200-1", "quantity"] == 2
    assert returns.loc["C200-1", "refund_amount"] == pytest.approx(25.5)
    assert returns.loc["C205-1", "returned_at"] == pd.Timestamp("2010-01-08 10:00")
    assert ds.set_aside == {
        "order_items": {
            online_retail.REASON_ADJUSTMENT: 2,
            online_retail.REASON_DUPLICATE: 1,
            online_retail.REASON_NO_CUSTOMER: 1,
        },
        "returns": {online_retail.REASON_UNMATCHED: 2, online_retail.REASON_ADJUSTMENT: 1},
    }
    assert ds.meta["rows_read:order_items"] == "9"
    assert ds.meta["rows_read:returns"] == "6"


@pytest.mark.parametrize("name", ["retail.csv", "retail.csv.gz", "retail.xlsx", "retail.parquet"])
def test_online_retail_formats(tmp_path: Path, name: str) -> None:
    ds = read_online_retail(write_retail(tmp_path / name))
    check_retail(ds)


def test_online_retail_format_detected_by_content_not_name(tmp_path: Path) -> None:
    gz = write_retail(tmp_path / "retail.csv.gz")
    disguised = tmp_path / "retail.dat"
    disguised.write_bytes(gz.read_bytes())
    check_retail(read_online_retail(disguised))


def test_online_retail_old_spelling_and_us_dates(tmp_path: Path) -> None:
    df = retail_frame(OLD_HEADER)
    # The older "Online Retail" CSV mirrors write month/day/year and ids as floats.
    df["InvoiceDate"] = pd.to_datetime(df["InvoiceDate"]).dt.strftime("%-m/%-d/%Y %-H:%M")
    df["CustomerID"] = df["CustomerID"].map(lambda v: f"{v}.0" if v else "")
    path = tmp_path / "Online Retail.csv"
    df.to_csv(path, index=False, encoding="latin-1")
    ds = read_online_retail(path)
    check_retail(ds)


def test_online_retail_loads_and_reconciles(tmp_path: Path) -> None:
    ds = read_online_retail(write_retail(tmp_path / "retail.csv"))
    wh, report = load(ds, tmp_path)
    with wh:
        assert report.rows_quarantined == 0
        assert report.table("returns").rows_accepted == 3
        lines = wh.read("order_items")["order_item_id"]
        assert wh.read("returns")["order_item_id"].isin(lines).all()


def test_online_retail_bad_values_go_to_quarantine(tmp_path: Path) -> None:
    # A negative price on a real product is the contract's to reject, with its rule.
    df = retail_frame()
    df.loc[0, "Price"] = -1.0
    path = tmp_path / "retail.csv"
    df.to_csv(path, index=False)
    ds = read_online_retail(path)
    wh, report = load(ds, tmp_path)
    wh.close()
    assert report.table("order_items").by_rule == {"range:unit_price": 1}


def test_adjustment_detection() -> None:
    codes = pd.Series(
        [
            "POST",
            "m",
            "BANK CHARGES",
            "AMAZONFEE",
            "ADJUST2",
            "TEST001",
            "GIFT_0001_30",
            "C2",
            "DCGS0058",
            "85123A",
            "22423",
            "PADS",
            "CRUK",
        ]
    )
    flags = online_retail.is_adjustment(codes, pd.Series(["1"] * len(codes)))
    assert dict(zip(codes, flags, strict=True)) == {
        "POST": True,
        "m": True,
        "BANK CHARGES": True,
        "AMAZONFEE": True,
        "ADJUST2": True,
        "TEST001": True,
        "GIFT_0001_30": True,
        "C2": True,
        "DCGS0058": False,
        "85123A": False,
        "22423": False,
        "PADS": True,
        "CRUK": True,
    }
    assert online_retail.is_adjustment(pd.Series(["B"]), pd.Series(["A506401"])).all()


def test_categorise() -> None:
    assert online_retail.categorise("SET OF 3 CAKE TINS PANTRY DESIGN") == "kitchen_and_dining"
    assert online_retail.categorise("PAPER CHAIN KIT 50'S CHRISTMAS") == "christmas"
    assert online_retail.categorise("JUMBO BAG RED RETROSPOT") == "bags"
    assert online_retail.categorise("SOMETHING ELSE ENTIRELY") == "other"
    assert online_retail.categorise("") == "unknown"
    assert online_retail.categorise(None) == "unknown"


def test_online_retail_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "retail.csv"
    retail_frame().drop(columns=["Price", "Country"]).to_csv(path, index=False)
    with pytest.raises(ImportFormatError) as err:
        read_online_retail(path)
    msg = str(err.value)
    assert str(path) in msg and "Price or UnitPrice" in msg and "Country" in msg
    assert "\n" not in msg


def test_online_retail_wrong_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ImportFormatError, match="empty"):
        read_online_retail(empty)
    cd = tmp_path / "cdnow.txt"
    cd.write_text(" 00004 19970101  2   29.33\n")
    with pytest.raises(ImportFormatError, match="Invoice or InvoiceNo"):
        read_online_retail(cd)
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(II_HEADER) + "\n")
    with pytest.raises(ImportFormatError, match="no lines"):
        read_online_retail(header_only)
    with pytest.raises(ImportFormatError, match="no such file"):
        read_online_retail(tmp_path / "absent.csv")
    junk = tmp_path / "junk.xlsx"
    junk.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(ImportFormatError, match="XLSX"):
        read_online_retail(junk)


# -- CDNOW -------------------------------------------------------------------------------------

CDNOW_SAMPLE = """\
 00004 0001 19970101  2   29.33
 00004 0001 19970118  2   29.73
 00004 0001 19970118  1   14.96
 00018 0002 19970101  2   29.33
 01101 0087 19970105  1    0.00
 02000 0088 19970106  0    0.00
"""
CDNOW_MASTER = """\
00001 19970101  1   11.77
00002 19970112  1   12.00
00002 19970112  5   77.00
00003 19970102  2   20.76
"""


def test_cdnow_sample_layout(tmp_path: Path) -> None:
    path = tmp_path / "CDNOW_sample.txt"
    path.write_text(CDNOW_SAMPLE)
    ds = read_cdnow(path)
    t = ds.tables
    assert ds.meta["layout"] == "sample"
    # The master id is the customer, as a string with its zeros.
    assert sorted(t["customers"]["customer_id"]) == ["00004", "00018", "01101", "02000"]
    assert t["customers"].set_index("customer_id").loc["00004", "created_at"] == pd.Timestamp(
        "1997-01-01"
    )
    orders = t["orders"]
    assert sorted(orders["order_id"]) == [
        "00004-19970101-1",
        "00004-19970118-1",
        "00004-19970118-2",
        "00018-19970101-1",
        "01101-19970105-1",
    ]
    items = t["order_items"].set_index("order_id")
    assert items.loc["00004-19970101-1", "unit_price"] == pytest.approx(14.665)
    assert items.loc["00004-19970101-1", "quantity"] == 2
    assert items.loc["01101-19970105-1", "unit_price"] == 0.0  # free: kept
    assert set(items["product_id"]) == {"cd"}
    assert t["products"].loc[0, "category"] == "music"
    assert ds.set_aside == {
        "orders": {cdnow.REASON_NO_CDS: 1},
        "order_items": {cdnow.REASON_NO_CDS: 1},
    }
    wh, report = load(ds, tmp_path)
    wh.close()
    assert report.rows_quarantined == 0


def test_cdnow_master_layout(tmp_path: Path) -> None:
    path = tmp_path / "CDNOW_master.txt"
    path.write_text(CDNOW_MASTER)
    ds = read_cdnow(path)
    assert ds.meta["layout"] == "master"
    assert sorted(ds.tables["customers"]["customer_id"]) == ["00001", "00002", "00003"]
    assert len(ds.tables["orders"]) == 4
    assert ds.tables["orders"]["purchased_at"].min() == pd.Timestamp("1997-01-01")
    assert ds.set_aside == {}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "empty"),
        ("   \n\n", "empty"),
        ('"order_id","customer_id"\n"a","b"\n', "line 1 is delimited"),
        ("a b c\n", "line 1 has 3 field"),
        ("customer_id date n_cds dollars\r\n", "header on line 1 but no data lines"),
        ("id date cds dollars\n" + CDNOW_SAMPLE, "the header on line 1 names 4 column"),
        ("00001 19970101 1 11.77\nid date cds dollars\n", "column date .* on line 2"),
        (CDNOW_MASTER + CDNOW_SAMPLE, "line 5 has 5 field"),
        ("00001 19971301 1 11.77\n", r"column date \(yyyymmdd\) on line 1"),
        ("00001 19970101 one 11.77\n", "column n_cds on line 1"),
        ("00001 19970101 1 $11.77\n", "column dollar_value on line 1"),
    ],
)
def test_cdnow_wrong_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "cdnow.txt"
    path.write_text(content)
    with pytest.raises(ImportFormatError, match=match) as err:
        read_cdnow(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
@pytest.mark.parametrize(
    ("header", "body", "layout"),
    [
        (" customer_id  date number_of_cds  dollar_value", CDNOW_MASTER, "master"),
        ("master_id sample_id date number_of_cds dollar_value", CDNOW_SAMPLE, "sample"),
        (None, CDNOW_MASTER, "master"),
        (None, CDNOW_SAMPLE, "sample"),
    ],
)
def test_cdnow_with_or_without_header_lf_or_crlf(
    tmp_path: Path, header: str | None, body: str, layout: str, line_end: str
) -> None:
    lines = ([header] if header else []) + body.splitlines()
    path = tmp_path / "purchases.dat"  # the layout comes from the content, not the name
    path.write_bytes((line_end.join(lines) + line_end).encode())
    ds = read_cdnow(path)
    plain = tmp_path / "plain.txt"
    plain.write_text(body)
    expected = read_cdnow(plain)
    assert ds.meta["layout"] == layout
    assert ds.meta["header"] == ("yes" if header else "no")
    for name, table in expected.tables.items():
        pd.testing.assert_frame_equal(ds.tables[name], table)
    assert ds.set_aside == expected.set_aside
    # The header is not a line of data: the raw count is the data lines.
    assert ds.meta["rows_read:orders"] == str(len(body.splitlines()))


def test_cdnow_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(
        "\ufeff".encode()
        + b" customer_id date number_of_cds dollar_value\r\n"
        + CDNOW_MASTER.encode()
    )
    assert len(read_cdnow(path).tables["orders"]) == 4


def test_cdnow_refuses_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cdnow.txt.gz"
    path.write_bytes(gzip.compress(CDNOW_MASTER.encode()))
    with pytest.raises(ImportFormatError, match="gzip"):
        read_cdnow(path)


# -- Olist -------------------------------------------------------------------------------------


def _csv(path: Path, rows: list[dict[str, object]], gz: bool = False) -> None:
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False, compression="gzip" if gz else None)


def write_olist(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ts = "2017-10-02 10:56:33"
    _csv(
        folder / "olist_customers_dataset.csv",
        [
            {
                "customer_id": "c1",
                "customer_unique_id": "p1",
                "customer_zip_code_prefix": "01037",
                "customer_city": "sao paulo",
                "customer_state": "SP",
            },
            {
                "customer_id": "c2",
                "customer_unique_id": "p1",
                "customer_zip_code_prefix": "01037",
                "customer_city": "sao paulo",
                "customer_state": "SP",
            },  # same person, 2nd order
            {
                "customer_id": "c3",
                "customer_unique_id": "p2",
                "customer_zip_code_prefix": "99999",
                "customer_city": "x",
                "customer_state": "RS",
            },
        ],
    )
    _csv(
        folder / "olist_geolocation_dataset.csv",
        [
            # Leading zeros lost in a spreadsheet: 1037 is 01037.
            {
                "geolocation_zip_code_prefix": 1037,
                "geolocation_lat": -23.0,
                "geolocation_lng": -46.0,
                "geolocation_city": "sao paulo",
                "geolocation_state": "SP",
            },
            {
                "geolocation_zip_code_prefix": 1037,
                "geolocation_lat": -24.0,
                "geolocation_lng": -47.0,
                "geolocation_city": "sao paulo",
                "geolocation_state": "SP",
            },
        ],
    )
    _csv(
        folder / "olist_sellers_dataset.csv",
        [
            {
                "seller_id": "s1",
                "seller_zip_code_prefix": 1037,
                "seller_city": "sao paulo",
                "seller_state": "SP",
            },
        ],
    )
    _csv(
        folder / "olist_products_dataset.csv",
        [
            {
                "product_id": "pr1",
                "product_category_name": "fashion_calcados",
                "product_name_lenght": 40,
                "product_weight_g": 500,
                "product_length_cm": 20,
                "product_height_cm": 10,
                "product_width_cm": 15,
            },
            {
                "product_id": "pr2",
                "product_category_name": "moveis_decoracao",
                "product_name_lenght": 40,
                "product_weight_g": 900,
                "product_length_cm": 20,
                "product_height_cm": 10,
                "product_width_cm": 15,
            },
            {
                "product_id": "pr3",
                "product_category_name": "pc_gamer",
                "product_name_lenght": 40,
                "product_weight_g": "",
                "product_length_cm": "",
                "product_height_cm": "",
                "product_width_cm": "",
            },
            {
                "product_id": "pr4",
                "product_category_name": "",
                "product_name_lenght": "",
                "product_weight_g": 1,
                "product_length_cm": 1,
                "product_height_cm": 1,
                "product_width_cm": 1,
            },
        ],
    )
    _csv(
        folder / "product_category_name_translation.csv",
        [
            {
                "product_category_name": "fashion_calcados",
                "product_category_name_english": "fashion_shoes",
            },
            {
                "product_category_name": "moveis_decoracao",
                "product_category_name_english": "furniture_decor",
            },
        ],
    )
    _csv(
        folder / "olist_orders_dataset.csv",
        [
            {
                "order_id": "o1",
                "customer_id": "c1",
                "order_status": "delivered",
                "order_purchase_timestamp": ts,
                "order_approved_at": "2017-10-02 11:07:15",
                "order_delivered_carrier_date": "2017-10-04 19:55:00",
                "order_delivered_customer_date": "2017-10-10 21:25:13",
                "order_estimated_delivery_date": "2017-10-18 00:00:00",
            },
            {
                "order_id": "o2",
                "customer_id": "c2",
                "order_status": "shipped",
                "order_purchase_timestamp": "2017-11-02 10:00:00",
                "order_approved_at": "",
                "order_delivered_carrier_date": "",
                "order_delivered_customer_date": "",
                "order_estimated_delivery_date": "2017-11-20 00:00:00",
            },
            {
                "order_id": "o3",
                "customer_id": "c-missing",
                "order_status": "delivered",
                "order_purchase_timestamp": ts,
                "order_approved_at": "",
                "order_delivered_carrier_date": "",
                "order_delivered_customer_date": "",
                "order_estimated_delivery_date": "",
            },
        ],
    )
    _csv(
        folder / "olist_order_items_dataset.csv",
        [
            {
                "order_id": "o1",
                "order_item_id": 1,
                "product_id": "pr1",
                "seller_id": "s1",
                "shipping_limit_date": ts,
                "price": 10.0,
                "freight_value": 2.5,
            },
            {
                "order_id": "o1",
                "order_item_id": 2,
                "product_id": "pr1",
                "seller_id": "s1",
                "shipping_limit_date": ts,
                "price": 20.0,
                "freight_value": 2.5,
            },
            {
                "order_id": "o2",
                "order_item_id": 1,
                "product_id": "pr1",
                "seller_id": "s1",
                "shipping_limit_date": ts,
                "price": 60.0,
                "freight_value": 0.0,
            },
            {
                "order_id": "o3",
                "order_item_id": 1,
                "product_id": "pr2",
                "seller_id": "s1",
                "shipping_limit_date": ts,
                "price": 99.0,
                "freight_value": 1.0,
            },  # order orphaned
            {
                "order_id": "o-elsewhere",
                "order_item_id": 1,
                "product_id": "pr2",
                "seller_id": "s1",
                "shipping_limit_date": ts,
                "price": 5.0,
                "freight_value": 1.0,
            },
        ],
    )
    _csv(
        folder / "olist_order_payments_dataset.csv",
        [
            {
                "order_id": "o1",
                "payment_sequential": 1,
                "payment_type": "credit_card",
                "payment_installments": 3,
                "payment_value": 35.0,
            },
            {
                "order_id": "o2",
                "payment_sequential": 1,
                "payment_type": "not_defined",
                "payment_installments": 0,
                "payment_value": 60.0,
            },
            {
                "order_id": "o9",
                "payment_sequential": 1,
                "payment_type": "boleto",
                "payment_installments": 1,
                "payment_value": 1.0,
            },
        ],
        gz=True,
    )
    _csv(
        folder / "olist_order_reviews_dataset.csv",
        [
            {
                "review_id": "r1",
                "order_id": "o1",
                "review_score": 4,
                "review_comment_title": "",
                "review_comment_message": "NA\nmulti-line",
                "review_creation_date": "2017-10-11 00:00:00",
                "review_answer_timestamp": "2017-10-12 10:00:00",
            },
            {
                "review_id": "r1",
                "order_id": "o2",
                "review_score": 5,
                "review_comment_title": "ok",
                "review_comment_message": "",
                "review_creation_date": "2017-11-21 00:00:00",
                "review_answer_timestamp": "",
            },
        ],
    )
    return folder


def test_olist_mapping(tmp_path: Path) -> None:
    ds = read_olist(write_olist(tmp_path / "olist"))
    t = ds.tables
    customers = t["customers"].set_index("customer_id")
    assert sorted(customers.index) == ["p1", "p2"]  # people, not per-order ids
    assert customers.loc["p1", "zip_prefix"] == "01037"
    assert customers.loc["p1", "lat"] == pytest.approx(-23.5)  # mean of the prefix's points
    assert customers.loc["p1", "lon"] == pytest.approx(-46.5)
    assert customers.loc["p1", "region"] == "SP"
    assert customers.loc["p1", "country"] == "Brazil"
    assert customers.loc["p1", "created_at"] == pd.Timestamp("2017-10-02 10:56:33")
    assert pd.isna(customers.loc["p2", "lat"])
    assert ds.set_aside == {"customers": {olist.REASON_SAME_PERSON: 1}}
    orders = t["orders"].set_index("order_id")
    assert orders["customer_id"].to_dict() == {"o1": "p1", "o2": "p1", "o3": "c-missing"}
    sellers = t["sellers"].set_index("seller_id")
    assert sellers.loc["s1", "zip_prefix"] == "01037"
    assert sellers.loc["s1", "lat"] == pytest.approx(-23.5)
    products = t["products"].set_index("product_id")
    assert products["category"].to_dict() == {
        "pr1": "fashion_shoes",
        "pr2": "furniture_decor",
        "pr3": "pc_gamer",
        "pr4": "unknown",
    }
    assert products["size_type"].to_dict() == {
        "pr1": "shoes",
        "pr2": "furniture",
        "pr3": "electronics",
        "pr4": "none",
    }
    assert products.loc["pr1", "list_price"] == pytest.approx(20.0)  # median of 10, 20, 60
    assert pd.isna(products.loc["pr3", "list_price"])
    assert sorted(t["order_items"]["order_item_id"])[:2] == ["o-elsewhere-1", "o1-1"]
    payments = t["payments"].set_index("order_id")
    assert payments.loc["o2", "method"] == "other"
    reviews = t["reviews"]
    assert reviews.loc[0, "comment"] == "NA\nmulti-line"  # "NA" is text, not a null
    assert "returns" not in t and "web_events" not in t


def test_olist_load_orphans_quarantined_and_idempotent(tmp_path: Path) -> None:
    folder = write_olist(tmp_path / "olist")
    ds = read_olist(folder)
    wh, report = load(ds, tmp_path)
    with wh:
        assert report.table("orders").by_rule == {"orphan:customer_id->customers": 1}
        # o3 is quarantined, so its item follows; o-elsewhere was never in the orders file.
        assert report.table("order_items").by_rule == {"orphan:order_id->orders": 2}
        assert report.table("order_items").rows_accepted == 3
        assert report.table("payments").by_rule == {"orphan:order_id->orders": 1}
        assert report.table("reviews").rows_accepted == 2
        first = wh.versions()
        quarantined = len(wh.quarantine())
        again = read_olist(folder).load(wh)
        assert wh.versions() == first
        assert len(wh.quarantine()) == quarantined == 4
        assert [t.rows_accepted for t in again.tables] == [t.rows_accepted for t in report.tables]


def test_olist_size_type() -> None:
    assert olist.size_type("fashio_female_clothing") == "apparel"
    assert olist.size_type("fashion_bags_accessories") == "apparel"
    assert olist.size_type("fashion_shoes") == "shoes"
    assert olist.size_type("office_furniture") == "furniture"
    assert olist.size_type("telephony") == "electronics"
    assert olist.size_type("health_beauty") == "none"


def test_olist_missing_file(tmp_path: Path) -> None:
    folder = write_olist(tmp_path / "olist")
    (folder / "olist_sellers_dataset.csv").unlink()
    with pytest.raises(ImportFormatError, match=r"olist_sellers_dataset\.csv") as err:
        read_olist(folder)
    assert str(folder) in str(err.value)


def test_olist_missing_column(tmp_path: Path) -> None:
    folder = write_olist(tmp_path / "olist")
    path = folder / "olist_orders_dataset.csv"
    pd.read_csv(path).drop(columns=["order_status"]).to_csv(path, index=False)
    with pytest.raises(ImportFormatError, match="order_status") as err:
        read_olist(folder)
    assert str(path) in str(err.value)


def test_olist_wrong_inputs(tmp_path: Path) -> None:
    folder = write_olist(tmp_path / "olist")
    with pytest.raises(ImportFormatError, match="expects the folder"):
        read_olist(folder / "olist_orders_dataset.csv")
    (folder / "olist_orders_dataset.csv").write_text("")
    with pytest.raises(ImportFormatError, match=r"olist_orders_dataset\.csv is empty"):
        read_olist(folder)
    with pytest.raises(ImportFormatError, match="no such folder"):
        read_olist(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    with pytest.raises(ImportFormatError, match="none of the nine Olist CSVs"):
        read_olist(tmp_path / "other")


def test_wrong_importer_for_file(tmp_path: Path) -> None:
    folder = write_olist(tmp_path / "olist")
    orders = folder / "olist_orders_dataset.csv"
    with pytest.raises(ImportFormatError, match="not a CDNOW file"):
        read_cdnow(orders)
    with pytest.raises(ImportFormatError, match="not Online Retail data"):
        read_online_retail(orders)
