"""The pipeline's tasks: each one step, idempotent, with retries, a timeout and a cache key.

Caching: tasks whose output depends only on data and configuration carry a ``cache_key_fn``
that hashes the data versions (content hashes from the warehouse), the configuration, the code
version and the store they write to, so a rerun with unchanged inputs skips finished work. Their
results persist under ``<home>/prefect/results`` (see :func:`task_options`), so the cache lives
and dies with the rest of the local state. ``force`` reruns everything (``refresh_cache``).

Idempotence, for runs killed midway: every write is atomic (warehouse transactions, the online
store's table swap, scores written to a temporary file then renamed), loading the same data
again is detected and skipped, and training relies on the lifecycle's own reuse of a version
registered with the same training key. A task killed halfway leaves nothing that a rerun
would duplicate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from shopml.flows.progress import report
from shopml.version import code_version

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun
    from prefect.context import TaskRunContext
    from prefect.states import State
    from prefect.tasks import Task

    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.train import TrainResult
    from shopml.settings import Settings

# Back-off for tasks that talk to servers (MLflow, a remote store): 2 s, 10 s, 30 s.
SERVER_RETRY_DELAYS = [2.0, 10.0, 30.0]


# -- shared helpers ----------------------------------------------------------------------------
def settings() -> Settings:
    """The process settings (each flow run reads them from its own environment)."""
    from shopml.settings import get_settings

    return get_settings()


def result_of(state: State[Any], raise_on_failure: bool = True) -> Any:
    """A finished state's result, read synchronously. ``State.result`` answers a coroutine
    instead when it guesses it runs in async code (an event loop running in the thread, a run
    context left behind), which shopml's callers never are."""
    return state.result(raise_on_failure=raise_on_failure, _sync=True)  # type: ignore[call-overload]


def open_warehouse(read_only: bool = False) -> Warehouse:
    from shopml.data.warehouse import Warehouse

    return Warehouse.open(settings(), read_only=read_only)


def digest(*parts: Any) -> str:
    """A stable short hash of JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    # Every parameter of a cached task is a data version, a config value or a name: hashing
    # them with the task, the code and the stores the task reads and writes is the cache key.
    s = settings()
    return digest(
        context.task.name,
        parameters,
        code_version(),
        str(s.warehouse.resolve()),
        s.tracking_uri,
        s.online_store_uri or str((s.home / "online.sqlite").resolve()),
        s.scores_location,
    )


def task_options(force: bool = False) -> dict[str, Any]:
    """Per-run task options: results under the home folder, and ``force`` refreshing caches."""
    path = (settings().home / "prefect" / "results").resolve()
    path.mkdir(parents=True, exist_ok=True)
    # A Path (not an unsaved block): Prefect turns it into local storage without a server-side
    # block document, so this works in ephemeral mode and on a worker alike.
    options: dict[str, Any] = {
        "result_storage": path,
        "persist_result": True,
    }
    if force:
        options["refresh_cache"] = True
    return options


def _temporary_sibling(path: Path) -> Path:
    # Same folder (so the rename is atomic), hidden, unique; created with normal permissions.
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write a parquet file under a temporary name in the same folder, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def data_end(wh: Warehouse) -> datetime:
    """The day after the last order: features "now" are built at this cutoff."""
    wh.require("orders")
    if wh.order_span() is None:
        raise DataInvalid("the orders table is empty; nothing to build features from")
    return wh.data_end()


class DataInvalid(ValueError):
    """The warehouse's data cannot feed the pipeline (no orders, missing core tables)."""


# -- data --------------------------------------------------------------------------------------
@task(name="load-simulated-data", timeout_seconds=1800, cache_policy=NO_CACHE)
def load_simulated(
    customers: int, seed: int, days: int = 730, start: str = "2023-01-01", scenario: str = "none"
) -> dict[str, Any]:
    """Simulate a shop and load it, unless the warehouse already holds exactly this simulation.

    Not cached by Prefect: the warehouse itself is the record (the simulator's configuration and
    version are stored in its metadata), which stays right even when another import replaced
    the data in between.
    """
    from shopml.data.sim.world import SIM_VERSION
    from shopml.data.simulator import SimConfig, simulate

    config = SimConfig(
        customers=customers,
        seed=seed,
        days=days,
        start=date.fromisoformat(start),
        scenario=scenario,
    )
    with open_warehouse() as wh:
        same = (
            wh.get_meta("source") == "simulator"
            and wh.get_meta("sim_config") == config.to_json()
            and wh.get_meta("sim_version") == SIM_VERSION
        )
        if same:
            report("data unchanged: the warehouse already holds this simulation", 0.08)
            return {
                "source": "simulator",
                "loaded": False,
                "customers": customers,
                "seed": seed,
                "dataset_version": wh.dataset_version(),
            }
    report(f"simulating {customers:,} customers", 0.01)

    def progress(stage: str, fraction: float) -> None:
        report(f"simulating: {stage}", 0.01 + 0.07 * fraction)

    dataset = simulate(config, progress=progress)
    report("loading into the warehouse", 0.08)
    with open_warehouse() as wh:
        load = dataset.load(wh)
        version = wh.dataset_version()
    return {
        "source": "simulator",
        "loaded": True,
        "customers": customers,
        "seed": seed,
        "dataset_version": version,
        "rows_quarantined": load.rows_quarantined,
        "tables": {t.table: t.rows_accepted for t in load.tables},
    }


