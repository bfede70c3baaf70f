"""The prediction log: every prediction, written to the monitoring store in the background.

A request appends one :class:`~shopml.runtime.predictions.PredictionRecord` to an in-memory
deque (O(1), no I/O, no serialisation); a daemon thread drains it every ``flush_seconds`` or
``batch`` records and writes them in one transaction, through the one prediction-log writer
(:mod:`shopml.runtime.predictions`, which also defines the table).
When the queue is full (the store is down for long) new rows are dropped and counted rather
than blocking requests. :meth:`PredictionLog.close` drains everything: a graceful shutdown
loses nothing.

The store is SQLite under the home by default (WAL mode, so several server workers can append
to it; DuckDB allows one writing process) or PostgreSQL (``SHOPML_MONITORING_STORE_URI``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from shopml.runtime.predictions import PredictionRecord, RecordWriter

log = logging.getLogger("shopml.serving")


def open_writer(uri: str | None, home: Path) -> RecordWriter:
    """The writer for ``monitoring_store_uri`` (default ``<home>/monitoring.sqlite``)."""
    return RecordWriter(uri, home)


class PredictionLog:
    """The in-memory queue and the thread that writes it out in batches."""

    def __init__(
        self,
        writer_factory: Callable[[], RecordWriter],
        batch: int = 500,
        flush_seconds: float = 1.0,
        max_queue: int = 200_000,
    ) -> None:
        self._factory = writer_factory
        self.batch = batch
        self.flush_seconds = flush_seconds
        self.max_queue = max_queue
        self._queue: collections.deque[PredictionRecord] = collections.deque()
        self.dropped = 0
        self.written = 0
        self.failed_writes = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: RecordWriter | None = None
        self._write_lock = threading.Lock()  # the thread and a shutdown flush never interleave

    def append(self, rec: PredictionRecord) -> None:
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
        try:
            if self._writer is None:
                self._writer = self._factory()
            written = self._writer.write(taken)
        except Exception as exc:  # any store failure: logged, counted, the rows kept
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
        self.written += written
        return written

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
