"""Batch scoring: ``shopml score USECASE`` with the service's model and online features.

Rows come from a Parquet or CSV file (local or ``s3://``) or a warehouse table, in chunks;
each chunk's missing feature columns are filled from the online store by the ids it carries
(the same lookups, and the same ``<entity>_`` naming, as the service), then scored by the
model's ``predict_matrix`` in one call. With a ``cutoff`` the features come instead from the
warehouse as of that time (the use case's own point-in-time dataset), and with no input the
rows are the use case's rows at that cutoff: a past model version can be scored as it would
have been then. Output is Parquet or CSV, locally or on ``s3://`` (through pyarrow's S3
filesystem, with ``SHOPML_S3_ENDPOINT_URL`` and the usual AWS credentials), written under a
temporary name and renamed: a failed run leaves no output, or the previous one.

Bad input (an unreadable file, an empty CSV, an output that cannot be written, rows with none
of the model's features) raises :class:`BatchError` with one line naming what and where.
"""

from __future__ import annotations

import copy
import os
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shopml.data.objectstore import s3_filesystem
from shopml.runtime.answers import Lookup, lookups_for
from shopml.serving.models import CHAMPION, LoadedModel, MlflowSource, ModelSource

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse
    from shopml.online.store import OnlineStore
    from shopml.settings import Settings
    from shopml.usecases.base import UseCase

# How many label horizons the latest rows may step back (use cases whose rows are defined by
# what happens after the cutoff, such as orders to deliver, have none at the data's end).
LATEST_STEPS = 4

Progress = Callable[[int, int | None], None]
# Columns named in a message before "and N more".
_SHOWN = 8


class BatchError(ValueError):
    """A batch-scoring request that cannot be honoured (missing file, bad format)."""


@dataclass
class BatchResult:
    """What a batch run did; ``warnings`` are the problems that did not stop it."""

    usecase: str
    model_version: str
    rows: int
    output: str
    seconds: float
    looked_up: int
    cutoff: str | None = None
    missing_features: list[str] = field(default_factory=list)
    rows_without_features: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _names(columns: list[str]) -> str:
    shown = ", ".join(columns[:_SHOWN])
    return shown + (f" and {len(columns) - _SHOWN} more" if len(columns) > _SHOWN else "")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_champion(
    settings: Settings, usecase: str, source: ModelSource | None = None
) -> LoadedModel:
    """The use case's champion, as the service loads it."""
    source = source or MlflowSource(settings)
    info = source.alias_version(usecase, CHAMPION)
    if info is None:
        raise BatchError(f"shopml-{usecase} has no champion; train it first (`shopml train`)")
    return LoadedModel(usecase, source.load(usecase, info.version), info)


def load_version(settings: Settings, usecase: str, version: str) -> LoadedModel:
    """One registered version of the use case's model (``shopml models`` lists them)."""
    source = MlflowSource(settings)
    info = source.version_info(usecase, version)
    if info is None:
        raise BatchError(
            f"shopml-{usecase} has no version {version!r}; `shopml models` lists the versions"
        )
    return LoadedModel(usecase, source.load(usecase, info.version), info)


def _fmt(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".csv", ".csv.gz")):
        return "csv"
    raise BatchError(f"{path}: must end in .parquet or .csv")


def _s3_key(url: str) -> str:
    key = url.removeprefix("s3://")
    bucket, _, name = key.partition("/")
    if not bucket or not name or name.endswith("/"):
        raise BatchError(f"{url}: give s3://bucket/key (a key, not a bucket or a prefix)")
    return key


