"""Tuning tries the use case's starting designs first, in order, and the validation window
chooses among them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import optuna

from shopml.lifecycle.train import TrainConfig, tune
from tests.support.toy import ToyUseCase


class TwoStarts(ToyUseCase):
    def default_params(self) -> dict[str, Any]:
        return {"strength": 0.1}

    def starting_params(self) -> list[dict[str, Any]]:
        return [self.default_params(), {"strength": 1.0}]

    def search_space(self, trial: optuna.Trial) -> dict[str, Any]:
        return {"strength": trial.suggest_float("strength", 0.0, 1.0)}


def test_tuning_tries_every_starting_design_first_and_keeps_the_best() -> None:
    uc = TwoStarts()
    train = uc.dataset(None, datetime(2024, 9, 1))  # type: ignore[arg-type]
    valid = uc.dataset(None, datetime(2024, 10, 1))  # type: ignore[arg-type]
    got = tune(uc, None, train, valid, TrainConfig(trials=2, timeout_s=30))  # type: ignore[arg-type]
    assert got.history["params_strength"].tolist() == [0.1, 1.0]
    assert got.params == {"strength": 1.0}  # the signal, not the noise, wins on validation


class SlowFits(TwoStarts):
    """Each fit takes 0.3 s (a busy machine's trial)."""

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        import time

        time.sleep(0.3)
        return super().fit(*args, **kwargs)


def test_a_time_limit_that_cuts_the_search_says_so_and_0_means_no_limit() -> None:
    uc = SlowFits()
    train = uc.dataset(None, datetime(2024, 9, 1))  # type: ignore[arg-type]
    valid = uc.dataset(None, datetime(2024, 10, 1))  # type: ignore[arg-type]
    cut = tune(uc, None, train, valid, TrainConfig(trials=4, timeout_s=0.1))  # type: ignore[arg-type]
    assert cut.completed == 1 and cut.asked == 4 and cut.cut_short
    whole = tune(uc, None, train, valid, TrainConfig(trials=4, timeout_s=0))  # type: ignore[arg-type]
    assert whole.completed == 4 and not whole.cut_short
    again = tune(uc, None, train, valid, TrainConfig(trials=4, timeout_s=0))  # type: ignore[arg-type]
    assert again.params == whole.params  # trials alone: the same choice every time
