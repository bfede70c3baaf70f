"""The training reference: what a model saw, profiled and stored with it for monitoring.

A sample of the rows of each split (keys, features, labels) with the model's own predictions on
them, written as ``monitoring/reference.parquet`` in the model's MLflow run. Drift checks compare
live traffic with it; the model's test figures (its version's tags) are the bar for live
performance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from shopml.runtime.scorers import Scorer
    from shopml.usecases.base import LabelledData

REFERENCE_ARTIFACT = "monitoring/reference.parquet"
ROWS_PER_SPLIT = 5_000


def reference_profile(
    scorer: Scorer,
    splits: dict[str, LabelledData],
    rows_per_split: int = ROWS_PER_SPLIT,
    seed: int = 0,
) -> pd.DataFrame:
    """Up to ``rows_per_split`` random rows of each split, with the scorer's outputs.

    A scorer that has no per-row output (a recommender ranks, a pricing model suggests) leaves
    the output columns out; the inputs are profiled all the same.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for name, data in splits.items():
        if not len(data):
            continue
        cols = list(dict.fromkeys([*data.keys, *data.features, *data.labels]))
        frame = data.frame[[c for c in cols if c in data.frame.columns]]
        if len(frame) > rows_per_split:
            frame = frame.iloc[np.sort(rng.choice(len(frame), rows_per_split, replace=False))]
        frame = frame.reset_index(drop=True)
        try:
            outputs = scorer.predict_frame(frame).reset_index(drop=True)
            outputs.columns = [f"output.{c}" for c in outputs.columns]
            frame = pd.concat([frame, outputs], axis=1)
        except Exception:
            pass
        parts.append(frame.assign(split=name))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    # Parquet wants uniform column types: object columns of mixed content become strings.
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    return out