def _open_input(settings: Settings, input_path: str) -> Any:
    """A readable file object for a local path or an ``s3://`` URL (checked to exist)."""
    if input_path.startswith("s3://"):
        from pyarrow import fs

        key = _s3_key(input_path)
        s3 = s3_filesystem(settings)
        try:
            info = s3.get_file_info(key)
        except OSError as exc:
            raise BatchError(
                f"{input_path}: cannot reach the object store: {_reason(exc)}"
            ) from None
        if info.type != fs.FileType.File:
            raise BatchError(f"{input_path}: no such object")
        try:
            return s3.open_input_file(key)
        except OSError as exc:
            raise BatchError(f"{input_path}: cannot read: {_reason(exc)}") from None
    path = Path(input_path)
    if not path.exists():
        raise BatchError(f"{input_path}: no such file")
    if path.is_dir():
        raise BatchError(f"{input_path}: is a folder, not a file")
    try:
        return path.open("rb")
    except OSError as exc:
        raise BatchError(f"{input_path}: cannot read: {_reason(exc)}") from None


# What a corrupt or truncated file raises while it is read (pyarrow, pandas, gzip, codecs).
_READ_ERRORS = (
    pa.ArrowException,
    OSError,
    EOFError,
    zlib.error,
    UnicodeDecodeError,
    pd.errors.ParserError,
    ValueError,
)


def _parquet_chunks(handle: Any, name: str, chunk_rows: int) -> tuple[Iterator[pd.DataFrame], int]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(handle)
    except _READ_ERRORS as exc:
        handle.close()
        raise BatchError(f"{name}: not a readable Parquet file ({_reason(exc)})") from None

    def chunks() -> Iterator[pd.DataFrame]:
        done = 0
        try:
            for batch in pf.iter_batches(batch_size=chunk_rows):
                frame = batch.to_pandas()
                done += len(frame)
                yield frame
        except _READ_ERRORS as exc:
            raise BatchError(
                f"{name}: Parquet file damaged after row {done:,} ({_reason(exc)})"
            ) from None
        finally:
            handle.close()

    return chunks(), pf.metadata.num_rows


