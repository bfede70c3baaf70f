"""Honest backtests: train strictly before a cutoff, answer at it, judge over the horizon after.

For each cutoff (one origin; several make a rolling-origin backtest) the use case is trained
exactly as :func:`shopml.lifecycle.train.train_usecase` trains it, but with the test window
placed at the cutoff: training and validation rows, tuning included, use only what is known
before it; every baseline is fitted at the cutoff on the same history; the model and every
baseline answer for the same test rows, and each metric gets a bootstrap interval, with the
paired difference model - baseline on the decisive metric.

A backtest logs to its own MLflow experiment (``shopml-<usecase>-backtest``) and never logs a
model, registers a version or moves an alias: what serves production is untouched.

Python::

    from shopml.lifecycle.backtest import backtest
    result = backtest(get_usecase("clv"), wh, [datetime(1997, 10, 1)], horizon_days=273)
    result.origins[0].model["mae"]            # Interval(estimate, low, high, n, ...)
    result.origins[0].differences["bgnbd"]    # paired: model minus baseline, decisive metric
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shopml.lifecycle.intervals import Interval
from shopml.lifecycle.train import (
    BASELINE_PREFIX,
    MODEL,
    OWNER_TAG,
    TrainConfig,
    build_splits,
    evaluate,
    fail_dead_runs,
    fit_baselines,
    fit_model,
    log_evaluation,
    owner_tag,
    tune,
    unit_name,
)
from shopml.usecases.base import NotEnoughData

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse
    from shopml.settings import Settings
    from shopml.usecases.base import UseCase

Progress = Callable[[str], None]
PURPOSE = "backtest"
BACKTEST_TAG = "shopml.backtest"


@dataclass
class Origin:
    """One cutoff of a backtest: what was trained, and how every answer did after it.

    ``status`` is ``ok``, ``skipped`` (the data cannot hold this cutoff and horizon: the reason
    says what was needed) or ``failed`` (the model itself failed: the reason is the error).
    ``differences`` are paired intervals of the model's decisive metric minus each baseline's
    (positive means a higher metric for the model, whichever way is better); ``paired`` has
    the same for every metric (baseline -> metric -> interval).
    """

    cutoff: datetime
    status: str
    reason: str = ""
    horizon_days: int = 0
    train_horizon_days: int = 0
    train_cutoffs: list[datetime] = field(default_factory=list)
    valid_cutoff: datetime | None = None
    rows: dict[str, int] = field(default_factory=dict)
    n: int = 0  # independent units on the test window
    unit: str = "rows"
    draws: int = 0
    model: dict[str, Interval] = field(default_factory=dict)
    baselines: dict[str, dict[str, Interval]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    differences: dict[str, Interval] = field(default_factory=dict)
    paired: dict[str, dict[str, Interval]] = field(default_factory=dict)
    oracle: dict[str, float] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    seconds: float = 0.0

    def verdict(self, baseline: str, higher_is_better: bool) -> str:
        """``better``, ``worse`` or ``unclear``: the model against ``baseline`` on this window,
        by the paired interval."""
        diff = self.differences.get(baseline)
        if diff is None or not diff.defined:
            return "unclear"
        if diff.above(0.0):
            return "better" if higher_is_better else "worse"
        if diff.below(0.0):
            return "worse" if higher_is_better else "better"
        return "unclear"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "status": self.status,
            "reason": self.reason,
            "horizon_days": self.horizon_days,
            "train_horizon_days": self.train_horizon_days,
            "train_cutoffs": [c.isoformat() for c in self.train_cutoffs],
            "valid_cutoff": self.valid_cutoff.isoformat() if self.valid_cutoff else None,
            "rows": self.rows,
            "n": self.n,
            "unit": self.unit,
            "draws": self.draws,
            "model": {k: v.to_dict() for k, v in self.model.items()},
            "baselines": {
                name: {k: v.to_dict() for k, v in metrics.items()}
                for name, metrics in self.baselines.items()
            },
            "unavailable": self.unavailable,
            "differences": {k: v.to_dict() for k, v in self.differences.items()},
            "paired": {
                name: {k: v.to_dict() for k, v in metrics.items()}
                for name, metrics in self.paired.items()
            },
            "oracle": self.oracle,
            "params": self.params,
            "run_id": self.run_id,
            "seconds": round(self.seconds, 1),
        }


@dataclass
class Comparison:
    """The model against one baseline over every origin that could compare them."""

    baseline: str
    origins: int
    better: int  # origins where the paired interval says the model is better
    worse: int
    unclear: int
    mean_difference: float  # model minus baseline, averaged over origins

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["mean_difference"] = _finite(self.mean_difference)
        return out


@dataclass
class Backtest:
    """A (rolling-origin) backtest of one use case: every origin, and a summary over them."""

    usecase: str
    metric: str
    higher_is_better: bool
    horizon_days: int
    origins: list[Origin]
    experiment: str | None = None
    run_id: str | None = None

    @property
    def completed(self) -> list[Origin]:
        return [o for o in self.origins if o.status == "ok"]

    def mean(self, answer: str, metric: str | None = None) -> float:
        """The mean over completed origins of ``answer``'s metric (``model`` or a baseline)."""
        metric = metric or self.metric
        values = []
        for o in self.completed:
            source = o.model if answer == MODEL else o.baselines.get(answer, {})
            iv = source.get(metric)
            if iv is not None and math.isfinite(iv.estimate):
                values.append(iv.estimate)
        return float(sum(values) / len(values)) if values else math.nan

    def comparisons(self) -> list[Comparison]:
        """The model against each baseline, over the origins where both answered."""
        names = list(dict.fromkeys(n for o in self.completed for n in o.differences))
        out = []
        for name in names:
            seen = [o for o in self.completed if name in o.differences]
            verdicts = [o.verdict(name, self.higher_is_better) for o in seen]
            diffs = [
                o.differences[name].estimate
                for o in seen
                if math.isfinite(o.differences[name].estimate)
            ]
            out.append(
                Comparison(
                    name,
                    len(seen),
                    verdicts.count("better"),
                    verdicts.count("worse"),
                    verdicts.count("unclear"),
                    float(sum(diffs) / len(diffs)) if diffs else math.nan,
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        answers = [MODEL, *dict.fromkeys(n for o in self.completed for n in o.baselines)]
        return {
            "usecase": self.usecase,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "horizon_days": self.horizon_days,
            "experiment": self.experiment,
            "run_id": self.run_id,
            "origins": [o.to_dict() for o in self.origins],
            "summary": {
                "completed": len(self.completed),
                "mean": {a: _finite(self.mean(a)) for a in answers},
                "comparisons": [c.to_dict() for c in self.comparisons()],
            },
        }


def backtest(
    uc: UseCase,
    wh: Warehouse,
    cutoffs: Sequence[datetime],
    *,
    horizon_days: int | None = None,
    config: TrainConfig | None = None,
    settings: Settings | None = None,
    track: bool = True,
    progress: Progress | None = None,
) -> Backtest:
    """Backtest ``uc`` at each cutoff over ``horizon_days`` (the use case's own by default).

    Never raises for a cutoff the data cannot hold or a model that fails: that origin is
    reported ``skipped`` or ``failed`` with its reason. With ``track`` the runs go to the
    ``shopml-<usecase>-backtest`` MLflow experiment of ``settings`` (the process settings by
    default); nothing is registered either way.
    """
    config = config or TrainConfig(register=False)
    say = progress or (lambda msg: None)
    target = uc.with_horizon(horizon_days)
    result = Backtest(
        uc.name,
        uc.gate.metric,
        uc.gate.higher_is_better,
        target.horizon_days,
        [],
    )
    skip = uc.skip_reason(wh)
    if skip:
        result.origins = [Origin(c, "skipped", skip) for c in cutoffs]
        return result
    if not track:
        for cutoff in cutoffs:
            result.origins.append(_origin(target, wh, cutoff, config, say))
        return result

    import mlflow

    from shopml.lifecycle.tracking import configure, ensure_experiment, experiment_name

    if settings is None:
        from shopml.settings import get_settings

        settings = get_settings()
    client = configure(settings)
    experiment_id = ensure_experiment(client, settings, uc.name, PURPOSE)
    fail_dead_runs(client, experiment_id, BACKTEST_TAG)
    result.experiment = experiment_name(uc.name, PURPOSE)
    tags = {
        "shopml.usecase": uc.name,
        BACKTEST_TAG: "true",
        OWNER_TAG: owner_tag(),
        "shopml.dataset_version": wh.dataset_version(list(uc.required_tables)),
    }
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{uc.name}-backtest-{target.horizon_days}d",
        tags=tags,
    ) as parent:
        result.run_id = parent.info.run_id
        mlflow.log_params(
            {
                "cutoffs": ",".join(f"{c:%Y-%m-%d}" for c in cutoffs)[:6000],
                "horizon_days": target.horizon_days,
                "tuning.trials": config.trials,
                "tuning.timeout_s": config.timeout_s,
                "seed": config.seed,
            }
        )
        for cutoff in cutoffs:
            with mlflow.start_run(
                experiment_id=experiment_id,
                run_name=f"{uc.name}-{cutoff:%Y%m%d}",
                nested=True,
                tags=tags,
            ) as child:
                origin = _origin(target, wh, cutoff, config, say, log=True)
                origin.run_id = child.info.run_id
                mlflow.set_tag("shopml.backtest.status", origin.status)
                if origin.reason:
                    mlflow.set_tag("shopml.backtest.reason", origin.reason[:4900])
            result.origins.append(origin)
        for comparison in result.comparisons():
            mlflow.log_metrics(
                {
                    f"origins_better.{comparison.baseline}": comparison.better,
                    f"origins_worse.{comparison.baseline}": comparison.worse,
                }
            )
        mean = result.mean(MODEL)
        if math.isfinite(mean):
            mlflow.log_metric(f"mean_test_{result.metric}", mean)
    return result


def _origin(
    uc: UseCase,
    wh: Warehouse,
    cutoff: datetime,
    config: TrainConfig,
    say: Progress,
    log: bool = False,
) -> Origin:
    """Train before ``cutoff`` and judge every answer over the horizon after it."""
    started = time.perf_counter()
    origin = Origin(cutoff, "ok", horizon_days=uc.horizon_days)
    try:
        plan = uc.split_at(wh, cutoff)
        origin.train_horizon_days = plan.train_horizon_days
        origin.train_cutoffs = list(plan.train_cutoffs)
        origin.valid_cutoff = plan.valid_cutoff
        say(f"{uc.name} at {cutoff:%Y-%m-%d}: building datasets")
        splits = build_splits(uc, wh, plan)
        origin.rows = splits.rows
        say(f"{uc.name} at {cutoff:%Y-%m-%d}: tuning")
        learner = uc.with_horizon(plan.train_horizon_days)
        tuning = tune(learner, wh, splits.train, splits.valid, config)
        origin.params = dict(tuning.params)
        say(f"{uc.name} at {cutoff:%Y-%m-%d}: fitting the model and the baselines")
        scorer = fit_model(uc, wh, splits, tuning.params, config.seed)
        baselines = fit_baselines(uc, wh, splits.train, cutoff)
        evaluation = evaluate(uc, wh, scorer, splits, baselines)
    except NotEnoughData as exc:
        origin.status, origin.reason = "skipped", str(exc)
        origin.seconds = time.perf_counter() - started
        return origin
    except Exception as exc:
        origin.status, origin.reason = "failed", f"{type(exc).__name__}: {exc}"
        origin.seconds = time.perf_counter() - started
        return origin
    draws = evaluation.draws_within(uc, config.draws, config.bootstrap_budget_s * 3)
    say(f"{uc.name} at {cutoff:%Y-%m-%d}: {draws} bootstrap resamples")
    boot = evaluation.bootstrap(uc, draws, config.seed)
    origin.n, origin.unit, origin.draws = boot.n, unit_name(uc, evaluation.data), draws
    origin.model = boot.intervals(MODEL)
    origin.unavailable = dict(evaluation.unavailable)
    for name in evaluation.baselines:
        origin.baselines[name] = boot.intervals(BASELINE_PREFIX + name)
        origin.paired[name] = {
            metric: boot.difference(MODEL, BASELINE_PREFIX + name, metric)
            for metric in boot.metrics(MODEL)
        }
        origin.differences[name] = origin.paired[name].get(
            uc.gate.metric, boot.difference(MODEL, BASELINE_PREFIX + name, uc.gate.metric)
        )
    origin.oracle = evaluation.oracle
    if log:
        log_evaluation(uc, splits, evaluation, boot, tuning.params, config)
    origin.seconds = time.perf_counter() - started
    return origin


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
