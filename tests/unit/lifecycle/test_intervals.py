"""Bootstrap intervals: coverage, width against sample size, paired differences, whole units."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shopml.lifecycle.intervals import Resampler, bootstrap, n_needed
from shopml.usecases import _metrics
from shopml.usecases.base import GatePolicy, LabelledData, Predictions, UseCase


class Errors(UseCase):
    """A minimal use case whose only metric is the mean absolute error."""

    name = "errors"
    question = "test only"
    entity = "row"
    key = "row_id"
    kind = "regression"
    required_tables = ()
    metrics = ("mae",)
    gate = GatePolicy("mae", higher_is_better=False)

    def dataset(self, wh: Any, cutoff: datetime) -> LabelledData:  # pragma: no cover
        raise NotImplementedError

    def fit(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def baseline(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        return {"mae": _metrics.mae(data.y.to_numpy(), predictions.column(0))}


class Ranked(Errors):
    """Binary labels scored by AUC (undefined on a resample with one class)."""

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        return {"auc": _metrics.auc(data.y.to_numpy(), predictions.column(0))}


def _data(y: np.ndarray, units: np.ndarray | None = None) -> LabelledData:
    frame = pd.DataFrame({"row_id": np.arange(len(y)), "y": y})
    if units is not None:
        frame["customer_id"] = units
    return LabelledData(frame, ["row_id"], [], ["y"])


def _answers(p: np.ndarray) -> Predictions:
    return Predictions(pd.DataFrame({"p": p}))


def test_a_95_interval_covers_the_truth_about_95_times_in_100() -> None:
    # Errors |e| with e ~ N(0, 1): the true MAE is sqrt(2 / pi).
    truth = float(np.sqrt(2 / np.pi))
    rng = np.random.default_rng(1)
    hits = 0
    trials = 120
    for t in range(trials):
        e = rng.normal(size=200)
        b = bootstrap(Errors(), _data(e), {"m": _answers(np.zeros(200))}, draws=200, seed=t)
        hits += b.interval("m", "mae").low <= truth <= b.interval("m", "mae").high
    # Binomial(120, 0.95) stays within [106, 120] with probability > 0.99.
    assert hits >= 106


def test_intervals_narrow_as_one_over_root_n() -> None:
    rng = np.random.default_rng(2)
    widths = {}
    for n in (100, 1600):
        e = rng.normal(size=n)
        b = bootstrap(Errors(), _data(e), {"m": _answers(np.zeros(n))}, draws=300)
        widths[n] = b.interval("m", "mae").half_width
    assert 2.5 < widths[100] / widths[1600] < 6.0  # sqrt(16) = 4


def test_the_paired_difference_sees_what_two_separate_intervals_cannot() -> None:
    # Two models whose errors share most of the window's difficulty; b is better by 0.05.
    rng = np.random.default_rng(3)
    y = rng.normal(scale=3.0, size=400)
    hard = rng.normal(scale=1.0, size=400)
    a = y + hard + 0.5
    b = y + hard + 0.45
    boot = bootstrap(Errors(), _data(y), {"a": _answers(a), "b": _answers(b)}, draws=400)
    ia, ib = boot.interval("a", "mae"), boot.interval("b", "mae")
    assert ia.low < ib.high  # the separate intervals overlap ...
    diff = boot.difference("a", "b", "mae")
    assert diff.above(0.0)  # ... but b is better on the same rows, and the pairing shows it
    assert diff.estimate == pytest.approx(ia.estimate - ib.estimate)


def test_rows_of_one_unit_are_resampled_together() -> None:
    # 40 customers with 25 identical lines each: 40 independent figures, not 1,000.
    rng = np.random.default_rng(4)
    per_customer = rng.normal(size=40)
    e = np.repeat(per_customer, 25)
    units = np.repeat([f"c{i}" for i in range(40)], 25)
    as_lines = bootstrap(Errors(), _data(e), {"m": _answers(np.zeros(1000))}, draws=300)
    as_units = bootstrap(Errors(), _data(e, units), {"m": _answers(np.zeros(1000))}, draws=300)
    assert as_units.n == 40 and as_lines.n == 1000
    assert as_units.interval("m", "mae").half_width > 3 * as_lines.interval("m", "mae").half_width


def test_resampler_keeps_units_whole() -> None:
    units = np.array([0, 0, 1, 2, 2, 2])
    rows = Resampler(units, 6, seed=5).draw()
    drawn = units[rows]
    for u in np.unique(drawn):
        # Each draw of a unit brings all its rows: the count is a multiple of its size.
        assert (drawn == u).sum() % (units == u).sum() == 0


def test_a_metric_undefined_on_most_resamples_has_no_interval() -> None:
    y = np.array([1.0, 0, 0, 0, 0, 0, 0, 0])  # one positive in 8
    boot = bootstrap(Ranked(), _data(y), {"m": _answers(np.linspace(1, 0, 8))}, draws=200)
    iv = boot.interval("m", "auc")
    assert iv.estimate == 1.0
    # About 1 - (7/8)**8 = 66% of resamples hold the positive: defined, with fewer draws.
    assert iv.defined and 100 < iv.draws < 200
    none = bootstrap(Ranked(), _data(np.zeros(8)), {"m": _answers(np.zeros(8))}, draws=50)
    assert not none.interval("m", "auc").defined
    assert "no interval" in str(none.interval("m", "auc"))


def test_answers_must_match_the_rows() -> None:
    with pytest.raises(ValueError, match="3 answers for 4 rows"):
        bootstrap(Errors(), _data(np.zeros(4)), {"m": _answers(np.zeros(3))})


def test_n_needed_grows_with_the_square_of_the_precision_asked() -> None:
    assert n_needed(20, 0.10, 0.05) == 80
    assert n_needed(20, 0.01, 0.05) == 20  # already precise enough
    assert n_needed(20, 0.10, 0.0) is None
