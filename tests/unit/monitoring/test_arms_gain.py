"""The statistic a rollout is judged on: the per-row loss gain with its standard error
clustered by entity, and the sequential rule on top of it, on synthetic shops (pure logic).

A shop's customers are scored again every week, so the labelled rows of one customer share
that customer's propensity: counting them as independent would understate the noise and an
unchanged world would be "decided" far more often than the error budget allows."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from shopml.monitoring.arms import ALPHA, independent_gain, paired_gain, spent

WEEKS = 7


def _shop(rng: np.random.Generator, customers: int, skill: tuple[float, float]) -> pd.DataFrame:
    """Each customer's weekly rows: one persistent propensity (a large order in about 3% of
    30-day windows), the label "a large order in the next four weeks" (so the windows of
    consecutive weeks overlap, as the shop's do), and two models whose scores miss the
    propensity by a per-customer error of scale ``skill`` (smaller: better)."""
    latent = rng.normal(-3.6, 1.2, customers)
    weekly = 1 - (1 - 1 / (1 + np.exp(-latent))) ** 0.25  # a large order in one week
    orders = rng.random((customers, WEEKS + 3)) < weekly[:, None]
    y = np.stack([orders[:, w : w + 4].any(axis=1) for w in range(WEEKS)], axis=1).ravel()
    ids = np.repeat(np.arange(customers), WEEKS)
    week = np.tile(np.arange(WEEKS), customers)
    logit = np.repeat(latent, WEEKS)
    out = {"customer": ids, "week": week, "y": y.astype(float)}
    for name, s in zip(("a", "b"), skill, strict=True):
        p = 1 / (1 + np.exp(-(logit + np.repeat(rng.normal(0, s, customers), WEEKS))))
        out[name] = (p - out["y"]) ** 2
    return pd.DataFrame(out)


def _sequential(
    shop: pd.DataFrame, share: float | None, rng: np.random.Generator, clustered: bool = True
) -> str:
    """Judge the rollout week after week as the monitor does; its first verdict.
    ``share`` None: shadow (paired); else the challenger's share of customers."""
    arm = rng.random(shop["customer"].max() + 1) < (share or 0.0)
    for look in range(1, WEEKS + 1):
        seen = shop[shop["week"] < look]
        units = seen["customer"].to_numpy() if clustered else None
        if share is None:
            g = paired_gain("brier", seen["a"].to_numpy(), seen["b"].to_numpy(), units)
        else:
            b = arm[seen["customer"].to_numpy()]
            ua, ub = (None, None) if units is None else (units[~b], units[b])
            g = independent_gain("brier", seen["a"][~b].to_numpy(), seen["b"][b].to_numpy(), ua, ub)
        low, high = g.interval(NormalDist().inv_cdf(1 - spent(look)))
        if low > 0:
            return "promoted"
        if high < 0:
            return "rolled back"
    return "no action"


def _rates(trials: int, skill: tuple[float, float], share: float | None, **kw: bool) -> dict:
    rng = np.random.default_rng(17)
    verdicts = [_sequential(_shop(rng, 600, skill), share, rng, **kw) for _ in range(trials)]
    return {v: verdicts.count(v) / trials for v in ("promoted", "rolled back", "no action")}


def test_without_entities_the_standard_error_is_the_usual_one() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(500), rng.random(500)
    g = paired_gain("brier", a, b)
    d = a - b
    assert g.estimate == pytest.approx(d.mean())
    assert g.se == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)))
    i = independent_gain("brier", a, b[:300])
    assert i.se == pytest.approx(
        math.hypot(a.std(ddof=1) / math.sqrt(500), b[:300].std(ddof=1) / math.sqrt(300))
    )
    assert (i.units, i.smallest, i.rows) == (800, 300, 800)


def test_a_customer_scored_again_and_again_counts_once() -> None:
    """The same 200 customers' rows copied five times (as weekly re-scoring does when
    nothing changes): clustered, the standard error stays that of 200 customers."""
    rng = np.random.default_rng(1)
    a, b = rng.random(200), rng.random(200)
    once = paired_gain("brier", a, b, np.arange(200))
    five = paired_gain("brier", np.tile(a, 5), np.tile(b, 5), np.tile(np.arange(200), 5))
    naive = paired_gain("brier", np.tile(a, 5), np.tile(b, 5))
    assert five.se == pytest.approx(once.se, rel=1e-9)
    assert naive.se < 0.5 * five.se
    assert (five.units, five.rows) == (200, 1000)


def test_rows_without_a_loss_are_left_out_of_both_arms() -> None:
    a = np.array([0.1, np.nan, 0.3, 0.2])
    b = np.array([0.0, 0.5, np.inf, 0.1])
    g = paired_gain("brier", a, b, ["x", "y", "z", "x"])
    assert (g.rows, g.units) == (2, 1)
    assert math.isnan(g.se)  # one entity: no spread to estimate
    with pytest.raises(ValueError, match="different lengths"):
        paired_gain("brier", a, b[:3])
    with pytest.raises(ValueError, match="entity ids"):
        paired_gain("brier", a, b, ["x"])


@pytest.mark.parametrize("share", [None, 0.5], ids=["shadow", "ab"])
def test_an_unchanged_world_is_decided_no_more_often_than_the_budget(share: float | None) -> None:
    """A/A: two equally good models (shadow: the same customers; A/B: half each), seven
    weekly looks; promotion and rollback each stay within alpha (plus sampling error of the
    simulation), while the same looks with rows counted as independent break it."""
    rates = _rates(300, (0.8, 0.8), share)
    bound = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / 300)
    assert rates["promoted"] <= bound
    assert rates["rolled back"] <= bound
    unclustered = _rates(300, (0.8, 0.8), share, clustered=False)
    assert unclustered["promoted"] + unclustered["rolled back"] > 2 * ALPHA


def test_a_clearly_better_or_worse_challenger_is_decided() -> None:
    better = _rates(40, (1.6, 0.6), None)  # shadow: the challenger's error is much smaller
    assert better["promoted"] >= 0.9 and better["rolled back"] == 0
    worse = _rates(40, (0.4, 3.0), 0.25)  # a canary on a quarter of the customers
    assert worse["rolled back"] >= 0.9 and worse["promoted"] == 0


def test_independent_arms_need_a_larger_gap_than_paired_ones() -> None:
    """The same gap, judged on different customers per arm, is decided far less often
    than on the same customers (shadow): the customers' own spread stays in the noise."""
    paired = _rates(40, (0.6, 1.6), None)
    apart = _rates(40, (0.6, 1.6), 0.5)
    assert paired["rolled back"] >= 0.9
    assert apart["rolled back"] < paired["rolled back"] - 0.3


def test_a_binary_use_case_scores_each_row_with_the_brier_score() -> None:
    from shopml.usecases import get_usecase
    from shopml.usecases.base import LabelledData, Predictions

    uc = get_usecase("high-value")
    frame = pd.DataFrame({"customer_id": ["a", "b", "c"], "large_order": [1, 0, 0]})
    data = LabelledData(frame, ["customer_id"], [], ["large_order"])
    answers = Predictions.of_matrix(np.array([[0.8], [0.3], [np.nan]]), ["p"])
    name, loss = uc.row_loss(data, answers)
    assert name == "brier" and name in uc.score(data, answers)
    np.testing.assert_allclose(loss[:2], [0.04, 0.09])
    assert math.isnan(loss[2])
    assert get_usecase("clv").row_loss(data, answers) is None
