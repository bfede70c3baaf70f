"""Metrics shared by the use cases, in numpy (fast, and no training library needed)."""

from __future__ import annotations

import numpy as np


def _clean(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype="float64")
    p = np.asarray(p, dtype="float64")
    ok = np.isfinite(y) & np.isfinite(p)
    return y[ok], p[ok]


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (ties get half credit); NaN when only one class is present."""
    y, p = _clean(y, p)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, step-wise)."""
    y, p = _clean(y, p)
    pos = y > 0.5
    if not pos.any():
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    hits = pos[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-12) -> float:
    y, p = _clean(y, p)
    if len(y) == 0:
        return float("nan")
    p = np.clip(p, eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def normalized_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Log loss over the log loss of always predicting the observed rate (normalized entropy):
    below 1 the model knows more than the base rate. Seasons move a window's base rate, and so
    its log loss, for every model; this ratio moves only when the model's skill does."""
    y, p = _clean(y, p)
    if len(y) == 0:
        return float("nan")
    rate = float(np.mean(y))
    if rate in (0.0, 1.0):
        return float("nan")
    return log_loss(y, p) / log_loss(y, np.full(len(y), rate))


def calibration_ratio(y: np.ndarray, p: np.ndarray) -> float:
    """Observed over predicted positives (1: as many as the model expected). A model that
    tracks the season keeps it near 1 through the season; a change in the world the model
    has not seen (a new return policy) moves it."""
    y, p = _clean(y, p)
    expected = float(np.sum(p)) if len(p) else 0.0
    return float(np.sum(y)) / expected if expected > 0 else float("nan")


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _clean(y, p)
    return float(((p - y) ** 2).mean()) if len(y) else float("nan")


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-count bins (weighted |mean p - mean y|)."""
    y, p = _clean(y, p)
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    err = 0.0
    for chunk in np.array_split(order, min(bins, len(order))):
        if len(chunk):
            err += len(chunk) * abs(p[chunk].mean() - y[chunk].mean())
    return float(err / len(y))


def mae(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _clean(y, p)
    return float(np.abs(y - p).mean()) if len(y) else float("nan")


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _clean(y, p)
    return float(np.sqrt(((y - p) ** 2).mean())) if len(y) else float("nan")


def coverage(y: np.ndarray, upper: np.ndarray) -> float:
    """Share of outcomes at or below a predicted upper quantile."""
    y, upper = _clean(y, upper)
    return float((y <= upper).mean()) if len(y) else float("nan")


def pinball(y: np.ndarray, q: np.ndarray, alpha: float) -> float:
    """Mean pinball (quantile) loss of ``q`` as the ``alpha`` quantile of ``y``: under-predictions
    cost ``alpha`` per unit, over-predictions ``1 - alpha``; the true quantile minimises it."""
    y, q = _clean(y, q)
    if len(y) == 0:
        return float("nan")
    diff = y - q
    return float(np.maximum(alpha * diff, (alpha - 1.0) * diff).mean())


def gini(y: np.ndarray, p: np.ndarray) -> float:
    """Normalised Gini: how well the prediction orders the actual values (1 = perfectly)."""
    y, p = _clean(y, p)
    if len(y) < 2 or y.sum() <= 0:
        return float("nan")

    def raw(order_by: np.ndarray) -> float:
        order = np.lexsort((np.arange(len(y)), -order_by))
        cum = np.cumsum(y[order]) / y.sum()
        return float(cum.sum() / len(y) - (len(y) + 1) / (2 * len(y)))

    best = raw(y)
    return raw(p) / best if best else float("nan")


def lift_at(y: np.ndarray, p: np.ndarray, share: float = 0.1) -> float:
    """Response rate in the top ``share`` by score over the overall rate."""
    y, p = _clean(y, p)
    if len(y) == 0 or y.mean() == 0:
        return float("nan")
    k = max(1, int(len(y) * share))
    top = np.argsort(-p, kind="mergesort")[:k]
    return float(y[top].mean() / y.mean())


def top_share_capture(y: np.ndarray, p: np.ndarray, share: float = 0.1) -> float:
    """Share of the total actual value held by the top ``share`` of rows by score (for spend:
    how much of next quarter's revenue the top decile of predicted spenders brings)."""
    y, p = _clean(y, p)
    if len(y) == 0 or y.sum() <= 0:
        return float("nan")
    k = max(1, round(len(y) * share))
    top = np.argsort(-p, kind="mergesort")[:k]
    return float(y[top].sum() / y.sum())


def uplift_at(y: np.ndarray, treated: np.ndarray, uplift: np.ndarray, share: float) -> float:
    """Observed uplift (treated response rate minus control response rate) among the top
    ``share`` of rows by predicted uplift; NaN when that slice lacks either group."""
    y = np.asarray(y, dtype="float64")
    t = np.asarray(treated, dtype=bool)
    u = np.asarray(uplift, dtype="float64")
    k = max(1, round(len(y) * share))
    top = np.argsort(-u, kind="mergesort")[:k]
    yt, tt = y[top], t[top]
    if tt.all() or not tt.any():
        return float("nan")
    return float(yt[tt].mean() - yt[~tt].mean())


def qini_coefficient(y: np.ndarray, treated: np.ndarray, uplift: np.ndarray) -> float:
    """Area between the Qini curve and the random-targeting line, normalised by the number of
    people (so it reads as extra responses per person targeted, averaged over depths)."""
    y = np.asarray(y, dtype="float64")
    t = np.asarray(treated, dtype=bool)
    u = np.asarray(uplift, dtype="float64")
    if t.all() or not t.any():
        return float("nan")
    order = np.argsort(-u, kind="mergesort")
    y, t = y[order], t[order]
    n_t = np.cumsum(t)
    n_c = np.cumsum(~t)
    r_t = np.cumsum(y * t)
    r_c = np.cumsum(y * ~t)
    with np.errstate(divide="ignore", invalid="ignore"):
        qini = r_t - np.where(n_c > 0, r_c * n_t / n_c, 0.0)
    total = qini[-1]
    n = len(y)
    random_line = total * np.arange(1, n + 1) / n
    return float((qini - random_line).sum() / (n * n))


def ranking_metrics(
    recommended: list[list[str]], actual: list[set[str]], k: int = 10
) -> dict[str, float]:
    """precision@k, recall@k and NDCG@k averaged over users with at least one actual item, named
    ``precision_at_<k>`` etc. (MLflow metric names may not contain "@")."""
    precisions, recalls, ndcgs = [], [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for rec, act in zip(recommended, actual, strict=True):
        if not act:
            continue
        hits = np.asarray([1.0 if r in act else 0.0 for r in rec[:k]])
        if len(hits) < k:
            hits = np.pad(hits, (0, k - len(hits)))
        precisions.append(hits.sum() / k)
        recalls.append(hits.sum() / len(act))
        ideal = discounts[: min(len(act), k)].sum()
        ndcgs.append((hits * discounts).sum() / ideal)
    if not precisions:
        return {
            f"precision_at_{k}": float("nan"),
            f"recall_at_{k}": float("nan"),
            f"ndcg_at_{k}": float("nan"),
        }
    return {
        f"precision_at_{k}": float(np.mean(precisions)),
        f"recall_at_{k}": float(np.mean(recalls)),
        f"ndcg_at_{k}": float(np.mean(ndcgs)),
    }


BINARY_METRICS = (
    "auc",
    "pr_auc",
    "log_loss",
    "normalized_log_loss",
    "calibration_ratio",
    "brier",
    "calibration_error",
    "lift_at_10pct",
)


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "auc": auc(y, p),
        "pr_auc": pr_auc(y, p),
        "log_loss": log_loss(y, p),
        "normalized_log_loss": normalized_log_loss(y, p),
        "calibration_ratio": calibration_ratio(y, p),
        "brier": brier(y, p),
        "calibration_error": calibration_error(y, p),
        "lift_at_10pct": lift_at(y, p, 0.1),
    }


def poisson_deviance(y: np.ndarray, mu: np.ndarray, floor: float = 1e-3) -> float:
    """Mean Poisson deviance of counts ``y`` under predicted means ``mu`` (0 is perfect).

    Predictions are floored at ``floor``: a forecast of exactly zero units for a product that
    then sells would otherwise cost an infinite amount and hide every other difference.
    """
    y, mu = _clean(y, mu)
    if len(y) == 0:
        return float("nan")
    mu = np.maximum(mu, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float((2.0 * (term - (y - mu))).mean())


def catalogue_coverage(recommended: list[list[str]], catalogue_size: int, k: int = 10) -> float:
    """Share of the catalogue that appears in at least one top-``k`` list (how much of the
    assortment a recommender ever shows; popularity alone shows ``k`` products)."""
    if catalogue_size <= 0:
        return float("nan")
    shown = {p for rec in recommended for p in rec[:k]}
    return float(len(shown) / catalogue_size)


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient (Euclidean); O(n^2) memory, so pass a sample of rows.
    NaN with fewer than two clusters; a point alone in its cluster scores 0."""
    x = np.asarray(x, dtype="float64")
    labels = np.asarray(labels)
    ids, inv = np.unique(labels, return_inverse=True)
    if len(ids) < 2 or len(ids) >= len(x):
        return float("nan")
    sq = (x**2).sum(axis=1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0))
    onehot = np.zeros((len(x), len(ids)))
    onehot[np.arange(len(x)), inv] = 1.0
    sums = d @ onehot  # distance from each point to every cluster, summed
    counts = onehot.sum(axis=0)
    own = counts[inv]
    a = sums[np.arange(len(x)), inv] / np.maximum(own - 1, 1)
    other = sums / counts
    other[np.arange(len(x)), inv] = np.inf
    b = other.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


def davies_bouldin(x: np.ndarray, labels: np.ndarray) -> float:
    """Davies-Bouldin index (lower is better): mean over clusters of the worst ratio of summed
    within-cluster scatter to the distance between centroids."""
    x = np.asarray(x, dtype="float64")
    ids, inv = np.unique(np.asarray(labels), return_inverse=True)
    if len(ids) < 2:
        return float("nan")
    cent = np.vstack([x[inv == i].mean(axis=0) for i in range(len(ids))])
    scatter = np.asarray(
        [np.linalg.norm(x[inv == i] - cent[i], axis=1).mean() for i in range(len(ids))]
    )
    dist = np.linalg.norm(cent[:, None, :] - cent[None, :, :], axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (scatter[:, None] + scatter[None, :]) / dist
    np.fill_diagonal(ratio, -np.inf)
    ratio[~np.isfinite(ratio) & (ratio > 0)] = np.inf
    return float(ratio.max(axis=1).mean())


def size_balance(labels: np.ndarray) -> float:
    """Normalised entropy of the cluster shares: 1 when every cluster is the same size, near 0
    when one cluster holds nearly everyone (1 as well for a single cluster)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(counts) == 0:
        return float("nan")
    if len(counts) == 1:
        return 1.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(p)))


def eta_squared(y: np.ndarray, groups: np.ndarray) -> float:
    """Share of the variance of ``y`` explained by the group means (correlation ratio^2)."""
    y = np.asarray(y, dtype="float64")
    g = np.asarray(groups)
    ok = np.isfinite(y)
    y, g = y[ok], g[ok]
    if len(y) < 2 or y.var() == 0:
        return float("nan")
    _, inv = np.unique(g, return_inverse=True)
    means = np.bincount(inv, weights=y) / np.bincount(inv)
    return float(((means[inv] - y.mean()) ** 2).sum() / ((y - y.mean()) ** 2).sum())
