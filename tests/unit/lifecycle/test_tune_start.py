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
