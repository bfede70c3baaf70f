"""Train any use case: split in time, tune, fit, evaluate against the baseline, the oracle and
the champion, log everything to MLflow, register, and let the gate decide the aliases."""

from __future__ import annotations

import json
import math
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.lifecycle import registry
from shopml.lifecycle.gate import GateDecision, decide, sanity_checks
from shopml.lifecycle.reference import REFERENCE_ARTIFACT, reference_profile
from shopml.lifecycle.tracking import configure, ensure_experiment, git_commit, model_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from shopml.data.warehouse import Warehouse
    from shopml.runtime.scorers import Scorer
    from shopml.settings import Settings
    from shopml.usecases.base import LabelledData, SplitPlan, UseCase

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    """Tuning budget and switches. Trials stop at whichever limit comes first."""

    trials: int = 8
    timeout_s: float = 45.0
    seed: int = 42
    register: bool = True
    force: bool = False  # train even when this data and config were already trained
    # Train as if today were ``as_of``: the split ends there and nothing at or after it is
    # used (a replay of the past, or a retrain judged on the window that just closed).
    as_of: datetime | None = None


@dataclass
class TrainResult:
    usecase: str
    status: str  # promoted | challenger | unchanged | skipped | failed
    reason: str = ""
    version: str | None = None
    run_id: str | None = None
    metric: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    oracle: dict[str, float] | None = None
    champion: dict[str, float] | None = None
    decision: dict[str, Any] | None = None
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotEnoughData(ValueError):
    """The data is too short or too thin for this use case's time split."""


TRAIN_KEY_TAG = "shopml.train_key"


def training_key(uc: UseCase, wh: Warehouse, config: TrainConfig) -> str:
    """What makes two trainings the same: use case, data, budget and code."""
    import hashlib

    from shopml.version import code_version

    parts = {
        "usecase": uc.name,
        "data": wh.dataset_version(list(uc.required_tables)),
        "config": [config.trials, config.timeout_s, config.seed],
        "params": uc.default_params(),
        "code": code_version(),
    }
    if config.as_of is not None:
        parts["as_of"] = config.as_of.isoformat()
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def reuse_previous_training(client: MlflowClient, uc: UseCase, key: str) -> TrainResult | None:
    """The result of an earlier, complete training with the same key, or None.

    A training interrupted after registering its version but before the gate decided is
    unfinished: its version is deleted (and its run marked failed) so that training again
    leaves exactly one version for this key.
    """
    from mlflow.exceptions import MlflowException

    name = model_name(uc.name)
    try:
        versions = list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        versions = []
    for mv in sorted(versions, key=lambda v: int(v.version)):
        tags = dict(mv.tags or {})
        if tags.get(TRAIN_KEY_TAG) != key:
            continue
        if "shopml.gate.verdict" not in tags:
            client.delete_model_version(name, str(mv.version))
            continue
        champion = registry.alias_version(client, uc.name, registry.CHAMPION)
        is_champion = champion is not None and str(champion.version) == str(mv.version)
        return TrainResult(
            uc.name,
            "unchanged",
            f"same data, config and code as v{mv.version} "
            f"({'champion' if is_champion else tags['shopml.gate.verdict']}); "
            "use --force to train again",
            version=str(mv.version),
            run_id=mv.run_id,
            metric=uc.gate.metric,
            metrics=json.loads(tags.get("shopml.metrics", "{}")),
            baseline=json.loads(tags.get("shopml.baseline_metrics", "{}")),
        )
    return None


def _fail_stale_runs(client: MlflowClient, experiment_id: str, key: str) -> None:
    """Runs of the same key left RUNNING by a killed process are marked FAILED."""
    for run in client.search_runs(
        [experiment_id], f"tags.`{TRAIN_KEY_TAG}` = '{key}' and attributes.status = 'RUNNING'"
    ):
        client.set_terminated(run.info.run_id, status="FAILED")


