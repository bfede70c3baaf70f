"""Every use case that answers with predictions explains them, or says why it cannot: fitted
on the small simulated shop, each model's explanation of its test rows adds up to its first
output on the scale the explanation names."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from shopml.data.warehouse import Warehouse
from shopml.runtime.answers import Predict
from shopml.usecases import get_usecases

PREDICTING = sorted(n for n, uc in get_usecases().items() if isinstance(uc.answer, Predict))
# The models with no additive contributions, and the words of their reason.
UNEXPLAINED = {"segments": "nearest centroid"}


def _fitted(name: str, wh: Warehouse) -> tuple[Any, np.ndarray]:
    """The use case's model fitted (default parameters) as training fits it, and the matrix
    of its test rows."""
    from shopml.lifecycle.train import build_splits

    uc = get_usecases()[name]
    plan = uc.split(wh)
    splits = build_splits(uc, wh, plan)
    learner = uc.with_horizon(plan.train_horizon_days)
    scorer = learner.fit(wh, splits.train, splits.valid, learner.default_params(), seed=0)
    return scorer, scorer.to_matrix(splits.test.frame.head(200))


def test_every_predicting_use_case_is_here() -> None:
    assert {"returns", "delivery-time", "clv", "high-value", "campaign", "segments"} <= set(
        PREDICTING
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", PREDICTING)
def test_the_explanation_adds_up_to_the_first_output(name: str, small_sim_wh: Warehouse) -> None:
    scorer, x = _fitted(name, small_sim_wh)
    found = scorer.explain(x)
    if name in UNEXPLAINED:
        assert found is None and UNEXPLAINED[name] in scorer.unexplained
        return
    assert found is not None and found.output == scorer.outputs[0]
    assert found.contributions.shape == found.values.shape == (len(x), len(found.inputs))
    total = found.base + found.contributions.sum(axis=1)
    out = np.asarray(scorer.predict_matrix(x), dtype="float64").reshape(len(x), -1)[:, 0]
    if found.units == "log-odds":
        expected = np.log(out / (1 - out))
    elif found.units == "log":
        expected = np.log(out)
    else:
        assert found.units == scorer.outputs[0]
        # The output before its floor or clip: equal wherever the clip did not bite.
        lo, hi = getattr(scorer, "clip", (None, None))
        lo = 0.0 if name == "clv" else lo
        inside = np.ones(len(x), dtype=bool)
        if lo is not None:
            inside &= out > lo
        if hi is not None:
            inside &= out < hi
        assert inside.any()
        total, expected = total[inside], out[inside]
    np.testing.assert_allclose(total, expected, rtol=1e-6, atol=1e-6)
    # The answer's top five: the largest contributions, in order of size.
    top = found.answer(0)["top"]
    sizes = [abs(t["contribution"]) for t in top]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == pytest.approx(np.abs(found.contributions[0]).max())


@pytest.mark.slow
def test_clv_names_the_bgnbd_prior_of_its_mean(small_sim_wh: Warehouse) -> None:
    """The mean output (a booster started from BG/NBD's expected spend) explained: the prior
    is one named contribution, and the sum is the log of the output."""
    scorer, x = _fitted("clv", small_sim_wh)
    found = scorer.explain_output(x, 1)
    assert found.units == "log" and found.inputs[-1] == "bgnbd_expected_spend"
    prior = found.contributions[:, -1]
    spend = found.values[:, -1]
    np.testing.assert_allclose(prior, np.log(np.maximum(spend, 1e-2)))
    out = scorer.predict_matrix(x)[:, 1]
    np.testing.assert_allclose(
        found.base + found.contributions.sum(axis=1), np.log(out), rtol=1e-6, atol=1e-6
    )
    # The point output names the BG/NBD features it is given, with their values.
    point = scorer.explain(x)
    assert {"bgnbd_p_alive", "bgnbd_purchases_30d", "bgnbd_expected_value"} <= set(point.inputs)
    # Learned on a shorter label horizon: the scaling to the full one is a named contribution.
    short = replace(scorer, label_horizon_days=scorer.horizon_days / 2)
    scaled = short.explain(x)
    assert scaled.inputs[-1] == "bgnbd_horizon_ratio"
    total = scaled.base + scaled.contributions.sum(axis=1)
    want = short.predict_matrix(x)[:, 0]
    if scaled.units == "log":
        np.testing.assert_allclose(total, np.log(want), rtol=1e-6, atol=1e-6)
    else:
        inside = want > 0
        np.testing.assert_allclose(total[inside], want[inside], rtol=1e-6, atol=1e-6)
