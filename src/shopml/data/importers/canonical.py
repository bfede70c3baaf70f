"""Import shopml's own canonical format: one file per canonical table, as a shop exports it.

A shop that can export from its own systems needs no importer of its own: it writes one file
per table, named after the table (``customers.csv``, ``orders.jsonl``, ``order_items.parquet``),
with the table's column names (see ``shopml tables`` and the data model in the README). Given a
folder, every such file in it is read; given one file, that file alone (the landing folder hands
over files one by one). A date or a timestamp around the name is allowed, so daily exports keep
their names: ``orders-2026-12-01.jsonl``, ``20261201T0600-orders.csv``; several files of one
table in a folder are read together.

Formats, told by content rather than name where they can be: CSV (comma-separated, a header
line, UTF-8; gzip allowed), JSON lines (one object per line; ``.jsonl``, ``.ndjson``, gzip
allowed) and Parquet. Values are checked by the table's contract when the dataset is loaded,
exactly as for every other source; this module checks the shape: every required column is
present, no column is unknown (a misspelt ``delivery_at`` would otherwise silently empty a
label), every JSON line is an object. Optional columns may be left out (they are null).
Nothing is set aside here: every record becomes a canonical row.
"""

from __future__ import annotations

import difflib
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from shopml.data.contracts import CANONICAL_TABLES, get_contract
from shopml.data.dataset import Dataset
from shopml.data.importers._common import (
    ImportFormatError,
    blank_to_none,
    check_gzip,
    id_strings,
    read_text_csv,
    sniff,
)

SOURCE = "canonical"
SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".parquet")
# A table name with an optional date or timestamp before or after it, joined by - _ or .
_NAME = re.compile(
    r"^(?:[0-9][0-9T:_.-]*[-_.])?"  # 20261201T0600-
    r"(?P<table>[a-z][a-z_]*?)"
    r"(?:[-_.][0-9][0-9T:_.-]*)?$"  # -2026-12-01
)


def table_of(path: Path | str) -> str | None:
    """The canonical table a file holds, from its name; None for a name that is none."""
    name = Path(path).name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            break
    else:
        return None
    m = _NAME.match(stem)
    table = m.group("table") if m else None
    return table if table in CANONICAL_TABLES else None


def find_files(path: Path) -> dict[str, list[Path]]:
    """The files to read, by table. Raises :class:`ImportFormatError` for a folder that holds
    none, or a file (or a data file in the folder) whose name is no canonical table."""
    path = Path(path)
    if not path.exists():
        raise ImportFormatError(f"{path}: no such file or folder")
    candidates = (
        [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")]
        if path.is_dir()
        else [path]
    )
    found: dict[str, list[Path]] = {}
    unknown: list[str] = []
    for p in candidates:
        table = table_of(p)
        if table is None:
            if path.is_dir() and not p.name.endswith(SUFFIXES):
                continue  # a README or a checksum beside the exports
            unknown.append(p.name)
            continue
        found.setdefault(table, []).append(p)
    if unknown:
        raise ImportFormatError(
            f"{path}: {', '.join(unknown)} is not named after a canonical table; expected "
            f"<table>{{{','.join(SUFFIXES)}}} with <table> one of {', '.join(CANONICAL_TABLES)}"
        )
    if not found:
        raise ImportFormatError(
            f"{path} holds no canonical table files (customers.csv, orders.jsonl, "
            "order_items.parquet, ...)"
        )
    return found


def read(path: Path) -> Dataset:
    """Read canonical table files (a folder of them, or one) into a :class:`Dataset`.

    Nothing is written. Raises :class:`ImportFormatError` naming the file, and the line or
    column, for an unreadable file, a missing required column or an unknown one.
    """
    path = Path(path)
    tables: dict[str, pd.DataFrame] = {}
    meta: dict[str, str] = {"path": str(path)}
    for table, files in find_files(path).items():
        frames = [_conform(_read_file(f), table, f) for f in files]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        tables[table] = df
        meta[f"rows_read:{table}"] = str(len(df))
        meta[f"files:{table}"] = ", ".join(f.name for f in files)
    return Dataset(source=SOURCE, tables=tables, meta=meta)


def _read_file(path: Path) -> pd.DataFrame:
    kind = sniff(path)
    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several kinds for a damaged file
            raise ImportFormatError(f"{path} is not a readable Parquet file ({exc})") from None
    if kind == "xlsx":
        raise ImportFormatError(
            f"{path} is an XLSX workbook; export each table as CSV, JSON lines or Parquet"
        )
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson")):
        return _read_json_lines(path, kind == "gzip")
    return read_text_csv(path)


def _read_json_lines(path: Path, gz: bool) -> pd.DataFrame:
    if gz:
        check_gzip(path)
        raw = gzip.decompress(path.read_bytes())
    else:
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        where = raw[: exc.start].count(b"\n") + 1
        raise ImportFormatError(f"{path}: line {where} is not UTF-8 text") from None
    records: list[dict[str, object]] = []
    numbers: list[int] = []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(
                f"{path}: line {no}, column {exc.colno} is not valid JSON ({exc.msg}); "
                "expected one JSON object per line"
            ) from None
        if not isinstance(value, dict):
            raise ImportFormatError(
                f"{path}: line {no} is a JSON {type(value).__name__}, expected an object "
                '({"column": value, ...})'
            )
        records.append(value)
        numbers.append(no)
    if not records:
        raise ImportFormatError(f"{path} is empty")
    df = pd.DataFrame.from_records(records)
    df.attrs["line_numbers"] = numbers  # for messages about one record
    return df


def _conform(df: pd.DataFrame, table: str, path: Path) -> pd.DataFrame:
    """The contract's columns, in its order; strings stripped, blanks null, ids as text."""
    contract = get_contract(table)
    df.columns = [str(c).strip() for c in df.columns]
    names = contract.column_names
    unknown = [c for c in df.columns if c not in names]
    if unknown:
        hints = []
        for c in unknown:
            close = difflib.get_close_matches(c, names, n=1)
            hints.append(f"{c} (did you mean {close[0]}?)" if close else c)
        raise ImportFormatError(
            f"{path}: unknown column(s) {', '.join(hints)} for table {table}; "
            f"its columns are {', '.join(names)}"
        )
    required = [c.name for c in contract.columns if not c.nullable]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ImportFormatError(
            f"{path}: table {table} needs column(s) {', '.join(missing)} "
            f"(required: {', '.join(required)}; found: {', '.join(df.columns) or 'none'})"
        )
    out = pd.DataFrame(index=df.index)
    for col in contract.columns:
        if col.name not in df.columns:
            out[col.name] = None
            continue
        s = df[col.name]
        if s.dtype == object:
            nested = s.map(lambda v: isinstance(v, dict | list | tuple | np.ndarray))
            if nested.any():
                first = int(np.flatnonzero(nested.to_numpy())[0])
                numbers = df.attrs.get("line_numbers")
                where = f"line {numbers[first]}" if numbers else f"record {first + 1}"
                raise ImportFormatError(
                    f"{path}: {where}, column {col.name} holds a nested value "
                    f"({str(s.iloc[first])[:40]}); expected a single {col.dtype}"
                )
        if col.dtype == "string":
            # Ids exported as numbers (a spreadsheet, a JSON int) are the same ids as text.
            s = id_strings(s) if col.name.endswith("_id") else blank_to_none(s)
        elif s.dtype == object:
            s = blank_to_none(s)
        out[col.name] = s
    return out.reset_index(drop=True)
