"""segments: which behavioural segment is this customer in?

Rows are the customers with at least one order before the cutoff, described by six behavioural
features built strictly before it: recency, frequency, average order value, return rate,
browsing sessions in the last 30 days and tenure (the skewed ones log-scaled with ``log1p``,
then all standardised). There is no label.

The model is k-means (scikit-learn at training time only) on the snapshots of every training
and validation cutoff pooled (a customer's behaviour at several moments: successive retrains
share most of their data, which keeps segments steady). The number of segments is the ``k`` in
3..8 with the best silhouette on a fixed sample, among the ``k`` whose smallest segment holds at
least 3% of the customers; when a previous model exists and its ``k`` scores within 0.01 of the
best, its ``k`` is kept. Each segment gets a name from rules on its centroid's z-scores (for
example "loyal high spenders", "at risk", "new", "bargain hunters"), deterministic for given
centroids.

Segment ids stay stable across retrains: when the previous model (the champion) is given to
``fit``, the new clusters are matched to the old segments by the Hungarian assignment that
maximises the number of training customers keeping their segment id
(``scipy.optimize.linear_sum_assignment`` on the overlap counts); unmatched clusters get new
ids. Retraining on unchanged data gives identical assignments.

Metrics: silhouette on a fixed sample (the gate's metric, in one standardised space built from
the evaluated rows, so the model, baseline and champion are comparable), Davies-Bouldin, size
balance (normalised entropy of the segment shares), the smallest segment's share, and, when the
previous model is known, stability (share of customers keeping their id). On simulated data,
``latent_rate_eta2`` says how much of the variance of the customers' true log purchase rate the
segments explain. The baseline is the classic RFM grid: recency tertile x frequency tertile.
There is no oracle for a segmentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.runtime.scorers import Scorer, SegmentScorer
from shopml.usecases import _live, _metrics, _plots
from shopml.usecases._scaling import fill_and_scale
from shopml.usecases.base import (
    GatePolicy,
    LabelledData,
    MonitorSpec,
    NotEnoughData,
    Predictions,
    UseCase,
)

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse

# (feature, log-scaled?) in model order.
FEATURES: list[tuple[str, bool]] = [
    ("recency_days", True),
    ("frequency_orders", True),
    ("avg_order_value", True),
    ("return_rate", False),
    ("sessions_30d", True),
    ("tenure_days", True),
]
FEATURE_NAMES = [f for f, _ in FEATURES]
K_RANGE = range(3, 9)
MIN_SEGMENT_SHARE = 0.03
KEEP_PREVIOUS_K_WITHIN = 0.01
SAMPLE = 3000  # rows for silhouette
FIT_ROWS = 40_000  # rows k-means is fitted on (a fixed sample of the pooled snapshots)
ORACLE_RATE = "oracle_purchase_rate"


def _log_mask() -> list[bool]:
    return [log for _, log in FEATURES]


def standardise(x: np.ndarray, log: list[bool]) -> tuple[np.ndarray, dict[str, list[float]]]:
    """log1p where stated, fill missing with the median, z-score; returns the transform."""
    x = np.array(x, dtype="float64", copy=True)
    m = np.asarray(log, dtype=bool)
    x[:, m] = np.log1p(np.clip(x[:, m], 0, None))
    z, med, mean, scale = fill_and_scale(x, min_scale=1e-12)
    # The scorer fills missing values before its log: store the fill in raw units.
    fill = np.where(m, np.expm1(med), med)
    return z, {
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "fill": fill.tolist(),
    }


def name_segments(centroids: np.ndarray, shares: np.ndarray) -> list[str]:
    """Names from centroid z-scores (rules in priority order; duplicates get a number, the
    largest segment first)."""
    idx = {f: i for i, f in enumerate(FEATURE_NAMES)}
    names = []
    for c in centroids:
        rec, freq, aov = (
            c[idx["recency_days"]],
            c[idx["frequency_orders"]],
            c[idx["avg_order_value"]],
        )
        ret, web, ten = c[idx["return_rate"]], c[idx["sessions_30d"]], c[idx["tenure_days"]]
        if ten < -0.75 and freq <= 0.25:
            name = "new"
        elif ret > 1.0:
            name = "serial returners"
        elif rec > 0.75 and freq > 0.25:
            name = "at risk"
        elif rec > 0.75:
            name = "lapsed"
        elif freq > 0.5 and aov > 0.25:
            name = "loyal high spenders"
        elif freq > 0.5:
            name = "loyal"
        elif aov > 0.75:
            name = "big-basket occasional"
        elif web > 0.75:
            name = "active browsers"
        elif aov < -0.75:
            name = "bargain hunters"
        else:
            name = "regular"
        names.append(name)
    order = np.argsort(-np.asarray(shares), kind="stable")
    seen: dict[str, int] = {}
    out = list(names)
    for i in order:
        n = names[i]
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            out[i] = f"{n} {seen[n]}"
    return out


class Segments(UseCase):
    name = "segments"
    question = "Which behavioural segment is this customer in?"
    entity = "customer"
    key = "customer_id"
    kind = "clustering"
    required_tables = ("customers", "orders", "order_items")
    metrics = ("silhouette", "davies_bouldin", "size_balance", "min_segment_share", "stability")
    # A retrain should follow the data: a candidate within 2% of the champion's silhouette on
    # the same window still replaces it (ids are kept stable by the matching, not the gate).
    gate = GatePolicy(
        "silhouette",
        higher_is_better=True,
        min_improvement=-0.02,
        floors={"silhouette": 0.10, "min_segment_share": 0.01},
        output_range=(0.0, 99.0),
        max_latency_ms=25.0,
    )
    monitoring = MonitorSpec(features=tuple(FEATURE_NAMES), prediction="segment_id")
    horizon_days = 30
    # fit accepts ``previous=<champion scorer>``; read by the lifecycle once it passes it.
    uses_previous = True

    def live_checks(self, live: _live.LiveContext) -> list[_live.LiveFigure]:
        """Each segment's share of the served answers and its largest move from training."""
        return _live.cluster_shares(self, live)

    # -- data --------------------------------------------------------------------------------
    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        from shopml.features import customer_features

        t = customer_features(wh.ibis(), cutoff)
        t = t.filter(t.frequency_orders > 0).select("customer_id", *FEATURE_NAMES)
        df = t.order_by("customer_id").to_pandas()
        oracle: list[str] = []
        if wh.exists("oracle_customers"):
            rate = wh.read("oracle_customers", ["customer_id", "purchase_rate"])
            df = df.merge(
                rate.rename(columns={"purchase_rate": ORACLE_RATE}), on="customer_id", how="left"
            )
            oracle = [ORACLE_RATE]
        return LabelledData(df, ["customer_id"], list(FEATURE_NAMES), [], oracle, [cutoff])

    # -- model -------------------------------------------------------------------------------
    def fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
        *,
        previous: Scorer | None = None,
    ) -> Scorer:
        """k-means on the pooled snapshots; ids matched to ``previous`` (the champion) when
        given. ``previous`` is filled by the lifecycle when it passes the champion along."""
        from sklearn.cluster import KMeans

        frames = [train.frame] + ([valid.frame] if valid is not None and len(valid) else [])
        pooled = pd.concat(frames, ignore_index=True)
        rng = np.random.default_rng(seed)
        if len(pooled) > FIT_ROWS:
            pooled = pooled.iloc[np.sort(rng.choice(len(pooled), FIT_ROWS, replace=False))]
        raw = pooled[FEATURE_NAMES].to_numpy(dtype="float64")
        z, tf = standardise(raw, _log_mask())
        sample = np.sort(rng.choice(len(z), min(SAMPLE, len(z)), replace=False))
        prev = previous if isinstance(previous, SegmentScorer) else None
        # k-means cannot find more clusters than distinct points (a shop where everyone bought
        # once, on the same day, for the same amount has one profile).
        distinct = len(np.unique(np.round(z, 9), axis=0))
        if distinct < 2:
            raise NotEnoughData(
                f"the {len(z)} customer snapshots have {distinct} distinct behaviour profile(s): "
                "no segments to find"
            )
        scores: dict[int, float] = {}
        fits: dict[int, Any] = {}
        for k in K_RANGE:
            if k >= len(z) or k > distinct:
                break
            km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(z)
            shares = np.bincount(km.labels_, minlength=k) / len(z)
            if shares.min() < MIN_SEGMENT_SHARE:
                continue
            fits[k] = km
            scores[k] = _metrics.silhouette(z[sample], km.labels_[sample])
        if not fits:  # tiny or degenerate data: the smallest k, whatever its sizes
            k0 = min(K_RANGE.start, distinct)
            fits[k0] = KMeans(n_clusters=k0, n_init=4, random_state=seed).fit(z)
            scores[k0] = _metrics.silhouette(z[sample], fits[k0].labels_[sample])
        best = max(scores, key=lambda k: (scores[k], -k))
        if prev is not None:
            pk = len(prev.centroids)
            if pk in scores and scores[pk] >= scores[best] - KEEP_PREVIOUS_K_WITHIN:
                best = pk
        km = fits[best]
        centroids = np.asarray(km.cluster_centers_, dtype="float64")
        labels = np.asarray(km.labels_)
        shares = np.bincount(labels, minlength=best) / len(labels)
        ids = list(range(best))
        if prev is not None:
            before = np.asarray(prev.predict_matrix(prev.to_matrix(pooled))).astype(int)
            ids = match_ids(labels, before, best)
        # Keep the centroids in id order: the same model reads the same after every retrain.
        order = np.argsort(ids, kind="stable")
        centroids, shares = centroids[order], shares[order]
        ids = [ids[i] for i in order]
        scorer = SegmentScorer(
            features=list(FEATURE_NAMES),
            outputs=["segment_id"],
            centroids=centroids.tolist(),
            mean=tf["mean"],
            scale=tf["scale"],
            fill=tf["fill"],
            log_features=_log_mask(),
            segment_ids=ids,
            segment_names=name_segments(centroids, shares),
            meta={
                "name": "k-means",
                "k": best,
                "silhouette_by_k": scores,
                "shares": dict(zip(ids, shares.round(4).tolist(), strict=True)),
            },
        )
        if prev is not None:
            # The previous model's state (one level, no history) so evaluate can measure
            # how many customers keep their id.
            scorer.meta["previous"] = {
                "features": list(prev.features),
                "centroids": prev.centroids,
                "mean": prev.mean,
                "scale": prev.scale,
                "fill": prev.fill,
                "log_features": prev.log_features,
                "segment_ids": prev.segment_ids,
                "segment_names": prev.segment_names,
            }
        return scorer

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        return rfm_grid(train.frame)

    # -- evaluation --------------------------------------------------------------------------
    def predict(self, scorer: Scorer, data: LabelledData) -> Predictions:
        """Each row's segment, and (when the model carries its predecessor) the segment the
        previous model gave it, for the stability of ids across retrains."""
        labels = np.asarray(scorer.predict_matrix(scorer.to_matrix(data.frame))).astype(int)
        values = pd.DataFrame({"segment_id": labels.reshape(-1)})
        prev = scorer.meta.get("previous")
        if prev:
            old = SegmentScorer(outputs=["segment_id"], **prev)
            before = np.asarray(old.predict_matrix(old.to_matrix(data.frame))).astype(int)
            values["previous_segment_id"] = before.reshape(-1)
        return Predictions(values)

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        labels = predictions.values["segment_id"].to_numpy(dtype=int)
        z, _ = standardise(data.frame[FEATURE_NAMES].to_numpy(dtype="float64"), _log_mask())
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(len(z), min(SAMPLE, len(z)), replace=False))
        _, counts = np.unique(labels, return_counts=True)
        shares = counts / counts.sum() if counts.sum() else counts
        out = {
            "silhouette": _metrics.silhouette(z[sample], labels[sample]),
            "davies_bouldin": _metrics.davies_bouldin(z, labels),
            "size_balance": _metrics.size_balance(labels),
            "min_segment_share": float(shares.min()) if len(shares) else float("nan"),
            "n_segments": float(len(counts)),
        }
        if "previous_segment_id" in predictions.values.columns:
            before = predictions.values["previous_segment_id"].to_numpy(dtype=int)
            out["stability"] = float((before == labels).mean()) if len(labels) else float("nan")
        if ORACLE_RATE in data.frame.columns:
            rate = np.log(data.frame[ORACLE_RATE].to_numpy(dtype="float64") + 1e-6)
            out["latent_rate_eta2"] = _metrics.eta_squared(rate, labels)
        return out

    def plots(self, scorer: Scorer, data: LabelledData, outdir: Path) -> list[Path]:
        assert isinstance(scorer, SegmentScorer)
        labels = np.asarray(scorer.predict_matrix(scorer.to_matrix(data.frame))).astype(int)
        ids, counts = np.unique(labels, return_counts=True)
        sizes = {
            f"{i}: {scorer.name_of(i)}": c / len(labels) for i, c in zip(ids, counts, strict=True)
        }
        out = [
            _plots.bars(sizes, outdir / "segment_sizes.png", "Segment sizes", "share of customers")
        ]
        profile = data.frame[FEATURE_NAMES].groupby(labels).median()
        for f in FEATURE_NAMES:
            vals = {f"{i}: {scorer.name_of(i)}": float(profile.loc[i, f]) for i in ids}
            out.append(_plots.bars(vals, outdir / f"profile_{f}.png", f"Median {f} by segment", f))
        return out


