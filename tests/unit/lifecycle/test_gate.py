from __future__ import annotations

import math

from shopml.lifecycle.gate import SanityReport, decide
from shopml.usecases.base import GatePolicy

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


def test_first_model_passing_floors_is_promoted() -> None:
    d = decide(HIGHER, {"auc": 0.7}, OK)
    assert d.promote and "no champion yet" in d.reasons[0]


def test_below_floor_is_rejected_with_the_reason() -> None:
    d = decide(HIGHER, {"auc": 0.55}, OK)
    assert not d.promote and d.reasons == ["auc=0.55 is below the floor 0.6"]


def test_must_beat_champion_by_the_margin() -> None:
    assert not decide(HIGHER, {"auc": 0.705}, OK, {"auc": 0.70}, "3").promote
    d = decide(HIGHER, {"auc": 0.72}, OK, {"auc": 0.70}, "3")
    assert d.promote and "champion v3" in d.reasons[0]


def test_lower_is_better_and_ceilings() -> None:
    assert decide(LOWER, {"mae": 1.0, "coverage_gap": 0.01}, OK, {"mae": 1.1}, "1").promote
    assert not decide(LOWER, {"mae": 1.09, "coverage_gap": 0.01}, OK, {"mae": 1.1}, "1").promote
    d = decide(LOWER, {"mae": 0.5, "coverage_gap": 0.2}, OK)
    assert not d.promote and "above the ceiling" in d.reasons[0]


def test_sanity_failures_block_promotion() -> None:
    bad = SanityReport(rows=100, missing=3, out_of_range=2, latency_ms=50)
    d = decide(HIGHER, {"auc": 0.9}, bad)
    assert not d.promote
    text = " ".join(d.reasons)
    assert "3 of 100 predictions are missing" in text
    assert "outside (0, 1)" in text
    assert "budget 10 ms" in text


def test_champion_that_cannot_score_does_not_block() -> None:
    d = decide(HIGHER, {"auc": 0.7}, OK, {"auc": math.nan}, "2")
    assert d.promote and "could not be scored" in d.reasons[0]


def test_uncomputable_metric_is_rejected() -> None:
    assert not decide(HIGHER, {"auc": math.nan}, OK).promote
