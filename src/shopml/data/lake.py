"""The lake: the canonical tables as Parquet, where the Spark engine reads them.

With ``SHOPML_ENGINE=spark`` the warehouse publishes each canonical table (its contract's
columns, as validated on write) to ``SHOPML_LAKE_URI``, a folder or an ``s3://`` prefix:

    <lake>/<table>/<version>/part-<n>.parquet
    <lake>/_shopml_manifest.json      {"tables": {table: {"version", "rows", "path", ...}}}

A table's folder is named by its data version (:mod:`shopml.data.versions`, the same content
hash on every engine), so a table is written once per content and never changed in place; the
manifest, replaced in one step (a rename, or one S3 PUT), says which folder is current. A crash
while publishing leaves the previous manifest, and so the previous tables, in force. Spark reads
the folders the manifest names, and :meth:`Lake.verify` recomputes every version from the
Parquet files on the executors, to check that they hold what the warehouse validated.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopml.data.contracts import CONTRACTS
from shopml.data.versions import Digest, digest, schema_of, version_of

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from shopml.data.warehouse import Warehouse
    from shopml.settings import Settings

MANIFEST = "_shopml_manifest.json"
# One publisher at a time in a process (a flow's tasks run in threads).
_SYNC = threading.Lock()
# The lake folder each temporary view reads, per Spark session (by id).
_VIEWS: dict[int, dict[str, str]] = {}
# Parquet files of at most this many rows: enough files for Spark to read in parallel.
ROWS_PER_FILE = 1_000_000
ROWS_PER_GROUP = 131_072


class LakeError(RuntimeError):
    """The lake cannot be read or written (unreachable store, no S3 support in Spark)."""


@dataclass(frozen=True)
class LakeTable:
    table: str
    version: str
    rows: int
    path: str  # relative to the lake's root
    written_at: str


class Lake:
    """Canonical tables as Parquet under ``uri`` (a folder or ``s3://bucket/prefix``)."""

    def __init__(self, uri: str, settings: Settings | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.settings = settings
        self.s3 = self.uri.startswith("s3://")
        if self.s3:
            from shopml.data.objectstore import s3_filesystem
            from shopml.settings import get_settings

            self.fs: Any = s3_filesystem(settings or get_settings())
            self.root = self.uri.removeprefix("s3://")
        else:
            from pyarrow import fs

            self.fs = fs.LocalFileSystem()
            self.root = str(Path(self.uri).resolve())

    # -- the manifest ------------------------------------------------------------------------
    def manifest(self) -> dict[str, LakeTable]:
        """The current table of each canonical table in the lake (empty for a new lake)."""
        from pyarrow import fs

        path = f"{self.root}/{MANIFEST}"
        try:
            if self.fs.get_file_info(path).type != fs.FileType.File:
                return {}
            with self.fs.open_input_stream(path) as f:
                data = json.loads(f.read().decode())
        except OSError as exc:
            raise LakeError(
                f"cannot read the lake's manifest {self.uri}/{MANIFEST}: {exc}"
            ) from exc
        except ValueError as exc:
            raise LakeError(f"{self.uri}/{MANIFEST} is not a shopml lake manifest: {exc}") from exc
        return {name: LakeTable(**t) for name, t in data.get("tables", {}).items()}

    def _write_manifest(self, tables: Mapping[str, LakeTable]) -> None:
        body = json.dumps(
            {"format": 1, "tables": {n: t.__dict__ for n, t in sorted(tables.items())}}, indent=1
        ).encode()
        final = f"{self.root}/{MANIFEST}"
        if self.s3:  # one PUT: readers see the old object or the new one
            with self.fs.open_output_stream(final) as f:
                f.write(body)
            return
        Path(self.root).mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=self.root)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def location(self, t: LakeTable, *, spark: bool = False) -> str:
        """Where a table's Parquet files are (``s3a://`` for Spark's S3 connector)."""
        if self.s3:
            return f"{'s3a' if spark else 's3'}://{self.root}/{t.path}"
        return self.spark_path(t.path)

    # -- publishing --------------------------------------------------------------------------
    def sync(self, wh: Warehouse) -> list[str]:
        """Publish the warehouse's canonical tables whose version the lake does not have yet,
        and drop the ones the warehouse no longer has; returns the tables written."""
        with _SYNC:
            return self._sync(wh)

    def _sync(self, wh: Warehouse) -> list[str]:
        import pyarrow.dataset as ds

        versions = wh.versions()
        rows_of = dict(wh.con.execute("SELECT table_name, rows FROM _shopml_versions").fetchall())
        present = {t for t in CONTRACTS if t in versions and wh.exists(t)}
        current = self.manifest()
        wanted: dict[str, LakeTable] = {}
        written = []
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        for name in sorted(present):
            version = versions[name]
            have = current.get(name)
            if have is not None and have.version == version:
                wanted[name] = have
                continue
            path = f"{name}/{version}"
            cols = ", ".join(f'"{c}"' for c in CONTRACTS[name].column_names)
            reader = wh.con.execute(f'SELECT {cols} FROM "{name}"').to_arrow_reader(ROWS_PER_GROUP)
            try:
                ds.write_dataset(
                    reader,
                    f"{self.root}/{path}",
                    format="parquet",
                    filesystem=self.fs,
                    basename_template="part-{i}.parquet",
                    max_rows_per_file=ROWS_PER_FILE,
                    max_rows_per_group=ROWS_PER_GROUP,
                    existing_data_behavior="delete_matching",
                )
            except OSError as exc:
                raise LakeError(f"cannot write {name} to the lake {self.uri}: {exc}") from exc
            wanted[name] = LakeTable(name, version, int(rows_of.get(name) or 0), path, now)
            written.append(name)
        if written or set(current) != set(wanted):
            self._write_manifest(wanted)
            for name, old in current.items():
                if name not in wanted or wanted[name].path != old.path:
                    self._remove(old.path)
        return written

    def spark_path(self, path: str) -> str:
        """``path`` (relative to the root) as Spark names it."""
        return f"s3a://{self.root}/{path}" if self.s3 else f"{self.root}/{path}"

    def files(self, path: str, suffix: str) -> list[str]:
        """The files under ``path`` ending in ``suffix``, sorted (for :attr:`fs`)."""
        from pyarrow import fs

        found = self.fs.get_file_info(fs.FileSelector(f"{self.root}/{path}", recursive=True))
        return sorted(
            f.path for f in found if f.type == fs.FileType.File and f.path.endswith(suffix)
        )

    def remove(self, path: str) -> None:
        """Delete ``path`` (relative to the root) and what it holds, if it is there."""
        self._remove(path)

    def _remove(self, path: str) -> None:
        # Already gone is fine: the manifest no longer names it.
        with contextlib.suppress(OSError):
            self.fs.delete_dir(f"{self.root}/{path}")

    # -- reading on Spark --------------------------------------------------------------------
    def register(self, spark: SparkSession) -> list[str]:
        """Make every table of the manifest a temporary view of the session (by its name).

        A view already pointing at the same folder in this session is kept: reading a folder's
        Parquet footers again costs a Spark job per table, and the folder's content never
        changes (its name is its data version)."""
        tables = self.manifest()
        with _SYNC:
            views = _VIEWS.setdefault(id(spark), {})
            for name, t in tables.items():
                where = self.location(t, spark=True)
                if views.get(name) == where:
                    continue
                try:
                    spark.read.parquet(where).createOrReplaceTempView(name)
                except Exception as exc:
                    raise LakeError(_spark_read_error(self.uri, name, exc)) from exc
                views[name] = where
            for name in [n for n in views if n not in tables]:
                spark.catalog.dropTempView(name)
                del views[name]
        return sorted(tables)

    def verify(self, spark: SparkSession) -> dict[str, str]:
        """Every table's data version recomputed on Spark from its Parquet files (the
        executors hash their partitions; the driver adds the digests up)."""
        out = {}
        for name, t in self.manifest().items():
            df = spark.read.parquet(self.location(t, spark=True))
            columns = CONTRACTS[name].column_names
            out[name] = version_of(name, schema_of(name, columns), spark_digest(df, columns))
        return out


def forget_views() -> None:
    """Forget the views registered so far (their session is stopping)."""
    with _SYNC:
        _VIEWS.clear()


def spark_digest(df: Any, columns: list[str]) -> Digest:
    """:func:`shopml.data.versions.digest` of a Spark DataFrame, computed per partition."""
    import pyarrow as pa

    def part(batches: Any) -> Any:
        d = Digest()
        for b in batches:
            d = d + digest(b, columns)
        # Spark has no unsigned 64-bit type: the halves travel as two non-negative longs.
        yield pa.RecordBatch.from_pydict(
            {
                "rows": [d.rows],
                "xor_hi": [d.xor >> 32],
                "xor_lo": [d.xor & 0xFFFFFFFF],
                "sum_hi": [d.total >> 32],
                "sum_lo": [d.total & 0xFFFFFFFF],
            }
        )

    schema = "rows long, xor_hi long, xor_lo long, sum_hi long, sum_lo long"
    total = Digest()
    for r in df.select(*columns).mapInArrow(part, schema).collect():
        total = total + Digest(
            r["rows"], (r["xor_hi"] << 32) | r["xor_lo"], (r["sum_hi"] << 32) | r["sum_lo"]
        )
    return total


def _spark_read_error(uri: str, table: str, exc: BaseException) -> str:
    text = str(exc)
    if "s3a" in text.lower() and ("ClassNotFound" in text or "No FileSystem" in text):
        return (
            f"Spark cannot read {uri}: it has no S3 connector; add hadoop-aws to the session "
            '(SHOPML_SPARK_CONF={"spark.jars.packages": "org.apache.hadoop:hadoop-aws:3.4.1"}) '
            "or use a lake on a path"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"Spark cannot read table {table} of the lake {uri}: {first}"
