"""Filling and standardising the linear baselines' inputs: missing and infinite values, columns
with no value at all, constant columns, and no numpy warning on any of them."""

from __future__ import annotations

import warnings

import numpy as np

from shopml.usecases._scaling import fill_and_scale, finite_medians

NAN, INF = np.nan, np.inf


def test_medians_skip_missing_and_infinite_values_and_a_column_with_none_is_zero() -> None:
    x = np.array([[1.0, NAN, INF], [3.0, NAN, 5.0], [INF, NAN, NAN], [2.0, NAN, -INF]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "All-NaN slice" would fail here
        med = finite_medians(x)
    assert med.tolist() == [2.0, 0.0, 5.0]
    assert finite_medians(np.empty((0, 2))).tolist() == [0.0, 0.0]


def test_filled_then_z_scored_with_constant_columns_centred() -> None:
    x = np.array([[1.0, 7.0, NAN], [3.0, 7.0, NAN], [NAN, 7.0, NAN]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z, fill, mean, scale = fill_and_scale(x)
    assert fill.tolist() == [2.0, 7.0, 0.0]
    assert mean.tolist() == [2.0, 7.0, 0.0] and scale[1:].tolist() == [1.0, 1.0]
    assert np.isfinite(z).all() and np.allclose(z[:, 0], [-1.2247449, 1.2247449, 0.0])
    assert z[:, 1:].tolist() == [[0.0, 0.0]] * 3
    # A spread at or under min_scale counts as constant.
    assert fill_and_scale(np.array([[0.0], [1e-13]]), min_scale=1e-12)[3].tolist() == [1.0]
