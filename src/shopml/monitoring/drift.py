"""Data and prediction drift with Evidently: live inputs and outputs against the training
reference.

Each input feature gets Evidently's drift score (the normed Wasserstein distance for numbers,
the Jensen-Shannon distance for categories, by default; both independent of the sample size,
unlike a p-value, which flags every tiny shift in a large window) and a drifted flag against its
threshold; the share of drifted features summarises the dataset. A window larger than
``max_rows`` is compared on a seeded random sample of that size, and the result says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_MAX_ROWS = 20_000


@dataclass
class ColumnDrift:
    column: str
    kind: str  # numerical | categorical
    method: str
    threshold: float  # what the score was judged against (the larger of the two below)
    score: float
    drifted: bool
    base_threshold: float = 0.1  # the configured threshold
    noise: float | None = None  # the score two samples of the reference reach by chance


@dataclass
class DriftResult:
    """Per-column drift of the inputs and of the outputs, with the sizes compared."""

    features: list[ColumnDrift]
    outputs: list[ColumnDrift]
    reference_rows: int
    current_rows: int
    sampled_from: int | None  # the window's size when a sample was compared
    seconds: float = 0.0
    snapshot: Any = field(default=None, repr=False)
    # The features whose drift the share counts (the use case's watched features); empty:
    # all of them. Calendar features and lifetime counters drift by design and are reported
    # but not counted.
    watched: tuple[str, ...] = ()

    @property
    def counted(self) -> list[ColumnDrift]:
        if not self.watched:
            return self.features
        return [c for c in self.features if c.column in self.watched]

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.counted if c.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted) / len(self.counted) if self.counted else 0.0

    @property
    def share_all(self) -> float:
        n = sum(c.drifted for c in self.features)
        return n / len(self.features) if self.features else 0.0

    @property
    def sample_note(self) -> str:
        if self.sampled_from is None:
            return f"all {self.current_rows:,} rows of the window"
        return (
            f"a random sample of {self.current_rows:,} of the window's {self.sampled_from:,} rows"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("snapshot", None)
        out.update(
            share=self.share,
            drifted=self.drifted,
            share_all=self.share_all,
            counted=len(self.counted),
            sample_note=self.sample_note,
        )
        return out


def categorical_columns(
    frame: pd.DataFrame, columns: Sequence[str], max_levels: int = 12
) -> set[str]:
    """Columns to compare as categories: non-numeric ones, and integer codes with few levels
    (a carrier code, a channel code, a flag)."""
    out = set()
    for c in columns:
        s = frame[c]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            out.add(c)
            continue
        values = s.dropna().to_numpy(dtype="float64")
        if (
            len(values)
            and np.all(values == np.round(values))
            and len(np.unique(values)) <= max_levels
        ):
            out.add(c)
    return out


# Evidently's tests whose score is a p-value (drift below the threshold); the others are
# distances (drift at or above it).
P_VALUE_METHODS = frozenset(
    {
        "ks",
        "chisquare",
        "z",
        "fisher_exact",
        "g_test",
        "mannw",
        "t_test",
        "anderson",
        "cramer_von_mises",
        "epps_singleton",
        "empirical_mmd",
    }
)


def _drifted(method: str, score: float, threshold: float) -> bool:
    if not np.isfinite(score):
        return False
    return score < threshold if method in P_VALUE_METHODS else score >= threshold


def _category(value: Any) -> str | None:
    """One spelling per category, whatever the storage: 3, 3.0 and "3" are all "3"."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _score(a: np.ndarray, b: np.ndarray, categorical: bool, norm: float) -> float:
    """The drift score Evidently computes for the default methods: the Wasserstein distance
    normed by the reference's standard deviation, or the Jensen-Shannon distance of the
    category frequencies."""
    from scipy import stats
    from scipy.spatial import distance

    if categorical:
        keys, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
        pa = np.bincount(inverse[: len(a)], minlength=len(keys)) / max(len(a), 1)
        pb = np.bincount(inverse[len(a) :], minlength=len(keys)) / max(len(b), 1)
        return float(distance.jensenshannon(pb, pa))
    return float(stats.wasserstein_distance(b, a)) / norm


