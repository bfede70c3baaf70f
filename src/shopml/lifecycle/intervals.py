"""How sure a metric is: bootstrap confidence intervals over a test window's independent units.

A figure from 21 test rows is noise; every decision shopml takes on a metric (the gate, a
backtest's verdict) and every figure it reports carries its interval. Answers are computed once
(:class:`~shopml.usecases.base.Predictions`); the use case's own :meth:`score` is then recomputed
on resampled rows, so any metric a use case defines gets an interval, ranking metrics included.

Resampling draws whole *units* (customers, by default) with replacement: the order lines of one
customer share that customer's habits, and resampling lines one by one would understate the
noise. Two models compared on the same window are resampled **together** (the same units in
each draw), so the interval of their difference is paired: most of the window's difficulty
cancels, and a real but small improvement is seen with far fewer rows than two separate
intervals would need.

Intervals are percentile intervals of ``draws`` replicates (400 by default; a 95% bound then
moves by about one replicate's spacing between seeds, small against any margin the gate uses).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from shopml.usecases.base import LabelledData, Predictions, UseCase

DRAWS = 400
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A metric's point estimate on all rows and its confidence interval."""

    estimate: float
    low: float
    high: float
    n: int  # independent units resampled (customers, orders, products)
    rows: int
    level: float = LEVEL
    draws: int = 0  # replicates the bounds come from (some may be undefined, e.g. one class)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def above(self, value: float) -> bool:
        """The whole interval lies above ``value``: evidence the metric exceeds it."""
        return self.defined and self.low > value

    def below(self, value: float) -> bool:
        """The whole interval lies below ``value``."""
        return self.defined and self.high < value

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        if not self.defined:
            return f"{_fmt(self.estimate)} (no interval, n={self.n})"
        return f"{_fmt(self.estimate)} [{_fmt(self.low)}, {_fmt(self.high)}] (n={self.n})"


@dataclass
class Bootstrap:
    """Replicates of every metric of several named answers, all on the same resamples."""

    estimates: dict[str, dict[str, float]]
    replicates: dict[str, pd.DataFrame]  # name -> one row per draw, one column per metric
    n: int
    rows: int
    level: float = LEVEL

    def names(self) -> list[str]:
        return list(self.estimates)

    def metrics(self, name: str) -> list[str]:
        return list(self.estimates[name])

    def interval(self, name: str, metric: str) -> Interval:
        """The interval of ``metric`` for the answers called ``name``."""
        est = self.estimates[name].get(metric, float("nan"))
        draws = self._column(name, metric)
        return self._percentile(est, draws)

    def intervals(self, name: str) -> dict[str, Interval]:
        return {m: self.interval(name, m) for m in self.metrics(name)}

    def difference(self, a: str, b: str, metric: str) -> Interval:
        """The paired interval of ``metric`` of ``a`` minus that of ``b`` (same resamples)."""
        est = self.estimates[a].get(metric, float("nan")) - self.estimates[b].get(
            metric, float("nan")
        )
        return self._percentile(est, self._column(a, metric) - self._column(b, metric))

    def _column(self, name: str, metric: str) -> np.ndarray:
        frame = self.replicates[name]
        if metric not in frame.columns:
            return np.full(len(frame), np.nan)
        return frame[metric].to_numpy(dtype="float64")

    def _percentile(self, estimate: float, draws: np.ndarray) -> Interval:
        ok = draws[np.isfinite(draws)]
        # Fewer than half the draws defined: the metric is too fragile on this window for
        # its percentiles to mean anything (AUC with a handful of positives, say).
        if len(ok) < max(10, len(draws) // 2) or not math.isfinite(estimate):
            return Interval(float(estimate), math.nan, math.nan, self.n, self.rows, self.level, 0)
        tail = (1 - self.level) / 2 * 100
        low, high = np.percentile(ok, [tail, 100 - tail])
        return Interval(
            float(estimate), float(low), float(high), self.n, self.rows, self.level, len(ok)
        )


def units_of(uc: UseCase, data: LabelledData) -> np.ndarray | None:
    """The independent unit of each row (see :attr:`UseCase.bootstrap_unit`), as codes; None
    when every row stands alone."""
    column = uc.bootstrap_unit or ("customer_id" if "customer_id" in data.frame.columns else None)
    if column is None or column not in data.frame.columns:
        return None
    codes, _ = pd.factorize(data.frame[column], use_na_sentinel=False)
    return np.asarray(codes)


class Resampler:
    """Draws bootstrap resamples of whole units: row positions, repeats allowed."""

    def __init__(self, units: np.ndarray | None, rows: int, seed: int = 0) -> None:
        self.rows = rows
        self.rng = np.random.default_rng(seed)
        if units is None:
            self.n = rows
            self._order = self._starts = self._counts = None
            return
        order = np.argsort(units, kind="stable")
        counts = np.bincount(units)
        self.n = len(counts)
        self._order = order
        self._counts = counts
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def draw(self) -> np.ndarray:
        picked = self.rng.integers(0, self.n, self.n)
        if self._order is None:
            return picked
        assert self._starts is not None and self._counts is not None
        lengths = self._counts[picked]
        ends = np.cumsum(lengths)
        within = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths)
        return self._order[np.repeat(self._starts[picked], lengths) + within]


def bootstrap(
    uc: UseCase,
    data: LabelledData,
    predictions: Mapping[str, Predictions],
    *,
    draws: int = DRAWS,
    level: float = LEVEL,
    seed: int = 0,
) -> Bootstrap:
    """Every metric of every named set of answers on ``data``, with ``draws`` paired resamples.

    All answers must be row-aligned with ``data`` (``uc.predict`` on the same rows). A resample
    on which a metric cannot be computed (it raises, or gives NaN) is left out of that metric.
    """
    for name, p in predictions.items():
        if len(p) != len(data):
            raise ValueError(f"{name}: {len(p)} answers for {len(data)} rows")
    # On all rows a failure is the model's or the use case's, and it surfaces; on a resample
    # it is the resample's (one class only, an empty segment) and that draw is left out.
    estimates = {name: _numbers(uc.score(data, p)) for name, p in predictions.items()}
    sampler = Resampler(units_of(uc, data), len(data), seed)
    collected: dict[str, list[dict[str, float]]] = {name: [] for name in predictions}
    if len(data):
        for _ in range(draws):
            rows = sampler.draw()
            part = data.take(rows)
            for name, p in predictions.items():
                collected[name].append(_safe_score(uc, part, p.take(rows)))
    replicates = {
        name: pd.DataFrame(values, columns=list(estimates[name]), dtype="float64")
        for name, values in collected.items()
    }
    return Bootstrap(estimates, replicates, sampler.n, len(data), level)


def n_needed(n: int, half_width: float, margin: float) -> int | None:
    """Roughly how many units an interval of ``half_width`` at ``n`` units would need to shrink
    to ``margin`` (intervals narrow as one over the square root of the sample size); None when
    no sample would do (a zero margin)."""
    if n <= 0 or not (math.isfinite(half_width) and math.isfinite(margin)) or margin <= 0:
        return None
    return max(n, math.ceil(n * (half_width / margin) ** 2))


def _safe_score(uc: UseCase, data: LabelledData, predictions: Predictions) -> dict[str, float]:
    try:
        return _numbers(uc.score(data, predictions))
    except (ValueError, ZeroDivisionError, FloatingPointError, IndexError):
        return {}


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.number))}


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.4g}"