def _fetch(path: str, workdir: Path) -> Path:
    """A local path for ``path``; ``s3://bucket/key`` objects (or prefixes) are downloaded."""
    if not path.startswith("s3://"):
        return Path(path)
    from shopml.flows.landing import s3_client, split_s3

    bucket, key = split_s3(path)
    client = s3_client()
    listing = client.list_objects_v2(Bucket=bucket, Prefix=key)
    keys = [o["Key"] for o in listing.get("Contents", [])]
    if not keys:
        raise FileNotFoundError(f"{path}: no such object")
    if key in keys and not key.endswith("/"):
        # An exact object wins even when others share its name as a prefix (x.txt, x.txt.bak).
        target = workdir / Path(key).name
        client.download_file(bucket, key, str(target))
        return target
    prefix = key.rstrip("/") + "/"
    keys = [k for k in keys if k.startswith(prefix)]
    if not keys:
        raise FileNotFoundError(f"{path}: no such object or folder")
    folder = workdir / Path(key.rstrip("/")).name
    for k in keys:  # a folder: an Olist folder of CSVs
        dest = folder / k[len(prefix) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, k, str(dest))
    return folder


@task(
    name="ingest-file",
    timeout_seconds=1800,
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=SERVER_RETRY_DELAYS[:2],
)
def ingest_file(path: str, kind: str) -> dict[str, Any]:
    """Import a landed file (or folder, or ``s3://`` object) into the warehouse.

    Importing the same file twice changes nothing (the same data versions), so a rerun after a
    crash is safe without a cache.
    """
    from shopml.data.importers import IMPORTERS
    from shopml.flows.landing import is_append

    if kind not in IMPORTERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(IMPORTERS)}")
    with tempfile.TemporaryDirectory(prefix="shopml-ingest-") as tmp:
        local = _fetch(path, Path(tmp))
        if not local.exists():
            raise FileNotFoundError(f"{local}: no such file or directory")
        report(f"importing {kind} from {path}", 0.02)
        dataset = IMPORTERS[kind](local)
        append = is_append(path)  # landing/append/...: add a day of rows, not a new dataset
        with open_warehouse() as wh:
            load = dataset.load(wh, mode="upsert" if append else "dataset")
            version = wh.dataset_version()
    return {
        "source": kind,
        "path": path,
        "mode": "append" if append else "replace",
        "loaded": True,
        "dataset_version": version,
        "rows_quarantined": load.rows_quarantined,
        "tables": {t.table: t.rows_kept for t in load.tables},
    }


@task(name="validate-data", timeout_seconds=300, cache_policy=NO_CACHE)
def validate_data() -> dict[str, Any]:
    """Check the warehouse can feed the pipeline and summarise its contracts' verdicts.

    Every row was validated on write (rejects are in the quarantine); this step refuses data
    with no orders and reports tables, rows, quarantined rows and the data end.
    """
    report("validating the data", 0.1)
    with open_warehouse(read_only=True) as wh:
        info = wh.info()
        present = {t.table for t in info}
        missing = [t for t in ("customers", "orders", "order_items") if t not in present]
        if missing:
            raise DataInvalid(f"the warehouse has no {', '.join(missing)} table(s)")
        end = data_end(wh)
        tables = {
            t.table: {"rows": t.rows, "quarantined": t.quarantined, "version": t.version}
            for t in info
            if not t.oracle
        }
        return {
            "dataset_version": wh.dataset_version(),
            "data_end": end.isoformat(),
            "source": wh.get_meta("source"),
            "tables": tables,
            "rows_quarantined": sum(t["quarantined"] or 0 for t in tables.values()),
        }


# -- features ----------------------------------------------------------------------------------
def features_path(entity: str) -> Path:
    return settings().home / "features" / f"{entity}.parquet"


