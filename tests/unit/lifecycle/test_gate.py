"""The gate: floors, ceilings, sanity and the champion margin, each judged with its interval;
three verdicts, and the reasons name the sample size."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shopml.lifecycle.gate import (
    HELD_BACK,
    INSUFFICIENT,
    PROMOTED,
    REJECTED,
    Evidence,
    SanityReport,
    decide,
)
from shopml.lifecycle.intervals import bootstrap
from shopml.usecases import _metrics
from shopml.usecases.base import GatePolicy, LabelledData, Predictions, UseCase

HIGHER = GatePolicy(
    "auc",
    higher_is_better=True,
    min_improvement=0.01,
    floors={"auc": 0.6},
    output_range=(0, 1),
    max_latency_ms=10,
)
LOWER = GatePolicy(
    "mae", higher_is_better=False, min_improvement=0.02, ceilings={"coverage_gap": 0.05}
)
OK = SanityReport(rows=100, missing=0, out_of_range=0, latency_ms=0.1)


def points(candidate: dict[str, float], champion: dict[str, float] | None = None) -> Evidence:
    return Evidence.of_points(candidate, champion)


# -- the rules on exact figures (no sampling error) -----------------------------------------
def test_first_model_passing_floors_is_promoted() -> None:
    d = decide(HIGHER, points({"auc": 0.7}), OK)
    assert d.promote and d.verdict == PROMOTED and "no champion yet" in d.reasons[0]


def test_below_floor_is_rejected_with_the_reason() -> None:
    d = decide(HIGHER, points({"auc": 0.55}), OK)
    assert d.verdict == REJECTED and d.reasons == ["auc=0.55 is below the floor 0.6"]


def test_must_beat_champion_by_the_margin() -> None:
    d = decide(HIGHER, points({"auc": 0.705}, {"auc": 0.70}), OK, champion_version="3")
    assert d.verdict == REJECTED and "required margin" in d.reasons[0]
    d = decide(HIGHER, points({"auc": 0.72}, {"auc": 0.70}), OK, champion_version="3")
    assert d.promote and "champion v3" in d.reasons[0]


def test_lower_is_better_and_ceilings() -> None:
    good = {"mae": 1.0, "coverage_gap": 0.01}
    assert decide(LOWER, points(good, {"mae": 1.1}), OK, champion_version="1").promote
    close = {"mae": 1.09, "coverage_gap": 0.01}
    assert not decide(LOWER, points(close, {"mae": 1.1}), OK, champion_version="1").promote
    d = decide(LOWER, points({"mae": 0.5, "coverage_gap": 0.2}), OK)
    assert d.verdict == REJECTED and "above the ceiling" in d.reasons[0]


def test_sanity_failures_block_promotion() -> None:
    bad = SanityReport(rows=100, missing=3, out_of_range=2, latency_ms=50)
    d = decide(HIGHER, points({"auc": 0.9}), bad)
    assert d.verdict == REJECTED
    text = " ".join(d.reasons)
    assert "3 of 100 predictions are missing" in text
    assert "outside (0, 1)" in text
    assert "budget 10 ms" in text


def test_champion_that_cannot_score_does_not_block() -> None:
    d = decide(HIGHER, points({"auc": 0.7}, {"auc": math.nan}), OK, champion_version="2")
    assert d.promote and "could not be scored" in d.reasons[0]


def test_uncomputable_metric_is_rejected() -> None:
    assert decide(HIGHER, points({"auc": math.nan}), OK).verdict == REJECTED


def test_a_training_on_older_data_is_held_back_with_the_reason() -> None:
    d = decide(HIGHER, points({"auc": 0.9}, {"auc": 0.7}), OK, held_back="trained as of 2024")
    assert d.verdict == HELD_BACK and not d.promote and "trained as of 2024" in d.summary()
    # Evidence against still reads as such.
    d = decide(HIGHER, points({"auc": 0.5}), OK, held_back="trained as of 2024")
    assert d.verdict == REJECTED


def test_unavailable_baselines_are_said() -> None:
    evidence = points({"auc": 0.7})
    evidence.unavailable = {"bgnbd": "all one-time buyers"}
    d = decide(HIGHER, evidence, OK)
    assert d.promote and "baseline bgnbd unavailable (all one-time buyers)" in d.summary()


# -- with intervals from real resamples ----------------------------------------------------
class Days(UseCase):
    """Delivery days: a median and a 90th percentile, judged like delivery-time."""

    name = "days"
    question = "test only"
    entity = "order"
    key = "order_id"
    kind = "quantiles"
    required_tables = ()
    metrics = ("mae", "coverage_gap")
    gate = GatePolicy(
        "mae", higher_is_better=False, min_improvement=0.005, ceilings={"coverage_gap": 0.05}
    )

    def dataset(self, wh: Any, cutoff: datetime) -> LabelledData:  # pragma: no cover
        raise NotImplementedError

    def fit(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def baseline(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        y = data.y.to_numpy()
        cover = float(np.mean(y <= predictions.column("p90")))
        return {
            "mae": _metrics.mae(y, predictions.column("p50")),
            "coverage_gap": abs(cover - 0.9),
        }


def _orders(y: np.ndarray) -> LabelledData:
    frame = pd.DataFrame({"order_id": np.arange(len(y)), "y": y})
    return LabelledData(frame, ["order_id"], [], ["y"])


def _covering(y: np.ndarray) -> np.ndarray:
    """A 90th percentile that covers exactly 9 orders in 10."""
    return y + np.where(np.arange(len(y)) % 10 == 0, -1.0, 5.0)


def _answers(p50: np.ndarray, p90: np.ndarray) -> Predictions:
    return Predictions(pd.DataFrame({"p50": p50, "p90": p90}))


def _judge(data: LabelledData, model: Predictions, champion: Predictions | None = None) -> Any:
    answers = {"model": model} | ({"champion": champion} if champion is not None else {})
    boot = bootstrap(Days(), data, answers, draws=400, seed=0)
    evidence = Evidence.from_bootstrap(
        boot, "mae", champion="champion" if champion is not None else None, unit="orders"
    )
    return decide(Days.gate, evidence, OK, champion_version="1" if champion else None)


def test_twenty_orders_do_not_reject_on_a_ceiling_the_interval_straddles() -> None:
    rng = np.random.default_rng(3)
    y = rng.gamma(4.0, 2.0, 20)
    p90 = np.quantile(y, 0.8) * np.ones(20)  # covers 16 of 20: a gap of 0.10 on paper
    d = _judge(_orders(y), _answers(np.median(y) * np.ones(20), p90))
    assert d.verdict == INSUFFICIENT and not d.promote
    assert d.n == 20 and d.intervals["coverage_gap"]["estimate"] == pytest.approx(0.1)
    assert d.intervals["coverage_gap"]["low"] < 0.05 < d.intervals["coverage_gap"]["high"]
    text = d.summary()
    assert "straddles the ceiling 0.05" in text and "20 orders cannot tell" in text
    assert d.n_needed is not None and d.n_needed > 20 and "roughly" in text


def test_the_same_gap_on_5000_orders_is_rejected() -> None:
    rng = np.random.default_rng(4)
    y = rng.gamma(4.0, 2.0, 5000)
    p90 = np.quantile(y, 0.8) * np.ones(5000)
    d = _judge(_orders(y), _answers(np.median(y) * np.ones(5000), p90))
    assert d.verdict == REJECTED and "is above the ceiling 0.05" in d.reasons[0]


def test_a_model_clearly_worse_on_5000_rows_is_rejected() -> None:
    rng = np.random.default_rng(5)
    y = rng.gamma(4.0, 2.0, 5000)
    p90 = _covering(y)
    champion = _answers(y + rng.normal(0, 1.0, 5000), p90)
    worse = _answers(y + rng.normal(0, 1.4, 5000), p90)
    d = _judge(_orders(y), worse, champion)
    assert d.verdict == REJECTED and "does not beat the champion" in d.reasons[0]
    assert d.difference is not None and d.difference["low"] > 0  # its MAE is higher


def test_a_challenger_better_only_by_noise_is_not_promoted() -> None:
    rng = np.random.default_rng(6)
    n = 300
    y = rng.gamma(4.0, 2.0, n)
    p90 = _covering(y)
    champion = _answers(y + rng.normal(0, 1.0, n), p90)
    for seed in range(100):
        # Another draw of the same quality: better on this window by luck alone.
        noise = np.random.default_rng(100 + seed).normal(0, 1.0, n)
        challenger = _answers(y + noise, p90)
        model_mae = _metrics.mae(y, challenger.column("p50"))
        champion_mae = _metrics.mae(y, champion.column("p50"))
        if model_mae < champion_mae * (1 - 0.005) - 0.01:
            break
    else:  # pragma: no cover - the draws above always hold such a case
        pytest.fail("no lucky challenger among 100 draws")
    # A gate on point estimates would promote it...
    on_points = decide(
        Days.gate,
        Evidence.of_points({"mae": model_mae, "coverage_gap": 0.0}, {"mae": champion_mae}),
        OK,
        champion_version="1",
    )
    assert on_points.promote
    # ... the paired interval does not clear the margin.
    d = _judge(_orders(y), challenger, champion)
    assert d.verdict == INSUFFICIENT and "paired interval straddles" in d.reasons[0]


def test_pairing_sees_a_small_real_improvement_separate_intervals_miss() -> None:
    rng = np.random.default_rng(7)
    n = 400
    y = rng.gamma(4.0, 2.0, n)
    err = rng.normal(0, 2.0, n)
    champion = _answers(y + err, _covering(y))
    challenger = _answers(y + 0.9 * err, _covering(y))  # every error 10% smaller
    d = _judge(_orders(y), challenger, champion)
    assert d.promote, d.summary()
    model, champ = d.intervals["mae"], d.champion
    assert champ is not None
    # The two intervals overlap: compared separately they could not tell.
    boot = bootstrap(Days(), _orders(y), {"c": champion}, draws=400, seed=0)
    assert boot.interval("c", "mae").low < model["high"]


def test_guardrail_breaches_are_judged_exactly() -> None:
    policy = GatePolicy("revenue", ceilings={"violations": 0.0}, exact=("violations",))
    evidence = Evidence.of_points({"revenue": 1.0, "violations": 1.0})
    from shopml.lifecycle.intervals import Interval

    # Even when resampling would let the count fall to zero, one breach is a fact.
    evidence.candidate["violations"] = Interval(1.0, 0.0, 3.0, 50, 50)
    assert decide(policy, evidence, OK).verdict == REJECTED


# -- the latency budget judges the model's CPU time, not the machine's load ------------------------
class _Timed:
    """A scorer whose single-row prediction waits (``sleep_ms``: wall time, as when another
    process holds the CPU) or works (``cpu_ms`` of this thread's CPU)."""

    def __init__(self, sleep_ms: float = 0.0, cpu_ms: float = 0.0) -> None:
        import time

        self.features, self.sleep_ms, self.cpu_ms, self._time = ["a"], sleep_ms, cpu_ms, time

    def to_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[["a"]].to_numpy(dtype="float64")

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 1:
            self._time.sleep(self.sleep_ms / 1000)
            end = self._time.thread_time() + self.cpu_ms / 1000
            while self._time.thread_time() < end:
                pass
        return np.full(x.shape[0], 0.5)


@pytest.mark.parametrize(
    ("sleep_ms", "cpu_ms", "passes"), [(40.0, 0.0, True), (0.0, 0.0, True), (0.0, 30.0, False)]
)
def test_the_latency_budget_judges_cpu_time(sleep_ms: float, cpu_ms: float, passes: bool) -> None:
    from shopml.lifecycle.gate import sanity_checks

    data = LabelledData(pd.DataFrame({"a": np.arange(8.0), "y": 0.0}), [], ["a"], ["y"])
    report = sanity_checks(_Timed(sleep_ms, cpu_ms), data, HIGHER, latency_rows=5)  # type: ignore[arg-type]
    assert report.wall_ms is not None and report.wall_ms >= sleep_ms  # waiting is reported...
    d = decide(HIGHER, points({"auc": 0.7}), report)  # ...but only the model's own work counts
    assert d.promote is passes, d.reasons
    if not passes:
        assert "ms of CPU (budget 10 ms;" in d.reasons[0] and "ms wall)" in d.reasons[0]
