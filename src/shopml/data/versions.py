"""Data versions: a content hash of a table that any engine computes the same way.

A table's version depends only on its rows (as a set: the order they were written or are
stored in does not matter) and on its contract's column names and types, never on how an
engine lays them out. Each row is hashed from canonical values (timestamps as microseconds
since the epoch, integers and booleans as 64-bit integers, floats as float64 with one zero and
one NaN, strings by a polynomial over their UTF-8 bytes) mixed by splitmix64; the rows combine
by count, XOR and sum modulo 2^64, which are associative, so partitions can be hashed apart
(DuckDB's record batches, Spark's partitions in ``mapInArrow``) and merged in any order. Keys
are unique, so two equal rows cannot cancel out in the XOR; the sum keeps them apart anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MASK = (1 << 64) - 1
# Marks a null in its column (a value's hash equal to it would only alias that value).
_NULL = np.uint64(0x9E3779B97F4A7C15)
_MULT = np.uint64(0x100000001B3)
_BYTE = np.uint64(0x100000001B3)


@dataclass(frozen=True)
class Digest:
    """Rows, XOR and sum (mod 2^64) of the row hashes of a part of a table."""

    rows: int = 0
    xor: int = 0
    total: int = 0

    def __add__(self, other: Digest) -> Digest:
        return Digest(
            self.rows + other.rows, self.xor ^ other.xor, (self.total + other.total) & _MASK
        )


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    z = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def _string_hash(col: pa.Array) -> np.ndarray:
    """A polynomial hash of each string's UTF-8 bytes and its length, vectorised over the
    Arrow buffers (no Python string is made): one pass per byte position, over the strings
    still that long."""
    arr = pc.fill_null(col.cast(pa.large_string()), "")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    lengths = np.diff(offsets)
    h = lengths.astype(np.uint64) * _MULT
    if len(arr) == 0 or offsets[-1] == offsets[0]:
        return _mix(h)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    starts = offsets[:-1]
    idx = np.flatnonzero(lengths)
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max())):
            if j and j % 8 == 0:
                idx = idx[lengths[idx] > j]
            live = lengths[idx] > j
            sel = idx[live] if not live.all() else idx
            h[sel] = h[sel] * _BYTE + data[starts[sel] + j]
    return _mix(h)


def _column_hash(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """One uint64 per value, from its canonical form; nulls get a fixed mark."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = t.value_type
    if pa.types.is_date(t):
        col = col.cast(pa.timestamp("us"))
        t = col.type
    if pa.types.is_timestamp(t):
        if t.unit != "us":
            col = col.cast(pa.timestamp("us", tz=t.tz), safe=False)
        h = _mix(pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False))
    elif pa.types.is_integer(t) or pa.types.is_boolean(t):
        h = _mix(pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False))
    elif pa.types.is_floating(t):
        v = pc.fill_null(col.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        v = np.where(np.isnan(v), np.nan, v) + 0.0  # one NaN; -0.0 + 0.0 is 0.0
        h = _mix(v.view(np.uint64))
    else:  # strings and anything else, by their text
        h = _string_hash(col)
    if col.null_count:
        h = np.where(col.is_null().to_numpy(zero_copy_only=False), _NULL, h)
    return h


def digest(batch: pa.RecordBatch | pa.Table, columns: list[str]) -> Digest:
    """The digest of these rows over ``columns`` (in that order)."""
    n = batch.num_rows
    if n == 0:
        return Digest()
    row = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in columns:
            row = (row * _MULT) ^ _column_hash(batch.column(name))
    # A final mix, so rows differing in one column spread over every bit of the XOR.
    row = _mix(row)
    total = int(row.sum(dtype=np.uint64))  # numpy wraps modulo 2^64
    return Digest(n, int(np.bitwise_xor.reduce(row)), total)


def digest_batches(batches: Iterable[pa.RecordBatch], columns: list[str]) -> Digest:
    out = Digest()
    for b in batches:
        out = out + digest(b, columns)
    return out


def schema_of(table: str, columns: list[str], arrow: pa.Schema | None = None) -> str:
    """``name:type,...``: a canonical table's contract types (the same on every engine), or
    for another table the Arrow types of its columns."""
    from shopml.data.contracts import CONTRACTS

    if table in CONTRACTS:
        types = {c.name: c.dtype for c in CONTRACTS[table].columns}
        return ",".join(f"{c}:{types[c]}" for c in columns)
    assert arrow is not None
    return ",".join(f"{c}:{arrow.field(c).type}" for c in columns)


def version_of(table: str, schema: str, d: Digest) -> str:
    """The version string of a table from its schema (:func:`schema_of`) and digest."""
    blob = f"{table}|{schema}|{d.rows}|{d.xor}|{d.total}".encode()
    return hashlib.sha256(blob).hexdigest()[:16]