@task(
    name="build-latest-features",
    timeout_seconds=900,
    cache_key_fn=_cache_key,
    task_run_name="features-{entity}",
)
def build_latest_features(entity: str, data_version: str, cutoff: str) -> dict[str, Any]:
    """Build one entity's features at ``cutoff`` (the data end) into ``<home>/features``.

    ``data_version`` (the versions of the tables the feature set reads) is only there for the
    cache key: the same data and code give the same features.
    """
    from shopml.features import build_features, get_feature_set

    fs = get_feature_set(entity)
    with open_warehouse(read_only=True) as wh:
        frame = build_features(wh, datetime.fromisoformat(cutoff), entity)
    path = atomic_parquet(frame, features_path(entity))
    return {
        "entity": entity,
        "key": fs.key[0],
        "rows": len(frame),
        "columns": len(frame.columns),
        "cutoff": cutoff,
        "path": str(path),
    }


@task(
    name="materialise-online",
    timeout_seconds=600,
    cache_key_fn=_cache_key,
    retries=2,
    retry_delay_seconds=SERVER_RETRY_DELAYS[:2],
    task_run_name="online-{entity}",
)
def materialise_online(
    entity: str, key: str, path: str, as_of: str, data_version: str
) -> dict[str, Any]:
    """Replace the online store's features for ``entity`` with the built ones (atomic swap)."""
    from shopml.online import open_store

    frame = pd.read_parquet(path)
    store = open_store(settings())
    try:
        rows = store.write(entity, frame, key, datetime.fromisoformat(as_of))
    finally:
        store.close()
    return {"entity": entity, "rows": rows, "as_of": as_of}


# -- training ----------------------------------------------------------------------------------
class UseCaseFailed(RuntimeError):
    """A use case's training failed; carries the lifecycle's result for the summary."""

    def __init__(self, result: TrainResult) -> None:
        super().__init__(f"{result.usecase}: {result.reason}")
        self.result = result


class TransientFailure(UseCaseFailed):
    """A failure that looks like a server hiccup (connection refused, timeout, locked store)."""


_TRANSIENT_MARKERS = (
    "ConnectionError",
    "ConnectionRefused",
    "ConnectTimeout",
    "ReadTimeout",
    "TimeoutError",
    "Max retries exceeded",
    "Temporary failure",
    "503",
    "502",
    "database is locked",
    "server closed the connection",
    "OperationalError",
)


def _retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    # Retrying a deterministic failure (a bug, too little data) only wastes the budget.
    try:
        result_of(state)
    except TransientFailure:
        return True
    except Exception:  # any other failure is deterministic: not worth a retry
        return False
    return False


def train_config(
    trials: int, timeout_s: float, seed: int, as_of: datetime | None = None
) -> dict[str, Any]:
    config: dict[str, Any] = {"trials": trials, "timeout_s": timeout_s, "seed": seed}
    if as_of is not None:
        config["as_of"] = as_of.isoformat()
    return config


def _tag_flow_run(run_id: str) -> None:
    """Record this flow run on the MLflow run the training made, so that each can be found
    from the other (the control tower links them); a failure here never fails a training."""
    from prefect.runtime import flow_run

    from shopml.lifecycle.tracking import FLOW_RUN_TAG, configure

    if not flow_run.id:
        return
    try:
        configure(settings()).set_tag(run_id, FLOW_RUN_TAG, str(flow_run.id))
    except Exception as exc:  # the tag is a convenience: the training stands without it
        logging.getLogger("shopml.flows").warning(
            "could not tag run %s with its flow run: %s", run_id, exc
        )


@task(
    name="train-usecase",
    cache_key_fn=_cache_key,
    retries=2,
    retry_delay_seconds=SERVER_RETRY_DELAYS[:2],
    retry_condition_fn=_retry_transient,
    task_run_name="train-{usecase}",
)
def train_one(
    usecase: str, data_version: str, config: dict[str, Any], force: bool = False
) -> TrainResult:
    """Train, evaluate, register and gate one use case (the lifecycle does the work).

    Cached on the use case, the versions of its tables, the training configuration and the
    code (the lifecycle's training key): a rerun with the same inputs reuses the finished
    result. A failure raises :class:`UseCaseFailed`, so it is never cached and the next run
    tries again; the pipeline catches it and carries on with the other use cases.
    """
    from shopml.lifecycle.train import TrainConfig, train_usecase
    from shopml.usecases import get_usecase

    uc = get_usecase(usecase)
    # The lifecycle reuses a version registered with the same training key unless forced:
    # that, not this task's cache, is what keeps a killed-and-rerun training from duplicating.
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = dict(config)
    if values.get("as_of") is not None:
        values["as_of"] = datetime.fromisoformat(values["as_of"])
    if "force" in fields:
        values["force"] = force
    cfg = TrainConfig(**values)
    with open_warehouse() as wh:
        result = train_usecase(uc, wh, settings(), cfg, report)
    if result.run_id and result.status in ("promoted", "challenger", "registered", "logged"):
        _tag_flow_run(result.run_id)
    if result.status == "failed":
        if any(marker in result.reason for marker in _TRANSIENT_MARKERS):
            raise TransientFailure(result)
        raise UseCaseFailed(result)
    return result


