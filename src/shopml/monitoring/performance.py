"""Performance once the labels arrive: logged predictions joined to what really happened.

A prediction made on day ``d`` is judged when its label is final, ``label_delay_days`` after
``d`` (MonitorSpec): the use case's own labelled dataset at cutoff ``d`` holds the truth for the
entities it scored that day, and the use case's own ``evaluate`` computes the metrics, on the
outputs that were actually served (not a re-scoring), so live figures and the model's test
figures are the same metrics computed the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.runtime.scorers import Scorer
from shopml.usecases._live import days_of

log = logging.getLogger("shopml.monitoring")

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse
    from shopml.runtime.predictions import PredictionWindow
    from shopml.usecases.base import LabelledData, UseCase


@dataclass
class LoggedScorer(Scorer):
    """Answers with the outputs that were logged, row for row (for a use case's evaluate)."""

    values: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        if len(x) != len(self.values):
            raise ValueError(f"{len(x)} rows to score but {len(self.values)} logged outputs")
        return self.values[:, 0] if self.values.shape[1] == 1 else self.values


class LabelCache:
    """Labelled datasets per (use case, day), built once per process: a day's labels do not
    change once final, and a replay asks for the same days again and again."""

    def __init__(self, max_entries: int = 512) -> None:
        self._data: dict[tuple[str, datetime], LabelledData] = {}
        self.max_entries = max_entries

    def get(self, uc: UseCase, wh: Warehouse, day: datetime) -> LabelledData:
        key = (uc.name, day)
        hit = self._data.get(key)
        if hit is None:
            if len(self._data) >= self.max_entries:
                self._data.pop(next(iter(self._data)))
            hit = uc.dataset(wh, day)
            self._data[key] = hit
        return hit

    def put(self, uc: UseCase, day: datetime, data: LabelledData) -> None:
        self._data[(uc.name, day)] = data


def day_of(ts: pd.Timestamp) -> datetime:
    """The naive UTC midnight of a timestamp (the warehouse's time convention)."""
    t = ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts
    return datetime(t.year, t.month, t.day)


@dataclass
class Joined:
    """Logged predictions matched to their labels."""

    data: LabelledData
    values: np.ndarray
    outputs: list[str]
    versions: pd.Series
    days: list[datetime]
    unmatched: int

    def __len__(self) -> int:
        return len(self.data)


def numeric_outputs(outputs: pd.DataFrame) -> list[str]:
    return [c for c in outputs.columns if pd.api.types.is_numeric_dtype(outputs[c])]


def join_labels(
    uc: UseCase,
    wh: Warehouse,
    window: PredictionWindow,
    known_by: datetime,
    cache: LabelCache | None = None,
) -> Joined | None:
    """The window's predictions whose labels are final at ``known_by``, with their labels."""
    from shopml.usecases.base import LabelledData

    spec = uc.monitoring
    if spec.label is None or not len(window):
        return None
    cache = cache or LabelCache()
    delay = timedelta(days=spec.label_delay_days)
    frame = window.frame.copy()
    frame["day"] = days_of(frame["ts"])
    frame["row"] = np.arange(len(frame))
    frame = frame[frame["day"] + delay <= pd.Timestamp(known_by)]
    outs = numeric_outputs(window.outputs)
    if frame.empty or not outs:
        return None
    parts: list[pd.DataFrame] = []
    rows: list[np.ndarray] = []
    unmatched = 0
    template: LabelledData | None = None
    days: list[datetime] = []
    for stamp, preds in frame.groupby("day", sort=True):
        day = pd.Timestamp(stamp).to_pydatetime()
        days.append(day)
        data = cache.get(uc, wh, day)
        if template is None and len(data):
            template = data
        key = str(preds["entity_key"].iloc[0])
        if not len(data) or key not in data.frame.columns:
            unmatched += len(preds)
            continue
        truth = data.frame.drop_duplicates(key).copy()
        truth[key] = truth[key].astype(str)
        matched = preds[["entity_id", "row"]].merge(
            truth, left_on="entity_id", right_on=key, how="inner"
        )
        matched = matched.drop_duplicates("row")
        unmatched += len(preds) - len(matched)
        if len(matched):
            rows.append(matched["row"].to_numpy())
            parts.append(matched.drop(columns=["entity_id", "row"]))
    if not parts or template is None:
        return None
    joined = pd.concat(parts, ignore_index=True)
    idx = np.concatenate(rows)
    values = window.outputs[outs].to_numpy(dtype="float64")[idx]
    data = LabelledData(joined, template.keys, template.features, template.labels, template.oracle)
    return Joined(
        data,
        values,
        outs,
        window.frame["model_version"].iloc[idx].reset_index(drop=True),
        days,
        unmatched,
    )


def live_metrics(uc: UseCase, joined: Joined) -> dict[str, float]:
    """The use case's own metrics on the served outputs."""
    scorer = LoggedScorer(list(joined.data.features), joined.outputs, values=joined.values)
    metrics = uc.evaluate(scorer, joined.data)
    return {k: float(v) for k, v in metrics.items() if v is not None}


def metric_noise(
    uc: UseCase,
    joined: Joined,
    metrics: list[str],
    *,
    draws: int = 60,
    max_rows: int = 20_000,
    seed: int = 0,
) -> dict[str, float]:
    """The standard error of each live metric on these labelled predictions (bootstrap).

    A few hundred labelled predictions give a noisy figure: judging its distance from the
    test figure against this noise keeps a small shop from retraining on chance. Large sets
    are bootstrapped on a subsample and the error scaled back by the square root of sizes.
    """
    from shopml.usecases.base import LabelledData

    n = len(joined)
    if n < 10:
        return {}
    rng = np.random.default_rng(seed)
    m = min(n, max_rows)
    values: dict[str, list[float]] = {k: [] for k in metrics}
    for _ in range(draws):
        idx = rng.integers(0, n, m)
        data = joined.data
        part = LabelledData(
            data.frame.iloc[idx].reset_index(drop=True),
            data.keys,
            data.features,
            data.labels,
            data.oracle,
        )
        scorer = LoggedScorer(list(data.features), joined.outputs, values=joined.values[idx])
        try:
            scored = uc.evaluate(scorer, part)
        except Exception as exc:  # a resample the metrics cannot score (one class only)
            log.debug("%s: a bootstrap resample was not scored: %s", uc.name, exc)
            continue
        for k in metrics:
            v = scored.get(k)
            if v is not None and np.isfinite(v):
                values[k].append(float(v))
    scale = float(np.sqrt(m / n))
    return {k: float(np.std(v, ddof=1)) * scale for k, v in values.items() if len(v) >= draws // 2}


def degradation(metric: str, live: float, reference: float, higher_is_better: bool | None) -> float:
    """How much worse the live figure is than the model's test figure, relative to it
    (0 = as good, 0.25 = a quarter worse; negative when better). ``higher_is_better=None``:
    any move away from the test figure counts (a calibration ratio)."""
    if not (np.isfinite(live) and np.isfinite(reference)) or reference == 0:
        return float("nan")
    if higher_is_better is None:
        return abs(live - reference) / abs(reference)
    if higher_is_better:
        return (reference - live) / abs(reference)
    return (live - reference) / abs(reference)


def describe(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
