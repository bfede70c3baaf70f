"""Train any use case, as a chain of small steps with typed records between them:

``split_plan`` -> :func:`build_splits` (:class:`Splits`) -> :func:`tune` (:class:`Tuning`) ->
:func:`fit_model` -> :func:`fit_baselines` (:class:`Baselines`) -> :func:`evaluate`
(:class:`Evaluation`: every contender's answers on the same test rows, computed once) ->
:func:`judge` (the gate, :class:`~shopml.lifecycle.gate.GateDecision`) -> :func:`log_run` ->
:func:`register` -> :func:`apply_decision`.

:func:`train_usecase` runs them all; :mod:`shopml.lifecycle.backtest` reuses the first six at
past cutoffs. Each step takes data and returns data; only the last three touch MLflow.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.lifecycle import registry
from shopml.lifecycle.gate import Evidence, GateDecision, SanityReport, decide, sanity_checks
from shopml.lifecycle.intervals import DRAWS, Bootstrap, Interval, Resampler, bootstrap, units_of
from shopml.lifecycle.reference import REFERENCE_ARTIFACT, reference_profile
from shopml.lifecycle.tracking import configure, ensure_experiment, git_commit, model_name
from shopml.usecases.base import BaselineUnavailable, NotEnoughData

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from shopml.data.warehouse import Warehouse
    from shopml.runtime.scorers import Scorer
    from shopml.settings import Settings
    from shopml.usecases.base import LabelledData, Predictions, SplitPlan, UseCase

log = logging.getLogger("shopml.lifecycle")

__all__ = [
    "Baselines",
    "Evaluation",
    "Incumbent",
    "NotEnoughData",
    "Splits",
    "TrainConfig",
    "TrainResult",
    "Tuning",
    "apply_decision",
    "build_splits",
    "evaluate",
    "fit_baselines",
    "fit_model",
    "judge",
    "train_usecase",
    "tune",
]

Progress = Callable[[str], None]

TRAIN_KEY_TAG = "shopml.train_key"
OWNER_TAG = "shopml.owner"
# A RUNNING training on another host is taken for dead after this long (its process cannot be
# checked from here; a training takes minutes).
STALE_AFTER_S = 12 * 3600
MODEL = "model"
CHAMPION = "champion"
MIN_DRAWS = 50
BASELINE_PREFIX = "baseline."


def draws_for(cost_s: float, draws: int, budget_s: float) -> int:
    """Resamples for a bootstrap whose one resample took ``cost_s``: ``draws`` when they fit
    in ``budget_s``, else ``draws`` halved until they fit (never under MIN_DRAWS). Halving,
    not ``budget / cost``, so that the count (and so every interval and the gate's verdict)
    does not move with a few percent of timing noise between two runs of the same training:
    it changes only when the cost crosses a factor of two."""
    floor = min(MIN_DRAWS, draws)
    n = draws
    while n > floor and cost_s * n > budget_s:
        n = max(floor, n // 2)
    return n


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
    # Bootstrap resamples behind every interval the gate judges, and the seconds they may
    # take: a use case whose metrics are slow to compute (ranking, silhouette) gets fewer
    # resamples, never fewer than MIN_DRAWS.
    draws: int = DRAWS
    bootstrap_budget_s: float = 10.0


@dataclass
class TrainResult:
    usecase: str
    # promoted | challenger | registered (no alias moved) | unchanged | skipped | failed |
    # logged (not registered)
    status: str
    reason: str = ""
    version: str | None = None
    run_id: str | None = None
    metric: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)  # the main (first) baseline
    oracle: dict[str, float] | None = None
    champion: dict[str, float] | None = None
    decision: dict[str, Any] | None = None
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # baseline -> why not
    verdict: str | None = None
    cleaned: list[str] = field(default_factory=list)  # unfinished trainings cleaned up
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- steps ------------------------------------------------------------------------------------
@dataclass
class Splits:
    """The rows of one time split: training and validation labelled over the plan's training
    horizon, test rows over its evaluation horizon."""

    plan: SplitPlan
    train: LabelledData
    valid: LabelledData
    test: LabelledData

    @property
    def rows(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def build_splits(uc: UseCase, wh: Warehouse, plan: SplitPlan) -> Splits:
    """Labelled rows at every cutoff of ``plan`` (training rows concatenated)."""
    from shopml.usecases.base import LabelledData

    learner = uc.with_horizon(plan.train_horizon_days)
    parts = [d for d in (learner.dataset(wh, c) for c in plan.train_cutoffs) if len(d)]
    if not parts:
        raise NotEnoughData(
            f"no training rows before {plan.valid_cutoff:%Y-%m-%d} (the data may be too short "
            f"for a {plan.train_horizon_days}-day label horizon)"
        )
    train = LabelledData.concat(parts)
    valid = learner.dataset(wh, plan.valid_cutoff)
    test = uc.with_horizon(plan.horizon_days).dataset(wh, plan.test_cutoff)
    if not len(valid) or not len(test):
        raise NotEnoughData(
            f"no validation or test rows at {plan.valid_cutoff:%Y-%m-%d} / "
            f"{plan.test_cutoff:%Y-%m-%d}"
        )
    return Splits(plan, train, valid, test)


@dataclass
class Tuning:
    """The chosen hyper-parameters and the trial history (empty when nothing was tuned);
    ``completed`` trials of those asked for (fewer when the time limit stopped the search)."""

    params: dict[str, Any]
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    completed: int = 0
    asked: int = 0

    @property
    def cut_short(self) -> bool:
        """The time limit stopped the search before its trials: the model then depends on
        the machine's speed and load, and another run may choose other parameters."""
        return self.completed < self.asked


def tune(
    uc: UseCase,
    wh: Warehouse,
    train: LabelledData,
    valid: LabelledData,
    config: TrainConfig,
    previous: Scorer | None = None,
) -> Tuning:
    """Optuna search on the validation window (``uc`` at the training horizon)."""
    import optuna

    from shopml.usecases.base import UseCase

    has_space = type(uc).search_space is not UseCase.search_space
    if config.trials <= 0 or not has_space:
        return Tuning(uc.default_params())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if uc.gate.higher_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
    )
    for start in uc.starting_params():
        study.enqueue_trial({**uc.default_params(), **start})

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
        # 0: no time limit, the trials alone bound the search (reproducible on any machine).
        timeout=config.timeout_s or None,
        catch=(ValueError, FloatingPointError),
    )
    history = study.trials_dataframe()
    try:
        best = {**uc.default_params(), **study.best_params}
    except ValueError:  # every trial failed
        best = uc.default_params()
    finished = sum(t.state.is_finished() for t in study.trials)  # not the enqueued, unrun
    return Tuning(best, history, completed=finished, asked=config.trials)