# -- registry and scoring ----------------------------------------------------------------------
@task(
    name="champion-of",
    timeout_seconds=120,
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=SERVER_RETRY_DELAYS,
    task_run_name="champion-{usecase}",
)
def champion_of(usecase: str) -> dict[str, Any] | None:
    """The champion's version and its recorded metrics, or None (asks the registry: retried)."""
    from shopml.lifecycle.registry import CHAMPION, alias_version
    from shopml.lifecycle.tracking import configure

    client = configure(settings())
    mv = alias_version(client, usecase, CHAMPION)
    if mv is None:
        return None
    tags = dict(mv.tags or {})
    return {
        "version": str(mv.version),
        "metrics": json.loads(tags.get("shopml.metrics", "{}")),
        "baseline": json.loads(tags.get("shopml.baseline_metrics", "{}")),
        "verdict": tags.get("shopml.gate.verdict"),
    }


def scores_path(usecase: str) -> Path:
    """The local batch-score file (``scores_uri`` when it is a folder, else under the home)."""
    uri = settings().scores_uri
    folder = Path(uri) if uri and not uri.startswith("s3://") else settings().home / "scores"
    return folder / f"{usecase}.parquet"


def publish_scores(path: Path, usecase: str) -> str:
    """Upload a batch-score file to ``scores_uri`` when it is an ``s3://`` prefix (one PUT:
    readers see the old object or the new one); returns where the scores are."""
    uri = settings().scores_uri
    if not uri or not uri.startswith("s3://"):
        return str(path)
    from shopml.flows.landing import s3_client, split_s3

    bucket, prefix = split_s3(uri)
    key = f"{prefix.rstrip('/')}/{usecase}.parquet".lstrip("/")
    s3_client().upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


@task(
    name="batch-score",
    timeout_seconds=1200,
    cache_key_fn=_cache_key,
    retries=2,
    retry_delay_seconds=SERVER_RETRY_DELAYS[:2],
    task_run_name="score-{usecase}",
)
def batch_score(
    usecase: str, version: str, data_version: str, as_of: datetime | None = None
) -> dict[str, Any]:
    """Score the latest rows with the champion (``version``) into ``<home>/scores/<uc>.parquet``
    (the rows as of ``as_of`` when given, e.g. by a replay's retrain), with the one batch
    scorer (``shopml score``'s).

    Cached on the champion's version and the data: a new champion or new data rescore.
    """
    from shopml.serving.batch import score_batch

    path = scores_path(usecase)
    result = score_batch(settings(), usecase, str(path), version=version, cutoff=as_of, latest=True)
    return {
        "usecase": usecase,
        "version": version,
        "rows": result.rows,
        "path": publish_scores(path, usecase),
        "as_of": result.cutoff,
        "seconds": round(result.seconds, 2),
        "warnings": result.warnings,
    }


# -- monitoring --------------------------------------------------------------------------------
@task(name="data-quality-report", timeout_seconds=300, cache_policy=NO_CACHE)
def data_quality_report() -> dict[str, Any]:
    """Freshness and quality of the warehouse: rows, quarantined share and age per table."""
    from shopml.monitoring.reports import data_quality

    with open_warehouse(read_only=True) as wh:
        data_end(wh)  # no orders: DataInvalid, as every flow says it
        return data_quality(wh)


@task(
    name="score-distribution",
    timeout_seconds=300,
    cache_policy=NO_CACHE,
    task_run_name="score-distribution-{usecase}",
)
def score_distribution(usecase: str) -> dict[str, Any] | None:
    """The latest batch scores' distribution per output column (None when never scored)."""
    from shopml.monitoring.reports import score_distribution as distribution

    return distribution(usecase, scores_path(usecase))


@task(name="write-monitoring-report", timeout_seconds=120, cache_policy=NO_CACHE)
def write_monitoring_report(
    quality: dict[str, Any],
    scores: dict[str, dict[str, Any] | None],
    checks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write the report under ``<home>/reports/monitoring/`` (timestamped, and ``latest.json``)."""
    from shopml.monitoring.reports import write_report

    return write_report(settings().reports_dir / "monitoring", quality, scores, checks)
