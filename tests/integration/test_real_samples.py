"""The importers on the real public samples in ../shared/data (never copied into the project).

Each sample is imported into a temporary warehouse; the reconciliation must add up exactly
(raw lines = canonical rows + set aside, canonical rows = accepted + quarantined), known facts
about the samples must hold, and importing again must change nothing.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shopml.data.dataset import Dataset
from shopml.data.importers import olist, online_retail, read_cdnow, read_olist, read_online_retail
from shopml.data.warehouse import Warehouse, WriteReport
from tests.conftest import shared_data_dir

pytestmark = pytest.mark.realdata

DATA = shared_data_dir()
OLIST = DATA / "olist"
RETAIL = DATA / "online_retail_ii" / "online_retail_II_2009_2010.csv.gz"
CDNOW = DATA / "cdnow" / "CDNOW_sample.txt"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"real sample {path} is absent: put the shared data beside the project "
            "(../shared/data) or set SHOPML_SHARED_DATA_DIR"
        )
    return path


def assert_reconciles(ds: Dataset, report: WriteReport) -> None:
    """raw lines = canonical + set aside; canonical = accepted + repaired + quarantined."""
    for load in report.tables:
        assert load.rows_canonical == len(ds.tables[load.table])
        assert load.rows_canonical == (
            load.rows_accepted + load.rows_repaired + load.rows_quarantined
        )
        # Every quarantined row broke at least one rule, and a rule counts only broken rows.
        assert all(0 < n <= load.rows_quarantined for n in load.by_rule.values())
        assert bool(load.by_rule) == (load.rows_quarantined > 0)
        assert bool(load.repaired_by_rule) == (load.rows_repaired > 0)
        assert load.rows_set_aside == sum(ds.set_aside.get(load.table, {}).values())
        assert load.rows_read == load.rows_canonical + load.rows_set_aside, load.table
        key = f"rows_read:{load.table}"
        if key in ds.meta:
            assert load.raw_lines and int(ds.meta[key]) == load.rows_read, load.table


def import_twice(
    read: Callable[[Path], Dataset], path: Path, tmp_path: Path
) -> tuple[Dataset, WriteReport]:
    """Import, check the reconciliation, import again and check nothing changed."""
    ds = read(path)
    with Warehouse(tmp_path / "real.duckdb") as wh:
        report = ds.load(wh)
        assert_reconciles(ds, report)
        versions, quarantined = wh.versions(), len(wh.quarantine())
        again = read(path).load(wh)
        assert wh.versions() == versions
        assert len(wh.quarantine()) == quarantined  # replaced, not doubled
        assert [(t.table, t.rows_accepted) for t in again.tables] == [
            (t.table, t.rows_accepted) for t in report.tables
        ]
    return ds, report


def test_olist_sample(tmp_path: Path) -> None:
    ds, report = import_twice(read_olist, need(OLIST), tmp_path)
    orders = ds.tables["orders"]
    assert len(orders) == 4071
    # Leading slices join badly: only 175 orders have items and 418 their customer.
    assert orders["order_id"].isin(ds.tables["order_items"]["order_id"]).sum() == 175
    assert report.table("orders").rows_accepted == 418
    assert report.table("orders").by_rule["orphan:customer_id->customers"] == 4071 - 418
    assert report.table("customers").rows_accepted == 9963  # people, from 9,999 rows
    assert ds.set_aside == {"customers": {olist.REASON_SAME_PERSON: 36}}
    assert report.table("products").rows_accepted == 32951
    assert report.table("sellers").rows_accepted == 3095
    items = report.table("order_items")
    assert items.rows_read == 5154
    assert items.by_rule == {"orphan:order_id->orders": items.rows_quarantined}
    assert report.table("payments").rows_read == 103886
    assert "returns" not in ds.tables
    customers = ds.tables["customers"]
    assert customers["zip_prefix"].str.len().eq(5).all()
    assert customers["lat"].notna().any()  # geolocation joined through padded prefixes


def test_cdnow_sample(tmp_path: Path) -> None:
    ds, report = import_twice(read_cdnow, need(CDNOW), tmp_path)
    assert ds.meta["layout"] == "sample"
    assert report.table("customers").rows_accepted == 2357
    assert report.table("orders").rows_accepted == 6919
    assert report.table("order_items").rows_accepted == 6919
    assert report.rows_quarantined == 0
    assert ds.tables["orders"]["purchased_at"].max().date().isoformat() <= "1998-06-30"
    first = ds.tables["customers"]["created_at"]
    assert first.min().isoformat() >= "1997-01-01" and first.max().isoformat() < "1997-04-01"


def test_online_retail_leading_slice(tmp_path: Path) -> None:
    """The first 30,000 lines of the real file: quick, and covers the real mess."""
    src = need(RETAIL)
    head = tmp_path / "head.csv.gz"
    with gzip.open(src, "rt", encoding="utf-8") as fin, gzip.open(head, "wt") as fout:
        for n, line in enumerate(fin):
            if n > 30_000:
                break
            fout.write(line)
    ds, report = import_twice(read_online_retail, head, tmp_path)
    assert int(ds.meta["rows_read:lines"]) == 30_000
    assert report.table("returns").rows_accepted > 0
    assert online_retail.REASON_NO_CUSTOMER in ds.set_aside["order_items"]


@pytest.mark.slow
def test_online_retail_full_file(tmp_path: Path) -> None:
    path = need(RETAIL)
    start = time.perf_counter()
    ds = read_online_retail(path)
    with Warehouse(tmp_path / "real.duckdb") as wh:
        report = ds.load(wh)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"import took {elapsed:.0f}s"
    assert_reconciles(ds, report)
    lines = int(ds.meta["rows_read:lines"])
    assert lines == 525_461
    assert int(ds.meta["rows_read:order_items"]) + int(ds.meta["rows_read:returns"]) == lines
    aside = ds.set_aside
    no_customer = sum(t.get(online_retail.REASON_NO_CUSTOMER, 0) for t in aside.values())
    assert 0.18 < no_customer / lines < 0.23  # "about a fifth of lines have no Customer ID"
    assert aside["order_items"][online_retail.REASON_DUPLICATE] > 0
    assert aside["order_items"][online_retail.REASON_ADJUSTMENT] > 0
    assert aside["returns"][online_retail.REASON_UNMATCHED] > 0
    assert report.table("returns").rows_accepted > 5_000
    assert report.table("customers").rows_accepted > 4_000


def _records(path: Path) -> int:
    """Data records of a CSV counted on their own (quoted fields may hold line breaks)."""
    import csv

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


@pytest.mark.parametrize("sample", ["olist", "cdnow", "online-retail"])
def test_ingest_json_balances_against_the_files(
    sample: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """`shopml ingest --json`: per table, read = canonical + set aside and canonical = accepted
    + repaired + quarantined, with `read` equal to the records counted in the files here."""
    import json

    from shopml import cli

    if sample == "olist":
        path = need(OLIST)
        expected = {
            "orders": _records(path / "olist_orders_dataset.csv"),
            "order_items": _records(path / "olist_order_items_dataset.csv"),
            "customers": _records(path / "olist_customers_dataset.csv"),
            "reviews": _records(path / "olist_order_reviews_dataset.csv"),
            "payments": _records(path / "olist_order_payments_dataset.csv.gz"),
        }
    elif sample == "cdnow":
        path = need(CDNOW)
        lines = sum(1 for line in path.read_text().splitlines() if line.strip())
        expected = {"orders": lines, "order_items": lines}
    else:
        src = need(RETAIL)
        path = tmp_path / "head.csv.gz"
        with gzip.open(src, "rt", encoding="utf-8") as fin, gzip.open(path, "wt") as fout:
            for n, line in enumerate(fin):
                if n > 5_000:
                    break
                fout.write(line)
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            invoices = [row[0] for row in __import__("csv").reader(fh)][1:]
        # Cancellations are the invoices starting with C (README of the shared data).
        cancels = sum(1 for i in invoices if i.upper().startswith("C"))
        expected = {"order_items": len(invoices) - cancels, "returns": cancels}
    monkeypatch.setattr("sys.argv", ["shopml", "ingest", sample, str(path), "--json"])
    try:
        cli.main()
    except SystemExit as exc:
        assert not exc.code
    report = json.loads(capsys.readouterr().out)
    tables = {t["table"]: t for t in report["tables"]}
    for t in tables.values():
        assert t["rows_read"] == t["rows_canonical"] + t["rows_set_aside"], t
        assert t["rows_canonical"] == (
            t["rows_accepted"] + t["rows_repaired"] + t["rows_quarantined"]
        ), t
        assert t["rows_set_aside"] == sum(report["set_aside"].get(t["table"], {}).values())
    for name, n in expected.items():
        assert tables[name]["raw_lines"] and tables[name]["rows_read"] == n, name