def _csv_chunks(handle: Any, name: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    compression = "gzip" if name.lower().endswith(".gz") else None
    try:
        reader = pd.read_csv(
            handle, chunksize=chunk_rows, low_memory=False, compression=compression
        )
    except pd.errors.EmptyDataError:
        handle.close()
        raise BatchError(f"{name}: the CSV is empty (no header line)") from None
    except _READ_ERRORS as exc:
        handle.close()
        raise BatchError(f"{name}: not a readable CSV file ({_reason(exc)})") from None

    def chunks() -> Iterator[pd.DataFrame]:
        done = 0
        try:
            for frame in reader:
                done += len(frame)
                yield frame
        except _READ_ERRORS as exc:
            raise BatchError(
                f"{name}: not a readable CSV file after row {done:,} ({_reason(exc)})"
            ) from None
        finally:
            reader.close()
            handle.close()

    return chunks()


def read_chunks(
    settings: Settings, input_path: str | None, table: str | None, chunk_rows: int
) -> tuple[Iterator[pd.DataFrame], int | None]:
    """Chunks of the input and the total row count when known."""
    if (input_path is None) == (table is None):
        raise BatchError("give exactly one of --input FILE or --table NAME")
    if table is not None:
        from shopml.data.contracts import CONTRACTS
        from shopml.data.warehouse import Warehouse

        wh = Warehouse.open(settings, read_only=True)
        if not wh.exists(table):
            wh.close()
            raise BatchError(f"the warehouse has no table {table!r}")
        row = wh.con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        total = int(row[0]) if row else None
        cols = "*"
        if table in CONTRACTS:  # a canonical table: its columns, not the id keys beside them
            cols = ", ".join(f'"{c}"' for c in CONTRACTS[table].column_names)
        reader = wh.con.execute(f'SELECT {cols} FROM "{table}"').fetch_record_batch(chunk_rows)

        def from_table() -> Iterator[pd.DataFrame]:
            try:
                for b in reader:
                    yield b.to_pandas()
            finally:
                wh.close()

        return from_table(), total
    assert input_path is not None
    kind = _fmt(input_path)
    handle = _open_input(settings, input_path)
    if kind == "parquet":
        return _parquet_chunks(handle, input_path, chunk_rows)
    return _csv_chunks(handle, input_path, chunk_rows), None


# -- where features come from -------------------------------------------------------------------
class OnlineFeatures:
    """The service's way: the online store, looked up by the ids a row carries."""

    def __init__(self, lookups: tuple[Lookup, ...], store: OnlineStore | None) -> None:
        self.lookups = lookups
        self.store = store
        self.id_fields = [lk.field for lk in lookups]

    def fill(self, frame: pd.DataFrame, features: list[str]) -> int:
        """Fill the model's missing feature columns from the online store, in place; returns
        the rows found."""
        missing = [f for f in features if f not in frame.columns]
        if not missing or self.store is None:
            return 0
        found = 0
        # Own entity last, so its columns win, as in the service.
        for lk in reversed(self.lookups):
            if lk.field not in frame.columns:
                continue
            ids = frame[lk.field].astype(str)
            rows = self.store.get_many(lk.entity, ids.unique().tolist())
            if not rows:
                continue
            found += len(rows)
            looked = pd.DataFrame.from_dict(rows, orient="index")
            looked.columns = [lk.prefix + c for c in looked.columns]
            for c in [c for c in looked.columns if c in missing]:
                frame[c] = ids.map(looked[c]).to_numpy()
        return found


class CutoffFeatures:
    """Features as of a past cutoff: the use case's point-in-time dataset from the warehouse,
    joined to the rows by the use case's keys."""

    def __init__(self, data: pd.DataFrame, keys: list[str]) -> None:
        self.data = data
        self.keys = keys
        self.id_fields = list(keys)

    def fill(self, frame: pd.DataFrame, features: list[str]) -> int:
        """Fill the missing feature columns from the dataset at the cutoff, in place."""
        missing = [f for f in features if f not in frame.columns and f in self.data.columns]
        keys = [k for k in self.keys if k in frame.columns]
        if not missing or keys != self.keys:
            return 0
        right = self.data[[*keys, *missing]].drop_duplicates(keys)
        left = frame[keys].astype(str)
        right = right.assign(**{k: right[k].astype(str) for k in keys})
        merged = left.merge(right, on=keys, how="left", indicator=True)
        for c in missing:
            frame[c] = merged[c].to_numpy()
        return int((merged["_merge"] == "both").sum())


def cutoff_dataset(
    settings: Settings, uc: UseCase, cutoff: datetime
) -> tuple[pd.DataFrame, list[str]]:
    """The use case's rows (keys and features, no labels) as of ``cutoff``, and its keys."""
    from shopml.data.warehouse import Warehouse

    wh = Warehouse.open(settings, read_only=True)
    try:
        span = wh.order_span()
        if span is None:
            raise BatchError("the warehouse has no orders; load data first (`shopml ingest`)")
        start, end = span[0], span[1] + timedelta(days=1)
        if not start < cutoff <= end:
            raise BatchError(
                f"--cutoff {cutoff:%Y-%m-%d %H:%M} is outside the warehouse's orders "
                f"({start:%Y-%m-%d} to {end:%Y-%m-%d})"
            )
        data = uc.dataset(wh, cutoff)
    finally:
        wh.close()
    if not len(data):
        raise BatchError(f"{uc.name}: no rows at --cutoff {cutoff:%Y-%m-%d %H:%M}")
    return data.frame[[*data.keys, *data.features]].reset_index(drop=True), list(data.keys)


def latest_rows(
    uc: UseCase, wh: Warehouse, end: datetime | None = None
) -> tuple[pd.DataFrame, list[str], datetime]:
    """The latest rows a use case can build (keys and features): its dataset at the data's
    end (or ``end``), else at the latest cutoff, one label horizon back at a time, that has
    rows. Labels are not used."""
    end = end or uc.data_end(wh)
    for step in range(LATEST_STEPS):
        cutoff = end - timedelta(days=uc.horizon_days * step)
        data = uc.dataset(wh, cutoff)
        if len(data):
            frame = data.frame[[*data.keys, *data.features]].reset_index(drop=True)
            return frame, list(data.keys), cutoff
    raise BatchError(
        f"{uc.name}: no rows to score in the last {LATEST_STEPS * uc.horizon_days} days"
    )


def _score_on_spark(
    settings: Settings,
    score: ChunkScorer,
    rows: pd.DataFrame,
    writer: _Writer,
    chunk_rows: int,
    progress: Progress | None,
) -> int:
    """Score ``rows`` on the Spark executors (``mapInPandas``, the scorer shipped once per
    task) into Parquet parts, then stream the parts into ``writer``; returns the rows scored.

    The rows already carry their features (they are the use case's dataset at a cutoff), so
    the partitions look nothing up. A sample is scored here first: its columns are the
    output's schema, and a model that cannot score these rows fails before any job starts.
    """
    import math
    import shutil
    import tempfile

    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import from_arrow_schema

    from shopml.data.spark import get_spark

    spark = get_spark(settings)
    sample = score(rows.head(64))
    schema = pa.Schema.from_pandas(sample, preserve_index=False)
    # The scorer without the rows it was built with: each task gets the model, not the data.
    remote = copy.copy(score)
    remote.source = CutoffFeatures(rows.iloc[:0], score.keys)
    parts = max(1, math.ceil(len(rows) / chunk_rows))
    frame = spark.createDataFrame(rows).repartition(parts)

    def score_partition(frames: Any) -> Any:
        for f in frames:
            out = remote(f)
            yield pa.Table.from_pandas(out, preserve_index=False).cast(schema).to_pandas()

    # The parts go where the executors and this driver both see them: a local folder for a
    # local driver, else the lake's staging area (a cluster's shared storage).
    from shopml.data.lake import Lake

    try:  # the session's own master: spark-submit may have set another than the settings
        local = not settings.spark_remote and str(spark.conf.get("spark.master")).startswith(
            "local"
        )
    except Exception:  # a Connect session that does not say
        local = False
    lake = Lake(tempfile.mkdtemp(prefix="shopml-scores-") if local else settings.lake_location)
    staging = f"_staging/scores-{uuid.uuid4().hex[:12]}"
    try:
        spark_schema = from_arrow_schema(schema, prefer_timestamp_ntz=True)
        scored = frame.mapInPandas(score_partition, spark_schema)
        scored.write.mode("overwrite").parquet(lake.spark_path(staging))
        done = 0
        for part in lake.files(staging, ".parquet"):
            with lake.fs.open_input_file(part) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=chunk_rows):
                    # Spark stores timestamps in microseconds: back to the scorer's own types.
                    writer.write(pa.Table.from_batches([batch]).cast(schema).to_pandas())
                    done += batch.num_rows
                    if progress is not None:
                        progress(done, len(rows))
        return done
    finally:
        lake.remove(staging)
        if local:
            shutil.rmtree(lake.root, ignore_errors=True)


