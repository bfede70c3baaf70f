"""Helpers shared by the importers: the format error, file sniffing, column checks, counting."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd


class ImportFormatError(ValueError):
    """The input is not the format an importer expects (wrong file, empty, missing column).

    The message is one sentence naming the file and what is wrong with it, fit to show a user
    as is; it is raised before anything is written.
    """


# Magic bytes, so a file is read by what it is, not only by what its name says.
_GZIP = b"\x1f\x8b"
_ZIP = b"PK\x03\x04"  # xlsx is a zip archive
_PARQUET = b"PAR1"


def sniff(path: Path) -> str:
    """The kind of a file from its first bytes: "gzip", "xlsx", "parquet" or "text".

    Raises :class:`ImportFormatError` when the file is missing, a directory, or empty.
    """
    if not path.exists():
        raise ImportFormatError(f"{path}: no such file")
    if path.is_dir():
        raise ImportFormatError(f"{path} is a folder, expected a file")
    with path.open("rb") as fh:
        head = fh.read(8)
    if not head:
        raise ImportFormatError(f"{path} is empty")
    if head.startswith(_GZIP):
        # A gzip of nothing is as empty as an empty file.
        with gzip.open(path, "rb") as gz:
            if not gz.read(1):
                raise ImportFormatError(f"{path} is empty (an empty gzip archive)")
        return "gzip"
    if head.startswith(_ZIP):
        return "xlsx"
    if head.startswith(_PARQUET):
        return "parquet"
    with path.open("rb") as fh:
        start = fh.read(8192)
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):
        # Excel's "Unicode text" export: every other byte is NUL, so say what it is.
        raise ImportFormatError(f"{path} is UTF-16 text; save it as UTF-8 (CSV UTF-8)")
    binary = _binary_at(start)
    if binary is not None:
        raise ImportFormatError(
            f"{path} is not a text file: byte {binary} is binary data "
            "(expected a CSV or text file, or a gzip, XLSX or Parquet file)"
        )
    return "text"


# Control bytes that never occur in a text file (tab, LF, FF, CR and ESC aside).
_CONTROL = frozenset(range(32)) - {9, 10, 12, 13, 27}


def _binary_at(data: bytes) -> int | None:
    """The offset of the first byte that shows ``data`` is binary, or None if it looks like text.

    A NUL byte is decisive; otherwise more than 5% control bytes is (random bytes have ~11%).
    """
    nul = data.find(b"\x00")
    if nul >= 0:
        return nul
    controls = [i for i, b in enumerate(data) if b in _CONTROL]
    if data and len(controls) > 0.05 * len(data):
        return controls[0]
    return None


def check_gzip(path: Path) -> None:
    """Raise :class:`ImportFormatError` when a gzip file is truncated or corrupt.

    Checked whole before parsing: a reader stops at a truncated stream with an EOFError, which
    the command line would take for Ctrl-D ("aborted").
    """
    problem = _gzip_problem(path)
    if problem:
        raise ImportFormatError(f"{path} is a gzip file that cannot be read: {problem}")


def _gzip_problem(path: Path) -> str | None:
    """Why a gzip file cannot be read to its end (truncated, corrupt), or None if it can."""
    try:
        with gzip.open(path, "rb") as gz:
            while gz.read(1 << 20):
                pass
    except EOFError:
        return "it is truncated: the compressed data ends before the end-of-stream marker"
    except (OSError, zlib.error) as exc:
        return f"it is corrupt ({_first_line(exc)})"
    return None


def read_text_csv(path: Path) -> pd.DataFrame:
    """Read a (possibly gzipped) CSV with every field as a string and empty fields as "".

    Tries UTF-8 (with or without a byte-order mark) and falls back to Latin-1, the encoding of
    the older Online Retail CSV mirrors.
    """
    kind = sniff(path)
    if kind not in ("gzip", "text"):
        raise ImportFormatError(f"{path} is a {kind} file, expected a CSV")
    compression: Literal["gzip"] | None = "gzip" if kind == "gzip" else None
    if kind == "gzip":
        check_gzip(path)
    last: Exception | None = None
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            return pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,  # "NA" in a review is a word, not a missing value
                compression=compression,
                encoding=encoding,
            )
        except UnicodeDecodeError as exc:
            last = exc
        except pd.errors.EmptyDataError:
            raise ImportFormatError(f"{path} is empty") from None
        except (pd.errors.ParserError, ValueError, OSError, EOFError, zlib.error) as exc:
            raise ImportFormatError(f"{path} is not a readable CSV ({_first_line(exc)})") from None
    raise ImportFormatError(f"{path} is not a readable text file ({_first_line(last)})")


def _first_line(exc: object) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    """Raise :class:`ImportFormatError` naming the file and every column it lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        hint = delimiter_hint(df)
        if hint:
            raise ImportFormatError(f"{path} {hint}; expected columns {', '.join(columns)}")
        raise ImportFormatError(
            f"{path} is missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, df.columns)) or 'none'})"
        )


