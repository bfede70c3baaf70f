"""The online store on PostgreSQL: one table per entity version, swapped in a transaction.

Like the SQLite store: rows go into a new table ``fs_<entity>_<hex>`` (id, features as JSON
text), then one transaction points ``shopml_online_entities`` at it and drops the old table.
A reader's pointer lookup and row read run in one statement, so they see the same version;
``DROP TABLE`` waits for readers of the old table to finish.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pandas as pd

from shopml.online.store import Features, OnlineStore, _jsonable, check_frame

_POINTERS = "shopml_online_entities"


def _conninfo(uri: str) -> str:
    # Accept SQLAlchemy-style URLs (postgresql+psycopg://) as well as libpq ones.
    for prefix in ("postgresql+psycopg://", "postgres+psycopg://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql://" + uri.removeprefix(prefix)
    return uri


class PostgresOnlineStore(OnlineStore):
    """Latest features per entity in PostgreSQL (``postgresql://user@host:port/db``)."""

    def __init__(self, uri: str) -> None:
        import psycopg

        self.uri = uri
        self._con = psycopg.connect(_conninfo(uri), autocommit=True, connect_timeout=5)
        self._con.execute(
            f"CREATE TABLE IF NOT EXISTS {_POINTERS} (entity TEXT PRIMARY KEY, "
            "table_name TEXT NOT NULL, key TEXT NOT NULL, as_of TIMESTAMP NOT NULL, "
            "rows INTEGER, columns TEXT, written_at TIMESTAMPTZ DEFAULT now())"
        )

    def write(self, entity: str, frame: pd.DataFrame, key: str, as_of: datetime) -> int:
        columns = check_frame(entity, frame, key)
        table = f"fs_{entity}_{uuid.uuid4().hex[:10]}".lower()
        records = frame[columns].to_dict(orient="records")
        self._con.execute(f'CREATE TABLE "{table}" (id TEXT PRIMARY KEY, features TEXT NOT NULL)')
        try:
            with (
                self._con.cursor() as cur,
                cur.copy(f'COPY "{table}" (id, features) FROM STDIN') as copy,
            ):
                for k, rec in zip(frame[key].tolist(), records, strict=True):
                    copy.write_row((str(k), json.dumps({c: _jsonable(v) for c, v in rec.items()})))
            with self._con.transaction():
                row = self._con.execute(
                    f"SELECT table_name FROM {_POINTERS} WHERE entity = %s FOR UPDATE", [entity]
                ).fetchone()
                self._con.execute(
                    f"INSERT INTO {_POINTERS} (entity, table_name, key, as_of, rows, columns) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (entity) DO UPDATE SET "
                    "table_name = EXCLUDED.table_name, key = EXCLUDED.key, "
                    "as_of = EXCLUDED.as_of, rows = EXCLUDED.rows, columns = EXCLUDED.columns, "
                    "written_at = now()",
                    [entity, table, key, as_of, len(records), json.dumps(columns)],
                )
                if row:
                    self._con.execute(f'DROP TABLE IF EXISTS "{row[0]}"')
        except BaseException:
            self._con.execute(f'DROP TABLE IF EXISTS "{table}"')
            raise
        return len(records)

    def _read(self, entity: str, ids: list[str]) -> list[tuple[Any, ...]]:
        import psycopg

        # The table name cannot be a bound parameter, so the pointer and the rows are two
        # statements; a swap committing between them drops the table we were about to read,
        # and the second attempt follows the new pointer.
        for _ in range(3):
            try:
                with self._con.transaction():
                    ptr = self._con.execute(
                        f"SELECT table_name, as_of FROM {_POINTERS} WHERE entity = %s", [entity]
                    ).fetchone()
                    if ptr is None:
                        return []
                    table, as_of = ptr
                    rows = self._con.execute(
                        f'SELECT id, features FROM "{table}" WHERE id = ANY(%s)', [ids]
                    ).fetchall()
                return [(i, f, as_of) for i, f in rows]
            except psycopg.errors.UndefinedTable:
                continue
        return []

    def get(self, entity: str, key_value: str) -> tuple[Features, datetime] | None:
        rows = self._read(entity, [str(key_value)])
        if not rows:
            return None
        _, features, as_of = rows[0]
        return json.loads(features), as_of

    def get_many(self, entity: str, key_values: Iterable[str]) -> dict[str, Features]:
        ids = [str(k) for k in key_values]
        if not ids:
            return {}
        return {i: json.loads(f) for i, f, _ in self._read(entity, ids)}

    def ping(self) -> bool:
        """Whether the server answers."""
        self._con.execute("SELECT 1")
        return True

    def close(self) -> None:
        self._con.close()
