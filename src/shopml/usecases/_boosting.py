"""LightGBM fitting shared by the use cases that learn with gradient boosting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from shopml.runtime.scorers import BoosterScorer
from shopml.usecases.base import NotEnoughData

if TYPE_CHECKING:
    import optuna

    from shopml.usecases.base import LabelledData

DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_boost_round": 400,
}


class BoostedParams:
    """Mixin for use cases that learn with LightGBM: the shared defaults (with the use case's
    ``booster_overrides``) and the shared search space."""

    booster_overrides: ClassVar[dict[str, Any]] = {}

    def default_params(self) -> dict[str, Any]:
        return {**DEFAULTS, **self.booster_overrides}

    def search_space(self, trial: optuna.Trial) -> dict[str, Any]:
        return search_space(trial)


def search_space(trial: optuna.Trial) -> dict[str, Any]:
    """A compact space that matters for tabular commerce data."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.15, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 96, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 400, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }


def train_booster(
    x: np.ndarray,
    y: np.ndarray,
    params: Mapping[str, Any],
    objective: str,
    x_valid: np.ndarray | None = None,
    y_valid: np.ndarray | None = None,
    seed: int = 0,
    weight: np.ndarray | None = None,
    init_score: np.ndarray | None = None,
    init_score_valid: np.ndarray | None = None,
    **extra: Any,
) -> Any:
    """Train one booster with early stopping on the validation rows when given.

    ``init_score`` (and ``init_score_valid``) are per-row offsets on the objective's raw
    scale (the log of an exposure or a prior mean for a log-link objective): the trees learn
    the correction on top of them, and prediction adds them back (``raw_score=True``)."""
    import lightgbm as lgb

    p = {**DEFAULTS, **params}
    rounds = int(p.pop("num_boost_round"))
    lgb_params = {
        **p,
        **extra,
        "objective": objective,
        "seed": seed,
        "verbosity": -1,
        "num_threads": 1,
        "deterministic": True,
        "force_col_wise": True,
    }
    dtrain = lgb.Dataset(x, label=y, weight=weight, init_score=init_score, free_raw_data=False)
    callbacks: list[Any] = []
    valid_sets = []
    if x_valid is not None and y_valid is not None and len(y_valid):
        valid_sets = [
            lgb.Dataset(x_valid, label=y_valid, init_score=init_score_valid, reference=dtrain)
        ]
        callbacks.append(lgb.early_stopping(30, verbose=False))
    return lgb.train(
        lgb_params, dtrain, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks
    )


def fit_booster_scorer(
    train: LabelledData,
    valid: LabelledData | None,
    params: Mapping[str, Any],
    objectives: list[tuple[str, dict[str, Any]]],
    outputs: list[str],
    label: str | None = None,
    seed: int = 0,
    kind: str = "value",
    clip: tuple[float | None, float | None] = (None, None),
) -> BoosterScorer:
    """One booster per (objective, extra params); their outputs in ``outputs`` order."""
    label = label or train.labels[0]
    scorer = BoosterScorer(features=list(train.features), outputs=outputs, kind=kind, clip=clip)
    x = scorer.to_matrix(train.frame)
    y = train.frame[label].to_numpy(dtype="float64")
    check_learnable(y, label)
    xv = scorer.to_matrix(valid.frame) if valid is not None else None
    yv = valid.frame[label].to_numpy(dtype="float64") if valid is not None else None
    for objective, extra in objectives:
        booster = train_booster(x, y, params, objective, xv, yv, seed=seed, **extra)
        scorer.models.append(booster.model_to_string(num_iteration=booster.best_iteration or -1))
    scorer.meta["feature_importance"] = feature_importance(scorer)
    return scorer


def refit_booster_scorer(
    train: LabelledData,
    valid: LabelledData | None,
    params: Mapping[str, Any],
    objectives: list[tuple[str, dict[str, Any]]],
    outputs: list[str],
    label: str | None = None,
    seed: int = 0,
    kind: str = "value",
    clip: tuple[float | None, float | None] = (None, None),
) -> BoosterScorer:
    """The final model on every labelled row: each booster's number of rounds is found by
    early stopping on ``valid`` (as in tuning), then the booster is refitted on ``train`` and
    ``valid`` together with that many rounds, so the newest labelled window (the one nearest
    the rows the model will score) is learned from, not only judged on. Without ``valid`` this
    is :func:`fit_booster_scorer`."""
    from shopml.usecases.base import LabelledData

    if valid is None or not len(valid):
        return fit_booster_scorer(
            train, valid, params, objectives, outputs, label, seed, kind, clip
        )
    label = label or train.labels[0]
    scorer = BoosterScorer(features=list(train.features), outputs=outputs, kind=kind, clip=clip)
    both = LabelledData.concat([train, valid])
    x, y = scorer.to_matrix(train.frame), train.frame[label].to_numpy(dtype="float64")
    xv, yv = scorer.to_matrix(valid.frame), valid.frame[label].to_numpy(dtype="float64")
    xa, ya = scorer.to_matrix(both.frame), both.frame[label].to_numpy(dtype="float64")
    check_learnable(y, label)
    rounds = []
    for objective, extra in objectives:
        probe = train_booster(x, y, params, objective, xv, yv, seed=seed, **extra)
        n = int(probe.best_iteration or probe.current_iteration())
        rounds.append(n)
        booster = train_booster(
            xa, ya, {**params, "num_boost_round": max(n, 1)}, objective, seed=seed, **extra
        )
        scorer.models.append(booster.model_to_string())
    scorer.meta["feature_importance"] = feature_importance(scorer)
    scorer.meta["refit"] = {
        "rows": len(both),
        "rounds": rounds,
        "through": max(valid.cutoffs).isoformat() if valid.cutoffs else None,
    }
    return scorer


def check_learnable(y: np.ndarray, label: str) -> None:
    """Raise :class:`NotEnoughData` when labels ``y`` cannot teach a model anything: fewer than
    two rows, or one value only (no large order in any training window, nobody who spent)."""
    y = y[np.isfinite(y)]
    if len(y) < 2:
        raise NotEnoughData(f"{len(y)} training row(s) with a {label}: nothing to learn from")
    if np.all(y == y[0]):
        raise NotEnoughData(
            f"{label} is {y[0]:g} on every one of the {len(y)} training rows: nothing to learn"
        )


def feature_importance(scorer: BoosterScorer) -> dict[str, float]:
    """Total gain per feature of the first booster, normalised to sum to 1."""
    gain = scorer.boosters[0].feature_importance(importance_type="gain")
    total = float(gain.sum()) or 1.0
    return {f: float(g) / total for f, g in zip(scorer.features, gain, strict=True)}