# -- the output -------------------------------------------------------------------------------
class _Writer:
    """Appends chunks to a Parquet or CSV file under a temporary name, renamed (or, for
    ``s3://``, uploaded in one piece) when every chunk is written: a failed run leaves no
    output, or the previous one. Checks at once that it can write there."""

    def __init__(self, output: str, settings: Settings) -> None:
        import tempfile

        self.output = output
        self.format = _fmt(output)
        self.s3: Any = None
        suffix = f".tmp-{os.getpid()}"
        if output.startswith("s3://"):
            from pyarrow import fs

            self.final = _s3_key(output)
            self.s3 = s3_filesystem(settings)
            bucket = self.final.split("/", 1)[0]
            try:
                found = self.s3.get_file_info(bucket).type == fs.FileType.Directory
            except OSError as exc:
                raise BatchError(f"cannot write {output}: {_reason(exc)}") from None
            if not found:
                raise BatchError(f"cannot write {output}: no bucket {bucket!r}")
            # Written locally, then uploaded whole: an S3 object cannot be renamed, and an
            # upload interrupted half way must not leave a half object under the final key.
            handle, self.path = tempfile.mkstemp(suffix=f"-{Path(self.final).name}")
            os.close(handle)
        else:
            final = Path(output)
            self.final = str(final)
            self.path = str(final.with_name(f".{final.name}{suffix}"))
            _check_local_output(final)
            try:
                Path(self.path).touch()
            except OSError as exc:
                raise BatchError(f"cannot write {output}: {_reason(exc)}") from None
        self._pq: Any = None
        self._stream: Any = None
        self._header = True

    def write(self, frame: pd.DataFrame) -> None:
        try:
            self._write(frame)
        except OSError as exc:
            raise BatchError(f"writing {self.output} failed: {_reason(exc)}") from None

    def _write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.format == "parquet":
            import pyarrow.parquet as pq

            if self._pq is None:
                self._pq = pq.ParquetWriter(self.path, table.schema)
            self._pq.write_table(table.cast(self._pq.schema))
            return
        import pyarrow.csv as pacsv

        if self._stream is None:
            self._stream = pa.OSFile(self.path, "wb")
        pacsv.write_csv(table, self._stream, pacsv.WriteOptions(include_header=self._header))
        self._header = False

    def close(self, ok: bool) -> None:
        try:
            if self._pq is not None:
                self._pq.close()
            if self._stream is not None:
                self._stream.close()
            if ok and self.s3 is not None:
                from pyarrow import fs

                fs.copy_files(self.path, self.final, destination_filesystem=self.s3)
            elif ok:
                os.replace(self.path, self.final)
        except OSError as exc:
            raise BatchError(f"writing {self.output} failed: {_reason(exc)}") from None
        finally:
            Path(self.path).unlink(missing_ok=True)


