"""Batch scoring: ``shopml score USECASE`` with the service's model and online features.

Rows come from a Parquet or CSV file or a warehouse table, in chunks; each chunk's missing
feature columns are filled from the online store by the ids it carries (the same lookups, and
the same ``<entity>_`` naming, as the service), then scored by the champion's
``predict_matrix`` in one call. Output is Parquet or CSV, locally or on ``s3://`` (through
pyarrow's S3 filesystem, with ``SHOPML_S3_ENDPOINT_URL`` and the usual AWS credentials).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shopml.serving.features import Lookup, lookups_for
from shopml.serving.models import CHAMPION, LoadedModel, MlflowSource, ModelSource

if TYPE_CHECKING:
    from shopml.online.store import OnlineStore
    from shopml.settings import Settings

Progress = Callable[[int, int | None], None]


class BatchError(ValueError):
    """A batch-scoring request that cannot be honoured (missing file, bad format)."""


@dataclass
class BatchResult:
    usecase: str
    model_version: str
    rows: int
    output: str
    seconds: float
    looked_up: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_champion(
    settings: Settings, usecase: str, source: ModelSource | None = None
) -> LoadedModel:
    """The use case's champion, as the service loads it."""
    source = source or MlflowSource(settings)
    info = source.alias_version(usecase, CHAMPION)
    if info is None:
        raise BatchError(f"shopml-{usecase} has no champion; train it first (`shopml train`)")
    return LoadedModel(usecase, source.load(usecase, info.version), info)


def _fmt(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".csv", ".csv.gz")):
        return "csv"
    raise BatchError(f"{path}: must end in .parquet or .csv")


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
    path = Path(input_path)
    if not path.exists():
        raise BatchError(f"{input_path}: no such file")
    if _fmt(input_path) == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        return (b.to_pandas() for b in pf.iter_batches(batch_size=chunk_rows)), pf.metadata.num_rows
    return iter(pd.read_csv(path, chunksize=chunk_rows, low_memory=False)), None


def _fill_online(
    frame: pd.DataFrame, features: list[str], lookups: tuple[Lookup, ...], store: OnlineStore | None
) -> int:
    """Fill the model's missing feature columns from the online store, in place."""
    missing = [f for f in features if f not in frame.columns]
    if not missing or store is None:
        return 0
    found = 0
    # Own entity last, so its columns win, as in the service.
    for lk in reversed(lookups):
        if lk.field not in frame.columns:
            continue
        ids = frame[lk.field].astype(str)
        rows = store.get_many(lk.entity, ids.unique().tolist())
        if not rows:
            continue
        found += len(rows)
        looked = pd.DataFrame.from_dict(rows, orient="index")
        looked.columns = [lk.prefix + c for c in looked.columns]
        wanted = [c for c in looked.columns if c in missing]
        for c in wanted:
            frame[c] = ids.map(looked[c]).to_numpy()
    return found


def _sink(output: str, settings: Settings) -> tuple[Any, str]:
    """A filesystem (None for local) and the path to write to."""
    if output.startswith("s3://"):
        from pyarrow import fs

        endpoint = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            kwargs.update(
                access_key=os.environ["AWS_ACCESS_KEY_ID"],
                secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            )
        kwargs["region"] = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        return fs.S3FileSystem(**kwargs), output.removeprefix("s3://")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    return None, output


class _Writer:
    """Appends chunks to a Parquet or CSV file (local or S3), atomically for local files."""

    def __init__(self, output: str, settings: Settings) -> None:
        self.format = _fmt(output)
        self.fs, self.path = _sink(output, settings)
        self.final = self.path
        if self.fs is None:  # write beside and rename at the end: no half-written output
            self.path = f"{self.path}.tmp-{os.getpid()}"
        self._pq: Any = None
        self._stream: Any = None
        self._header = True

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.format == "parquet":
            import pyarrow.parquet as pq

            if self._pq is None:
                self._pq = pq.ParquetWriter(self.path, table.schema, filesystem=self.fs)
            self._pq.write_table(table.cast(self._pq.schema))
            return
        import pyarrow.csv as pacsv

        if self._stream is None:
            self._stream = (
                self.fs.open_output_stream(self.path)
                if self.fs is not None
                else pa.OSFile(self.path, "wb")
            )
        pacsv.write_csv(table, self._stream, pacsv.WriteOptions(include_header=self._header))
        self._header = False

    def close(self, ok: bool) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._stream is not None:
            self._stream.close()
        if self.fs is None:
            if ok and Path(self.path).exists():
                os.replace(self.path, self.final)
            elif Path(self.path).exists():
                os.unlink(self.path)


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
) -> BatchResult:
    """Score every input row with the champion and write the outputs (ids first)."""
    import time

    from shopml.usecases import get_usecase

    start = time.perf_counter()
    uc = get_usecase(usecase)
    _fmt(output)
    chunks, total = read_chunks(settings, input_path, table, chunk_rows)
    model = model or load_champion(settings, usecase)
    lookups = lookups_for(uc.entity, uc.key)
    own_store = store is None
    if store is None:
        try:
            from shopml.online import open_store

            store = open_store(settings)
        except Exception:
            store = None
    writer = _Writer(output, settings)
    rows = looked_up = 0
    ok = False
    try:
        for frame in chunks:
            if frame.empty:
                continue
            ids = [
                c
                for c in (*(lk.field for lk in lookups), "customer_id", "product_id")
                if c in frame.columns
            ]
            ids = list(dict.fromkeys(ids))
            if hasattr(model.scorer, "recommend") or hasattr(model.scorer, "suggest"):
                out = model.scorer.predict_frame(frame)
            else:
                looked_up += _fill_online(frame, model.features, lookups, store)
                x = model.scorer.to_matrix(frame)
                pred = np.asarray(model.scorer.predict_matrix(x))
                out = pd.DataFrame(pred.reshape(len(frame), -1), columns=model.outputs)
            result = pd.concat(
                [frame[ids].reset_index(drop=True), out.reset_index(drop=True)], axis=1
            )
            result["model_version"] = model.version
            writer.write(result)
            rows += len(frame)
            if progress is not None:
                progress(rows, total)
        ok = True
    finally:
        writer.close(ok)
        if own_store and store is not None:
            store.close()
    return BatchResult(usecase, model.version, rows, output, time.perf_counter() - start, looked_up)
