"""The online store on Redis: one hash per entity version, swapped in by one pointer write.

Layout: ``<prefix>:<entity>`` is a small hash (``table``, ``key``, ``as_of``, ``rows``) that
points at ``<prefix>:<entity>:<version>``, a hash of id -> features as JSON. A write fills a new
version hash, then moves the pointer in one command and unlinks the old hash. A read is one Lua
script (one round trip) that follows the pointer and reads the row, so it sees one version.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pandas as pd

from shopml.online.store import Features, OnlineStore, _jsonable, check_frame

# Follows the pointer and reads one row atomically (a script runs without interleaving).
_GET = """
local ptr = redis.call('HMGET', KEYS[1], 'table', 'as_of')
if not ptr[1] then return nil end
local row = redis.call('HGET', ptr[1], ARGV[1])
if not row then return {ptr[2], false} end
return {ptr[2], row}
"""

_GET_MANY = """
local tbl = redis.call('HGET', KEYS[1], 'table')
if not tbl then return {} end
return redis.call('HMGET', tbl, unpack(ARGV))
"""

_WRITE_CHUNK = 5_000


class RedisOnlineStore(OnlineStore):
    """Latest features per entity in Redis (``redis://host:port/db``)."""

    def __init__(self, url: str, prefix: str = "shopml:online") -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._get = self._redis.register_script(_GET)
        self._get_many = self._redis.register_script(_GET_MANY)

    def _pointer(self, entity: str) -> str:
        return f"{self.prefix}:{entity}"

    def write(self, entity: str, frame: pd.DataFrame, key: str, as_of: datetime) -> int:
        columns = check_frame(entity, frame, key)
        table = f"{self.prefix}:{entity}:{uuid.uuid4().hex[:10]}"
        records = frame[columns].to_dict(orient="records")
        ids = [str(k) for k in frame[key].tolist()]
        try:
            for start in range(0, len(ids), _WRITE_CHUNK):
                mapping = {
                    i: json.dumps({c: _jsonable(v) for c, v in rec.items()})
                    for i, rec in zip(
                        ids[start : start + _WRITE_CHUNK],
                        records[start : start + _WRITE_CHUNK],
                        strict=True,
                    )
                }
                self._redis.hset(table, mapping=mapping)  # type: ignore[arg-type]
            old = self._redis.hget(self._pointer(entity), "table")
            # One HSET moves every field of the pointer together: readers see old or new.
            self._redis.hset(
                self._pointer(entity),
                mapping={
                    "table": table,
                    "key": key,
                    "as_of": as_of.isoformat(),
                    "rows": len(ids),
                    "columns": json.dumps(columns),
                },
            )
        except BaseException:
            self._redis.unlink(table)
            raise
        if old:
            self._redis.unlink(old)
        return len(ids)

    def get(self, entity: str, key_value: str) -> tuple[Features, datetime] | None:
        out: Any = self._get(keys=[self._pointer(entity)], args=[str(key_value)])
        if not out or not out[1]:
            return None
        return json.loads(out[1]), datetime.fromisoformat(out[0].decode())

    def get_many(self, entity: str, key_values: Iterable[str]) -> dict[str, Features]:
        ids = [str(k) for k in key_values]
        if not ids:
            return {}
        rows: Any = self._get_many(keys=[self._pointer(entity)], args=ids)
        return {i: json.loads(r) for i, r in zip(ids, rows or [], strict=False) if r}

    def ping(self) -> bool:
        """Whether the server answers."""
        return bool(self._redis.ping())

    def close(self) -> None:
        self._redis.close()
