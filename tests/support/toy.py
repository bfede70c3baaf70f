"""A tiny use case with a quality knob, so lifecycle tests run in seconds and can make the gate
decide either way on purpose."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from shopml.data.warehouse import Warehouse
from shopml.runtime.scorers import ConstantScorer, LinearScorer, Scorer
from shopml.usecases import _metrics
from shopml.usecases.base import GatePolicy, LabelledData, Predictions, UseCase

END = datetime(2024, 12, 31)


class ToyUseCase(UseCase):
    """y depends on x_signal; ``strength`` sets how much of it the model uses (0 = none)."""

    name = "toy"
    question = "A test use case"
    entity = "thing"
    key = "thing_id"
    kind = "binary"
    required_tables = ("customers",)
    metrics = ("auc", "log_loss")
    gate = GatePolicy(
        "auc",
        higher_is_better=True,
        min_improvement=0.01,
        floors={"auc": 0.55},
        output_range=(0.0, 1.0),
    )
    horizon_days = 30
    train_cutoffs = 2
    strength: ClassVar[float] = 1.0

    def __init__(self, strength: float = 1.0) -> None:
        self.strength = strength

    def data_end(self, wh: Warehouse) -> datetime:
        return END

    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        rng = np.random.default_rng(int(cutoff.timestamp()) % 2**32)
        n = 400
        x = rng.normal(size=n)
        noise = rng.normal(size=n)
        y = (x + rng.normal(scale=0.8, size=n) > 0).astype(int)
        frame = pd.DataFrame(
            {"thing_id": [f"t{i}" for i in range(n)], "x_signal": x, "x_noise": noise, "y": y}
        )
        return LabelledData(frame, ["thing_id"], ["x_signal", "x_noise"], ["y"], [], [cutoff])

    def default_params(self) -> dict[str, Any]:
        return {"strength": self.strength}

    def fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
    ) -> Scorer:
        s = float(params["strength"])
        return LinearScorer(
            features=train.features,
            outputs=["p"],
            coef=[2.0 * s, 1.0 - s],
            mean=[0.0, 0.0],
            scale=[1.0, 1.0],
            fill=[0.0, 0.0],
            link="logit",
        )

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        return ConstantScorer(features=[], outputs=["p"], values=[float(train.y.mean())])

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        p = predictions.column(0)
        return {
            "auc": _metrics.auc(data.y.to_numpy(), p),
            "log_loss": _metrics.log_loss(data.y.to_numpy(), p),
        }


def toy_warehouse(path: Any) -> Warehouse:
    wh = Warehouse(path)
    wh.write_tables(
        {
            "customers": pd.DataFrame(
                {
                    "customer_id": ["c1"],
                    "created_at": ["2024-01-01"],
                    "country": ["BR"],
                    "region": [None],
                    "city": [None],
                    "zip_prefix": [None],
                    "lat": [0.0],
                    "lon": [0.0],
                }
            )
        },
        source="toy",
        mode="dataset",
    )
    return wh
