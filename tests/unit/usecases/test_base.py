"""The use-case base: horizons per instance, named baselines, answers aligned with rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopml.usecases import get_usecase
from shopml.usecases.base import LabelledData, Predictions


def test_with_horizon_changes_one_instance_only() -> None:
    clv = get_usecase("clv")
    default = clv.horizon_days
    long = clv.with_horizon(273)
    assert long.horizon_days == 273 and long is not clv
    assert clv.horizon_days == default and type(clv).horizon_days == default
    assert clv.with_horizon(None) is clv
    with pytest.raises(ValueError, match="at least 1 day"):
        clv.with_horizon(0)


def test_a_split_follows_the_instance_horizon() -> None:
    from datetime import datetime

    clv = get_usecase("clv").with_horizon(273)
    plan = clv.split(None, end=datetime(1998, 7, 1))  # type: ignore[arg-type]
    assert (plan.data_end - plan.test_cutoff).days == 273


def test_predictions_and_data_take_the_same_rows() -> None:
    frame = pd.DataFrame({"customer_id": ["a", "b", "c"], "y": [1.0, 2.0, 3.0]})
    data = LabelledData(frame, ["customer_id"], [], ["y"])
    answers = Predictions(pd.DataFrame({"p": [10.0, 20.0, 30.0]}), {"size": 3})
    rows = np.array([2, 2, 0])
    assert data.take(rows).frame["customer_id"].tolist() == ["c", "c", "a"]
    taken = answers.take(rows)
    assert taken.column(0).tolist() == [30.0, 30.0, 10.0] and taken.context == {"size": 3}
    assert Predictions.of_matrix(np.array([1.0, 2.0]), ["out"]).column("out").tolist() == [1, 2]
