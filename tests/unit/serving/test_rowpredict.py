"""The single-row fast path gives exactly the numbers ``Booster.predict`` gives, for the served
champions and for scorers that post-process their boosters (offsets, clipping, uplift)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from tests.unit.serving.conftest import serving_settings


def rows(rng: np.random.Generator, n: int, ncol: int) -> np.ndarray:
    x = rng.normal(size=(n, ncol)) * rng.choice([1.0, 10.0, 300.0], size=ncol)
    x[rng.random(x.shape) < 0.2] = np.nan
    return x


def boosters_of(scorer: Any) -> list[Any]:
    """The boosters of a scorer and of the scorers it is built on."""
    own = list(scorer.boosters) if hasattr(scorer, "boosters") else []
    return own + [b for part in scorer.parts() for b in boosters_of(part)]


def same_numbers(model: Any, plain: Any, x: np.ndarray) -> None:
    for r in x:
        model.row[0] = r  # the service's path: its preallocated row
        fast = np.asarray(model.scorer.predict_matrix(model.row)).copy()
        other = np.asarray(model.scorer.predict_matrix(r.reshape(1, -1).copy()))
        ref = np.asarray(plain.predict_matrix(r.reshape(1, -1)))
        assert np.array_equal(fast, ref, equal_nan=True), (fast, ref)
        assert np.array_equal(other, ref, equal_nan=True)
    batch = np.asarray(model.scorer.predict_matrix(x))
    assert np.array_equal(batch, np.asarray(plain.predict_matrix(x)), equal_nan=True)


def test_served_champions_score_the_same(served_home: Path) -> None:
    from shopml.serving.models import LoadedModel, MlflowSource
    from shopml.serving.rowpredict import RowBooster

    source = MlflowSource(serving_settings(served_home))
    rng = np.random.default_rng(0)
    for usecase in ("returns", "clv"):
        info = source.alias_version(usecase, "champion")
        assert info is not None
        model = LoadedModel(usecase, source.load(usecase, info.version), info)
        plain = source.load(usecase, info.version)  # unpickled again: not wrapped
        assert any(isinstance(b, RowBooster) for b in boosters_of(model.scorer)), usecase
        assert not any(isinstance(b, RowBooster) for b in boosters_of(plain))
        same_numbers(model, plain, rows(rng, 200, len(model.features)))


def test_post_processed_and_uplift_scorers_score_the_same() -> None:
    import lightgbm

    from shopml.runtime.scorers import BoosterScorer, UpliftScorer
    from shopml.serving.models import LoadedModel, VersionInfo
    from shopml.serving.rowpredict import RowBooster, fast_rows

    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 6))
    features = [f"f{i}" for i in range(6)]

    def booster(objective: str, y: np.ndarray) -> str:
        params = {"objective": objective, "verbose": -1, "num_threads": 1, "num_leaves": 7}
        return str(lightgbm.train(params, lightgbm.Dataset(x, y), 25).model_to_string())

    clicked = (x[:, 0] + rng.normal(size=len(x)) > 0).astype(float)
    spend = x[:, 1] * 3 + rng.normal(size=len(x))
    quantiles = BoosterScorer(
        features,
        ["p50", "p90"],
        models=[booster("regression", spend), booster("regression", spend + 1)],
        offsets=[0.5, -0.25],
        clip=(-2.0, 4.0),
        monotone_outputs=True,
    )
    treated = BoosterScorer(
        features, ["p"], models=[booster("binary", clicked)], kind="probability"
    )
    control = BoosterScorer(
        features, ["p"], models=[booster("binary", 1 - clicked)], kind="probability"
    )
    uplift = UpliftScorer(features, ["t", "c", "uplift"], treated=treated, control=control)
    for scorer, wrapped in ((quantiles, 2), (uplift, 2)):
        plain = pickle.loads(pickle.dumps(scorer))
        model = LoadedModel("x", scorer, VersionInfo("1"))
        assert fast_rows(scorer, model.row) == 0  # already wrapped by LoadedModel
        inner = [quantiles] if scorer is quantiles else [treated, control]
        assert sum(isinstance(b, RowBooster) for s in inner for b in s.boosters) == wrapped
        same_numbers(model, plain, rows(rng, 100, len(features)))
    # Pickled again, a wrapped scorer holds its model strings only.
    again = pickle.loads(pickle.dumps(quantiles))
    assert not any(isinstance(b, RowBooster) for b in again.boosters)

    # A caller on another thread while the fast path is busy takes Booster.predict.
    fast = quantiles.boosters[0]
    assert isinstance(fast, RowBooster)
    one = rows(rng, 1, len(features))
    expected = fast.predict(one)
    assert fast._lock.acquire()
    try:
        assert np.array_equal(fast.predict(one), expected)
    finally:
        fast._lock.release()