def build_splits(
    uc: UseCase, wh: Warehouse, plan: SplitPlan
) -> tuple[LabelledData, LabelledData, LabelledData]:
    from shopml.usecases.base import LabelledData

    parts = [d for d in (uc.dataset(wh, c) for c in plan.train_cutoffs) if len(d)]
    if not parts:
        raise NotEnoughData(
            f"no training rows before {plan.valid_cutoff:%Y-%m-%d} (the data may be too short "
            f"for a {uc.horizon_days}-day label horizon)"
        )
    train = LabelledData.concat(parts)
    valid = uc.dataset(wh, plan.valid_cutoff)
    test = uc.dataset(wh, plan.test_cutoff)
    if not len(valid) or not len(test):
        raise NotEnoughData(
            f"no validation or test rows at {plan.valid_cutoff:%Y-%m-%d} / "
            f"{plan.test_cutoff:%Y-%m-%d}"
        )
    return train, valid, test


def tune(
    uc: UseCase,
    wh: Warehouse,
    train: LabelledData,
    valid: LabelledData,
    config: TrainConfig,
    previous: Scorer | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Optuna search on the validation window; returns best params and the trial history."""
    import optuna

    from shopml.usecases.base import UseCase

    has_space = type(uc).search_space is not UseCase.search_space
    if config.trials <= 0 or not has_space:
        return uc.default_params(), pd.DataFrame()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if uc.gate.higher_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
    )
    study.enqueue_trial(uc.default_params())

    def objective(trial: optuna.Trial) -> float:
        params = {**uc.default_params(), **uc.search_space(trial)}
        scorer = uc.fit(wh, train, valid, params, seed=config.seed, **_previous(uc, previous))
        value = uc.evaluate(scorer, valid)[uc.gate.metric]
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{uc.gate.metric} is not finite")
        return value

    study.optimize(
        objective,
        n_trials=config.trials,
        timeout=config.timeout_s,
        catch=(ValueError, FloatingPointError),
    )
    history = study.trials_dataframe()
    try:
        best = {**uc.default_params(), **study.best_params}
    except ValueError:  # every trial failed
        best = uc.default_params()
    return best, history


def _previous(uc: UseCase, previous: Scorer | None) -> dict[str, Any]:
    return {"previous": previous} if uc.uses_previous else {}


def champion_scorer(client: MlflowClient, uc: UseCase) -> Scorer | None:
    """The current champion's scorer, or None (no champion, or it cannot be loaded)."""
    from shopml.runtime.pyfunc import load_scorer

    if registry.alias_version(client, uc.name, registry.CHAMPION) is None:
        return None
    try:
        return load_scorer(f"models:/{model_name(uc.name)}@{registry.CHAMPION}")
    except Exception:
        return None


def evaluate_champion(
    client: MlflowClient, uc: UseCase, test: LabelledData
) -> tuple[str | None, dict[str, float] | None]:
    """The current champion's metrics on the candidate's test window (None if no champion);
    a champion that cannot score the window gets NaN metrics rather than blocking training."""
    from shopml.runtime.pyfunc import load_scorer

    current = registry.alias_version(client, uc.name, registry.CHAMPION)
    if current is None:
        return None, None
    try:
        scorer = load_scorer(f"models:/{model_name(uc.name)}@{registry.CHAMPION}")
        return current.version, uc.evaluate(scorer, test)
    except Exception:
        return current.version, {uc.gate.metric: float("nan")}


def _pip_requirements() -> list[str]:
    # Explicit, so MLflow skips its slow inference, and minimal: what a scorer needs to load.
    from importlib.metadata import version

    pins = []
    for dist in ("mlflow", "numpy", "pandas", "lightgbm", "cloudpickle"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except Exception:
            continue
    return pins


def _log_frame_input(df: pd.DataFrame, name: str, digest: str, source: str) -> None:
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    ds = from_pandas(df.head(1000), source=source, name=name, digest=digest)
    mlflow.log_input(ds, context=name)


def _flat_metrics(prefix: str, metrics: dict[str, float] | None) -> dict[str, float]:
    if not metrics:
        return {}
    return {
        f"{prefix}{k}": float(v)
        for k, v in metrics.items()
        if v is not None and math.isfinite(float(v))
    }


def train_usecase(
    uc: UseCase,
    wh: Warehouse,
    settings: Settings,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Run the whole lifecycle for one use case; never raises for a use-case failure."""
    config = config or TrainConfig()
    say = progress or (lambda msg: None)
    started = time.perf_counter()
    reason = uc.skip_reason(wh)
    if reason:
        return TrainResult(uc.name, "skipped", reason)
    try:
        return _train(uc, wh, settings, config, say, started)
    except NotEnoughData as exc:
        return TrainResult(uc.name, "skipped", str(exc), seconds=time.perf_counter() - started)
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return TrainResult(uc.name, "failed", detail, seconds=time.perf_counter() - started)


def _train(
    uc: UseCase,
    wh: Warehouse,
    settings: Settings,
    config: TrainConfig,
    say: Progress,
    started: float,
) -> TrainResult:
    import mlflow
    from mlflow.models import infer_signature

    from shopml.runtime.pyfunc import SCORER_ARTIFACT, ShopmlModel, write_scorer

    client = configure(settings)
    experiment_id = ensure_experiment(client, settings, uc.name)
    key = training_key(uc, wh, config)
    if config.register and not config.force:
        reused = reuse_previous_training(client, uc, key)
        if reused is not None:
            reused.seconds = time.perf_counter() - started
            return reused
    _fail_stale_runs(client, experiment_id, key)
    plan = uc.split(wh, end=config.as_of)
    say(f"{uc.name}: building datasets")
    train, valid, test = build_splits(uc, wh, plan)
    previous = champion_scorer(client, uc) if uc.uses_previous else None
    say(f"{uc.name}: tuning ({config.trials} trials, {config.timeout_s:.0f} s)")
    params, history = tune(uc, wh, train, valid, config, previous)
    say(f"{uc.name}: fitting and evaluating")
    scorer = uc.final_fit(
        wh, train, valid, params, config.seed, as_of=plan.test_cutoff, **_previous(uc, previous)
    )
    metrics = uc.evaluate(scorer, test)
    valid_metrics = uc.evaluate(scorer, valid)
    base = uc.baseline(wh, train, plan.test_cutoff)
    baseline_metrics = uc.evaluate(base, test)
    oracle = uc.oracle_metrics(wh, test)
    sanity = sanity_checks(scorer, test, uc.gate)
    champ_version, champ_metrics = evaluate_champion(client, uc, test)

    versions = wh.versions()
    dataset_version = wh.dataset_version(list(uc.required_tables))
    source = f"{wh.path}#{','.join(uc.required_tables)}"
    result = TrainResult(
        uc.name,
        "challenger",
        metric=uc.gate.metric,
        metrics=metrics,
        baseline=baseline_metrics,
        oracle=oracle,
        champion=champ_metrics,
        rows={"train": len(train), "valid": len(valid), "test": len(test)},
    )
    say(f"{uc.name}: logging to MLflow")
    with (
        mlflow.start_run(
            experiment_id=experiment_id, run_name=f"{uc.name}-{plan.test_cutoff:%Y%m%d}"
        ) as run,
        tempfile.TemporaryDirectory() as tmp_dir,
    ):
        tmp = Path(tmp_dir)
        mlflow.set_tags(
            {
                "shopml.usecase": uc.name,
                "shopml.kind": uc.kind,
                "mlflow.source.git.commit": git_commit(),
                "shopml.git_commit": git_commit(),
                "shopml.dataset_version": dataset_version,
                "shopml.data_source": wh.get_meta("source") or "unknown",
                TRAIN_KEY_TAG: key,
            }
        )
        mlflow.log_params({f"param.{k}": v for k, v in params.items()})
        mlflow.log_params(
            {
                "cutoff.test": plan.test_cutoff.isoformat(),
                "cutoff.valid": plan.valid_cutoff.isoformat(),
                "cutoff.train": ",".join(c.date().isoformat() for c in plan.train_cutoffs),
                "rows.train": len(train),
                "rows.valid": len(valid),
                "rows.test": len(test),
                "n_features": len(train.features),
                "tuning.trials": config.trials,
                "tuning.timeout_s": config.timeout_s,
                "seed": config.seed,
            }
        )
        mlflow.log_metrics(
            {
                **_flat_metrics("test_", metrics),
                **_flat_metrics("valid_", valid_metrics),
                **_flat_metrics("baseline_", baseline_metrics),
                **_flat_metrics("oracle_", oracle),
                **_flat_metrics("champion_", champ_metrics),
                "sanity_latency_ms": sanity.latency_ms,
            }
        )
        for split_name, data in (("train", train), ("valid", valid), ("test", test)):
            digest = f"{dataset_version}-{split_name}-{min(data.cutoffs):%Y%m%d}"
            _log_frame_input(data.frame, split_name, digest[:36], source)
        for table, version in versions.items():
            if table in uc.required_tables:
                mlflow.set_tag(f"shopml.data_version.{table}", version)
        mlflow.log_dict(plan.to_dict(), "split.json")
        if not history.empty:
            history.to_csv(tmp / "tuning_trials.csv", index=False)
            mlflow.log_artifact(str(tmp / "tuning_trials.csv"), "tuning")
            for row in history.itertuples():
                if isinstance(row.value, float) and math.isfinite(row.value):
                    mlflow.log_metric("tuning_value", row.value, step=int(row.number))
        for plot in uc.plots(scorer, test, tmp / "plots"):
            mlflow.log_artifact(str(plot), "plots")
        reference = reference_profile(
            scorer, {"train": train, "valid": valid, "test": test}, seed=config.seed
        )
        if not reference.empty:
            ref_path = tmp / Path(REFERENCE_ARTIFACT).name
            reference.to_parquet(ref_path, index=False)
            mlflow.log_artifact(str(ref_path), str(Path(REFERENCE_ARTIFACT).parent))

        scorer_path = write_scorer(scorer, tmp / "scorer.pkl")
        example = uc.input_example(test)
        output = scorer.predict_frame(example)
        model_info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ShopmlModel(),
            artifacts={SCORER_ARTIFACT: str(scorer_path)},
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=_pip_requirements(),
            code_paths=[str(Path(__file__).resolve().parent.parent)],
        )
        result.run_id = run.info.run_id
        if config.register:
            # Registered with its training key in one call, so an interrupted training can be
            # recognised and cleaned up by the next one.
            registered = mlflow.register_model(
                model_info.model_uri, model_name(uc.name), tags={TRAIN_KEY_TAG: key}
            )

    if not config.register:
        result.status = "logged"
        result.seconds = time.perf_counter() - started
        return result
    version = str(registered.version)
    result.version = version
    name = model_name(uc.name)
    client.set_model_version_tag(
        name,
        version,
        "shopml.metrics",
        json.dumps({k: round(float(v), 6) for k, v in metrics.items() if math.isfinite(float(v))}),
    )
    client.set_model_version_tag(
        name,
        version,
        "shopml.baseline_metrics",
        json.dumps(
            {k: round(float(v), 6) for k, v in baseline_metrics.items() if math.isfinite(float(v))}
        ),
    )
    client.set_model_version_tag(name, version, "shopml.cutoff", plan.test_cutoff.isoformat())
    client.set_model_version_tag(name, version, "shopml.dataset_version", dataset_version)
    client.set_model_version_tag(name, version, "shopml.data_end", plan.data_end.isoformat())
    decision = decide(uc.gate, metrics, sanity, champ_metrics, champ_version)
    apply_decision(client, uc.name, version, decision)
    result.status = "promoted" if decision.promote else "challenger"
    result.reason = decision.summary()
    result.decision = decision.to_dict()
    result.seconds = time.perf_counter() - started
    return result


def apply_decision(
    client: MlflowClient, usecase: str, version: str, decision: GateDecision
) -> None:
    """Record the decision on the version and move the aliases it implies."""
    registry.record_decision(client, usecase, version, decision)
    if decision.promote:
        registry.set_champion(client, usecase, version, reason=decision.summary(), manual=False)
    else:
        registry.set_challenger(client, usecase, version)


def summarise(results: list[TrainResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        rows.append(
            {
                "usecase": r.usecase,
                "status": r.status,
                "version": r.version,
                "metric": r.metric,
                "model": r.metrics.get(r.metric, np.nan) if r.metric else np.nan,
                "baseline": r.baseline.get(r.metric, np.nan) if r.metric else np.nan,
                "oracle": (r.oracle or {}).get(r.metric, np.nan) if r.metric else np.nan,
                "seconds": round(r.seconds, 1),
                "reason": r.reason,
            }
        )
    return pd.DataFrame(rows)
