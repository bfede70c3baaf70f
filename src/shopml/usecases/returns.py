"""returns: will this order item be returned within 30 days of delivery?

The prediction is made when the item is delivered, the moment the 30-day return window opens
(for reverse-logistics planning and targeted aftercare): rows are the lines of orders placed in
a four-week window after the cutoff and delivered; the features are what is known at delivery:
the line, its product and order, how late the delivery was against the promise, and the
product's, category's, seller's and customer's history **as of that line's own delivery**
(:func:`shopml.features.lines.line_history_as_of`, strictly before it; the purchase stands in
for the delivery when a shop does not record deliveries), not as of the window's start.

The model is a LightGBM classifier tuned on the validation window, then refitted on the
training and validation lines together (the rounds found by early stopping), so the newest
labelled month is learned from. Baselines: the category's historical return rate (what a shop
does without a model) and a logistic regression on the same features. Return rates on real
data are a few percent, so PR-AUC is reported beside AUC.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from shopml.runtime.scorers import ColumnScorer, LinearScorer, Scorer
from shopml.usecases import _boosting, _metrics, _plots
from shopml.usecases._scaling import fill_and_scale
from shopml.usecases.base import (
    BaselineUnavailable,
    GatePolicy,
    LabelledData,
    MonitorSpec,
    Predictions,
    UseCase,
)

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse

RETURN_WINDOW_DAYS = 30
KEYS = ["order_item_id", "order_id", "product_id", "seller_id", "customer_id"]
NON_FEATURES = {*KEYS, "category", "size_type"}
DELIVERY_FEATURES = {
    "delivery_days": "days from purchase to delivery",
    "delivery_delay_days": "days delivered after the promised date (negative: early)",
}


class Returns(_boosting.BoostedParams, UseCase):
    # Returns are rare and noisy: small trees with many rows per leaf generalise better
    # (measured on 2,000- and 20,000-customer shops; tuning searches around this).
    booster_overrides: ClassVar[dict[str, Any]] = {
        "num_leaves": 7,
        "min_data_in_leaf": 200,
        "learning_rate": 0.03,
        "lambda_l2": 10.0,
    }
    name = "returns"
    question = "Will this order item be returned?"
    entity = "order_item"
    key = "order_item_id"
    kind = "binary"
    required_tables = ("customers", "sellers", "products", "orders", "order_items", "returns")
    metrics = _metrics.BINARY_METRICS
    gate = GatePolicy(
        "auc",
        higher_is_better=True,
        min_improvement=0.002,
        floors={"auc": 0.60},
        output_range=(0.0, 1.0),
    )
    monitoring = MonitorSpec.probabilities(
        features=(
            "unit_price",
            "line_value",
            "delivery_delay_days",
            "price_vs_list",
            "category_return_rate",
            "customer_return_rate",
            "distance_km",
            "estimated_delivery_days",
        ),
        prediction="p_return",
        label="returned",
        label_delay_days=60,
    )
    # Lines ordered in 4 weeks after the cutoff; their labels are complete 90 days after it.
    entity_window_days: ClassVar[int] = 28
    horizon_days = 90
    train_cutoffs = 8
    train_step_days = 28

    def arrivals(self, wh: Warehouse, start: datetime, end: datetime) -> Any:
        """Lines of the orders placed between ``start`` and ``end`` (scored on delivery)."""
        return wh.con.execute(
            "SELECT i.order_item_id FROM order_items i JOIN orders o USING (order_id) "
            "WHERE o.purchased_at >= ? AND o.purchased_at < ? ORDER BY 1",
            [start, end],
        ).df()

    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        import ibis

        from shopml.features import FEATURE_SETS, order_item_features
        from shopml.features._snapshot import days_between
        from shopml.features.lines import LINE_HISTORY_COLUMNS, line_history_as_of

        b = wh.ibis()
        o = b.table("orders")
        window_end = cutoff + timedelta(days=self.entity_window_days)
        label_end = cutoff + timedelta(days=self.horizon_days)
        ret_window = ibis.interval(days=RETURN_WINDOW_DAYS)
        delivered = self.has_delivery_dates(wh)
        if delivered:
            window = o.filter(o.delivered_at.notnull())
        else:
            # Shops that do not record deliveries (Online Retail) count the return window
            # from the purchase.
            window = o.mutate(delivered_at=o.purchased_at)
        orders = window.filter(
            window.purchased_at >= cutoff,
            window.purchased_at < window_end,
            (window.delivered_at + ret_window) < label_end,
        )
        items = b.table("order_items").semi_join(orders, "order_id")
        feats = order_item_features(b, cutoff, items, orders=orders)
        # History as of each line's own moment (its delivery, when the prediction is made),
        # not as of the window's start: a line delivered late in the window knows the returns
        # and orders of the days before it.
        moments = items.select("order_item_id", "order_id", "product_id", "seller_id").join(
            orders.select("order_id", "customer_id", as_of=orders.delivered_at), "order_id"
        )
        history = line_history_as_of(b, moments, "as_of")
        feats = feats.drop(*LINE_HISTORY_COLUMNS).join(history, "order_item_id")
        # The item's own delivery, known when it is scored (at delivery).
        if delivered:
            delivery = orders.select(
                "order_id",
                delivery_days=days_between(orders.delivered_at, orders.purchased_at),
                delivery_delay_days=days_between(orders.delivered_at, orders.estimated_delivery_at),
            )
        else:  # unknown, not zero: the purchase stands in for the delivery only as a date
            unknown = ibis.null().cast("float64")
            delivery = orders.select("order_id", delivery_days=unknown, delivery_delay_days=unknown)
        feats = feats.left_join(delivery, "order_id").drop("order_id_right")
        r = b.table("returns")
        od = orders.select("order_id", "delivered_at")
        li = items.select("order_item_id", "order_id").join(od, "order_id")
        returned = (
            r.join(li, "order_item_id")
            .filter(lambda t: t.returned_at <= t.delivered_at + ret_window)
            .select("order_item_id")
            .distinct()
            .mutate(returned=ibis.literal(1))
        )
        t = feats.left_join(returned, "order_item_id").drop("order_item_id_right")
        oracle: list[str] = []
        if wh.exists("oracle_order_items"):
            t = t.left_join(b.table("oracle_order_items"), "order_item_id").drop(
                "order_item_id_right"
            )
            oracle = ["p_return"]
        df = t.order_by("order_item_id").to_pandas()
        df["returned"] = pd.to_numeric(df["returned"], errors="coerce").fillna(0).astype("int64")
        features = [c for c in FEATURE_SETS["order_items"].columns if c not in NON_FEATURES]
        features += list(DELIVERY_FEATURES)
        return LabelledData(df, KEYS, features, ["returned"], oracle, [cutoff])

    def fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
    ) -> Scorer:
        return _boosting.fit_booster_scorer(
            train,
            valid,
            params,
            [("binary", {})],
            ["p_return"],
            seed=seed,
            kind="probability",
            clip=(0.0, 1.0),
        )

    def final_fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
        *,
        as_of: datetime,
        **kwargs: Any,
    ) -> Scorer:
        """The tuned model refitted on every labelled line (training and validation windows),
        with the number of rounds early stopping found on validation."""
        if kwargs.get("label_horizon_days") not in (None, self.horizon_days):
            return super().final_fit(wh, train, valid, params, seed, as_of=as_of, **kwargs)
        return _boosting.refit_booster_scorer(
            train,
            valid,
            params,
            [("binary", {})],
            ["p_return"],
            seed=seed,
            kind="probability",
            clip=(0.0, 1.0),
        )

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        return category_rate(train)

    def baselines(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> dict[str, Any]:
        """``category-rate`` (what a shop does without a model) and ``logistic`` (a logistic
        regression on the model's own features): each an answer, or why it cannot be fitted."""
        out: dict[str, Any] = {"category-rate": category_rate(train)}
        try:
            out["logistic"] = logistic_baseline(train, "p_return")
        except BaselineUnavailable as exc:
            out["logistic"] = exc
        return out

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        return _metrics.binary_metrics(data.y.to_numpy(), predictions.column(0))

    def oracle_metrics(self, wh: Warehouse, data: LabelledData) -> dict[str, float] | None:
        if not data.has_oracle:
            return None
        return _metrics.binary_metrics(data.y.to_numpy(), data.frame["p_return"].to_numpy())

    def plots(self, scorer: Scorer, data: LabelledData, outdir: Path) -> list[Path]:
        y = data.y.to_numpy(dtype="float64")
        p = np.asarray(scorer.predict_matrix(scorer.to_matrix(data.frame))).reshape(-1)
        return _plots.binary_diagnostics(y, p, scorer.meta, outdir)


def category_rate(train: LabelledData) -> Scorer:
    """Each line at its category's historical return rate; the training rows' rate where a
    category is new."""
    rate = float(train.y.mean()) if len(train) else 0.0
    return ColumnScorer(
        features=["category_return_rate"],
        outputs=["p_return"],
        fill=[rate],
        meta={"name": "category return rate"},
    )


def logistic_baseline(train: LabelledData, output: str) -> Scorer:
    """A logistic regression on ``train``'s features (missing values at the training median,
    standardised, L2 with scikit-learn's default strength), served as a numpy
    :class:`LinearScorer`. Raises :class:`BaselineUnavailable` with one outcome only."""
    from sklearn.linear_model import LogisticRegression

    y = train.y.to_numpy()
    if len(np.unique(y)) < 2:
        raise BaselineUnavailable(
            f"logistic regression: the {len(train)} training rows have one outcome only"
        )
    scorer = LinearScorer(
        features=list(train.features),
        outputs=[output],
        link="logit",
        clip=(0.0, 1.0),
        meta={"name": "logistic regression on the model's features"},
    )
    z, fill, mean, scale = fill_and_scale(scorer.to_matrix(train.frame))
    model = LogisticRegression(max_iter=2000).fit(z, y)
    scorer.coef = [float(v) for v in model.coef_[0]]
    scorer.intercept = float(model.intercept_[0])
    scorer.mean, scorer.scale, scorer.fill = mean.tolist(), scale.tolist(), fill.tolist()
    return scorer
