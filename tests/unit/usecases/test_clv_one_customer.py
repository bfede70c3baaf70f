"""`shopml train --all` failed on a shop with a single customer: the CLV refit chose its rounds
on folds of customers, and one customer left a fold with nothing to train on (LightGBM: 'num_data
> 0'). The smallest history that reproduced it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tests.unit.usecases.nasty import single_customer

from shopml.data.warehouse import Warehouse
from shopml.lifecycle.train import build_splits, fit_model
from shopml.usecases import get_usecase


def test_clv_fits_and_answers_for_a_shop_with_one_customer(tmp_path: Path) -> None:
    with Warehouse(tmp_path / "one.duckdb") as wh:
        wh.write_tables(single_customer(np.random.default_rng(3)), source="test", mode="dataset")
        uc = get_usecase("clv")
        splits = build_splits(uc, wh, uc.split(wh))
        params = {**uc.default_params(), "num_boost_round": 20}
        scorer = fit_model(uc, wh, splits, params, seed=0)
        answers = uc.predict(scorer, splits.test)
    assert np.isfinite(answers.values.to_numpy(dtype="float64")).all()