def _previous(uc: UseCase, previous: Scorer | None) -> dict[str, Any]:
    return {"previous": previous} if uc.uses_previous else {}


def fit_model(
    uc: UseCase,
    wh: Warehouse,
    splits: Splits,
    params: Mapping[str, Any],
    seed: int,
    previous: Scorer | None = None,
) -> Scorer:
    """The model judged on the test window: ``final_fit`` of the use case at the evaluation
    horizon, told the (shorter) horizon its labels cover when the plan extrapolates."""
    plan = splits.plan
    extra = _previous(uc, previous)
    if plan.extrapolated:
        extra["label_horizon_days"] = plan.train_horizon_days
    return uc.with_horizon(plan.horizon_days).final_fit(
        wh, splits.train, splits.valid, params, seed, as_of=plan.test_cutoff, **extra
    )


@dataclass
class Baselines:
    """The baselines fitted at the test cutoff, and those that could not be, with why."""

    scorers: dict[str, Scorer]
    unavailable: dict[str, str] = field(default_factory=dict)


def fit_baselines(uc: UseCase, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Baselines:
    """Every baseline of the use case; one that cannot be fitted is recorded, never raised
    (a model is never lost because a baseline failed)."""
    try:
        made = dict(uc.baselines(wh, train, cutoff))
    except BaselineUnavailable as exc:
        return Baselines({}, {"baseline": str(exc) or type(exc).__name__})
    except Exception as exc:
        return Baselines({}, {"baseline": f"failed: {_one_line(exc)}"})
    scorers: dict[str, Scorer] = {}
    unavailable: dict[str, str] = {}
    for name, made_one in made.items():
        if isinstance(made_one, BaseException):
            unavailable[name] = str(made_one) or type(made_one).__name__
        else:
            scorers[name] = made_one
    return Baselines(scorers, unavailable)


@dataclass
class Incumbent:
    """A registered version a candidate is compared with (the champion) or may displace (the
    challenger): its version, the end of the data it was trained on, and its scorer."""

    alias: str
    version: str
    data_end: datetime | None = None
    scorer: Scorer | None = None
    error: str | None = None  # why the scorer could not be loaded


def incumbent(
    client: MlflowClient, uc: UseCase, alias: str, load: bool = False
) -> Incumbent | None:
    """The version behind ``alias`` (None without one), with its scorer when ``load``."""
    from shopml.runtime.pyfunc import load_scorer

    mv = registry.alias_version(client, uc.name, alias)
    if mv is None:
        return None
    end = (mv.tags or {}).get("shopml.data_end")
    found = Incumbent(alias, str(mv.version), _parse_time(end))
    if load:
        try:
            found.scorer = load_scorer(f"models:/{model_name(uc.name)}/{mv.version}")
        except Exception as exc:  # an unloadable champion must not block a new model
            found.error = _one_line(exc)
    return found


@dataclass
class Evaluation:
    """Every contender's answers on the same test rows, computed once with ``uc.predict``, so
    metrics, intervals and paired differences all reuse them."""

    data: LabelledData
    model: Predictions
    metrics: dict[str, float]
    baselines: dict[str, Predictions] = field(default_factory=dict)
    baseline_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    champion: Predictions | None = None
    champion_metrics: dict[str, float] | None = None
    champion_version: str | None = None
    oracle: dict[str, float] | None = None
    valid_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def main_baseline(self) -> dict[str, float]:
        """The first baseline that could be scored (the use case's main one when it could)."""
        return next(iter(self.baseline_metrics.values()), {})

    def answers(self) -> dict[str, Predictions]:
        """Every set of answers by bootstrap name: ``model``, ``champion``, ``baseline.<name>``."""
        out = {MODEL: self.model}
        if self.champion is not None:
            out[CHAMPION] = self.champion
        out.update({BASELINE_PREFIX + k: v for k, v in self.baselines.items()})
        return out

    def draws_within(self, uc: UseCase, draws: int, budget_s: float) -> int:
        """How many resamples fit in ``budget_s`` (at most ``draws``, at least MIN_DRAWS),
        timed on one real resample of every contender."""
        sampler = Resampler(units_of(uc, self.data), len(self.data), seed=1)
        answers = self.answers()
        started = time.perf_counter()
        rows = sampler.draw()
        part = self.data.take(rows)
        for p in answers.values():
            try:
                uc.score(part, p.take(rows))
            except (ValueError, ZeroDivisionError, FloatingPointError, IndexError):
                continue  # this resample's problem; the bootstrap leaves such draws out too
        return draws_for(time.perf_counter() - started, draws, budget_s)

    def bootstrap(self, uc: UseCase, draws: int = DRAWS, seed: int = 0) -> Bootstrap:
        """Paired resamples of every contender's metrics on the test rows."""
        return bootstrap(uc, self.data, self.answers(), draws=draws, seed=seed)


def evaluate(
    uc: UseCase,
    wh: Warehouse,
    scorer: Scorer,
    splits: Splits,
    baselines: Baselines,
    champion: Incumbent | None = None,
) -> Evaluation:
    """The model, every baseline, the oracle and the champion on the test rows.

    A baseline or champion that fails to answer is recorded (the baseline as unavailable,
    the champion with NaN metrics), never raised: only the model's own failure fails training.
    """
    target = uc.with_horizon(splits.plan.horizon_days)
    test = splits.test
    answers = target.predict(scorer, test)
    result = Evaluation(test, answers, target.score(test, answers))
    result.unavailable = dict(baselines.unavailable)
    for name, base in baselines.scorers.items():
        try:
            got = target.predict(base, test)
            result.baseline_metrics[name] = target.score(test, got)
            result.baselines[name] = got
        except Exception as exc:
            result.unavailable[name] = f"failed to answer: {_one_line(exc)}"
    if champion is not None:
        result.champion_version = champion.version
        result.champion_metrics = {uc.gate.metric: float("nan")}
        if champion.scorer is not None:
            try:
                got = target.predict(champion.scorer, test)
                result.champion_metrics = target.score(test, got)
                result.champion = got
            except Exception:  # an old champion that cannot score this window: no bar
                pass
    result.oracle = target.oracle_metrics(wh, test)
    if not splits.plan.extrapolated:
        # Validation rows are labelled over the training horizon: comparable only when the
        # model answers for that horizon too.
        result.valid_metrics = uc.with_horizon(splits.plan.train_horizon_days).evaluate(
            scorer, splits.valid
        )
    return result


def unit_name(uc: UseCase, data: LabelledData) -> str:
    """What the bootstrap resamples, in words (``customers``, ``orders``, ``rows``)."""
    column = uc.bootstrap_unit or ("customer_id" if "customer_id" in data.frame.columns else None)
    if column is None or column not in data.frame.columns:
        return "rows"
    return column.removesuffix("_id") + "s"


def evidence_of(uc: UseCase, evaluation: Evaluation, boot: Bootstrap) -> Evidence:
    """The gate's evidence from a bootstrap of :meth:`Evaluation.answers`."""
    return Evidence.from_bootstrap(
        boot,
        uc.gate.metric,
        model=MODEL,
        champion=CHAMPION if evaluation.champion is not None else None,
        baselines={k: BASELINE_PREFIX + k for k in evaluation.baselines},
        unavailable=evaluation.unavailable,
        unit=unit_name(uc, evaluation.data),
    )


def held_back_reason(
    uc: UseCase, data_end: datetime, other: Incumbent | None, as_of: datetime | None
) -> str | None:
    """Why a candidate trained on data ending ``data_end`` may not replace ``other``: it was
    trained on later data. None when it may."""
    if other is None or other.data_end is None or data_end >= other.data_end:
        return None
    when = f"as of {as_of:%Y-%m-%d}" if as_of is not None else f"on data to {data_end:%Y-%m-%d}"
    return (
        f"trained {when}, before the data {other.alias} v{other.version} was trained on "
        f"(to {other.data_end:%Y-%m-%d}): a training on older data never replaces it; "
        f"`shopml promote {uc.name} VERSION` does so explicitly"
    )


def judge(
    uc: UseCase,
    evaluation: Evaluation,
    sanity: SanityReport,
    boot: Bootstrap,
    *,
    held_back: str | None = None,
) -> GateDecision:
    """The gate's decision on the evaluation's evidence (every metric with its interval)."""
    evidence = evidence_of(uc, evaluation, boot)
    if evaluation.champion is None and evaluation.champion_metrics is not None:
        # A champion exists but could not answer: the gate knows it, with no bar to pass.
        evidence.champion = {
            k: _point(v, boot.n, boot.rows) for k, v in evaluation.champion_metrics.items()
        }
    return decide(
        uc.gate,
        evidence,
        sanity,
        champion_version=evaluation.champion_version,
        held_back=held_back,
    )


# -- unfinished trainings ---------------------------------------------------------------------
def _process_start(pid: int) -> str:
    # The start time (clock ticks since boot) tells a live process from a later one that
    # reused its id; '' where /proc is not available.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_tag() -> str:
    """Who runs this training: host, process id and the process's start time."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def _alive(owner: str | None, started_ms: int | None) -> bool:
    """Whether the training process behind a RUNNING run is still alive."""
    parts = (owner or "").rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # no owner recorded: an older shopml's run, or not ours to keep
    host, pid, start = parts[0], int(parts[1]), parts[2]
    if host != socket.gethostname():
        return time.time() - (started_ms or 0) / 1000 < STALE_AFTER_S
    if pid == os.getpid():
        return True  # this very process: a training in another thread
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return not start or _process_start(pid) == start


def _running(client: MlflowClient, experiment_id: str, marker: str) -> tuple[set[str], set[str]]:
    """Ids of the RUNNING runs tagged ``marker`` whose process is gone, and of those alive."""
    dead: set[str] = set()
    live: set[str] = set()
    for run in client.search_runs(
        [experiment_id], "attributes.status = 'RUNNING'", max_results=1000
    ):
        if marker not in run.data.tags:
            continue  # not shopml's (someone's own run in the experiment)
        if _alive(run.data.tags.get(OWNER_TAG), run.info.start_time):
            live.add(run.info.run_id)
        else:
            dead.add(run.info.run_id)
    return dead, live


def fail_dead_runs(client: MlflowClient, experiment_id: str, marker: str) -> list[str]:
    """Mark FAILED the RUNNING runs tagged ``marker`` whose process died; returns what was
    done, in words."""
    dead, _ = _running(client, experiment_id, marker)
    for run_id in sorted(dead):
        client.set_terminated(run_id, status="FAILED")
    return [f"marked run {run_id} FAILED (its process was interrupted)" for run_id in sorted(dead)]


def clean_up_unfinished(client: MlflowClient, uc: UseCase, experiment_id: str) -> list[str]:
    """Finish what a killed training left behind; returns what was done, in words.

    A training whose process died (``kill -9``, a lost machine) leaves its MLflow run RUNNING
    and maybe a model version without a gate verdict. Every such run is marked FAILED and every
    such version deleted (unless an alias already points at it: then the registry reached its
    new state, and only the run is closed). Trainings still running elsewhere are left alone.
    """
    from mlflow.exceptions import MlflowException

    done: list[str] = []
    dead, live = _running(client, experiment_id, TRAIN_KEY_TAG)
    name = model_name(uc.name)
    try:
        versions = list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        versions = []
    for mv in versions:
        if mv.run_id in live:
            continue
        unfinished = "shopml.gate.verdict" not in (mv.tags or {}) or mv.run_id in dead
        if unfinished and not list(getattr(mv, "aliases", []) or []):
            client.delete_model_version(name, str(mv.version))
            done.append(f"deleted v{mv.version}, left unfinished by an interrupted training")
    for run_id in sorted(dead):
        client.set_terminated(run_id, status="FAILED")
        done.append(f"marked run {run_id} FAILED (its training was interrupted)")
    return done


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
    """The result of the latest complete training with the same key, or None (run after
    :func:`clean_up_unfinished`, so every version left has its gate verdict)."""
    from mlflow.exceptions import MlflowException

    name = model_name(uc.name)
    try:
        versions = list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        versions = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = dict(mv.tags or {})
        if tags.get(TRAIN_KEY_TAG) != key or "shopml.gate.verdict" not in tags:
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
            verdict=tags["shopml.gate.verdict"],
        )
    return None


# -- MLflow -----------------------------------------------------------------------------------
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


def _flat_metrics(prefix: str, metrics: Mapping[str, float] | None) -> dict[str, float]:
    if not metrics:
        return {}
    return {
        f"{prefix}{k}": float(v)
        for k, v in metrics.items()
        if v is not None and math.isfinite(float(v))
    }


def interval_metrics(prefix: str, boot: Bootstrap, name: str) -> dict[str, float]:
    """``<prefix><metric>_low`` / ``_high`` for every metric of ``name`` with an interval."""
    out: dict[str, float] = {}
    for metric, iv in boot.intervals(name).items():
        if iv.defined:
            out[f"{prefix}{metric}_low"] = iv.low
            out[f"{prefix}{metric}_high"] = iv.high
    return out


def log_evaluation(
    uc: UseCase,
    splits: Splits,
    evaluation: Evaluation,
    boot: Bootstrap,
    params: Mapping[str, Any],
    config: TrainConfig,
) -> None:
    """Into the active run: the split, the rows, parameters, and every contender's metrics
    with their intervals (shared by training and backtests)."""
    import mlflow

    plan = splits.plan
    mlflow.log_params({f"param.{k}": v for k, v in params.items()})
    mlflow.log_params(
        {
            "cutoff.test": plan.test_cutoff.isoformat(),
            "cutoff.valid": plan.valid_cutoff.isoformat(),
            "cutoff.train": ",".join(c.date().isoformat() for c in plan.train_cutoffs),
            "horizon_days": plan.horizon_days,
            "train_horizon_days": plan.train_horizon_days,
            "rows.train": len(splits.train),
            "rows.valid": len(splits.valid),
            "rows.test": len(splits.test),
            "n_features": len(splits.train.features),
            "tuning.trials": config.trials,
            "tuning.timeout_s": config.timeout_s,
            "seed": config.seed,
            "bootstrap.draws": len(next(iter(boot.replicates.values()), [])),
        }
    )
    metrics = {
        **_flat_metrics("test_", evaluation.metrics),
        **interval_metrics("test_", boot, MODEL),
        **_flat_metrics("valid_", evaluation.valid_metrics),
        **_flat_metrics("oracle_", evaluation.oracle),
        **_flat_metrics("champion_", evaluation.champion_metrics),
        "test_units": float(boot.n),
    }
    main = next(iter(evaluation.baseline_metrics), None)
    for name, values in evaluation.baseline_metrics.items():
        if name == main:
            metrics.update(_flat_metrics("baseline_", values))
        metrics.update(_flat_metrics(f"baseline.{name}_", values))
        diff = boot.difference(MODEL, BASELINE_PREFIX + name, uc.gate.metric)
        if math.isfinite(diff.estimate):
            metrics[f"diff.{name}_{uc.gate.metric}"] = diff.estimate
        if diff.defined:
            metrics[f"diff.{name}_{uc.gate.metric}_low"] = diff.low
            metrics[f"diff.{name}_{uc.gate.metric}_high"] = diff.high
    mlflow.log_metrics(metrics)
    for name, why in evaluation.unavailable.items():
        mlflow.set_tag(f"shopml.baseline_unavailable.{name}", why[:4900])
    mlflow.log_dict(plan.to_dict(), "split.json")


@dataclass
class LoggedRun:
    run_id: str
    model_uri: str


def log_run(
    uc: UseCase,
    wh: Warehouse,
    splits: Splits,
    tuning: Tuning,
    scorer: Scorer,
    evaluation: Evaluation,
    boot: Bootstrap,
    sanity: SanityReport,
    decision: GateDecision,
    config: TrainConfig,
) -> LoggedRun:
    """Log the training into the active MLflow run: data, parameters, metrics with intervals,
    the gate's verdict, tuning history, plots, the monitoring reference and the model."""
    import mlflow
    from mlflow.models import infer_signature

    from shopml.runtime.pyfunc import SCORER_ARTIFACT, ShopmlModel, write_scorer

    run = mlflow.active_run()
    assert run is not None, "log_run needs an active MLflow run"
    dataset_version = wh.dataset_version(list(uc.required_tables))
    source = f"{wh.path}#{','.join(uc.required_tables)}"
    log_evaluation(uc, splits, evaluation, boot, tuning.params, config)
    mlflow.log_param("tuning.trials_completed", tuning.completed)
    if tuning.cut_short:
        mlflow.set_tag("shopml.tuning_cut_short", f"{tuning.completed} of {tuning.asked} trials")
    mlflow.log_metric("sanity_latency_ms", sanity.latency_ms)
    if sanity.wall_ms is not None:
        mlflow.log_metric("sanity_latency_wall_ms", sanity.wall_ms)
    if decision.n is not None:
        mlflow.log_metric("gate_n", decision.n)
    mlflow.set_tags(
        {
            "shopml.gate.verdict": decision.verdict,
            "shopml.gate.reasons": json.dumps(decision.reasons)[:4900],
        }
    )
    mlflow.log_dict(decision.to_dict(), "gate.json")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for split_name, data in (
            ("train", splits.train),
            ("valid", splits.valid),
            ("test", splits.test),
        ):
            digest = f"{dataset_version}-{split_name}-{min(data.cutoffs):%Y%m%d}"
            _log_frame_input(data.frame, split_name, digest[:36], source)
        for table, version in wh.versions().items():
            if table in uc.required_tables:
                mlflow.set_tag(f"shopml.data_version.{table}", version)
        history = tuning.history
        if not history.empty:
            history.to_csv(tmp / "tuning_trials.csv", index=False)
            mlflow.log_artifact(str(tmp / "tuning_trials.csv"), "tuning")
            for row in history.itertuples():
                if isinstance(row.value, float) and math.isfinite(row.value):
                    mlflow.log_metric("tuning_value", row.value, step=int(row.number))
        for plot in uc.plots(scorer, splits.test, tmp / "plots"):
            mlflow.log_artifact(str(plot), "plots")
        reference = reference_profile(
            scorer,
            {"train": splits.train, "valid": splits.valid, "test": splits.test},
            seed=config.seed,
        )
        if not reference.empty:
            ref_path = tmp / Path(REFERENCE_ARTIFACT).name
            reference.to_parquet(ref_path, index=False)
            mlflow.log_artifact(str(ref_path), str(Path(REFERENCE_ARTIFACT).parent))
        scorer_path = write_scorer(scorer, tmp / "scorer.pkl")
        example = uc.input_example(splits.test)
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
    return LoggedRun(run.info.run_id, model_info.model_uri)


def register(
    client: MlflowClient,
    uc: UseCase,
    logged: LoggedRun,
    key: str,
    evaluation: Evaluation,
    plan: SplitPlan,
    dataset_version: str,
) -> str:
    """Register the logged model, tagged with its training key (so an interrupted training is
    recognised), its metrics and the data it saw; returns the new version."""
    import mlflow

    name = model_name(uc.name)
    registered = mlflow.register_model(logged.model_uri, name, tags={TRAIN_KEY_TAG: key})
    version = str(registered.version)
    checkpoint("registered")
    tags = {
        "shopml.metrics": json.dumps(_rounded(evaluation.metrics)),
        "shopml.baseline_metrics": json.dumps(_rounded(evaluation.main_baseline)),
        "shopml.cutoff": plan.test_cutoff.isoformat(),
        "shopml.dataset_version": dataset_version,
        "shopml.data_end": plan.data_end.isoformat(),
        "shopml.horizon_days": str(plan.horizon_days),
    }
    if evaluation.unavailable:
        tags["shopml.baselines_unavailable"] = json.dumps(evaluation.unavailable)[:4900]
    for tag, value in tags.items():
        client.set_model_version_tag(name, version, tag, value)
    return version


def apply_decision(
    client: MlflowClient,
    usecase: str,
    version: str,
    decision: GateDecision,
    challenger: Incumbent | None = None,
    data_end: datetime | None = None,
) -> str:
    """Record the decision on the version and move the aliases it implies; returns the status
    (``promoted``, ``challenger``, or ``registered`` when no alias moved: a version not
    promoted does not displace a challenger trained on later data)."""
    registry.record_decision(client, usecase, version, decision)
    if decision.promote:
        registry.set_champion(client, usecase, version, reason=decision.summary(), manual=False)
        return "promoted"
    newer = (
        challenger is not None
        and challenger.data_end is not None
        and data_end is not None
        and data_end < challenger.data_end
    )
    if newer:
        return "registered"
    registry.set_challenger(client, usecase, version)
    return "challenger"


def write_card(
    uc: UseCase,
    version: str,
    scorer: Scorer,
    evaluation: Evaluation,
    boot: Bootstrap,
    decision: GateDecision,
    plan: SplitPlan,
    wh: Warehouse,
    splits: Splits,
    config: TrainConfig,
) -> None:
    """The version's model card, on its run (a card that cannot be made is logged, never a
    failed training)."""
    from shopml.lifecycle.card import build_card, log_card

    target = uc.with_horizon(plan.horizon_days)
    try:
        card = build_card(
            target,
            version,
            list(scorer.outputs),
            evaluation.data,
            evaluation.model,
            boot,
            decision,
            plan,
            dataset_version=wh.dataset_version(list(uc.required_tables)),
            data_source=wh.get_meta("source") or "unknown",
            rows=splits.rows,
            oracle=evaluation.oracle,
            unavailable=evaluation.unavailable,
            model=MODEL,
            baseline_prefix=BASELINE_PREFIX,
            seed=config.seed,
        )
        log_card(card)
    except Exception:
        log.exception("%s v%s: the model card could not be made", uc.name, version)


def checkpoint(name: str) -> None:
    """A named point of a training where a test can make the process wait, to kill it there
    (``SHOPML_TEST_PAUSE_AT=<name>``; the marker file ``SHOPML_TEST_PAUSE_FILE`` is written
    when it arrives)."""
    if os.environ.get("SHOPML_TEST_PAUSE_AT") != name:
        return
    marker = os.environ.get("SHOPML_TEST_PAUSE_FILE")
    if marker:
        Path(marker).write_text(f"{name} {os.getpid()}")
    time.sleep(float(os.environ.get("SHOPML_TEST_PAUSE_S", "600")))


# -- the whole training -----------------------------------------------------------------------
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
        return TrainResult(uc.name, "failed", _one_line(exc), seconds=time.perf_counter() - started)


def _train(
    uc: UseCase,
    wh: Warehouse,
    settings: Settings,
    config: TrainConfig,
    say: Progress,
    started: float,
) -> TrainResult:
    import mlflow

    client = configure(settings)
    experiment_id = ensure_experiment(client, settings, uc.name)
    key = training_key(uc, wh, config)
    cleaned = clean_up_unfinished(client, uc, experiment_id)
    if config.register and not config.force:
        reused = reuse_previous_training(client, uc, key)
        if reused is not None:
            reused.seconds = time.perf_counter() - started
            reused.cleaned = cleaned
            return reused
    steps: dict[str, float] = {}
    lap = _stopwatch(steps)
    plan = uc.split(wh, end=config.as_of)
    say(f"{uc.name}: building datasets")
    splits = build_splits(uc, wh, plan)
    champion = incumbent(client, uc, registry.CHAMPION, load=True)
    challenger = incumbent(client, uc, registry.CHALLENGER)
    previous = champion.scorer if champion is not None and uc.uses_previous else None
    lap("data")
    limit = f"{config.timeout_s:g} s" if config.timeout_s else "no time limit"
    say(f"{uc.name}: tuning ({config.trials} trials, {limit})")
    learner = uc.with_horizon(plan.train_horizon_days)
    tuning = tune(learner, wh, splits.train, splits.valid, config, previous)
    if tuning.cut_short:
        say(
            f"{uc.name}: tuning stopped at its {config.timeout_s:g} s limit after "
            f"{tuning.completed} of {tuning.asked} trials: another run (or machine) may choose "
            "other parameters; a timeout of 0 tunes by trials alone (reproducible)"
        )
    lap("tune")
    say(f"{uc.name}: fitting and evaluating")
    scorer = fit_model(uc, wh, splits, tuning.params, config.seed, previous)
    lap("fit")
    baselines = fit_baselines(
        uc.with_horizon(plan.horizon_days), wh, splits.train, plan.test_cutoff
    )
    evaluation = evaluate(uc, wh, scorer, splits, baselines, champion)
    sanity = sanity_checks(scorer, splits.test, uc.gate)
    lap("evaluate")
    target = uc.with_horizon(plan.horizon_days)
    draws = evaluation.draws_within(target, config.draws, config.bootstrap_budget_s)
    say(f"{uc.name}: judging ({draws} bootstrap resamples)")
    boot = evaluation.bootstrap(target, draws, config.seed)
    lap("gate")
    decision = judge(
        uc,
        evaluation,
        sanity,
        boot,
        held_back=held_back_reason(uc, plan.data_end, champion, config.as_of),
    )
    decision.extra["draws"] = draws
    result = TrainResult(
        uc.name,
        "challenger",
        metric=uc.gate.metric,
        metrics=evaluation.metrics,
        baseline=evaluation.main_baseline,
        oracle=evaluation.oracle,
        champion=evaluation.champion_metrics,
        rows=splits.rows,
        baselines=evaluation.baseline_metrics,
        unavailable=evaluation.unavailable,
        cleaned=cleaned,
        steps=steps,
    )
    say(f"{uc.name}: logging to MLflow")
    dataset_version = wh.dataset_version(list(uc.required_tables))
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{uc.name}-{plan.test_cutoff:%Y%m%d}"
    ) as run:
        mlflow.set_tags(
            {
                "shopml.usecase": uc.name,
                "shopml.kind": uc.kind,
                "mlflow.source.git.commit": git_commit(),
                "shopml.git_commit": git_commit(),
                "shopml.dataset_version": dataset_version,
                "shopml.data_source": wh.get_meta("source") or "unknown",
                TRAIN_KEY_TAG: key,
                OWNER_TAG: owner_tag(),
            }
        )
        result.run_id = run.info.run_id
        logged = log_run(uc, wh, splits, tuning, scorer, evaluation, boot, sanity, decision, config)
        if not config.register:
            result.status = "logged"
        else:
            # Registered, judged and aliased inside the run: a run that ends FINISHED is a
            # complete training; one killed before that is cleaned up by the next training.
            version = register(client, uc, logged, key, evaluation, plan, dataset_version)
            result.version = version
            result.status = apply_decision(
                client, uc.name, version, decision, challenger, plan.data_end
            )
            write_card(uc, version, scorer, evaluation, boot, decision, plan, wh, splits, config)
    lap("mlflow")
    result.reason = decision.summary()
    result.decision = decision.to_dict()
    result.verdict = decision.verdict
    result.seconds = time.perf_counter() - started
    return result


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


# -- small helpers ----------------------------------------------------------------------------
def _stopwatch(into: dict[str, float]) -> Callable[[str], None]:
    """``lap(name)`` records the seconds since the previous lap under ``name``."""
    last = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        into[name] = round(now - last[0], 2)
        last[0] = now

    return lap


def _one_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _rounded(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items() if math.isfinite(float(v))}


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=None) if parsed.tzinfo is not None else parsed


def _point(value: float, n: int, rows: int) -> Interval:
    return Interval(float(value), float(value), float(value), n, rows)
