"""Ranking and clustering metrics in _metrics, checked by hand and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from shopml.usecases import _metrics


def test_ranking_metrics_by_hand_and_mlflow_safe_names() -> None:
    out = _metrics.ranking_metrics([["a", "b", "c"], ["x"]], [{"b"}, set()], k=3)
    assert set(out) == {"precision_at_3", "recall_at_3", "ndcg_at_3"}
    assert out["precision_at_3"] == pytest.approx(1 / 3)
    assert out["recall_at_3"] == pytest.approx(1.0)
    assert out["ndcg_at_3"] == pytest.approx(1 / np.log2(3))


def test_catalogue_coverage() -> None:
    assert _metrics.catalogue_coverage([["a", "b"], ["b", "c"]], 10) == pytest.approx(0.3)
    assert np.isnan(_metrics.catalogue_coverage([], 0))


def test_silhouette_and_davies_bouldin_match_sklearn() -> None:
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(m, 1.0, (60, 3)) for m in (0, 3, 6)])
    labels = np.repeat([5, 1, 9], 60)
    labels[0] = 1  # a misplaced point
    assert _metrics.silhouette(x, labels) == pytest.approx(silhouette_score(x, labels))
    assert _metrics.davies_bouldin(x, labels) == pytest.approx(davies_bouldin_score(x, labels))
    assert np.isnan(_metrics.silhouette(x, np.zeros(len(x))))


def test_size_balance_and_eta_squared() -> None:
    assert _metrics.size_balance(np.repeat([0, 1, 2], 10)) == pytest.approx(1.0)
    assert _metrics.size_balance(np.r_[np.zeros(98), [1, 2]]) < 0.2
    y = np.r_[np.zeros(10), np.ones(10)]
    assert _metrics.eta_squared(y, y) == pytest.approx(1.0)
    assert _metrics.eta_squared(y, np.tile([0, 1], 10)) == pytest.approx(0.0)
