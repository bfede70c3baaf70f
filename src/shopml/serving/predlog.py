"""The prediction log: every prediction, written to the monitoring store in the background.

A request appends one tuple to an in-memory deque (O(1), no I/O, no serialisation); a daemon
thread drains it every ``flush_seconds`` or ``batch`` rows and writes them in one transaction.
When the queue is full (the store is down for long) new rows are dropped and counted rather
than blocking requests. :meth:`PredictionLog.close` drains everything: a graceful shutdown
loses nothing.

The store is SQLite under the home by default (WAL mode, so several server workers can append
to it; DuckDB allows one writing process) or PostgreSQL (``SHOPML_MONITORING_STORE_URI``).
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

log = logging.getLogger("shopml.serving")

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
)

# (request_id, unix time, usecase, version, entity key, entity id, feature names or None,
#  feature values (a dict, a numpy row or a sequence in the order of the names, or None),
#  output dict)
Record = tuple[str, float, str, str, str, str | None, Sequence[str] | None, Any, dict[str, Any]]


class LogWriter:
    """Writes batches of rows (tuples in :data:`COLUMNS` order) to a store."""

    def write(self, rows: list[tuple[Any, ...]]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection."""


class SQLiteLogWriter(LogWriter):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Opened in the writer thread only (check_same_thread=False since it is created in
        # the constructor, which may run elsewhere).
        self.con = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        self.con.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL: a commit does not wait for a disk sync (the log survives a crash of
        # the service, not a power cut of the host), so the writer thread stays off the CPU.
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (request_id TEXT, ts TEXT, usecase TEXT, "
            "model_version TEXT, entity_key TEXT, entity_id TEXT, features TEXT, output TEXT)"
        )
        self.con.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_uc_ts ON {TABLE} (usecase, ts)")
        self.con.commit()

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        with self.con:
            self.con.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        self.con.close()


class PostgresLogWriter(LogWriter):
    def __init__(self, uri: str) -> None:
        import psycopg

        from shopml.online.postgres_store import _conninfo

        self.con = psycopg.connect(_conninfo(uri), autocommit=True, connect_timeout=5)
        self.con.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (request_id TEXT, ts TIMESTAMPTZ, "
            "usecase TEXT, model_version TEXT, entity_key TEXT, entity_id TEXT, "
            "features JSONB, output JSONB)"
        )
        self.con.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_uc_ts ON {TABLE} (usecase, ts)")

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        with (
            self.con.transaction(),
            self.con.cursor() as cur,
            cur.copy(f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def close(self) -> None:
        self.con.close()


def open_writer(uri: str | None, home: Path) -> LogWriter:
    """The writer for ``monitoring_store_uri`` (default ``<home>/monitoring.sqlite``)."""
    if uri is None:
        return SQLiteLogWriter(home / "monitoring.sqlite")
    if uri.startswith("sqlite:///"):
        return SQLiteLogWriter(Path(uri.removeprefix("sqlite:///")))
    if uri.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        return PostgresLogWriter(uri)
    raise ValueError(
        f"monitoring store {uri!r} is not supported; use sqlite:///path or "
        "postgresql://user@host/db"
    )


def _row(rec: Record) -> tuple[Any, ...]:
    request_id, ts, usecase, version, key, entity_id, names, values, output = rec
    if names is not None and values is not None and not isinstance(values, dict):
        # A row of feature values (an array or a sequence) in the order of ``names``; orjson
        # writes NaN as null.
        if isinstance(values, np.ndarray):
            values = values.tolist()
        values = dict(zip(names, values, strict=False))
    when = datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")
    opts = orjson.OPT_SERIALIZE_NUMPY
    return (
        request_id,
        when,
        usecase,
        version,
        key,
        entity_id,
        orjson.dumps(values, option=opts).decode() if values is not None else None,
        orjson.dumps(output, option=opts).decode(),
    )


class PredictionLog:
    """The in-memory queue and the thread that writes it out in batches."""

    def __init__(
        self,
        writer_factory: Any,
        batch: int = 500,
        flush_seconds: float = 1.0,
        max_queue: int = 200_000,
    ) -> None:
        self._factory = writer_factory
        self.batch = batch
        self.flush_seconds = flush_seconds
        self.max_queue = max_queue
        self._queue: collections.deque[Record] = collections.deque()
        self.dropped = 0
        self.written = 0
        self.failed_writes = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: LogWriter | None = None
        self._write_lock = threading.Lock()  # the thread and a shutdown flush never interleave

    def append(self, rec: Record) -> None:
        """Queue one prediction (never blocks, never does I/O)."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(rec)
        if len(self._queue) >= self.batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shopml-prediction-log", daemon=True)
        self._thread.start()

    def _drain(self, limit: int | None = None) -> int:
        with self._write_lock:
            return self._drain_locked(limit)

    def _drain_locked(self, limit: int | None) -> int:
        q = self._queue
        n = len(q) if limit is None else min(limit, len(q))
        taken = []
        for _ in range(n):
            taken.append(q.popleft())
        if not taken:
            return 0
        rows = [_row(r) for r in taken]
        try:
            if self._writer is None:
                self._writer = self._factory()
            assert self._writer is not None
            self._writer.write(rows)
        except Exception as exc:
            self.failed_writes += 1
            self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning(
                "prediction log write failed (%s rows kept for retry): %s", len(taken), self.error
            )
            # Put them back in front, in order, unless that overflows the queue.
            room = self.max_queue - len(q)
            keep = taken[: max(room, 0)]
            self.dropped += len(taken) - len(keep)
            q.extendleft(reversed(keep))
            self._writer = None
            return -1
        self.error = None
        self.written += len(rows)
        return len(rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            while self._queue:
                if self._drain(self.batch * 4) < 0:
                    time.sleep(min(self.flush_seconds, 1.0))
                    break

    def flush(self) -> None:
        """Write everything queued now (from any thread; used at shutdown and by tests)."""
        for _ in range(3):
            while self._queue:
                if self._drain(self.batch * 4) < 0:
                    break
            if not self._queue:
                return

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
