"""The monitoring store: the prediction log (written by the service) and what monitoring makes
of it (a time series of metrics, one row per check and decision).

SQLite under the home by default (``<home>/monitoring.sqlite``, the file the service's
prediction log appends to), PostgreSQL with ``SHOPML_MONITORING_STORE_URI``. Times are UTC;
on SQLite they are ISO strings in one fixed format so that comparing strings compares times.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopml.runtime.predictions import (
    SERVED_ARMS,
    PredictionRecord,
    PredictionWindow,
    create_table,
    decode,
    write_records,
)
from shopml.runtime.predictions import TABLE as PREDICTIONS

METRICS = "monitor_metrics"
DECISIONS = "monitor_decisions"

# The prediction log's table is the one runtime.predictions defines; these are monitoring's.
_SQLITE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {METRICS} (run_id TEXT, ts TEXT, usecase TEXT, "
    "model_version TEXT, kind TEXT, metric TEXT, feature TEXT, value REAL, "
    "window_start TEXT, window_end TEXT, n INTEGER, detail TEXT)",
    f"CREATE INDEX IF NOT EXISTS {METRICS}_uc_ts ON {METRICS} (usecase, ts)",
    f"CREATE TABLE IF NOT EXISTS {DECISIONS} (run_id TEXT, ts TEXT, usecase TEXT, "
    "model_version TEXT, triggered INTEGER, action TEXT, outcome TEXT, reasons TEXT, "
    "detail TEXT)",
    f"CREATE INDEX IF NOT EXISTS {DECISIONS}_uc_ts ON {DECISIONS} (usecase, ts)",
)
_POSTGRES_DDL = (
    f"CREATE TABLE IF NOT EXISTS {METRICS} (run_id TEXT, ts TIMESTAMPTZ, usecase TEXT, "
    "model_version TEXT, kind TEXT, metric TEXT, feature TEXT, value DOUBLE PRECISION, "
    "window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, n BIGINT, detail JSONB)",
    f"CREATE INDEX IF NOT EXISTS {METRICS}_uc_ts ON {METRICS} (usecase, ts)",
    f"CREATE TABLE IF NOT EXISTS {DECISIONS} (run_id TEXT, ts TIMESTAMPTZ, usecase TEXT, "
    "model_version TEXT, triggered BOOLEAN, action TEXT, outcome TEXT, reasons JSONB, "
    "detail JSONB)",
    f"CREATE INDEX IF NOT EXISTS {DECISIONS}_uc_ts ON {DECISIONS} (usecase, ts)",
)


class MonitoringStoreError(RuntimeError):
    """The monitoring store cannot be opened or read."""


def utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime (naive values are taken as UTC, as in the warehouse)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    """The one text format of times in the SQLite store (the prediction log's own)."""
    return utc(value).isoformat(timespec="microseconds")


__all__ = ["MetricRow", "MonitoringStore", "PredictionWindow", "iso", "open_store", "utc"]


@dataclass
class MetricRow:
    """One value of the monitoring time series."""

    kind: str  # drift | prediction_drift | performance | reference | specific | volume
    metric: str
    value: float
    feature: str | None = None
    n: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class MonitoringStore:
    """Reads the prediction log; writes and reads monitoring results."""

    def __init__(self, uri: str | None, home: Path) -> None:
        self.uri = uri or f"sqlite:///{(home / 'monitoring.sqlite').resolve()}"
        self.kind = "sqlite" if self.uri.startswith("sqlite:///") else "postgres"
        if self.kind == "postgres" and not self.uri.startswith(
            ("postgresql://", "postgresql+psycopg://", "postgres://")
        ):
            raise MonitoringStoreError(
                f"monitoring store {self.uri!r} is not supported; use sqlite:///path or "
                "postgresql://user@host/db"
            )
        self._con: Any = None

    # -- connection --------------------------------------------------------------------------
    @property
    def con(self) -> Any:
        if self._con is None:
            con: Any
            try:
                if self.kind == "sqlite":
                    path = Path(self.uri.removeprefix("sqlite:///"))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    con = sqlite3.connect(str(path), timeout=30)
                    con.execute("PRAGMA journal_mode=WAL")
                    create_table(con, "sqlite")
                    for ddl in _SQLITE_DDL:
                        con.execute(ddl)
                    con.commit()
                else:
                    import psycopg

                    from shopml.online.postgres_store import _conninfo

                    con = psycopg.connect(_conninfo(self.uri), autocommit=True, connect_timeout=5)
                    create_table(con, "postgres")
                    for ddl in _POSTGRES_DDL:
                        con.execute(ddl)
            except Exception as exc:  # any driver's failure, said as one clear error
                raise MonitoringStoreError(
                    f"cannot open the monitoring store {self.uri}: {exc}"
                ) from exc
            self._con = con
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> MonitoringStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _param(self) -> str:
        return "?" if self.kind == "sqlite" else "%s"

    def _time(self, value: datetime) -> Any:
        return iso(value) if self.kind == "sqlite" else utc(value)

    def _json(self, value: Any) -> Any:
        text = json.dumps(value, default=str)
        return text

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        sql = sql.replace("?", self._param())
        cur = self.con.execute(sql, tuple(params))
        return list(cur.fetchall())

    def _insert(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        marks = ", ".join([self._param()] * len(rows[0]))
        sql = f"INSERT INTO {table} VALUES ({marks})"
        if self.kind == "sqlite":
            with self.con:
                self.con.executemany(sql, rows)
        else:
            with self.con.transaction(), self.con.cursor() as cur:
                cur.executemany(sql, rows)

    # -- the prediction log ------------------------------------------------------------------
    def log_predictions(self, records: Iterable[PredictionRecord]) -> int:
        """Append prediction-log records (the service's writer, on this store's connection)."""
        return write_records(self.con, self.kind, records)

    def count_predictions(
        self,
        usecase: str,
        start: datetime | None = None,
        end: datetime | None = None,
        model_version: str | None = None,
        arms: Sequence[str] | None = SERVED_ARMS,
    ) -> int:
        where, params = self._window_where(usecase, start, end, model_version, arms)
        rows = self.query(f"SELECT count(*) FROM {PREDICTIONS} WHERE {where}", params)
        return int(rows[0][0])

    def last_prediction_time(self, usecase: str) -> datetime | None:
        """When ``usecase`` last answered (the newest logged prediction), or None."""
        value = self.query(f"SELECT max(ts) FROM {PREDICTIONS} WHERE usecase = ?", [usecase])[0][0]
        if value is None:
            return None
        return utc(datetime.fromisoformat(value) if isinstance(value, str) else value)

    def _window_where(
        self,
        usecase: str,
        start: datetime | None,
        end: datetime | None,
        model_version: str | None = None,
        arms: Sequence[str] | None = SERVED_ARMS,
    ) -> tuple[str, list[Any]]:
        """``arms``: which arms' records (default the answers that were served; None: all)."""
        where, params = ["usecase = ?"], [usecase]
        if start is not None:
            where.append("ts >= ?")
            params.append(self._time(start))
        if end is not None:
            where.append("ts < ?")
            params.append(self._time(end))
        if model_version is not None:
            where.append("model_version = ?")
            params.append(model_version)
        if arms is not None:
            where.append(f"arm IN ({', '.join('?' * len(arms))})")
            params.extend(arms)
        return " AND ".join(where), params

    def predictions(
        self,
        usecase: str,
        start: datetime,
        end: datetime,
        *,
        model_version: str | None = None,
        sample: int | None = None,
        seed: int = 0,
        with_features: bool = True,
        arms: Sequence[str] | None = SERVED_ARMS,
    ) -> PredictionWindow:
        """The logged predictions of ``usecase`` with ``start <= ts < end``, decoded.

        ``sample`` keeps at most that many rows, chosen at random (seeded) before anything is
        read but their ids: the expensive part of a large window is moving and parsing its
        JSON. ``with_features=False`` skips the features (performance needs only outputs).
        ``arms``: the answers that were served by default (shadow answers left out); None: all.
        """
        where, params = self._window_where(usecase, start, end, model_version, arms)
        feats = "features" if with_features else "NULL"
        cols = f"request_id, ts, model_version, entity_key, entity_id, {feats}, output, arm"
        if (
            sample is not None
            and self.count_predictions(usecase, start, end, model_version, arms) > sample
        ):
            rows = self._sampled(cols, where, params, sample, seed)
        else:
            rows = self.query(f"SELECT {cols} FROM {PREDICTIONS} WHERE {where}", params)
        return decode(usecase, start, end, rows)

    def _sampled(
        self, cols: str, where: str, params: list[Any], sample: int, seed: int
    ) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            ids = [
                r[0] for r in self.query(f"SELECT rowid FROM {PREDICTIONS} WHERE {where}", params)
            ]
            rng = np.random.default_rng(seed)
            keep = sorted(int(ids[i]) for i in rng.choice(len(ids), sample, replace=False))
            out: list[tuple[Any, ...]] = []
            for i in range(0, len(keep), 20_000):
                chunk = json.dumps(keep[i : i + 20_000])
                out += self.query(
                    f"SELECT {cols} FROM {PREDICTIONS} "
                    "WHERE rowid IN (SELECT value FROM json_each(?))",
                    [chunk],
                )
            return out
        # PostgreSQL: a seeded pseudo-random order over the rows' ids.
        return self.query(
            f"SELECT {cols} FROM {PREDICTIONS} WHERE {where} "
            "ORDER BY md5(coalesce(request_id, '') || coalesce(entity_id, '') || ?) "
            f"LIMIT {int(sample)}",
            [*params, str(seed)],
        )

    def prune_predictions(self, before: datetime) -> int:
        """Delete prediction-log rows older than ``before`` (retention)."""
        cur = self.con.execute(
            f"DELETE FROM {PREDICTIONS} WHERE ts < {self._param()}", (self._time(before),)
        )
        if self.kind == "sqlite":
            self.con.commit()
        return int(cur.rowcount or 0)

    # -- results -----------------------------------------------------------------------------
    def write_metrics(
        self,
        usecase: str,
        model_version: str | None,
        when: datetime,
        window: tuple[datetime, datetime] | None,
        rows: list[MetricRow],
        run_id: str | None = None,
    ) -> str:
        run_id = run_id or uuid.uuid4().hex
        start, end = window if window else (None, None)
        self._insert(
            METRICS,
            [
                (
                    run_id,
                    self._time(when),
                    usecase,
                    model_version,
                    r.kind,
                    r.metric,
                    r.feature,
                    None if r.value is None or not np.isfinite(r.value) else float(r.value),
                    self._time(start) if start else None,
                    self._time(end) if end else None,
                    r.n,
                    self._json(r.detail) if r.detail else None,
                )
                for r in rows
            ],
        )
        return run_id

    def write_decision(
        self,
        run_id: str,
        usecase: str,
        model_version: str | None,
        when: datetime,
        triggered: bool,
        action: str,
        outcome: str,
        reasons: list[str],
        detail: dict[str, Any],
    ) -> None:
        self._insert(
            DECISIONS,
            [
                (
                    run_id,
                    self._time(when),
                    usecase,
                    model_version,
                    triggered,
                    action,
                    outcome,
                    self._json(reasons),
                    self._json(detail),
                )
            ],
        )

    def metrics(
        self,
        usecase: str | None = None,
        kind: str | None = None,
        metric: str | None = None,
        since: datetime | None = None,
        with_detail: bool = False,
    ) -> pd.DataFrame:
        """The monitoring time series (optionally filtered), oldest first; ``with_detail``
        adds each row's ``detail`` (a drift score's method, threshold and noise floor)."""
        where, params = self._filters(usecase=usecase, kind=kind, metric=metric, since=since)
        rows = self.query(
            f"SELECT run_id, ts, usecase, model_version, kind, metric, feature, value, "
            f"window_start, window_end, n{', detail' if with_detail else ''} FROM {METRICS} "
            f"WHERE {' AND '.join(where)} ORDER BY ts",
            params,
        )
        cols = [
            "run_id",
            "ts",
            "usecase",
            "model_version",
            "kind",
            "metric",
            "feature",
            "value",
            "window_start",
            "window_end",
            "n",
        ]
        if with_detail:
            cols.append("detail")
            rows = [(*r[:-1], json.loads(r[-1]) if isinstance(r[-1], str) else r[-1]) for r in rows]
        frame = pd.DataFrame(rows, columns=cols)
        for c in ("ts", "window_start", "window_end"):
            frame[c] = pd.to_datetime(frame[c], utc=True, format="ISO8601")
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
        return frame

    def latest_metrics(self) -> pd.DataFrame:
        """The newest run's values per use case (what the gauges show)."""
        frame = self.metrics()
        if frame.empty:
            return frame
        last = frame.groupby("usecase")["ts"].transform("max")
        return frame[frame["ts"] == last].reset_index(drop=True)

    def _filters(
        self, since: datetime | None = None, **equal: str | None
    ) -> tuple[list[str], list[Any]]:
        where, params = ["1 = 1"], []
        for col, val in equal.items():
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if since is not None:
            where.append("ts >= ?")
            params.append(self._time(since))
        return where, params

    def decisions(self, usecase: str | None = None, since: datetime | None = None) -> pd.DataFrame:
        where, params = self._filters(usecase=usecase, since=since)
        rows = self.query(
            f"SELECT run_id, ts, usecase, model_version, triggered, action, outcome, reasons, "
            f"detail FROM {DECISIONS} WHERE {' AND '.join(where)} ORDER BY ts",
            params,
        )
        frame = pd.DataFrame(
            rows,
            columns=[
                "run_id",
                "ts",
                "usecase",
                "model_version",
                "triggered",
                "action",
                "outcome",
                "reasons",
                "detail",
            ],
        )
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
        frame["triggered"] = frame["triggered"].astype(bool)
        for c in ("reasons", "detail"):
            frame[c] = [json.loads(v) if isinstance(v, str) else v for v in frame[c]]
        return frame


def open_store(settings: Any) -> MonitoringStore:
    """The monitoring store named by the settings."""
    return MonitoringStore(settings.monitoring_store_uri, settings.home)