def match_ids(new: np.ndarray, old: np.ndarray, k: int) -> list[int]:
    """Ids for the new clusters 0..k-1: the old id each is matched to by the Hungarian
    assignment maximising the customers that keep their id; unmatched clusters get fresh ids
    above every old one."""
    from scipy.optimize import linear_sum_assignment

    old_ids = sorted(set(old.tolist()))
    pos = {o: j for j, o in enumerate(old_ids)}
    overlap = np.zeros((k, len(old_ids)))
    np.add.at(overlap, (new, np.asarray([pos[o] for o in old])), 1)
    rows, cols = linear_sum_assignment(-overlap)
    ids = [-1] * k
    for r, c in zip(rows, cols, strict=True):
        ids[r] = old_ids[c]
    nxt = max(old_ids, default=-1) + 1
    for r in range(k):
        if ids[r] < 0:
            ids[r] = nxt
            nxt += 1
    return ids


def rfm_grid(frame: pd.DataFrame) -> SegmentScorer:
    """The RFM baseline, recency tertile x frequency tertile, as a nearest-centroid scorer.

    On a rectangular grid of centroids squared distance separates by axis, and in one
    dimension the nearest of three points switches at the midpoints; placing each axis's
    points so their midpoints are the tertile cuts (ties go to the lower cell) reproduces the
    quantile rule exactly.
    """
    feats = ["recency_days", "frequency_orders"]
    x = np.log1p(np.clip(frame[feats].to_numpy(dtype="float64"), 0, None))
    axes = []
    for j in range(2):
        col = x[:, j][np.isfinite(x[:, j])]
        cuts = sorted(set(np.quantile(col, [1 / 3, 2 / 3]).tolist())) if len(col) else [0.0]
        if len(cuts) == 1:
            pts = [cuts[0] - 0.5, cuts[0] + 0.5]
        else:
            mid = (cuts[0] + cuts[1]) / 2
            pts = [2 * cuts[0] - mid, mid, 2 * cuts[1] - mid]
        axes.append(pts)
    grid = [[r, f] for r in axes[0] for f in axes[1]]
    names = [f"R{i + 1}F{j + 1}" for i in range(len(axes[0])) for j in range(len(axes[1]))]
    med = np.nanmedian(frame[feats].to_numpy(dtype="float64"), axis=0)
    return SegmentScorer(
        features=feats,
        outputs=["segment_id"],
        centroids=grid,
        mean=[0.0, 0.0],
        scale=[1.0, 1.0],
        fill=np.where(np.isfinite(med), med, 0.0).tolist(),
        log_features=[True, True],
        segment_ids=list(range(len(grid))),
        segment_names=names,
        meta={"name": "RFM recency x frequency tertiles"},
    )


__all__ = ["Segments", "match_ids", "name_segments", "rfm_grid", "standardise"]
