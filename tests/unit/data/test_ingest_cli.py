"""`shopml ingest` as a user meets it: real files as people have them, corrupt inputs refused
with one line and exit 2, nothing written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from shopml import cli
from shopml.settings import get_settings


def shopml(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["shopml", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


RETAIL = pd.DataFrame(
    {
        "Invoice": [f"{500 + i}" for i in range(400)],
        "StockCode": ["85123A"] * 400,
        "Description": ["WHITE HANGING HEART T-LIGHT HOLDER"] * 400,
        "Quantity": [2] * 400,
        "InvoiceDate": [f"2010-01-{1 + i % 28:02d} 10:00:00" for i in range(400)],
        "Price": [2.55] * 400,
        "Customer ID": [str(13000 + i % 50) for i in range(400)],
        "Country": ["United Kingdom"] * 400,
    }
)


def _truncated_gzip(path: Path) -> Path:
    # Random-looking text compresses badly, so the gzip is long enough to cut in half.
    rng = pd.Series(range(4000)).map(lambda i: f"{i * 7919 % 100003:06d}")
    data = RETAIL.to_csv(index=False).encode() + "\n".join(rng).encode()
    whole = gzip.compress(data)
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _corrupt_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(bytes((i * 37 + 11) % 256 for i in range(4096)))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    semicolons = tmp_path / "semicolons.csv"
    RETAIL.head(20).to_csv(semicolons, index=False, sep=";")
    tabs = tmp_path / "tabs.csv"
    RETAIL.head(20).to_csv(tabs, index=False, sep="\t")
    return {
        "truncated gzip": (_truncated_gzip(tmp_path / "lines.csv.gz"), "truncated"),
        "garbage bytes": (garbage, "is not a text file"),
        "empty file": (empty, "is empty"),
        "semicolons": (semicolons, "is delimited by ';'"),
        "tabs": (tabs, "is delimited by tabs"),
    }


@pytest.mark.parametrize(
    "case", ["truncated gzip", "garbage bytes", "empty file", "semicolons", "tabs"]
)
def test_corrupt_online_retail_inputs_exit_2_and_write_nothing(
    case: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    path, message = _corrupt_inputs(tmp_path)[case]
    code, out, err = shopml(["ingest", "online-retail", str(path)], capsys, monkeypatch)
    assert code == 2, (out, err)
    text = " ".join(err.split())  # the console wraps long lines
    assert path.name in text and message in text
    assert "Traceback" not in err and "aborted" not in err
    assert not get_settings().warehouse.exists(), "a refused import must write nothing"


@pytest.mark.parametrize("case", ["truncated gzip", "garbage bytes", "empty file"])
def test_corrupt_cdnow_inputs_exit_2(case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    path, _ = _corrupt_inputs(tmp_path)[case]
    code, _, err = shopml(["ingest", "cdnow", str(path)], capsys, monkeypatch)
    assert code == 2 and path.name in " ".join(err.split()) and "Traceback" not in err
    assert not get_settings().warehouse.exists()


def test_utf16_export_is_named(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "lines.csv"
    path.write_bytes(RETAIL.head(5).to_csv(index=False).encode("utf-16"))
    code, _, err = shopml(["ingest", "online-retail", str(path)], capsys, monkeypatch)
    assert code == 2 and "is UTF-16 text; save it as UTF-8" in err


def test_truncated_gzip_in_an_olist_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    from tests.unit.data.test_importers import write_olist

    folder = write_olist(tmp_path / "olist")
    payments = folder / "olist_order_payments_dataset.csv"
    raw = payments.read_bytes() + b"".join(
        f"o9,{i},credit_card,1,{i * 7919 % 10007}.{i % 97:02d}\n".encode() for i in range(3000)
    )
    payments.unlink()
    whole = gzip.compress(raw)
    (folder / "olist_order_payments_dataset.csv.gz").write_bytes(whole[: len(whole) // 2])
    code, _, err = shopml(["ingest", "olist", str(folder)], capsys, monkeypatch)
    text = " ".join(err.split())
    assert code == 2 and "olist_order_payments_dataset.csv.gz" in text and "truncated" in text
    assert not get_settings().warehouse.exists()


# The copy of the CDNOW master file distributed with the `lifetimes` library.
LIFETIMES_MASTER = (
    " customer_id  date number_of_cds  dollar_value\r\n"
    " 00001 19970101  1   11.77\r\n"
    " 00002 19970112  1   12.00\r\n"
    " 00002 19970112  5   77.00\r\n"
    " 00003 19970102  2   20.76\r\n"
)


def test_cdnow_with_header_and_crlf_reconciles_in_json(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "data.txt"  # the name says nothing about the layout
    path.write_bytes(LIFETIMES_MASTER.encode())
    code, out, err = shopml(["ingest", "cdnow", str(path), "--json"], capsys, monkeypatch)
    assert code == 0, err
    report = json.loads(out)
    orders = next(t for t in report["tables"] if t["table"] == "orders")
    assert orders["rows_accepted"] == 4
