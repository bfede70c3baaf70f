"""Data versions are content hashes that do not depend on how an engine lays the rows out."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from shopml.data.versions import Digest, digest, digest_batches

COLS = ["id", "at", "x", "n", "flag"]


def table(**over: list) -> pa.Table:
    data = {
        "id": ["a", "bb", "", None, "ééé"],
        "at": pa.array(
            [datetime(2024, 1, 1, 5), None, datetime(1969, 12, 31, 23, 59, 59), None,
             datetime(2024, 2, 29, 12, 0, 0, 123456)],
            pa.timestamp("us"),
        ),
        "x": [1.5, None, -0.0, float("nan"), 1e300],
        "n": pa.array([1, None, -3, 0, 2**62], pa.int64()),
        "flag": [True, False, None, True, False],
    }  # fmt: skip
    data.update(over)
    return pa.table(data)


def test_the_digest_ignores_row_order_and_batching() -> None:
    t = table()
    whole = digest(t, COLS)
    shuffled = t.take([4, 2, 0, 3, 1])
    assert digest(shuffled, COLS) == whole
    assert digest_batches(shuffled.to_batches(max_chunksize=2), COLS) == whole
    parts = [digest(t.slice(i, 1), COLS) for i in range(t.num_rows)]
    assert sum(parts, Digest()) == whole


def test_the_digest_ignores_physical_types() -> None:
    t = table()
    other = t.set_column(1, "at", t.column("at").cast(pa.timestamp("ns")))
    other = other.set_column(0, "id", other.column("id").cast(pa.large_string()))
    other = other.set_column(0, "id", other.column("id").dictionary_encode())
    other = other.set_column(3, "n", other.column("n").cast(pa.int64()))
    other = other.set_column(2, "x", pa.array([1.5, None, 0.0, float("nan"), 1e300]))
    assert digest(other, COLS) == digest(t, COLS)


@pytest.mark.parametrize(
    "change",
    [
        {"id": ["a", "bb", None, None, "ééé"]},  # empty string vs null
        {"id": ["a", "b", "", None, "ééé"]},
        {"x": [1.5, 0.0, -0.0, float("nan"), 1e300]},  # null vs 0
        {"n": pa.array([1, None, -3, 0, 2**62 + 1], pa.int64())},
        {"flag": [True, False, False, True, False]},
    ],
)
def test_any_changed_value_changes_the_digest(change: dict) -> None:
    assert digest(table(**change), COLS) != digest(table(), COLS)


def test_values_moved_between_columns_change_the_digest() -> None:
    t = pa.table({"a": ["x", "z"], "b": ["y", "w"]})
    assert digest(t, ["b", "a"]) != digest(t, ["a", "b"])
    moved = pa.table({"a": ["y", "z"], "b": ["x", "w"]})
    assert digest(moved, ["a", "b"]) != digest(t, ["a", "b"])
