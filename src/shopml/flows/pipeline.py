"""The flows: ``pipeline`` (everything), ``retrain`` (one use case), ``monitor`` and ``ingest``.

Each flow is a short list of task calls; the tasks (:mod:`shopml.flows.tasks`) do the work.
Use cases are independent: a failing one is recorded in the summary with its reason and the
others carry on. Flow results and cached task results persist under ``<home>/prefect``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.exceptions import MissingContextError

from shopml.flows import tasks as t
from shopml.flows.progress import report
from shopml.flows.summary import PipelineSummary, UseCaseSummary

DEFAULT_TRIALS = 8
DEFAULT_TIMEOUT_S = 45.0


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:  # outside a run context (called as a plain function)
        return logging.getLogger("shopml.flows")


def _names(usecases: list[str] | None) -> list[str]:
    from shopml.usecases import select_usecases

    return select_usecases(usecases)


def _train_timeout(timeout_s: float) -> float:
    # Tuning stops at timeout_s; datasets, the final fit, evaluation and logging come on top.
    return timeout_s * 3 + 900


def _data_versions(names: list[str]) -> dict[str, str]:
    """Per use case, one hash of the versions of the tables it reads (its cache key's data)."""
    from shopml.usecases import get_usecase

    with t.open_warehouse(read_only=True) as wh:
        return {n: wh.dataset_version(list(get_usecase(n).required_tables)) for n in names}


def _train(
    name: str, data_version: str, config: dict[str, Any], force: bool, options: dict[str, Any]
) -> tuple[Any, bool]:
    """Run the train task for one use case; returns (TrainResult, cached) and never raises."""
    from shopml.lifecycle.train import TrainResult

    task = t.train_one.with_options(**options, timeout_seconds=_train_timeout(config["timeout_s"]))
    started = time.perf_counter()
    state = task(name, data_version, config, force, return_state=True)
    if state.is_completed():
        return t.result_of(state), state.name == "Cached"
    exc = t.result_of(state, raise_on_failure=False)
    if isinstance(exc, t.UseCaseFailed):
        return exc.result, False
    # A timeout or a crash outside the lifecycle: still one line in the summary.
    reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
    return TrainResult(
        name, "failed", reason or state.message or "failed", seconds=time.perf_counter() - started
    ), False


def _score(
    name: str,
    data_version: str,
    options: dict[str, Any],
    row: UseCaseSummary,
    as_of: datetime | None = None,
) -> dict[str, Any] | None:
    """Look up the champion and batch-score with it; fills ``row``. Never raises."""
    from shopml.usecases import get_usecase

    # A champion of earlier data cannot score a dataset without its tables (a shop's import
    # that has no prices, say): a reason, not a failed task.
    with t.open_warehouse(read_only=True) as wh:
        missing = get_usecase(name).skip_reason(wh)
    if missing:
        row.score_error = f"not scored: {missing}"
        return None
    champ_state = t.champion_of.with_options(**options)(name, return_state=True)
    champ = t.result_of(champ_state, raise_on_failure=False)
    if isinstance(champ, BaseException):
        row.score_error = f"registry: {champ}"
        return None
    if champ is None:
        return None
    row.champion_version = champ["version"]
    if row.metric:
        row.champion_metric = champ["metrics"].get(row.metric)
        row.baseline_metric = champ["baseline"].get(row.metric)
    state = t.batch_score.with_options(**options)(
        name, champ["version"], data_version, as_of, return_state=True
    )
    scored = t.result_of(state, raise_on_failure=False)
    if isinstance(scored, BaseException):
        row.score_error = f"{type(scored).__name__}: {scored}"
        return None
    row.scored_rows = scored["rows"]
    row.scores_path = scored["path"]
    return dict(scored)


def _row(result: Any, cached: bool) -> UseCaseSummary:
    return UseCaseSummary(
        usecase=result.usecase,
        status=result.status,
        reason=result.reason,
        version=result.version,
        cached=cached,
        seconds=round(result.seconds, 1),
        metric=result.metric,
    )


def next_steps() -> dict[str, str]:
    """Where to look after a run: MLflow UI on this data, the reports, the API, the models."""
    s = t.settings()
    return {
        "mlflow_ui": f"mlflow ui --backend-store-uri {s.tracking_uri}",
        "models": "shopml models",
        "reports": str(s.reports_dir),
        "scores": s.scores_location,
        "api": "shopml serve --insecure-dev  (no key, 127.0.0.1 only; or set SHOPML_API_KEYS)",
    }


@flow(name="pipeline", log_prints=True)
def pipeline(
    source: str = "simulate",
    customers: int = 20_000,
    seed: int = 42,
    days: int = 730,
    trials: int = DEFAULT_TRIALS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    usecases: list[str] | None = None,
    force: bool = False,
) -> PipelineSummary:
    """The whole job: load or simulate data, validate it, build the latest features, train,
    gate and promote every use case, materialise features online, batch-score every champion
    and write the monitoring report.

    ``source``: ``simulate`` (ShopSim with ``customers``, ``seed``, ``days``) or ``warehouse``
    (whatever was loaded last, e.g. by the ``ingest`` flow). ``force`` retrains and rebuilds
    even when the inputs are unchanged.
    """
    log = _logger()
    names = _names(usecases)
    options = t.task_options(force)
    summary = PipelineSummary()
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        summary.seconds[stage] = round(now - clock, 2)
        clock = now

    # 1. Data.
    if source == "simulate":
        summary.data = t.load_simulated.with_options(**options)(customers, seed, days)
    elif source == "warehouse":
        summary.data = {"source": "warehouse", "loaded": False}
    else:
        raise ValueError(f"source must be 'simulate' or 'warehouse', got {source!r}")
    lap("data")
    summary.validation = t.validate_data.with_options(**options)()
    cutoff = summary.validation["data_end"]
    lap("validate")

    # 2. The latest features (offline parquet now; online after training).
    from shopml.features import get_feature_set
    from shopml.online import ONLINE_ENTITIES

    report("building the latest features", 0.12)
    with t.open_warehouse(read_only=True) as wh:
        present = set(wh.table_names())
        feature_versions = {
            e: wh.dataset_version(list(get_feature_set(e).tables))
            for e in ONLINE_ENTITIES
            if set(get_feature_set(e).tables) <= present
        }
    for entity, version in feature_versions.items():
        summary.features.append(
            t.build_latest_features.with_options(**options)(entity, version, cutoff)
        )
    lap("features")

    # 3. Train, gate and promote each use case; one failing does not stop the others.
    config = t.train_config(trials, timeout_s, t.settings().seed)
    versions = _data_versions(names)
    results: dict[str, Any] = {}
    for i, name in enumerate(names):
        report(f"training {name}", 0.2 + 0.65 * i / len(names))
        result, cached = _train(name, versions[name], config, force, options)
        results[name] = result
        summary.usecases.append(_row(result, cached))
        if result.status == "failed":
            log.error("use case %s failed: %s", name, result.reason)
        else:
            log.info("use case %s: %s%s", name, result.status, " (cached)" if cached else "")
    lap("train")

    # 4. Online features for request-time lookups.
    report("materialising online features", 0.86)
    for f in summary.features:
        summary.online.append(
            t.materialise_online.with_options(**options)(
                f["entity"], f["key"], f["path"], cutoff, feature_versions[f["entity"]]
            )
        )
    lap("online")

    # 5. Batch-score every champion (including champions from earlier runs).
    for i, row in enumerate(summary.usecases):
        report(f"batch scoring {row.usecase}", 0.9 + 0.07 * i / len(names))
        _score(row.usecase, versions[row.usecase], options, row)
    lap("score")

    # 6. Monitoring: what exists today (data quality, score distributions).
    report("monitoring report", 0.98)
    summary.monitoring = monitor(usecases=names, act=False)
    lap("monitor")
    summary.next_steps = next_steps()
    report("done", 1.0)
    return summary


@flow(name="retrain", log_prints=True)
def retrain(
    usecase: str,
    trials: int = DEFAULT_TRIALS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    force: bool = False,
    as_of: datetime | None = None,
) -> PipelineSummary:
    """Retrain one use case on the warehouse's current data, gate it, and rescore its champion.

    Skips the training when the data, the configuration and the code are unchanged (unless
    ``force``). ``as_of`` trains as if it were that day: the test window the gate judges on
    is the one that closed then, and nothing after it is used (the monitor passes its clock,
    so a replay of the past retrains on the past).
    """
    names = _names([usecase])
    options = t.task_options(force)
    summary = PipelineSummary(data={"source": "warehouse", "loaded": False})
    summary.validation = t.validate_data.with_options(**options)()
    versions = _data_versions(names)
    config = t.train_config(trials, timeout_s, t.settings().seed, as_of)
    result, cached = _train(usecase, versions[usecase], config, force, options)
    row = _row(result, cached)
    summary.usecases.append(row)
    _score(usecase, versions[usecase], options, row, as_of)
    summary.next_steps = next_steps()
    if result.status == "failed":
        _logger().error("use case %s failed: %s", usecase, result.reason)
    return summary


@flow(name="monitor", log_prints=True)
def monitor(usecases: list[str] | None = None, act: bool = True) -> dict[str, Any]:
    """Check every champion and write the monitoring report under
    ``<home>/reports/monitoring/``: data freshness and quality, the latest batch scores, and
    per use case drift (Evidently) against the training reference, performance on the
    predictions whose labels have arrived, and use-case specifics.

    With ``act`` the retrain policy applies: a check that crosses its thresholds sends an
    alert and starts the ``retrain`` flow (a subflow here, or the ``retrain/shopml``
    deployment with ``SHOPML_MONITOR_RETRAIN=deployment``); the gate decides what is served.
    """
    from shopml.flows.retraining import default_retrain
    from shopml.monitoring.run import run_checks

    names = _names(usecases)
    options = t.task_options()
    quality = t.data_quality_report.with_options(**options)()
    scores = {n: t.score_distribution.with_options(**options)(n) for n in names}
    report("checking drift and performance", 0.99)
    settings = t.settings()
    retrain_fn = default_retrain(settings) if act else None
    checks = [
        c.to_dict() for c in run_checks(names, settings=settings, act=act, retrain=retrain_fn)
    ]
    for c in checks:
        if c["status"] in ("alert", "failed"):
            _logger().warning(
                "%s: %s (%s)",
                c["usecase"],
                c["status"],
                "; ".join(c.get("notes") or [])
                or "; ".join((c.get("decision") or {}).get("reasons") or []),
            )
    return dict(t.write_monitoring_report.with_options(**options)(quality, scores, checks))


@flow(name="ingest", log_prints=True)
def ingest(
    path: str,
    kind: str | None = None,
    run_pipeline: bool = True,
    trials: int = DEFAULT_TRIALS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    usecases: list[str] | None = None,
) -> dict[str, Any]:
    """Import a landed file (local path or ``s3://``) and then run the pipeline on it (for
    ``usecases``, default all).

    ``kind`` is the importer (``olist``, ``online-retail``, ``cdnow``); by default it is
    guessed from the path (see :func:`shopml.flows.landing.guess_kind`).
    """
    from shopml.flows.landing import guess_kind

    kind = kind or guess_kind(path)
    if kind is None:
        raise ValueError(f"{path}: cannot tell which importer reads it; pass kind")
    loaded = t.ingest_file.with_options(**t.task_options())(path, kind)
    out: dict[str, Any] = {"ingest": loaded}
    if run_pipeline:
        summary = pipeline(
            source="warehouse", trials=trials, timeout_s=timeout_s, usecases=usecases
        )
        out["pipeline"] = summary.to_dict()
    return out
