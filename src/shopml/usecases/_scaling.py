"""Filling and standardising a numeric matrix for the linear baselines and the segments."""

from __future__ import annotations

import numpy as np


def finite_medians(x: np.ndarray) -> np.ndarray:
    """Each column's median over its finite values; 0 for a column with none (all missing or
    infinite: a history with no such value at all), without numpy's all-NaN warning."""
    x = np.asarray(x, dtype="float64")
    finite = np.isfinite(x)
    out = np.zeros(x.shape[1], dtype="float64")
    some = finite.any(axis=0)
    if some.any():
        out[some] = np.nanmedian(np.where(finite, x, np.nan)[:, some], axis=0)
    return out


def fill_and_scale(
    x: np.ndarray, min_scale: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(z, fill, mean, scale)``: non-finite values replaced by their column's finite median
    (:func:`finite_medians`), then z-scored; a column whose spread is not above ``min_scale``
    keeps a scale of 1 (constant columns are centred, not blown up)."""
    fill = finite_medians(x)
    filled = np.where(np.isfinite(x), x, fill)
    mean, scale = filled.mean(axis=0), filled.std(axis=0)
    scale = np.where(scale > min_scale, scale, 1.0)
    return (filled - mean) / scale, fill, mean, scale