def _check_local_output(final: Path) -> None:
    """Refuse, before any work, an output that cannot be written: under a file, a folder
    itself, or in a place without write permission."""
    if final.is_dir():
        raise BatchError(f"cannot write {final}: it is a folder")
    for parent in final.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BatchError(f"cannot write {final}: {parent} is a file, not a folder")
            break
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"cannot write {final}: {_reason(exc)}") from None


# -- scoring ----------------------------------------------------------------------------------
@dataclass
class _Coverage:
    """Which of the model's features the input had (itself or by lookup), over all chunks."""

    features: list[str]
    missing: set[str] = field(default_factory=set)
    rows_without: int = 0

    def check(self, frame: pd.DataFrame, name: str, id_fields: list[str]) -> None:
        present = [f for f in self.features if f in frame.columns]
        if self.features and not present:
            ids = [f for f in id_fields if f in frame.columns]
            why = (
                f"no row's {', '.join(ids)} is known to the feature source"
                if ids
                else f"and no id column ({', '.join(id_fields)}) to look them up by"
            )
            raise BatchError(
                f"{name}: no feature found: the rows have none of the model's "
                f"{len(self.features)} feature columns ({_names(self.features)}) {why}"
            )
        self.missing.update(f for f in self.features if f not in frame.columns)
        if present:
            self.rows_without += int(frame[present].isna().all(axis=1).sum())


def _explanations(model: LoadedModel, x: np.ndarray, k: int, warnings: list[str]) -> pd.DataFrame:
    """The top ``k`` contributions per row as columns (none, and a warning, for a model that
    has no contributions)."""
    found = model.scorer.explain(x)
    if found is None:
        why = f"v{model.version} cannot be explained: {model.scorer.unexplained}"
        if why not in warnings:
            warnings.append(why)
        return pd.DataFrame(index=range(len(x)))
    contrib = np.nan_to_num(found.contributions, nan=0.0)
    k = min(k, contrib.shape[1])
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
    names = np.asarray(found.inputs, dtype=object)
    columns: dict[str, Any] = {"explain_base": found.base, "explain_units": found.units}
    for i in range(k):
        columns[f"explain_{i + 1}_feature"] = names[order[:, i]]
        columns[f"explain_{i + 1}_contribution"] = np.take_along_axis(
            contrib, order[:, i : i + 1], axis=1
        )[:, 0]
    return pd.DataFrame(columns)


