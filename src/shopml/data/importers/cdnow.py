"""Import the CDNOW purchase history (the classic BG/NBD data), master or sample layout.

The file is whitespace-separated, in one of two layouts, told apart by the number of fields on
the lines (never by the file's name):

* sample (5 fields): ``master_id sample_id yyyymmdd n_cds dollar_value``
* master (4 fields): ``customer_id yyyymmdd n_cds dollar_value``

The original files have no header; the copies distributed with the ``lifetimes`` library start
with one (`` customer_id  date number_of_cds  dollar_value``) and may end lines with CRLF. A first
line whose fields are all names rather than numbers is taken as that header and skipped; line
ends may be LF or CRLF, and a UTF-8 byte-order mark is ignored.

Mapping: the customer is the master id, kept as written (a string with its zeros, so a customer
has the same id in both files); ``created_at`` is their first purchase. Every line is one order
(``<customer>-<yyyymmdd>-<n>``, n counting that customer's lines on that day), status
``delivered``, bought at midnight of its day, with one order item of the single product ``cd``
(category ``music``): quantity = n_cds, unit_price = dollar_value / n_cds. A line with CDs and
0 dollars is kept at price 0 (a free or fully discounted purchase is still a purchase); a line
with 0 CDs has no item to record and is set aside with its reason. One seller, ``cdnow``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from shopml.data.dataset import Dataset
from shopml.data.importers._common import ImportFormatError, merge_set_aside, sniff

SOURCE = "cdnow"
SELLER_ID = "cdnow"
PRODUCT_ID = "cd"

LAYOUTS: dict[int, tuple[str, ...]] = {
    5: ("customer_id", "sample_id", "date", "n_cds", "dollars"),
    4: ("customer_id", "date", "n_cds", "dollars"),
}
REASON_NO_CDS = "no cds: a line with 0 CDs has no item to record"


def read(path: Path) -> Dataset:
    """Read a CDNOW text file into a canonical :class:`Dataset` (nothing is written).

    Raises :class:`ImportFormatError` for an empty file, a file in another format, or a line
    whose fields are not CDNOW's (naming the file, the line and the column).
    """
    path = Path(path)
    lines = _parse(path)
    return build_dataset(lines, path)


def _parse(path: Path) -> pd.DataFrame:
    kind = sniff(path)
    if kind != "text":
        raise ImportFormatError(
            f"{path} is a {kind} file, not a CDNOW text file "
            "(customer_id yyyymmdd n_cds dollar_value)"
        )
    raw = path.read_bytes()
    try:
        # utf-8-sig drops a byte-order mark; CDNOW itself is plain ASCII.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = ""
    if not text or not text.isascii():
        raise ImportFormatError(
            f"{path} is not a CDNOW text file (it is not plain ASCII)"
        ) from None
    rows: list[list[str]] = []
    numbers: list[int] = []
    width = 0
    header: tuple[int, list[str]] | None = None
    # splitlines() ends lines at LF, CRLF or CR alike.
    for no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if not width:
            if "," in line or ";" in line or "\t" in line.strip():
                raise ImportFormatError(
                    f"{path} is not a CDNOW file: line {no} is delimited (a CSV?), expected "
                    "whitespace-separated fields: customer_id yyyymmdd n_cds dollar_value"
                )
            if header is None and not rows and _is_header(fields):
                header = (no, fields)
                continue
            if len(fields) not in LAYOUTS:
                raise ImportFormatError(
                    f"{path} is not a CDNOW file: line {no} has {len(fields)} field(s), expected "
                    "5 (master_id sample_id yyyymmdd n_cds dollar_value) "
                    "or 4 (customer_id yyyymmdd n_cds dollar_value)"
                )
            width = len(fields)
            if header is not None and len(header[1]) != width:
                raise ImportFormatError(
                    f"{path} is not a consistent CDNOW file: the header on line {header[0]} "
                    f"names {len(header[1])} column(s) ({' '.join(header[1])}), "
                    f"line {no} has {width} field(s)"
                )
        elif len(fields) != width:
            raise ImportFormatError(
                f"{path} is not a consistent CDNOW file: line {no} has {len(fields)} field(s), "
                f"the first line of data (line {numbers[0]}) has {width}"
            )
        rows.append(fields)
        numbers.append(no)
    if not rows:
        if header is not None:
            raise ImportFormatError(f"{path} has a header on line {header[0]} but no data lines")
        raise ImportFormatError(f"{path} is empty")
    df = pd.DataFrame(rows, columns=list(LAYOUTS[width]))
    df["line"] = numbers
    df.attrs["layout"] = "sample" if width == 5 else "master"
    df.attrs["header"] = header is not None

    df["purchased_at"] = pd.to_datetime(df["date"], format="%Y%m%d", errors="coerce")
    df["n_cds"] = pd.to_numeric(df["n_cds"], errors="coerce")
    df["dollars"] = pd.to_numeric(df["dollars"], errors="coerce")
    # A whole-file format: a field that is not what the layout says means a wrong file, so
    # refuse it rather than quarantine thousands of rows.
    for col, what in (
        ("purchased_at", "date (yyyymmdd)"),
        ("n_cds", "n_cds"),
        ("dollars", "dollar_value"),
    ):
        bad = df[col].isna()
        if col == "n_cds":
            bad |= df[col].notna() & (df[col] != np.floor(df[col].fillna(0)))
        if bad.any():
            first = df.loc[bad].iloc[0]
            raw = first["date"] if col == "purchased_at" else first[col]
            raise ImportFormatError(
                f"{path} is not a CDNOW file: column {what} on line {first['line']} "
                f"is {raw!r} ({int(bad.sum())} such line(s))"
            )
    return df


def _is_header(fields: list[str]) -> bool:
    """A line of column names for one of the layouts: as many fields, none of them a number."""
    return len(fields) in LAYOUTS and all(_NAME.match(f) for f in fields)


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.#-]*$")


def build_dataset(lines: pd.DataFrame, path: Path | str = "") -> Dataset:
    """Turn parsed CDNOW lines into the canonical tables."""
    n = len(lines)
    no_cds = (lines["n_cds"] == 0).to_numpy()
    kept = lines.loc[~no_cds].copy()
    day_seq = kept.groupby(["customer_id", "date"], sort=False).cumcount() + 1
    kept["order_id"] = kept["customer_id"] + "-" + kept["date"] + "-" + day_seq.astype(str)

    orders = pd.DataFrame(
        {
            "order_id": kept["order_id"],
            "customer_id": kept["customer_id"],
            "status": "delivered",
            "purchased_at": kept["purchased_at"],
        }
    ).reset_index(drop=True)
    for col in ("approved_at", "shipped_at", "delivered_at", "estimated_delivery_at", "carrier"):
        orders[col] = None

    unit_price = kept["dollars"] / kept["n_cds"]
    items = pd.DataFrame(
        {
            "order_item_id": kept["order_id"] + "-1",
            "order_id": kept["order_id"],
            "item_seq": 1,
            "product_id": PRODUCT_ID,
            "seller_id": SELLER_ID,
            "quantity": kept["n_cds"].astype("int64"),
            "unit_price": unit_price,
            "freight": None,
        }
    ).reset_index(drop=True)

    first = lines.groupby("customer_id", sort=True)["purchased_at"].min()
    customers = pd.DataFrame({"customer_id": first.index, "created_at": first.to_numpy()})
    for col in ("country", "region", "city", "zip_prefix", "lat", "lon"):
        customers[col] = None

    positive = unit_price[unit_price > 0]
    products = pd.DataFrame(
        [
            {
                "product_id": PRODUCT_ID,
                "category": "music",
                "name": "CD",
                "size_type": "none",
                "list_price": float(positive.median()) if len(positive) else None,
                "unit_cost": None,
                "weight_g": None,
                "length_cm": None,
                "height_cm": None,
                "width_cm": None,
            }
        ]
    )
    sellers = pd.DataFrame(
        [
            {
                "seller_id": SELLER_ID,
                "country": "United States",
                "region": None,
                "city": None,
                "zip_prefix": None,
                "lat": None,
                "lon": None,
            }
        ]
    )
    dropped = int(no_cds.sum())
    set_aside = merge_set_aside(
        {"orders": {REASON_NO_CDS: dropped}, "order_items": {REASON_NO_CDS: dropped}}
    )
    meta = {
        "file": str(path),
        "layout": str(lines.attrs.get("layout", "")),
        "header": "yes" if lines.attrs.get("header") else "no",
        "rows_read:lines": str(n),
        "rows_read:orders": str(n),
        "rows_read:order_items": str(n),
    }
    return Dataset(
        source=SOURCE,
        tables={
            "customers": customers,
            "sellers": sellers,
            "products": products,
            "orders": orders,
            "order_items": items,
        },
        set_aside=set_aside,
        meta=meta,
    )
