"""Time splits at any cutoff: full-horizon labels when the history holds them, a shorter
training horizon for use cases that extrapolate, a clear refusal for the others."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from shopml.usecases.base import NotEnoughData
from tests.support.toy import ToyUseCase

START = datetime(1997, 1, 1)  # CDNOW: 78 weeks of purchases
END = datetime(1998, 7, 1)
CUTOFF = datetime(1997, 10, 1)  # 39 weeks in: the Fader-Hardie-Lee calibration period


class Cohort(ToyUseCase):
    """A use case on a 78-week history, as CDNOW's."""

    name = "cohort"
    horizon_days = 90
    train_cutoffs = 10

    def data_start(self, wh: Any) -> datetime | None:
        return START

    def data_end(self, wh: Any) -> datetime:
        return END


class Extrapolating(Cohort):
    extrapolates_horizon = True


def test_the_default_split_keeps_full_horizons_and_drops_cutoffs_before_the_data() -> None:
    plan = Cohort().split(None)  # type: ignore[arg-type]
    assert plan.test_cutoff == END - timedelta(days=90) and plan.data_end == END
    assert plan.valid_cutoff == plan.test_cutoff - timedelta(days=90)
    assert plan.train_horizon_days == plan.horizon_days == 90 and not plan.extrapolated
    assert max(plan.train_cutoffs) == plan.valid_cutoff - timedelta(days=90)
    assert min(plan.train_cutoffs) > START  # ten monthly cutoffs would reach before it


def test_a_39_week_horizon_at_a_39_week_cutoff_is_refused_with_what_it_needs() -> None:
    uc = Cohort().with_horizon(273)
    with pytest.raises(NotEnoughData) as err:
        uc.split_at(None, CUTOFF, data_end=END)
    text = str(err.value)
    assert "273-day horizon needs 576 days of history before the cutoff 1997-10-01" in text
    assert "the data has 273 days (from 1997-01-01)" in text
    assert "cannot extrapolate" in text


def test_a_use_case_that_extrapolates_learns_a_shorter_horizon_inside_the_past() -> None:
    uc = Extrapolating().with_horizon(273)
    plan = uc.split_at(None, CUTOFF, data_end=END)
    assert plan.horizon_days == 273 and plan.train_horizon_days == (273 - 30) // 2
    assert plan.extrapolated and plan.test_end == CUTOFF + timedelta(days=273)
    h = timedelta(days=plan.train_horizon_days)
    # Training labels end before validation starts, validation labels before the cutoff.
    assert plan.valid_cutoff + h == CUTOFF
    assert max(plan.train_cutoffs) + h == plan.valid_cutoff
    assert min(plan.train_cutoffs) > START
    assert plan.to_dict()["train_horizon_days"] == plan.train_horizon_days


def test_too_short_even_to_extrapolate() -> None:
    uc = Extrapolating().with_horizon(273)
    with pytest.raises(NotEnoughData, match="too few to learn even a 28-day horizon"):
        uc.split_at(None, START + timedelta(days=60), data_end=END)


def test_labels_after_the_end_of_the_data_are_refused() -> None:
    with pytest.raises(NotEnoughData, match="through 1998-09-30; the data ends 1998-06-30"):
        Cohort().with_horizon(273).split_at(None, datetime(1998, 1, 1), data_end=END)