def noise_levels(
    reference: pd.DataFrame,
    columns: Sequence[str],
    categorical: set[str],
    n: int,
    *,
    draws: int = 40,
    quantile: float = 0.99,
    seed: int = 0,
) -> dict[str, float]:
    """Per column, the drift score that a window of ``n`` rows drawn from the reference itself
    reaches with probability ``1 - quantile``: the score's noise floor at this sample size.

    A fixed threshold (Evidently's 0.1) is right for large windows but flags chance
    differences in a window of a few hundred rows, and more so for features with few distinct
    values (a seller's backlog at a cutoff); judging each score against the larger of the
    threshold and this floor keeps small shops from alerting on noise.
    """
    rng = np.random.default_rng(seed)
    size = min(n, len(reference) // 2)
    out: dict[str, float] = {}
    if size < 2:
        return out
    for c in columns:
        is_cat = c in categorical
        values = reference[c].dropna().to_numpy()
        if len(values) < 4:
            continue
        if not is_cat:
            values = values.astype("float64")
        norm = max(float(np.std(values)), 0.001) if not is_cat else 1.0
        k = min(size, len(values) // 2)
        scores = []
        for _ in range(draws):
            perm = rng.permutation(len(values))
            scores.append(_score(values[perm[k:]], values[perm[:k]], is_cat, norm))
        out[c] = float(np.quantile(scores, quantile))
    return out


# Noise floors per (reference content, columns, window size bucket): the same reference (one
# per model version) meets windows of similar sizes check after check.
_NOISE: dict[tuple[int, tuple[str, ...], int, int], dict[str, float]] = {}


def _cached_noise(
    ref: pd.DataFrame,
    columns: Sequence[str],
    categorical: set[str],
    n: int,
    seed: int,
) -> dict[str, float]:
    # Sizes within 10% of each other share a floor (it changes with 1/sqrt(n)): the bucket's
    # lower edge is used, the slightly larger, more cautious floor.
    bucket = int(np.floor(np.log(max(n, 1)) / np.log(1.1)))
    size = max(2, int(1.1**bucket))
    content = int(pd.util.hash_pandas_object(ref, index=False).sum())
    key = (content, tuple(columns), bucket, seed)
    if key not in _NOISE:
        if len(_NOISE) > 256:
            _NOISE.clear()
        _NOISE[key] = noise_levels(ref, columns, categorical, size, seed=seed)
    return _NOISE[key]


def _prepare(frame: pd.DataFrame, columns: Sequence[str], categorical: set[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=range(len(frame)))
    for c in columns:
        s = frame[c].reset_index(drop=True)
        if c in categorical:
            out[c] = s.map(_category).astype(object)
        else:
            out[c] = pd.to_numeric(s, errors="coerce").astype("float64")
    return out


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[str],
    outputs: Sequence[str] = (),
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    num_method: str = "wasserstein",
    cat_method: str = "jensenshannon",
    threshold: float = 0.1,
    prediction_threshold: float | None = None,
    seed: int = 0,
    sampled_from: int | None = None,
    watched: Sequence[str] = (),
    calibrate: bool = True,
    timestamp: datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
) -> DriftResult:
    """Evidently's drift of ``features`` and ``outputs`` between two frames.

    Columns missing from either frame, or empty in either, are left out. ``sampled_from``
    records that ``current`` is already a sample of a larger window.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    started = time.perf_counter()
    if len(current) > max_rows:
        sampled_from = sampled_from or len(current)
        rng = np.random.default_rng(seed)
        current = current.iloc[np.sort(rng.choice(len(current), max_rows, replace=False))]
    if len(reference) > max_rows:
        rng = np.random.default_rng(seed + 1)
        reference = reference.iloc[np.sort(rng.choice(len(reference), max_rows, replace=False))]

    def usable(c: str) -> bool:
        return (
            c in reference.columns
            and c in current.columns
            and reference[c].notna().any()
            and current[c].notna().any()
        )

    feats = [c for c in features if usable(c)]
    outs = [c for c in outputs if usable(c) and c not in feats]
    columns = [*feats, *outs]
    categorical = categorical_columns(reference, columns)
    numerical = [c for c in columns if c not in categorical]
    ref = _prepare(reference, columns, categorical)
    cur = _prepare(current, columns, categorical)
    definition = DataDefinition(
        numerical_columns=numerical, categorical_columns=[c for c in columns if c in categorical]
    )
    pthreshold = threshold if prediction_threshold is None else prediction_threshold
    base = {c: (pthreshold if c in outs else threshold) for c in columns}
    noise: dict[str, float] = {}
    default_methods = num_method == "wasserstein" and cat_method == "jensenshannon"
    if calibrate and default_methods and len(cur) and columns:
        noise = _cached_noise(ref, columns, categorical, len(cur), seed)
    judged = {c: max(base[c], noise.get(c, 0.0)) for c in columns}
    metrics = [
        ValueDrift(
            column=c,
            method=cat_method if c in categorical else num_method,
            threshold=judged[c],
        )
        for c in columns
    ]
    snapshot = None
    results: dict[str, tuple[str, float, float]] = {}
    if columns:
        report = Report(metrics)
        snapshot = report.run(
            current_data=Dataset.from_pandas(cur, data_definition=definition),
            reference_data=Dataset.from_pandas(ref, data_definition=definition),
            timestamp=timestamp,
            tags=list(tags),
            metadata=dict(metadata or {}),
        )
        for m in snapshot.dict()["metrics"]:
            cfg = m.get("config", {})
            col = cfg.get("column")
            if col is None:
                continue
            value = m.get("value")
            score = float(value) if isinstance(value, (int, float)) else float("nan")
            results[col] = (str(cfg.get("method")), float(cfg.get("threshold") or threshold), score)

    def column(c: str) -> ColumnDrift:
        method, thr, score = results.get(c, ("none", threshold, float("nan")))
        return ColumnDrift(
            c,
            "categorical" if c in categorical else "numerical",
            method,
            thr,
            score,
            _drifted(method, score, thr),
            base_threshold=base.get(c, threshold),
            noise=noise.get(c),
        )

    return DriftResult(
        features=[column(c) for c in feats],
        outputs=[column(c) for c in outs],
        reference_rows=len(ref),
        current_rows=len(cur),
        sampled_from=sampled_from,
        seconds=round(time.perf_counter() - started, 3),
        snapshot=snapshot,
        watched=tuple(c for c in watched if c in feats),
    )
