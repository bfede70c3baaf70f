"""The prediction log: one record type, one table, one writer, one way to read it back.

Every answer a model gives (an API request, a replayed day's traffic, a batch run) becomes one
:class:`PredictionRecord`; :func:`write_records` turns records into rows of the one
``prediction_log`` table (:data:`COLUMNS`, created by :func:`create_table`) on SQLite or
PostgreSQL; :class:`PredictionWindow` is a window of that table decoded for monitoring and for
a use case's live checks. Nothing here imports a web, training or monitoring library: the
service writes through it and use cases read through it.

Every record names the *arm* that produced it (:data:`ARMS`): ``champion`` and ``challenger``
answered the request (a canary or an A/B test routes some entities to the challenger);
``shadow`` is the challenger scoring the same request off the response path, logged and never
returned. Readers that want the answers that were served leave ``shadow`` out
(:data:`SERVED_ARMS`). A table made before arms existed gains the column when it is opened
(:func:`create_table`); its rows read as the champion's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

TABLE = "prediction_log"
COLUMNS = (
    "request_id",
    "ts",
    "usecase",
    "model_version",
    "entity_key",
    "entity_id",
    "features",
    "output",
    "arm",
)
CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
ARMS = (CHAMPION, CHALLENGER, SHADOW)
SERVED_ARMS = (CHAMPION, CHALLENGER)  # answers a caller received
# Column types per backend; times are ISO strings on SQLite (one fixed format, so comparing
# strings compares times) and TIMESTAMPTZ on PostgreSQL.
_TYPES = {
    "sqlite": ("TEXT",) * 9,
    "postgres": ("TEXT", "TIMESTAMPTZ", "TEXT", "TEXT", "TEXT", "TEXT", "JSONB", "JSONB", "TEXT"),
}
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


def create_table(con: Any, backend: str) -> None:
    """Create the prediction-log table and its index if missing, and bring a table made by an
    older version up to date (the ``arm`` column, its old rows the champion's); ``backend``:
    ``sqlite`` or ``postgres``; the caller commits on SQLite."""
    cols = ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, _TYPES[backend], strict=True))
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({cols})")
    con.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_uc_ts ON {TABLE} (usecase, ts)")
    # The migration: added at the end, so positional inserts of COLUMNS stay right. A NOT NULL
    # default fills the old rows in one step on both backends (no rewrite on either).
    # Checked first: an ALTER, even a no-op one, locks the table against the writers.
    arm = f"arm TEXT NOT NULL DEFAULT '{CHAMPION}'"
    if backend == "sqlite":
        have = {r[1] for r in con.execute(f"PRAGMA table_info({TABLE})").fetchall()}
        if "arm" not in have:
            try:
                con.execute(f"ALTER TABLE {TABLE} ADD COLUMN {arm}")
            except sqlite3.OperationalError as exc:  # another worker migrated it meanwhile
                if "duplicate column" not in str(exc):
                    raise
        return
    found = con.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s AND column_name = 'arm'",
        (TABLE,),
    ).fetchone()
    if found is None:
        con.execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {arm}")


def iso(value: datetime) -> str:
    """The one text format of times in the SQLite store (naive values are taken as UTC)."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


@dataclass(slots=True)
class PredictionRecord:
    """One answer as the prediction log keeps it.

    ``inputs`` is what the model was given: feature values by name (a dict), or a row of
    values (a numpy row or a sequence) in the order of ``input_names``; for an answer kind
    that takes no features (a recommendation), the request's parameters; None for nothing.
    ``output`` is the answer as served (the kind decides its shape: outputs by name, a ranked
    list, a price with its guardrails).
    """

    request_id: str
    ts: float  # POSIX seconds (the service's clock)
    usecase: str
    model_version: str
    entity_key: str
    entity_id: str | None
    output: dict[str, Any]
    inputs: Any = None
    input_names: Sequence[str] | None = None
    arm: str = CHAMPION  # which model answered, and whether the caller got it (ARMS)

    def inputs_dict(self) -> dict[str, Any] | None:
        """The inputs by name (None when nothing was logged)."""
        values = self.inputs
        if values is None or isinstance(values, dict):
            return values
        if isinstance(values, np.ndarray):
            values = values.tolist()
        return dict(zip(self.input_names or (), values, strict=False))

    def row(self) -> tuple[Any, ...]:
        """The table's row (:data:`COLUMNS` order): ISO time, JSON inputs and output (NaN is
        written as null)."""
        inputs = self.inputs_dict()
        when = datetime.fromtimestamp(self.ts, UTC).isoformat(timespec="microseconds")
        return (
            self.request_id,
            when,
            self.usecase,
            self.model_version,
            self.entity_key,
            self.entity_id,
            orjson.dumps(inputs, option=_JSON_OPTS).decode() if inputs is not None else None,
            orjson.dumps(self.output, option=_JSON_OPTS).decode(),
            self.arm,
        )


def write_records(con: Any, backend: str, records: Iterable[PredictionRecord]) -> int:
    """Append records in one transaction (SQLite: one ``executemany``; PostgreSQL: ``COPY``)."""
    rows = [r.row() for r in records]
    if not rows:
        return 0
    if backend == "sqlite":
        marks = ", ".join("?" * len(COLUMNS))
        with con:
            con.executemany(f"INSERT INTO {TABLE} VALUES ({marks})", rows)
        return len(rows)
    with (
        con.transaction(),
        con.cursor() as cur,
        cur.copy(f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    return len(rows)


def connect(uri: str | None, home: Path) -> tuple[Any, str]:
    """A connection to the store holding the prediction log and its backend name: SQLite
    (``<home>/monitoring.sqlite`` by default, WAL so that several processes append) or
    PostgreSQL; the table is created if missing. Raises ``ValueError`` for another URI."""
    if uri is None or uri.startswith("sqlite:///"):
        path = home / "monitoring.sqlite" if uri is None else Path(uri.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: a writer thread uses the connection made elsewhere.
        lite = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        lite.execute("PRAGMA journal_mode=WAL")
        create_table(lite, "sqlite")
        lite.commit()
        return lite, "sqlite"
    if uri.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        import psycopg

        from shopml.online.postgres_store import _conninfo

        con = psycopg.connect(_conninfo(uri), autocommit=True, connect_timeout=5)
        create_table(con, "postgres")
        return con, "postgres"
    raise ValueError(
        f"monitoring store {uri!r} is not supported; use sqlite:///path or "
        "postgresql://user@host/db"
    )


class RecordWriter:
    """Writes batches of records to the prediction log (one connection, opened lazily by the
    caller's thread)."""

    def __init__(self, uri: str | None, home: Path) -> None:
        self.con, self.backend = connect(uri, home)
        if self.backend == "sqlite":
            # WAL with NORMAL: a commit does not wait for a disk sync (the log survives a
            # crash of the service, not a power cut of the host), so writers stay off the CPU.
            self.con.execute("PRAGMA synchronous=NORMAL")

    def write(self, records: Sequence[PredictionRecord]) -> int:
        return write_records(self.con, self.backend, records)

    def close(self) -> None:
        self.con.close()


# -- reading it back ---------------------------------------------------------------------------
@dataclass
class PredictionWindow:
    """The logged predictions of one use case in a time window, decoded."""

    usecase: str
    start: datetime
    end: datetime
    frame: pd.DataFrame  # request_id, ts, model_version, entity_key, entity_id, arm
    features: pd.DataFrame  # one column per logged input, aligned with frame
    outputs: pd.DataFrame  # one column per output (numbers; lists and dicts stay as objects)

    def __len__(self) -> int:
        return len(self.frame)


def _loads(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict | list):  # PostgreSQL's JSONB arrives decoded
        return value
    return orjson.loads(value)


def decode(
    usecase: str, start: datetime, end: datetime, rows: Sequence[Sequence[Any]]
) -> PredictionWindow:
    """Rows of ``request_id, ts, model_version, entity_key, entity_id, features, output`` and
    optionally ``arm`` (the champion's when absent) as a window."""
    frame = pd.DataFrame(
        [r[:5] for r in rows],
        columns=["request_id", "ts", "model_version", "entity_key", "entity_id"],
    )
    frame["arm"] = [r[7] if len(r) > 7 and r[7] else CHAMPION for r in rows]
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    feats = [_loads(r[5]) for r in rows]
    outs = [_loads(r[6]) for r in rows]
    return PredictionWindow(
        usecase, start, end, frame, _records(feats, len(rows)), _records(outs, len(rows))
    )


def window_of(
    usecase: str, records: Sequence[PredictionRecord], start: datetime, end: datetime
) -> PredictionWindow:
    """Records decoded as the store would give them back (for tests and in-memory checks)."""
    rows = [r.row() for r in records]
    return decode(
        usecase, start, end, [(r[0], r[1], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]
    )


def _records(values: list[Any], n: int) -> pd.DataFrame:
    """Dicts (one per row) to a frame. When every dict has the same keys in the same order
    (one model version's features), the values are stacked as one float matrix, which is many
    times faster than building the frame from dicts."""
    dicts: list[Mapping[str, Any]] = [v if isinstance(v, dict) else {} for v in values]
    if not dicts:
        return pd.DataFrame(index=range(n))
    first = list(dicts[0])
    if first and all(len(d) == len(first) for d in dicts):
        keys = tuple(first)
        if all(tuple(d) == keys for d in dicts):
            try:
                matrix = np.array([list(d.values()) for d in dicts], dtype="float64")
                return pd.DataFrame(matrix, columns=list(keys))
            except (TypeError, ValueError):
                pass  # not all numbers (lists, dicts, names): the general path below
    return pd.DataFrame.from_records(dicts, index=range(n))