class ChunkScorer:
    """Scores one chunk of rows as the batch does: features filled from ``source``, then the
    model; the ids first, then the outputs, the model version and the cutoff. The same object
    scores the chunks read here and, pickled, the partitions of a Spark DataFrame."""

    def __init__(
        self,
        uc: UseCase,
        model: LoadedModel,
        source: OnlineFeatures | CutoffFeatures,
        keys: list[str],
        name: str,
        cutoff: datetime | None,
        coverage: _Coverage,
        explain: int = 0,
    ) -> None:
        self.uc = uc
        self.model = model
        self.source = source
        self.keys = keys
        self.name = name
        self.cutoff = cutoff
        self.coverage = coverage
        self.explain = explain  # top contributions per row to write (0: none)
        self.warnings: list[str] = []
        self.looked_up = 0

    def __call__(self, chunk: pd.DataFrame) -> pd.DataFrame:
        uc, model, source = self.uc, self.model, self.source
        frame = chunk.reset_index(drop=True)
        ids = [c for c in (*self.keys, uc.key, *source.id_fields) if c in frame.columns]
        ids = list(dict.fromkeys(ids))
        self.looked_up = 0
        if not uc.answer.model_outputs:
            # Rankings and prices: the scorer's own frame answer.
            has_features = any(f in frame.columns for f in model.features)
            try:
                if uc.key not in frame.columns and not has_features:
                    raise KeyError(uc.key)
                out = model.scorer.predict_frame(frame)
            except KeyError as exc:
                raise BatchError(
                    f"{self.name}: no feature found: {uc.name} needs a {exc.args[0]} column "
                    f"(columns: {_names([str(c) for c in frame.columns])})"
                ) from None
        else:
            self.looked_up = source.fill(frame, model.features)
            self.coverage.check(frame, self.name, source.id_fields)
            x = model.scorer.to_matrix(frame)
            pred = np.asarray(model.scorer.predict_matrix(x))
            out = pd.DataFrame(pred.reshape(len(frame), -1), columns=model.outputs)
            if self.explain > 0:
                out = pd.concat([out, _explanations(model, x, self.explain, self.warnings)], axis=1)
        result = pd.concat([frame[ids], out.reset_index(drop=True)], axis=1)
        result["model_version"] = model.version
        if self.cutoff is not None:
            result["as_of"] = self.cutoff
        return result


