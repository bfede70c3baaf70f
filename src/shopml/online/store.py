"""The online store interface and its SQLite implementation.

A write never shows a reader half an entity: rows go into a new versioned table, then one
transaction points the entity at it and the old table is dropped. A reader sees the old version
or the new one, whichever was current when its query began.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from shopml.settings import Settings

Features = dict[str, Any]

# The entities the pipeline materialises for lookups at request time.
ONLINE_ENTITIES = ("customers", "products", "sellers")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OnlineStoreError(ValueError):
    """A request the online store cannot honour (unknown entity, missing key column)."""


def _jsonable(value: Any) -> Any:
    # Feature values become plain JSON types: NaN/NaT become null, timestamps ISO strings.
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    return value


def check_frame(entity: str, frame: pd.DataFrame, key: str) -> list[str]:
    """Refuse what no store can write (an entity name that is not a plain identifier, a key
    column missing or not unique); returns the feature columns (all but the key)."""
    if not _NAME.match(entity):
        raise OnlineStoreError(f"entity name {entity!r} must be a plain identifier")
    if key not in frame.columns:
        raise OnlineStoreError(f"{entity}: the frame has no key column {key!r}")
    if frame[key].duplicated().any():
        raise OnlineStoreError(f"{entity}: key {key!r} is not unique in the frame")
    return [c for c in frame.columns if c != key]


class OnlineStore(ABC):
    """Latest features per entity, keyed by the entity's id."""

    @abstractmethod
    def write(self, entity: str, frame: pd.DataFrame, key: str, as_of: datetime) -> int:
        """Replace ``entity``'s features with ``frame`` (one row per ``key``) atomically.

        Returns the number of rows written.
        """

    @abstractmethod
    def get(self, entity: str, key_value: str) -> tuple[Features, datetime] | None:
        """One entity's features and the time they are as of, or None when unknown."""

    @abstractmethod
    def get_many(self, entity: str, key_values: Iterable[str]) -> dict[str, Features]:
        """Features for several ids at once; unknown ids are left out."""

    def close(self) -> None:  # noqa: B027 - optional for stores without connections
        """Release connections."""


class SQLiteOnlineStore(OnlineStore):
    """The embedded online store: one SQLite file, one table per entity version.

    Each row holds the id and its features as JSON, so an entity's schema can change between
    writes without migrations; ``_shopml_entities`` says which table is current.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by a server's threads, serialised by a lock; other processes
        # open their own, and WAL lets them read while one writes. We issue BEGIN ourselves.
        self._con = sqlite3.connect(
            str(self.path), isolation_level=None, timeout=30, check_same_thread=False
        )
        self._lock = threading.RLock()
        with self._lock:
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute(
                "CREATE TABLE IF NOT EXISTS _shopml_entities (entity TEXT PRIMARY KEY, "
                "table_name TEXT NOT NULL, key TEXT NOT NULL, as_of TEXT NOT NULL, "
                "rows INTEGER, columns TEXT, written_at TEXT)"
            )

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._con.execute(f"BEGIN {mode}")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def write(self, entity: str, frame: pd.DataFrame, key: str, as_of: datetime) -> int:
        columns = check_frame(entity, frame, key)
        table = f"fs_{entity}_{uuid.uuid4().hex[:10]}"
        records = frame[columns].to_dict(orient="records")
        rows = [
            (str(k), json.dumps({c: _jsonable(v) for c, v in rec.items()}))
            for k, rec in zip(frame[key].tolist(), records, strict=True)
        ]
        with self._lock:
            # Fill the new table first: readers keep using the old version meanwhile.
            self._con.execute(
                f'CREATE TABLE "{table}" (id TEXT PRIMARY KEY, features TEXT NOT NULL)'
            )
            try:
                with self._transaction() as con:
                    con.executemany(f'INSERT INTO "{table}" VALUES (?, ?)', rows)
                with self._transaction() as con:  # the swap: one small transaction
                    old = con.execute(
                        "SELECT table_name FROM _shopml_entities WHERE entity = ?", [entity]
                    ).fetchone()
                    con.execute(
                        "INSERT OR REPLACE INTO _shopml_entities VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [entity, table, key, as_of.isoformat(), len(rows), json.dumps(columns),
                         datetime.now().isoformat(timespec="seconds")],
                    )  # fmt: skip
                    if old:
                        con.execute(f'DROP TABLE IF EXISTS "{old[0]}"')
            except BaseException:
                self._con.execute(f'DROP TABLE IF EXISTS "{table}"')
                raise
            self._drop_orphans(entity)
        return len(rows)

    def _drop_orphans(self, entity: str) -> None:
        # Tables a crashed write left behind (created, never swapped in).
        current = {r[0] for r in self._con.execute("SELECT table_name FROM _shopml_entities")}
        prefix = f"fs_{entity}_"
        for (name,) in self._con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        ).fetchall():
            if name.startswith(prefix) and name not in current:
                self._con.execute(f'DROP TABLE IF EXISTS "{name}"')

    def _current(self, entity: str) -> tuple[str, datetime] | None:
        row = self._con.execute(
            "SELECT table_name, as_of FROM _shopml_entities WHERE entity = ?", [entity]
        ).fetchone()
        if row is None:
            return None
        return row[0], datetime.fromisoformat(row[1])

    def get(self, entity: str, key_value: str) -> tuple[Features, datetime] | None:
        # One read transaction, so the pointer and the row come from the same version.
        with self._transaction("DEFERRED") as con:
            current = self._current(entity)
            if current is None:
                return None
            table, as_of = current
            row = con.execute(
                f'SELECT features FROM "{table}" WHERE id = ?', [str(key_value)]
            ).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), as_of

    def get_many(self, entity: str, key_values: Iterable[str]) -> dict[str, Features]:
        ids = [str(k) for k in key_values]
        out: dict[str, Features] = {}
        with self._transaction("DEFERRED") as con:
            current = self._current(entity)
            if current is None:
                return out
            table = current[0]
            for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key_id, features in con.execute(
                    f'SELECT id, features FROM "{table}" WHERE id IN ({marks})', chunk
                ):
                    out[key_id] = json.loads(features)
        return out

    def entities(self) -> dict[str, dict[str, Any]]:
        """What is materialised: per entity its key, as-of time, rows and columns."""
        out = {}
        with self._lock:
            rows = self._con.execute("SELECT * FROM _shopml_entities ORDER BY entity").fetchall()
        for entity, _table, key, as_of, n, columns, written_at in rows:
            out[entity] = {
                "key": key,
                "as_of": as_of,
                "rows": n,
                "columns": json.loads(columns or "[]"),
                "written_at": written_at,
            }
        return out

    def close(self) -> None:
        with self._lock:
            self._con.close()


def open_store(settings: Settings) -> OnlineStore:
    """The online store the settings name (``online_store_uri``; default the SQLite file)."""
    uri = settings.online_store_uri
    if uri is None:
        return SQLiteOnlineStore(settings.home / "online.sqlite")
    if uri.startswith("sqlite:///"):
        return SQLiteOnlineStore(Path(uri.removeprefix("sqlite:///")))
    if uri.startswith(("redis://", "rediss://", "unix://")):
        from shopml.online.redis_store import RedisOnlineStore

        return RedisOnlineStore(uri)
    if uri.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        from shopml.online.postgres_store import PostgresOnlineStore

        return PostgresOnlineStore(uri)
    raise OnlineStoreError(
        f"online store {uri!r} is not supported; use sqlite:///path, redis://host:port/db, "
        "postgresql://user@host/db, or leave SHOPML_ONLINE_STORE_URI unset"
    )
