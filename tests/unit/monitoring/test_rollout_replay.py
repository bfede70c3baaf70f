"""The rollout experiment's weak challenger: a one-input baseline with a real gap behind the good
model, chosen on the test window (the replay itself is ``python -m benchmarks rollout``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from shopml.monitoring.rollout_replay import _weakened
from shopml.runtime.scorers import LinearScorer


def _baseline(n: int) -> LinearScorer:
    return LinearScorer(
        features=[f"f{i}" for i in range(n)],
        outputs=["p_large_order"],
        meta={"name": "logistic"},
        coef=[1.0] * n,
        intercept=0.0,
        mean=[0.0] * n,
        scale=[1.0] * n,
        fill=[0.0] * n,
        link="logit",
    )


def _usecase(by_feature: dict[str, float], higher: bool = True) -> Any:
    """A use case whose decisive metric of a one-input model is looked up by that input."""

    def evaluate(scorer: LinearScorer, data: Any) -> dict[str, float]:
        return {"m": by_feature[scorer.features[0]]}

    return SimpleNamespace(
        gate=SimpleNamespace(metric="m", higher_is_better=higher), evaluate=evaluate
    )


def test_the_best_one_input_model_at_least_the_gap_behind_is_taken() -> None:
    uc = _usecase({"f0": 0.80, "f1": 0.72, "f2": 0.65, "f3": 0.55})
    weak = _weakened(uc, _baseline(4), None, good=0.84, gap=0.12)
    # 0.84 - 0.12 * 0.84 = 0.739: f1 (0.72) is the best that far behind; f0 is too close.
    assert weak.features == ["f1"] and weak.meta["name"] == "logistic on f1 only"


def test_the_weakest_input_when_none_is_far_enough_behind() -> None:
    uc = _usecase({"f0": 0.83, "f1": 0.82, "f2": 0.81})
    assert _weakened(uc, _baseline(3), None, good=0.84, gap=0.12).features == ["f2"]


def test_lower_is_better_metrics_are_turned_around() -> None:
    # An error: the weak model's must be at least 12% above the good model's 10.0.
    uc = _usecase({"f0": 10.5, "f1": 11.5, "f2": 14.0}, higher=False)
    assert _weakened(uc, _baseline(3), None, good=10.0, gap=0.12).features == ["f1"]


def test_a_model_that_is_not_linear_is_taken_as_it_is() -> None:
    other = SimpleNamespace(features=["a", "b"])
    assert _weakened(_usecase({}), other, None, good=0.8) is other


def test_an_outcome_is_right_when_it_is_one_of_the_expected() -> None:
    from shopml.monitoring.rollout_replay import WORLDS, right

    assert right("promoted", "promoted") and not right("no action", "promoted")
    # The close world: undecided in time is not wrong; a rollback is.
    expected = WORLDS["close"][-1]
    assert right("promoted", expected) and right("no action", expected)
    assert not right("rolled back", expected)
