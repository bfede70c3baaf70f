"""How many bootstrap resamples a training affords: all of them when they fit the budget, else
halved until they do, so a little timing noise between two runs changes nothing."""

from __future__ import annotations

from shopml.lifecycle.train import MIN_DRAWS, draws_for


def test_all_draws_when_they_fit_the_budget() -> None:
    assert draws_for(0.01, 400, 10.0) == 400
    assert draws_for(0.025, 400, 10.0) == 400  # exactly the budget


def test_halved_until_they_fit_never_under_the_floor() -> None:
    assert draws_for(0.03, 400, 10.0) == 200
    assert draws_for(0.06, 400, 10.0) == 100
    assert draws_for(10.0, 400, 10.0) == MIN_DRAWS
    assert draws_for(10.0, 20, 10.0) == 20  # asked for fewer than the floor: as asked


def test_timing_noise_does_not_move_the_count() -> None:
    # Two runs of one training whose resample cost differs by 10%: the same count, where
    # budget / cost would have given 333 and 303.
    assert draws_for(0.030, 400, 10.0) == draws_for(0.033, 400, 10.0) == 200