def score_batch(
    settings: Settings,
    usecase: str,
    output: str,
    *,
    input_path: str | None = None,
    table: str | None = None,
    chunk_rows: int = 50_000,
    progress: Progress | None = None,
    model: LoadedModel | None = None,
    store: OnlineStore | None = None,
    version: str | None = None,
    cutoff: datetime | None = None,
    latest: bool = False,
    explain: int = 0,
) -> BatchResult:
    """Score every input row and write the outputs (ids first).

    ``explain``: also write each row's ``explain`` largest feature contributions to the first
    output (``explain_<i>_feature``, ``explain_<i>_contribution``, with ``explain_base`` and
    ``explain_units``), from the model's own contributions (LightGBM's ``pred_contrib``).

    The model is the champion, or ``version``. Features the rows lack come from the online
    store, or with ``cutoff`` from the warehouse as of that time; with a ``cutoff`` and no
    input, the rows are the use case's own rows at the cutoff. ``latest`` scores the use
    case's latest rows (:func:`latest_rows`, up to ``cutoff`` when given): what the pipeline
    scores after training.
    """
    import time

    from shopml.usecases import get_usecase

    start = time.perf_counter()
    uc = get_usecase(usecase)
    _fmt(output)
    warnings: list[str] = []
    cutoff_rows: pd.DataFrame | None = None
    keys = [uc.key]
    if latest:
        from shopml.data.warehouse import Warehouse

        with Warehouse.open(settings, read_only=True) as wh:
            cutoff_rows, keys, cutoff = latest_rows(uc, wh, cutoff)
    elif cutoff is not None:
        cutoff_rows, keys = cutoff_dataset(settings, uc, cutoff)
    rows_in: pd.DataFrame | None = None
    if cutoff_rows is not None and input_path is None and table is None:
        rows_in = cutoff_rows
        chunks: Iterator[pd.DataFrame] = (
            rows_in.iloc[i : i + chunk_rows].copy() for i in range(0, len(rows_in), chunk_rows)
        )
        total: int | None = len(rows_in)
        name = f"{usecase} at {cutoff:%Y-%m-%d}" if cutoff else usecase
    else:
        chunks, total = read_chunks(settings, input_path, table, chunk_rows)
        name = input_path or f"table {table}"
    # The use case's rows at a cutoff (what the pipeline scores) are scored on the Spark
    # executors when the engine is Spark; rows from a file or a table, whose features may come
    # from the online store, are scored here in chunks.
    distributed = settings.engine == "spark" and cutoff_rows is not None and rows_in is not None
    writer = _Writer(output, settings)
    own_store = False
    ok = False
    try:
        if model is None:
            model = (
                load_version(settings, usecase, version)
                if version is not None
                else load_champion(settings, usecase)
            )
        if cutoff is not None and not latest:
            trained = model.info.tags.get("shopml.cutoff")
            if trained and trained > cutoff.isoformat():
                warnings.append(
                    f"v{model.version} was trained with data up to {trained[:10]}, after "
                    f"--cutoff {cutoff:%Y-%m-%d}: its scores there are not a fair backtest"
                )
        source: OnlineFeatures | CutoffFeatures
        if cutoff_rows is not None:
            source = CutoffFeatures(cutoff_rows, keys)
        else:
            if store is None:
                own_store = True
                try:
                    from shopml.online import open_store

                    store = open_store(settings)
                except Exception as exc:
                    warnings.append(f"online store unavailable ({_reason(exc)})")
                    store = None
            source = OnlineFeatures(lookups_for(uc.entity, uc.key), store)
        # The model's outputs per row (a predict answer) go through the matrix path; other
        # answers (rankings, prices) are the scorer's own frame answer.
        matrix = uc.answer.model_outputs
        coverage = _Coverage(model.features if matrix else [])
        rows = looked_up = 0
        score = ChunkScorer(uc, model, source, keys, name, cutoff, coverage, explain)
        if distributed:
            assert rows_in is not None
            rows = _score_on_spark(settings, score, rows_in, writer, chunk_rows, progress)
        for chunk in chunks if not distributed else ():
            if chunk.empty:
                continue
            result = score(chunk)
            looked_up += score.looked_up
            writer.write(result)
            rows += len(result)
            if progress is not None:
                progress(rows, total)
        if rows == 0:
            raise BatchError(f"{name}: no rows to score")
        ok = True
        warnings += score.warnings  # a model that cannot explain itself (--explain)
    finally:
        writer.close(ok)
        if own_store and store is not None:
            store.close()
    missing = sorted(coverage.missing)
    if missing:
        warnings.append(
            f"{len(missing)} of the model's {len(coverage.features)} features were not in the "
            f"rows nor found for them, scored as missing: {', '.join(missing)}"
        )
    if coverage.rows_without:
        warnings.append(
            f"{coverage.rows_without:,} of {rows:,} rows had no feature value at all "
            "(ids the feature source does not know?)"
        )
    return BatchResult(
        usecase,
        model.version,
        rows,
        output,
        time.perf_counter() - start,
        looked_up,
        cutoff.isoformat() if cutoff else None,
        missing,
        coverage.rows_without,
        warnings,
    )
