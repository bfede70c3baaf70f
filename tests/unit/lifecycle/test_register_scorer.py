"""``register_scorer``: a scorer made outside training (a benchmark's model, a replay's weak
challenger) becomes a new version of the use case's model that serving loads and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shopml.lifecycle.tracking import register_scorer
from shopml.runtime.scorers import LinearScorer
from shopml.serving.models import MlflowSource
from shopml.settings import Settings


def test_a_registered_scorer_is_served_as_a_new_version(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    scorer = LinearScorer(
        features=["a", "b"],
        outputs=["p"],
        coef=[1.0, -2.0],
        intercept=0.5,
        mean=[0.0, 0.0],
        scale=[1.0, 1.0],
        fill=[0.0, 0.0],
    )
    example = pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, 1.0]})
    first = register_scorer(settings, "clv", scorer, example)
    second = register_scorer(settings, "clv", scorer, example)
    assert (first, second) == ("1", "2")
    loaded = MlflowSource(settings).load("clv", second)
    assert loaded.features == ["a", "b"]
    got = loaded.predict_matrix(np.array([[1.0, 1.0]]))
    assert float(np.asarray(got).reshape(-1)[0]) == 1.0 - 2.0 + 0.5
