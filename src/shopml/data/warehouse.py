"""The warehouse: canonical tables in one DuckDB file, written atomically through their contracts.

Every write validates rows against the table's contract; rows that break it go to the
``quarantine`` table with the rules they broke, rows kept with one inconsistent optional field
nulled are recorded field by field in ``repairs``, and a per-table reconciliation (raw lines =
canonical rows + set aside; canonical rows = accepted + repaired + quarantined, by rule) is
stored in ``_shopml_loads``. A batch of tables is written in
one transaction, so a crash leaves the old state or the new, never half of one. Each table gets a
data version, a content hash, so a model can say exactly which data it was trained on.

Beside each entity id (``customer_id``, ``order_id``, ``order_item_id``, ``product_id``,
``seller_id``) a canonical table stores a 64-bit integer key, ``<id>__key``, computed from the id
on every write. Feature queries join and group on the keys, which takes DuckDB about a quarter
less time than on strings (see the features benchmark). The keys are an index, not data: reads
(:meth:`Warehouse.read`, the feature builders' tables) and data versions see only the
contract's columns. Canonical tables are changed through :meth:`Warehouse.write_tables`; after
editing one with SQL, :meth:`Warehouse.refresh` (``shopml tables --refresh``) recomputes its
keys and its data version.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import pandas as pd

from shopml.data import contracts
from shopml.data.contracts import (
    CONTRACTS,
    ContractError,
    ValidationResult,
    get_contract,
    key_column,
    required_tables,
    validate,
)
from shopml.data.versions import digest_batches, schema_of, version_of

if TYPE_CHECKING:
    from shopml.data.lake import Lake
    from shopml.settings import Settings

WriteMode = Literal["dataset", "replace", "upsert"]
Engine = Literal["duckdb", "spark"]

# Rows per Arrow batch when a table's content is hashed (bounded memory on large tables).
_HASH_BATCH = 262_144

_META_DDL = (
    """CREATE TABLE IF NOT EXISTS _shopml_versions (
        table_name VARCHAR PRIMARY KEY, version VARCHAR, rows BIGINT,
        written_at TIMESTAMP, source VARCHAR, batch_id VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS _shopml_loads (
        batch_id VARCHAR, source VARCHAR, table_name VARCHAR, mode VARCHAR, rows_read BIGINT,
        rows_accepted BIGINT, rows_quarantined BIGINT, by_rule VARCHAR, loaded_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS quarantine (
        batch_id VARCHAR, table_name VARCHAR, rules VARCHAR, row_json VARCHAR,
        source VARCHAR, quarantined_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS _shopml_meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS repairs (
        batch_id VARCHAR, table_name VARCHAR, row_key VARCHAR, column_name VARCHAR,
        rule VARCHAR, original VARCHAR, source VARCHAR, repaired_at TIMESTAMP)""",
    # Columns added after the first release: a warehouse written before them gains them here.
    "ALTER TABLE _shopml_loads ADD COLUMN IF NOT EXISTS rows_canonical BIGINT",
    "ALTER TABLE _shopml_loads ADD COLUMN IF NOT EXISTS rows_set_aside BIGINT",
    "ALTER TABLE _shopml_loads ADD COLUMN IF NOT EXISTS rows_repaired BIGINT",
    "ALTER TABLE _shopml_loads ADD COLUMN IF NOT EXISTS repaired_by_rule VARCHAR",
)


class WarehouseError(RuntimeError):
    """The warehouse cannot do what was asked (missing table, locked file, ...)."""


@dataclass
class TableLoad:
    """Reconciliation of one table in one write, balanced in itself:

    * ``rows_read`` (raw lines) = ``rows_canonical`` + ``rows_set_aside``;
    * ``rows_canonical`` = ``rows_accepted`` + ``rows_repaired`` + ``rows_quarantined``.

    ``rows_accepted`` are rows kept as given, ``rows_repaired`` rows kept with a field nulled
    (``repaired_by_rule``), ``rows_quarantined`` rows refused (``by_rule``), ``rows_set_aside``
    rows the importer dropped on purpose (``set_aside``, by reason). ``raw_lines`` says whether
    ``rows_read`` counts lines of the input itself; a table the importer builds from other
    tables' lines (an invoice's order, a customer's first purchase) has no lines of its own.
    """

    table: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    by_rule: dict[str, int] = field(default_factory=dict)
    version: str = ""
    rows_after: int = 0
    rows_canonical: int = 0
    rows_set_aside: int = 0
    rows_repaired: int = 0
    repaired_by_rule: dict[str, int] = field(default_factory=dict)
    set_aside: dict[str, int] = field(default_factory=dict)
    raw_lines: bool = False

    @property
    def rows_kept(self) -> int:
        """Rows written to the table: accepted as given plus repaired."""
        return self.rows_accepted + self.rows_repaired


@dataclass
class WriteReport:
    batch_id: str
    source: str
    mode: str
    tables: list[TableLoad] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Rows an importer set aside before they reached a contract (e.g. lines with no customer).
    set_aside: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def rows_quarantined(self) -> int:
        return sum(t.rows_quarantined for t in self.tables)

    @property
    def rows_repaired(self) -> int:
        return sum(t.rows_repaired for t in self.tables)

    def table(self, name: str) -> TableLoad:
        for t in self.tables:
            if t.table == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TableInfo:
    table: str
    rows: int
    version: str | None
    quarantined: int
    written_at: datetime | None
    source: str | None
    oracle: bool
    repaired: int = 0


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Warehouse:
    """A DuckDB warehouse file. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        engine: Engine = "duckdb",
        settings: Settings | None = None,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.engine: Engine = engine
        self.settings = settings
        self._con: duckdb.DuckDBPyConnection | None = None
        self._spark_backend: Any = None

    @classmethod
    def open(cls, settings: Settings | None = None, *, read_only: bool = False) -> Warehouse:
        """Open the warehouse configured in settings (creating the home folder if needed)."""
        from shopml.settings import get_settings

        s = settings or get_settings()
        if read_only and not s.warehouse.exists():
            raise WarehouseError(
                f"no warehouse at {s.warehouse}; run `shopml simulate` or `shopml ingest` first"
            )
        if not read_only:
            s.ensure_home()
        return cls(s.warehouse, read_only=read_only, engine=s.engine, settings=s)

    # -- connection --------------------------------------------------------------------------
    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            if self.read_only and not self.path.exists():
                raise WarehouseError(
                    f"no warehouse at {self.path}; run `shopml simulate` or `shopml ingest` first"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._con = duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                raise WarehouseError(f"cannot open warehouse {self.path}: {exc}") from exc
            if not self.read_only:
                for ddl in _META_DDL:
                    self._con.execute(ddl)
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    # -- reading -----------------------------------------------------------------------------
    def exists(self, table: str) -> bool:
        if self._con is None and not self.path.exists():
            return False
        row = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchone()
        return bool(row and row[0])

    def require(self, *tables: str) -> None:
        missing = [t for t in tables if not self.exists(t)]
        if missing:
            raise WarehouseError(
                f"warehouse {self.path} has no table(s) {', '.join(missing)}; "
                "run `shopml simulate` or `shopml ingest` first"
            )

    def order_span(self) -> tuple[datetime, datetime] | None:
        """When the first and the last order were placed (None without orders)."""
        if not self.exists("orders"):
            return None
        row = self.con.execute("SELECT min(purchased_at), max(purchased_at) FROM orders").fetchone()
        if not row or row[0] is None:
            return None
        return row[0], row[1]

    def data_end(self) -> datetime:
        """Midnight after the day of the last order: the data's "now", the cutoff at which the
        latest features are built. Raises :class:`WarehouseError` without orders."""
        span = self.order_span()
        if span is None:
            raise WarehouseError(f"warehouse {self.path} has no orders")
        last = span[1]
        return datetime(last.year, last.month, last.day) + timedelta(days=1)

    def read(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A whole table as a pandas frame (canonical tables keep their contract types)."""
        self.require(table)
        if columns is None and table in CONTRACTS:
            columns = CONTRACTS[table].column_names  # not the id keys stored beside them
        cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
        return self.con.execute(f'SELECT {cols} FROM "{table}"').df()

    def sql(self, query: str, params: list[Any] | None = None) -> pd.DataFrame:
        return self.con.execute(query, params or []).df()

    def ibis(self) -> Any:
        """An Ibis backend on this warehouse's engine; feature queries are written against it.

        ``duckdb``: the warehouse file itself. ``spark``: the canonical tables as published to
        the lake (:mod:`shopml.data.lake`, brought up to date with the warehouse first), as
        views of the process's Spark session (:mod:`shopml.data.spark`).
        """
        import ibis

        if self.engine == "spark":
            return self.spark_ibis()
        return ibis.duckdb.from_connection(self.con)

    def lake(self) -> Lake:
        """The lake the Spark engine reads (``SHOPML_LAKE_URI``)."""
        from shopml.data.lake import Lake
        from shopml.settings import get_settings

        s = self.settings or get_settings()
        return Lake(s.lake_location, s)

    def spark_ibis(self) -> Any:
        """An Ibis backend on Spark over the lake, after publishing what changed there."""
        import ibis

        from shopml.data.spark import get_spark
        from shopml.settings import get_settings

        s = self.settings or get_settings()
        spark = get_spark(s)
        lake = self.lake()
        # Views are the session's: registered again on every call, since another warehouse
        # (another lake) may have registered its own under the same names meanwhile.
        if self.path.exists() or self._con is not None:
            lake.sync(self)
        lake.register(spark)
        if self._spark_backend is None:
            self._spark_backend = ibis.pyspark.connect(spark)
        return self._spark_backend

    def table_names(self) -> list[str]:
        rows = self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()
        return sorted(r[0] for r in rows)

    def versions(self, tables: list[str] | None = None) -> dict[str, str]:
        """Data version (content hash) per table."""
        if not self.exists("_shopml_versions"):
            return {}
        df = self.con.execute("SELECT table_name, version FROM _shopml_versions").df()
        out = dict(zip(df.table_name, df.version, strict=True))
        if tables is not None:
            out = {t: out[t] for t in tables if t in out}
        return out

    def dataset_version(self, tables: list[str] | None = None) -> str:
        """One hash over the versions of the given tables (all canonical ones by default)."""
        v = self.versions(tables)
        blob = json.dumps(sorted(v.items())).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def info(self) -> list[TableInfo]:
        """Row counts, versions and quarantine counts for every contracted table present."""
        present = set(self.table_names()) if self.path.exists() or self._con else set()
        meta: dict[str, tuple[str, datetime, str]] = {}
        q: dict[str, int] = {}
        fixed: dict[str, int] = {}
        if "_shopml_versions" in present:
            for name, version, written_at, source in self.con.execute(
                "SELECT table_name, version, written_at, source FROM _shopml_versions"
            ).fetchall():
                meta[name] = (version, written_at, source)
        if "quarantine" in present:
            q = dict(
                self.con.execute(
                    "SELECT table_name, count(*) FROM quarantine GROUP BY table_name"
                ).fetchall()
            )
        if "repairs" in present:
            fixed = dict(
                self.con.execute(
                    "SELECT table_name, count(DISTINCT row_key) FROM repairs GROUP BY table_name"
                ).fetchall()
            )
        out = []
        for name, contract in CONTRACTS.items():
            if name not in present:
                continue
            row = self.con.execute(f'SELECT count(*) FROM "{name}"').fetchone()
            version, written_at, source = meta.get(name, (None, None, None))
            out.append(
                TableInfo(
                    name,
                    int(row[0]) if row else 0,
                    version,
                    q.get(name, 0),
                    written_at,
                    source,
                    contract.oracle,
                    fixed.get(name, 0),
                )
            )
        return out

    def quarantine(self, table: str | None = None) -> pd.DataFrame:
        if not self.exists("quarantine"):
            return pd.DataFrame(columns=["batch_id", "table_name", "rules", "row_json"])
        if table is None:
            return self.sql("SELECT * FROM quarantine ORDER BY quarantined_at")
        return self.sql("SELECT * FROM quarantine WHERE table_name = ?", [table])

    def repairs(self, table: str | None = None) -> pd.DataFrame:
        """Fields nulled on write because they contradicted their row, one row per field:
        table, the row's key (JSON), column, rule, the original value, batch and time."""
        if not self.exists("repairs"):
            return pd.DataFrame(
                columns=["batch_id", "table_name", "row_key", "column_name", "rule", "original"]
            )
        if table is None:
            return self.sql("SELECT * FROM repairs ORDER BY repaired_at, table_name, row_key")
        return self.sql(
            "SELECT * FROM repairs WHERE table_name = ? ORDER BY repaired_at, row_key", [table]
        )

    def loads(self) -> pd.DataFrame:
        return self.sql("SELECT * FROM _shopml_loads ORDER BY loaded_at")

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        if not self.exists("_shopml_meta"):
            return default
        row = self.con.execute("SELECT value FROM _shopml_meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    # -- writing -----------------------------------------------------------------------------
    def write_tables(
        self,
        tables: Mapping[str, pd.DataFrame],
        *,
        source: str,
        mode: WriteMode = "replace",
        meta: Mapping[str, str] | None = None,
        set_aside: Mapping[str, Mapping[str, int]] | None = None,
    ) -> WriteReport:
        """Validate and write a batch of canonical tables in one transaction.

        ``mode``: ``dataset`` replaces the whole dataset (contracted tables not in the batch are
        dropped, so an import never mixes with a previous one), ``replace`` replaces only the
        given tables, ``upsert`` inserts rows and replaces those whose primary key exists.
        ``set_aside`` records rows an importer dropped deliberately before validation, by
        reason, so the reconciliation still adds up.
        """
        if self.read_only:
            raise WarehouseError("warehouse opened read-only")
        order = required_tables(tables)
        batch_id = uuid.uuid4().hex[:12]
        report = WriteReport(
            batch_id, source, mode, set_aside={k: dict(v) for k, v in (set_aside or {}).items()}
        )
        accepted: dict[str, pd.DataFrame] = {}
        results = []
        for name in order:
            contract = get_contract(name)
            parents: dict[str, pd.DataFrame] = {}
            for fk in contract.foreign_keys:
                parents[fk.table] = self._parent_keys(fk.table, fk.ref_columns, accepted, mode)
            res = validate(name, tables[name], parents)
            accepted[name] = res.accepted
            results.append(res)

        now = _now()
        with self.transaction() as con:
            if mode == "dataset":
                # The previous dataset's description (source, seed, raw counts) goes with it.
                con.execute("DELETE FROM _shopml_meta")
                for name in CONTRACTS:
                    if name not in tables and self.exists(name):
                        con.execute(f'DROP TABLE "{name}"')
                        con.execute("DELETE FROM _shopml_versions WHERE table_name = ?", [name])
                        con.execute("DELETE FROM quarantine WHERE table_name = ?", [name])
                        con.execute("DELETE FROM repairs WHERE table_name = ?", [name])
                        report.removed.append(name)
            for res in results:
                name = res.table
                contract = get_contract(name)
                if mode in ("dataset", "replace"):
                    con.execute(f'DROP TABLE IF EXISTS "{name}"')
                    con.execute("DELETE FROM quarantine WHERE table_name = ?", [name])
                    con.execute("DELETE FROM repairs WHERE table_name = ?", [name])
                elif len(res.accepted):
                    # Rows replaced by this upsert take their repairs with them.
                    _forget_repairs(con, name, res.accepted)
                if not self.exists(name):
                    con.execute(contract.ddl())
                rows = res.accepted
                if mode == "upsert" and len(rows) and self.exists(name):
                    rows = _keep_earliest(con, name, rows)
                staged = f"_staged_{name}"
                con.register(staged, rows)
                try:
                    if mode == "upsert" and len(res.accepted):
                        keys = ", ".join(f'"{k}"' for k in contract.primary_key)
                        con.execute(
                            f'DELETE FROM "{name}" WHERE ({keys}) IN '
                            f"(SELECT ({keys}) FROM {staged})"
                        )
                    insert_rows(con, name, staged)
                    # An upsert can only add collisions among the keys it wrote.
                    _check_keys(con, name, within=staged if mode == "upsert" else None)
                finally:
                    con.unregister(staged)
                if len(res.quarantined):
                    self._quarantine(con, batch_id, name, source, res.quarantined, now)
                version, rows_after = self._version(con, name)
                con.execute(
                    "INSERT OR REPLACE INTO _shopml_versions VALUES (?, ?, ?, ?, ?, ?)",
                    [name, version, rows_after, now, source, batch_id],
                )
                if len(res.repairs):
                    self._record_repairs(con, batch_id, name, source, res, now)
                aside = dict((set_aside or {}).get(name, {}))
                n_aside = sum(aside.values())
                raw = (meta or {}).get(f"rows_read:{name}")
                load = TableLoad(
                    name,
                    int(raw) if raw is not None else res.rows_read + n_aside,
                    res.rows_clean,
                    len(res.quarantined),
                    res.by_rule,
                    version,
                    rows_after,
                    rows_canonical=res.rows_read,
                    rows_set_aside=n_aside,
                    rows_repaired=res.rows_repaired,
                    repaired_by_rule=res.repaired_by_rule,
                    set_aside=aside,
                    raw_lines=raw is not None,
                )
                con.execute(
                    "INSERT INTO _shopml_loads (batch_id, source, table_name, mode, rows_read, "
                    "rows_accepted, rows_quarantined, by_rule, loaded_at, rows_canonical, "
                    "rows_set_aside, rows_repaired, repaired_by_rule) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        batch_id,
                        source,
                        name,
                        mode,
                        load.rows_read,
                        load.rows_accepted,
                        load.rows_quarantined,
                        json.dumps(res.by_rule),
                        now,
                        load.rows_canonical,
                        load.rows_set_aside,
                        load.rows_repaired,
                        json.dumps(res.repaired_by_rule),
                    ],
                )
                report.tables.append(load)
            for key, value in {"last_source": source, **(meta or {})}.items():
                con.execute("INSERT OR REPLACE INTO _shopml_meta VALUES (?, ?)", [key, value])
        return report

    def refresh(self, tables: list[str] | None = None) -> dict[str, str]:
        """Recompute the id keys and data versions of canonical tables edited outside shopml.

        For tables changed with SQL (or written by a shopml without id keys). Returns the data
        version per refreshed table; a table whose content did not change keeps its version.
        """
        if self.read_only:
            raise WarehouseError("warehouse opened read-only")
        present = set(self.table_names())
        names = [t for t in (tables or list(CONTRACTS)) if t in present]
        unknown = [t for t in tables or [] if t not in CONTRACTS]
        if unknown:
            raise WarehouseError(f"not canonical table(s): {', '.join(unknown)}")
        out = {}
        with self.transaction() as con:
            for name in names:
                have = _columns(con, name)
                colliding = _colliding_id(con, name, stored=False)
                sets = []
                for c in get_contract(name).keyed_columns:
                    key = key_column(c)
                    if c == colliding:
                        if key in have:
                            con.execute(f'ALTER TABLE "{name}" DROP COLUMN "{key}"')
                        continue
                    if key not in have:
                        con.execute(f'ALTER TABLE "{name}" ADD COLUMN "{key}" UBIGINT')
                    sets.append(f'"{key}" = {_key_sql(c)}')
                if sets:
                    con.execute(f'UPDATE "{name}" SET {", ".join(sets)}')
                version, rows = self._version(con, name)
                con.execute(
                    "INSERT INTO _shopml_versions VALUES (?, ?, ?, ?, ?, NULL) "
                    "ON CONFLICT (table_name) DO UPDATE SET version = excluded.version, "
                    "rows = excluded.rows",
                    [name, version, rows, _now(), "refresh"],
                )
                out[name] = version
        return out

    def write_frame(self, name: str, df: pd.DataFrame) -> None:
        """Atomically replace a derived (non-canonical) table, such as materialised features."""
        if name in CONTRACTS:
            raise ContractError(f"{name!r} is a canonical table; use write_tables")
        with self.transaction() as con:
            con.register("_staged_frame", df)
            try:
                con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _staged_frame')
            finally:
                con.unregister("_staged_frame")

    def _parent_keys(
        self,
        table: str,
        columns: tuple[str, ...],
        batch: Mapping[str, pd.DataFrame],
        mode: WriteMode,
    ) -> pd.DataFrame:
        cols = list(columns)
        frames = []
        if table in batch:
            frames.append(batch[table][cols])
            if mode != "upsert":
                return frames[0]
        elif mode == "dataset":
            # The dataset is being replaced whole: a reference outside the batch dangles.
            return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
        if self.exists(table):
            col_sql = ", ".join(f'"{c}"' for c in cols)
            frames.append(self.con.execute(f'SELECT {col_sql} FROM "{table}"').df())
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
        return pd.concat(frames, ignore_index=True)

    @staticmethod
    def _quarantine(
        con: duckdb.DuckDBPyConnection,
        batch_id: str,
        table: str,
        source: str,
        rows: pd.DataFrame,
        now: datetime,
    ) -> None:
        data = rows.drop(columns=["rules"])
        row_json = data.to_json(orient="records", lines=True, date_format="iso").splitlines()
        frame = pd.DataFrame(
            {
                "batch_id": batch_id,
                "table_name": table,
                "rules": rows["rules"].to_numpy(),
                "row_json": row_json,
                "source": source,
                "quarantined_at": now,
            }
        )
        con.register("_staged_quarantine", frame)
        try:
            con.execute("INSERT INTO quarantine SELECT * FROM _staged_quarantine")
        finally:
            con.unregister("_staged_quarantine")

    @staticmethod
    def _record_repairs(
        con: duckdb.DuckDBPyConnection,
        batch_id: str,
        table: str,
        source: str,
        res: ValidationResult,
        now: datetime,
    ) -> None:
        keys = row_keys(table, res.accepted.iloc[res.repairs["row"].to_numpy()])
        frame = pd.DataFrame(
            {
                "batch_id": batch_id,
                "table_name": table,
                "row_key": keys,
                "column_name": res.repairs["column"].to_numpy(),
                "rule": res.repairs["rule"].to_numpy(),
                "original": res.repairs["original"].to_numpy(),
                "source": source,
                "repaired_at": now,
            }
        )
        con.register("_staged_repairs", frame)
        try:
            con.execute("INSERT INTO repairs SELECT * FROM _staged_repairs")
        finally:
            con.unregister("_staged_repairs")

    @staticmethod
    def _version(con: duckdb.DuckDBPyConnection, table: str) -> tuple[str, int]:
        # The engine-independent content hash of shopml.data.versions: the same content gives
        # the same version however it was written, and the Spark engine's lake computes the
        # same one from its Parquet files. Only the contract's columns count: the id keys are
        # derived from them.
        names = CONTRACTS[table].column_names if table in CONTRACTS else list(_columns(con, table))
        cols = ", ".join(f'"{c}"' for c in names)
        reader = con.execute(f'SELECT {cols} FROM "{table}"').to_arrow_reader(_HASH_BATCH)
        d = digest_batches(reader, names)
        return version_of(table, schema_of(table, names, reader.schema), d), d.rows


def row_keys(table: str, rows: pd.DataFrame) -> list[str]:
    """Each row's primary key as JSON (``{"order_id": "o1"}``): how a repair names its row."""
    pk = list(get_contract(table).primary_key)
    values = rows[pk].astype(object).where(rows[pk].notna(), None)
    return [
        json.dumps(dict(zip(pk, (str(v) if v is not None else None for v in r), strict=True)))
        for r in values.itertuples(index=False, name=None)
    ]


def _keep_earliest(con: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with each keep-earliest column set to the earlier of its value and the stored
    one for the same key."""
    contract = get_contract(table)
    columns = [c.name for c in contract.columns if c.keep_earliest]
    if not columns:
        return rows
    pk = list(contract.primary_key)
    con.register("_upsert_keys", rows[pk])
    try:
        keys = ", ".join(f'"{k}"' for k in pk)
        stored = con.execute(
            f"SELECT {keys}, {', '.join(f'{chr(34)}{c}{chr(34)}' for c in columns)} "
            f'FROM "{table}" WHERE ({keys}) IN (SELECT ({keys}) FROM _upsert_keys)'
        ).df()
    finally:
        con.unregister("_upsert_keys")
    if stored.empty:
        return rows
    merged = rows.merge(stored, on=pk, how="left", suffixes=("", "__stored"))
    out = rows.copy()
    for c in columns:
        both = pd.concat([merged[c], merged[f"{c}__stored"]], axis=1)
        out[c] = both.min(axis=1).astype(rows[c].dtype).to_numpy()
    return out


def _forget_repairs(con: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame) -> None:
    row = con.execute("SELECT count(*) FROM repairs WHERE table_name = ?", [table]).fetchone()
    if not row or not row[0]:
        return
    keys = pd.DataFrame({"row_key": row_keys(table, rows)})
    con.register("_written_keys", keys)
    try:
        con.execute(
            "DELETE FROM repairs WHERE table_name = ? AND row_key IN "
            "(SELECT row_key FROM _written_keys)",
            [table],
        )
    finally:
        con.unregister("_written_keys")


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    desc = con.execute(f'SELECT * FROM "{table}" LIMIT 0').description
    return [d[0] for d in desc or []]


def _key_sql(column: str) -> str:
    return contracts.KEY_SQL.format(f'"{column}"')


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, staged: str) -> None:
    """Insert the relation ``staged`` (the contract's columns) into the canonical ``table``,
    computing the id keys the table stores beside its ids."""
    contract = get_contract(table)
    have = set(_columns(con, table))
    keyed = [c for c in contract.keyed_columns if key_column(c) in have]
    names = [*contract.column_names, *(key_column(c) for c in keyed)]
    values = [*(f'"{c}"' for c in contract.column_names), *(_key_sql(c) for c in keyed)]
    targets = ", ".join(f'"{n}"' for n in names)
    con.execute(f'INSERT INTO "{table}" ({targets}) SELECT {", ".join(values)} FROM {staged}')


def _colliding_id(
    con: duckdb.DuckDBPyConnection, table: str, *, stored: bool, within: str | None = None
) -> str | None:
    """The table's own id column if two of its ids share a key (odds about n^2 / 2^65).

    ``stored``: check the key column as written, else the keys the ids would get now.
    ``within``: only among the keys of the ids in this relation (rows just written).
    """
    contract = get_contract(table)
    pk = contract.primary_key
    if len(pk) != 1 or pk[0] not in contract.keyed_columns:
        return None
    key = key_column(pk[0])
    if stored and key not in _columns(con, table):
        return None
    expr = f'"{key}"' if stored else _key_sql(pk[0])
    where = f" WHERE {expr} IN (SELECT {_key_sql(pk[0])} FROM {within})" if within else ""
    sql = f'SELECT count("{pk[0]}") - count(DISTINCT {expr}) FROM "{table}"{where}'
    row = con.execute(sql).fetchone()
    return pk[0] if row and row[0] else None


def _check_keys(con: duckdb.DuckDBPyConnection, table: str, within: str | None = None) -> None:
    """Drop the key of a table whose own ids collide on it.

    Without it the feature builders see a table without keys and join on the ids themselves,
    which is slower but exact; :meth:`Warehouse.refresh` checks again.
    """
    colliding = _colliding_id(con, table, stored=True, within=within)
    if colliding:
        con.execute(f'ALTER TABLE "{table}" DROP COLUMN "{key_column(colliding)}"')