def delimiter_hint(df: pd.DataFrame) -> str | None:
    """ "is delimited by ';' (line 1), expected ','" when a CSV was read as one column because it
    uses another delimiter; None otherwise."""
    if df.shape[1] != 1:
        return None
    header = str(df.columns[0])
    for sep, name in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
        if header.count(sep) >= 1:
            return f"is delimited by {name} (line 1: {header[:80]!r}), expected commas"
    return None


def blank_to_none(s: pd.Series) -> pd.Series:
    """Strip strings and turn empty ones into None (the contracts' null)."""
    out = s.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
    return out.where(out.notna() & (out != ""), None)


def id_strings(s: pd.Series) -> pd.Series:
    """Identifiers as clean strings: 13085.0 (a spreadsheet's float) -> "13085", blanks -> None.

    Ids are never numbers: "00004" keeps its zeros, and an id read as a float loses its ".0".
    """
    null = s.isna().to_numpy()
    if pd.api.types.is_float_dtype(s.dtype):
        whole = ~null & np.isfinite(s.fillna(0)) & (s == np.floor(s.fillna(0)))
        text = s.astype(str).where(~whole, s.fillna(0).astype("int64").astype(str))
    else:
        # astype(str) copes with a workbook's mix of ints and "C489449"; the regex runs only on
        # the few values that end in ".0" (it is slow on half a million ids).
        text = s.astype(str).str.strip()
        dotted = text.str.endswith(".0").to_numpy(dtype=bool)
        if dotted.any():
            text[dotted] = text[dotted].str.replace(r"^(\d+)\.0+$", r"\1", regex=True)
    empty = text.isin(["", "nan", "NaN", "None", "<NA>"]).to_numpy()
    return text.astype(object).where(~null & ~empty, None)


# Timestamp formats seen in the wild for these datasets, tried in this order.
_TIME_FORMATS = ("ISO8601", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%m/%d/%y %H:%M", "%Y%m%d")


def parse_timestamps(s: pd.Series) -> pd.Series:
    """Parse a column of timestamps, choosing the format that reads most of a sample.

    One explicit format is far faster than pandas' per-value guessing on half a million rows;
    values that do not parse become NaT (the contract then rejects a required one).
    """
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_convert(None)
        return s.astype("datetime64[ns]")
    values = s.astype(object).where(s.notna() & (s.astype(str).str.strip() != ""), None)
    sample = values.dropna().head(2000)
    if sample.empty:
        return pd.to_datetime(values, errors="coerce").astype("datetime64[ns]")
    best, best_ok = "mixed", -1
    for fmt in _TIME_FORMATS:
        ok = int(pd.to_datetime(sample, format=fmt, errors="coerce").notna().sum())
        if ok > best_ok:
            best, best_ok = fmt, ok
        if ok == len(sample):
            break
    if best_ok < len(sample):
        best = "mixed"
    out = pd.to_datetime(values, format=best, errors="coerce")
    return out.astype("datetime64[ns]")


def count_reasons(reasons: pd.Series) -> dict[str, int]:
    """Counts of the non-null reasons, largest first."""
    counts = reasons.dropna().value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def merge_set_aside(*parts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Combine per-table set-aside counts, dropping zero counts and empty tables."""
    out: dict[str, dict[str, int]] = {}
    for part in parts:
        for table, reasons in part.items():
            for reason, n in reasons.items():
                if n:
                    out.setdefault(table, {})
                    out[table][reason] = out[table].get(reason, 0) + int(n)
    return out
