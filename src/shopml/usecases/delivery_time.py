"""delivery-time: how many days until this order arrives (the median and the 90th percentile)?

Rows are the orders placed in a four-week window after the cutoff and delivered before the label
horizon ends (canceled orders and orders still in transit have no label). The features are what
is known when the order is placed (its lines, weight, distance, carrier, calendar, the shop's
own promised date) plus seller and customer history strictly before the cutoff
(:func:`shopml.features.order_features`). The label is the days from purchase to delivery.

The model is two LightGBM quantile boosters (alpha 0.5 and 0.9) in one scorer; the 90th
percentile is shifted on the validation window (a split-conformal offset) so that about 90% of
orders arrive by it, which is the date a shop can promise. The baseline is the shop's own
estimated delivery date, used for both outputs. Metrics: MAE and RMSE of the median, coverage
of the 90th percentile and its distance from 0.9, and the pinball loss of both quantiles.

Real order histories (Olist) are judged on a second, stricter footing: :func:`purchase_time_frame`
builds one row per delivered order from what is known the moment it is placed (its customer's
and seller's ZIP prefix, region and location, their distance, its lines) and history **as of
that purchase** (deliveries completed before it: overall, to the customer's region, from the
seller, on the seller-region to customer-region route), and :func:`real_data_evaluation`
trains the same quantile model on the earlier orders and answers for the later ones beside
the shop's own promise and a constant median / 90th percentile (``benchmarks/real_olist.py``
adds the intervals).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from shopml.runtime.scorers import ColumnScorer, Scorer
from shopml.usecases import _boosting, _metrics, _plots
from shopml.usecases.base import GatePolicy, LabelledData, MonitorSpec, Predictions, UseCase

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse

KEYS = ["order_id", "customer_id"]
LABEL = "delivery_days"
OUTPUTS = ["days_p50", "days_p90"]
UPPER_QUANTILE = 0.9
SECONDS_PER_DAY = 86_400.0
EARTH_RADIUS_KM = 6371.0

# What a real order history tells about an order when it is placed (see purchase_time_frame).
PURCHASE_TIME_FEATURES = [
    "customer_zip_prefix",
    "customer_region_code",
    "customer_lat",
    "customer_lon",
    "seller_zip_prefix",
    "seller_region_code",
    "seller_lat",
    "seller_lon",
    "distance_km",
    "n_items",
    "total_weight_g",
    "purchase_dow",
    "purchase_month",
    "hist_n",
    "hist_mean_days",
    "region_n",
    "region_mean_days",
    "seller_n",
    "seller_mean_days",
    "route_n",
    "route_mean_days",
]
# Hundreds of orders, not hundreds of thousands: shallow trees, small leaves, few rounds.
SMALL_DATA_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_data_in_leaf": 15,
    "feature_fraction": 0.9,
    "lambda_l2": 1.0,
    "num_boost_round": 200,
}


def conformal_offset(y: np.ndarray, upper: np.ndarray, alpha: float) -> float:
    """The shift that makes ``upper + shift`` cover ``alpha`` of the outcomes ``y``.

    Split-conformal: the ``ceil((n + 1) alpha) / n`` empirical quantile of ``y - upper`` on
    held-out rows, so the coverage on new rows from the same distribution is at least
    ``alpha`` (and, with many rows, barely more).
    """
    y = np.asarray(y, dtype="float64")
    upper = np.asarray(upper, dtype="float64")
    ok = np.isfinite(y) & np.isfinite(upper)
    scores = np.sort(y[ok] - upper[ok])
    n = len(scores)
    if n == 0:
        return 0.0
    k = min(n, int(np.ceil((n + 1) * alpha))) - 1
    return float(scores[max(k, 0)])


def quantile_metrics(y: np.ndarray, p50: np.ndarray, p90: np.ndarray) -> dict[str, float]:
    """Accuracy of the median and calibration of the upper quantile."""
    cov = _metrics.coverage(y, p90)
    return {
        "mae": _metrics.mae(y, p50),
        "rmse": _metrics.rmse(y, p50),
        "coverage_p90": cov,
        "coverage_gap": abs(cov - UPPER_QUANTILE),
        "pinball_p50": _metrics.pinball(y, p50, 0.5),
        "pinball_p90": _metrics.pinball(y, p90, UPPER_QUANTILE),
        "interval_width": float(np.nanmean(np.asarray(p90) - np.asarray(p50))),
    }


class DeliveryTime(_boosting.BoostedParams, UseCase):
    name = "delivery-time"
    question = "How many days until this order arrives (median and 90th percentile)?"
    entity = "order"
    key = "order_id"
    kind = "quantile_regression"
    required_tables = ("customers", "sellers", "products", "orders", "order_items")
    metrics = (
        "mae",
        "rmse",
        "coverage_p90",
        "coverage_gap",
        "pinball_p50",
        "pinball_p90",
        "interval_width",
    )
    # Lower MAE wins; a promise date that misses its 90% target by more than 5 points is refused.
    gate = GatePolicy(
        "mae",
        higher_is_better=False,
        min_improvement=0.005,
        ceilings={"coverage_gap": 0.05},
        output_range=(0.0, None),
    )
    monitoring = MonitorSpec(
        features=(
            "distance_km",
            "total_weight_g",
            "estimated_delivery_days",
            "carrier_code",
            "seller_handling_days_mean",
            "seller_late_rate",
            "seller_backlog_7d",
            "n_sellers",
        ),
        prediction="days_p50",
        label=LABEL,
        label_delay_days=42,
        performance_metric="mae",
        # Delivery errors rise with the season's load for every model, the best one included
        # (+26% in a replayed November against a spring test window): 40% is beyond that.
        max_degradation=0.4,
    )
    # Orders placed in 4 weeks after the cutoff; 42 more days cover all but ~0.05% of
    # deliveries, so dropping the undelivered barely biases the label towards fast orders.
    entity_window_days: ClassVar[int] = 28
    horizon_days = 70
    # A year of training windows, so the holiday peak of the year before is in the training data.
    train_cutoffs = 12
    train_step_days = 28

    def skip_reason(self, wh: Warehouse) -> str | None:
        reason = super().skip_reason(wh)
        if reason is None and not self.has_delivery_dates(wh):
            return "the orders have no delivery dates (delivered_at is empty): nothing to learn"
        return reason

    def arrivals(self, wh: Warehouse, start: datetime, end: datetime) -> Any:
        """Orders placed between ``start`` and ``end`` (each is scored when it is placed)."""
        return wh.con.execute(
            "SELECT order_id FROM orders WHERE purchased_at >= ? AND purchased_at < ? ORDER BY 1",
            [start, end],
        ).df()

    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        from shopml.features import FEATURE_SETS, order_features
        from shopml.features._snapshot import days_between

        b = wh.ibis()
        o = b.table("orders")
        window_end = cutoff + timedelta(days=self.entity_window_days)
        label_end = cutoff + timedelta(days=self.horizon_days)
        orders = o.filter(
            o.purchased_at >= cutoff,
            o.purchased_at < window_end,
            o.delivered_at.notnull(),
            o.delivered_at < label_end,
        )
        feats = order_features(b, cutoff, orders)
        label = orders.select(
            "order_id", **{LABEL: days_between(orders.delivered_at, orders.purchased_at)}
        )
        t = feats.join(label, "order_id")
        oracle: list[str] = []
        if wh.exists("oracle_orders"):
            oo = b.table("oracle_orders").select(
                "order_id", "delivery_days_p50", "delivery_days_p90"
            )
            t = t.left_join(oo, "order_id").drop("order_id_right")
            oracle = ["delivery_days_p50", "delivery_days_p90"]
        df = t.order_by("order_id").to_pandas()
        features = [c for c in FEATURE_SETS["orders"].columns if c not in KEYS]
        return LabelledData(df, KEYS, features, [LABEL], oracle, [cutoff])

    def fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
    ) -> Scorer:
        scorer = _boosting.fit_booster_scorer(
            train,
            valid,
            params,
            [("quantile", {"alpha": 0.5}), ("quantile", {"alpha": UPPER_QUANTILE})],
            OUTPUTS,
            seed=seed,
            kind="value",
            clip=(0.0, None),
        )
        scorer.monotone_outputs = True
        scorer.offsets = [0.0, 0.0]
        if valid is not None and len(valid):
            # The 0.9 booster alone misses its target (quantile boosting shrinks toward the
            # middle): shift it so 90% of the validation orders arrive by it. Deliveries also
            # drift as the shop grows (carriers slow down under volume the training windows
            # never saw, which trees cannot extrapolate): the median's bias on the validation
            # window, one window after training, is the drift per window, and the model is used
            # about one window later still, so both outputs move by it once more.
            y = valid.y.to_numpy(dtype="float64")
            raw = np.asarray(scorer.predict_matrix(scorer.to_matrix(valid.frame)))
            drift = float(np.nanmedian(y - raw[:, 0]))
            shift = conformal_offset(y, raw[:, 1], UPPER_QUANTILE)
            scorer.offsets = [drift, shift + drift]
            scorer.meta["drift_days"] = drift
            scorer.meta["p90_offset_days"] = shift
        scorer.meta["quantiles"] = [0.5, UPPER_QUANTILE]
        return scorer

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        # The shop's promised date for both outputs; the typical delivery time where missing.
        fill = float(train.y.median())
        return ColumnScorer(
            features=["estimated_delivery_days", "estimated_delivery_days"],
            outputs=OUTPUTS,
            fill=[fill, fill],
            meta={"name": "shop's estimated delivery date"},
        )

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        out = predictions.values.to_numpy(dtype="float64")
        return quantile_metrics(data.y.to_numpy(dtype="float64"), out[:, 0], out[:, 1])

    def oracle_metrics(self, wh: Warehouse, data: LabelledData) -> dict[str, float] | None:
        if not data.has_oracle:
            return None
        f = data.frame
        return quantile_metrics(
            data.y.to_numpy(dtype="float64"),
            f["delivery_days_p50"].to_numpy(dtype="float64"),
            f["delivery_days_p90"].to_numpy(dtype="float64"),
        )

    def plots(self, scorer: Scorer, data: LabelledData, outdir: Path) -> list[Path]:
        y = data.y.to_numpy(dtype="float64")
        out = np.asarray(scorer.predict_matrix(scorer.to_matrix(data.frame)), dtype="float64")
        paths = [
            _plots.residuals(y, out[:, 0], outdir / "residuals_p50.png"),
            _plots.quantile_coverage(y, out[:, 1], UPPER_QUANTILE, outdir / "coverage_p90.png"),
        ]
        if "feature_importance" in scorer.meta:
            paths.append(
                _plots.importance(
                    scorer.meta["feature_importance"], outdir / "feature_importance.png"
                )
            )
        return paths


# -- real order histories: purchase-time features and the evaluation protocol -----------------


def _days(later: pd.Series, earlier: pd.Series) -> pd.Series:
    return (later - earlier).dt.total_seconds() / SECONDS_PER_DAY


def _zip_number(z: pd.Series) -> pd.Series:
    """A ZIP prefix as a number: postal codes are laid out geographically (Brazil's CEP runs
    from São Paulo, 0xxxx, to Rio Grande do Sul, 9xxxx), so nearby codes are nearby places."""
    return pd.to_numeric(z.astype("string").str.extract(r"^(\d+)")[0], errors="coerce")


def _haversine(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat, dlon = p2 - p1, np.radians(lon2) - np.radians(lon1)
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a)), dtype="float64")


def history_as_of_purchase(orders: pd.DataFrame, by: list[str] | None, name: str) -> pd.DataFrame:
    """For each order, the count and mean delivery days of the orders *delivered strictly before
    it was purchased* (within its ``by`` group, e.g. its customer's region; all orders when
    None), as ``<name>_n`` and ``<name>_mean_days``.

    The pool grows with time, so each order sees exactly what a shop knew when the order was
    placed: a delivery that completes a minute after the purchase is not in it.
    """
    keys = by or []
    done = orders.loc[orders["delivered_at"].notna() & orders[LABEL].notna()].copy()
    if keys:
        done = done.dropna(subset=keys)
    done = done.sort_values("delivered_at", kind="stable")
    grouped = done.groupby(keys, sort=False) if keys else None
    done["_n"] = grouped.cumcount() + 1 if grouped is not None else np.arange(1, len(done) + 1)
    done["_sum"] = grouped[LABEL].cumsum() if grouped is not None else done[LABEL].cumsum()
    right = done[[*keys, "delivered_at", "_n", "_sum"]].rename(columns={"delivered_at": "_at"})
    left = orders[["order_id", *keys, "purchased_at"]].copy()
    valid = left["purchased_at"].notna()
    if keys:
        valid &= left[keys].notna().all(axis=1)
    left = left.loc[valid].sort_values("purchased_at", kind="stable")
    # Group keys must share dtypes on both sides of an as-of merge.
    for k in keys:
        left[k] = left[k].astype(str)
        right[k] = right[k].astype(str)
    merged = pd.merge_asof(
        left,
        right,
        left_on="purchased_at",
        right_on="_at",
        by=keys or None,
        direction="backward",
        allow_exact_matches=False,  # delivered at the very second of purchase: not yet known
    )
    out = pd.DataFrame({"order_id": merged["order_id"]})
    out[f"{name}_n"] = merged["_n"].fillna(0).astype("int64").to_numpy()
    out[f"{name}_mean_days"] = (merged["_sum"] / merged["_n"]).to_numpy()
    return orders[["order_id"]].merge(out, on="order_id", how="left").fillna({f"{name}_n": 0})


def purchase_time_frame(wh: Warehouse) -> pd.DataFrame:
    """One row per order with a purchase time: keys, the label (days to delivery, null when not
    delivered), the shop's promise in days, and :data:`PURCHASE_TIME_FEATURES`.

    Everything is known when the order is placed: the customer's and the seller's ZIP prefix,
    region and location (from the warehouse, i.e. the geolocation file for Olist), their
    great-circle distance, the order's lines and weight (null without lines), the calendar, and
    delivery history as of the purchase (:func:`history_as_of_purchase`): overall, to the
    customer's region, from the order's seller, and on the seller-region to customer-region
    route. An order's own hand-over and delivery are never features.
    """
    orders = wh.read(
        "orders", ["order_id", "customer_id", "purchased_at", "delivered_at",
                   "estimated_delivery_at"]
    )  # fmt: skip
    customers = wh.read("customers", ["customer_id", "region", "zip_prefix", "lat", "lon"])
    sellers = wh.read("sellers", ["seller_id", "region", "zip_prefix", "lat", "lon"])
    items = wh.read("order_items", ["order_id", "seller_id", "product_id", "quantity"])
    products = wh.read("products", ["product_id", "weight_g"])

    f = orders.loc[orders["purchased_at"].notna()].reset_index(drop=True)
    f[LABEL] = _days(f["delivered_at"], f["purchased_at"])
    f["promise_days"] = _days(f["estimated_delivery_at"], f["purchased_at"])
    regions = sorted(set(customers["region"].dropna()) | set(sellers["region"].dropna()))
    code = {r: i for i, r in enumerate(regions)}  # alphabetical: fixed, never label-driven
    c = customers.rename(
        columns={"region": "customer_region", "zip_prefix": "customer_zip",
                 "lat": "customer_lat", "lon": "customer_lon"}
    )  # fmt: skip
    f = f.merge(c, on="customer_id", how="left")

    lines = items.merge(products, on="product_id", how="left")
    lines["weight"] = lines["weight_g"] * lines["quantity"]
    own = lines.groupby("order_id").agg(
        n_items=("product_id", "size"),
        total_weight_g=("weight", lambda w: w.sum(min_count=1)),
        seller_id=("seller_id", "first"),  # the first line's seller ships the order here
    )
    f = f.merge(own, on="order_id", how="left")
    s = sellers.rename(
        columns={"region": "seller_region", "zip_prefix": "seller_zip",
                 "lat": "seller_lat", "lon": "seller_lon"}
    )  # fmt: skip
    f = f.merge(s, on="seller_id", how="left")
    f["n_items"] = f["n_items"].fillna(0).astype("int64")
    f["customer_zip_prefix"] = _zip_number(f["customer_zip"])
    f["seller_zip_prefix"] = _zip_number(f["seller_zip"])
    f["customer_region_code"] = f["customer_region"].map(code).astype("float64")
    f["seller_region_code"] = f["seller_region"].map(code).astype("float64")
    f["distance_km"] = _haversine(
        f["customer_lat"], f["customer_lon"], f["seller_lat"], f["seller_lon"]
    )
    f["purchase_dow"] = f["purchased_at"].dt.dayofweek.astype("int64")
    f["purchase_month"] = f["purchased_at"].dt.month.astype("int64")
    f["route"] = f["seller_region"] + ">" + f["customer_region"]
    for by, name in (
        (None, "hist"),
        (["customer_region"], "region"),
        (["seller_id"], "seller"),
        (["route"], "route"),
    ):
        f = f.merge(history_as_of_purchase(f, by, name), on="order_id", how="left")
    for col in PURCHASE_TIME_FEATURES:
        f[col] = pd.to_numeric(f[col], errors="coerce").astype("float64")
    keep = ["order_id", "customer_id", "purchased_at", "delivered_at", LABEL, "promise_days"]
    return (
        f[keep + PURCHASE_TIME_FEATURES]
        .sort_values(["purchased_at", "order_id"])
        .reset_index(drop=True)
    )


@dataclass
class RealEvaluation:
    """A time-split evaluation on a real history: the test rows, and each answer on them."""

    test: LabelledData
    answers: dict[str, Predictions]
    cutoff: datetime
    rows: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def real_data_evaluation(
    frame: pd.DataFrame, test_share: float = 0.25, valid_share: float = 0.2, seed: int = 0
) -> RealEvaluation:
    """Train on the earlier delivered orders, answer for the later ones.

    The cutoff is the purchase time that leaves ``test_share`` of the delivered orders after
    it. Training (and its last ``valid_share``, which calibrates the 90th percentile) uses only
    orders *delivered* before the cutoff, so no label from after it is seen; test rows are the
    orders purchased from the cutoff on that were delivered. Answers: ``model`` (the use case's
    two quantile boosters on :data:`PURCHASE_TIME_FEATURES`), ``promise`` (the shop's estimated
    delivery date, both outputs) and ``constant`` (the training median and 90th percentile).
    """
    from shopml.usecases.base import LabelledData, Predictions

    delivered = frame.loc[frame[LABEL].notna()].sort_values("purchased_at", kind="stable")
    if len(delivered) < 40:
        raise ValueError(f"{len(delivered)} delivered orders: too few to train and test")
    cutoff = pd.Timestamp(delivered["purchased_at"].iloc[int(len(delivered) * (1 - test_share))])
    known = delivered.loc[delivered["delivered_at"] < cutoff]
    test = delivered.loc[delivered["purchased_at"] >= cutoff]
    n_valid = max(1, int(len(known) * valid_share))
    train, valid = known.iloc[:-n_valid], known.iloc[-n_valid:]

    def data(df: pd.DataFrame) -> LabelledData:
        return LabelledData(df.reset_index(drop=True), KEYS, list(PURCHASE_TIME_FEATURES), [LABEL])

    uc = DeliveryTime()
    scorer = uc.fit(None, data(train), data(valid), SMALL_DATA_PARAMS, seed=seed)  # type: ignore[arg-type]
    t = data(test)
    model = Predictions.of_matrix(scorer.predict_matrix(scorer.to_matrix(t.frame)), OUTPUTS)
    promise = t.frame["promise_days"].to_numpy(dtype="float64")
    y_train = known[LABEL].to_numpy(dtype="float64")
    p50, p90 = float(np.median(y_train)), float(np.quantile(y_train, UPPER_QUANTILE))
    answers = {
        "model": model,
        "promise": Predictions.of_matrix(np.column_stack([promise, promise]), OUTPUTS),
        "constant": Predictions.of_matrix(
            np.column_stack([np.full(len(t), p50), np.full(len(t), p90)]), OUTPUTS
        ),
    }
    with_seller = int(t.frame["seller_zip_prefix"].notna().sum())
    with_location = int(t.frame["distance_km"].notna().sum())
    return RealEvaluation(
        t,
        answers,
        cutoff.to_pydatetime(),
        rows={"train": len(train), "valid": len(valid), "test": len(t),
              "test_with_seller": with_seller, "test_with_distance": with_location},
        notes={"constant_p50": p50, "constant_p90": p90,
               "importance": scorer.meta.get("feature_importance", {}),
               "p90_offset_days": scorer.meta.get("p90_offset_days")},
    )  # fmt: skip
