"""high-value: will this customer place a large order (above a threshold) in the next 30 days?

Rows are the customers with at least one order before the cutoff. The label is 1 if the
customer places a non-canceled order whose goods value (the sum of ``unit_price * quantity``
over its lines, no freight) is above the threshold in ``(cutoff, cutoff + 30 days]``. The
threshold is a constructor argument; by default it is the shop's configured
``large_order_threshold`` (warehouse metadata, set by the simulator) or else the 90th percentile
of order value over the orders before the validation cutoff (the training period), fixed per
warehouse so every cutoff uses the same definition. It is recorded in the scorer's meta.

The features are the customer's point-in-time profile (:func:`shopml.features.customer_features`:
RFM, recent windows, returns, browsing, campaigns, reviews) plus the customer's history of large
orders before the cutoff (how many, their share, the spread of order values). The model is a
LightGBM binary classifier; the baseline is a logistic regression on recency, frequency and
monetary value (fitted with scikit-learn, served as a numpy-only :class:`LinearScorer`).
Metrics: AUC (the gate), PR-AUC, log loss, Brier score, calibration error and lift.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.runtime.scorers import LinearScorer, Scorer
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
    import ibis.expr.types as ir

    from shopml.data.warehouse import Warehouse

KEYS = ["customer_id"]
LABEL = "large_order"
OUTPUT = "p_large_order"
DEFAULT_QUANTILE = 0.9
# The customer's own large-order history: defined by the threshold, so built here.
HISTORY_COLUMNS: dict[str, str] = {
    "large_orders": "orders above the threshold before the cutoff",
    "large_order_rate": "large_orders / orders before the cutoff",
    "large_orders_365d": "orders above the threshold in the 365 days before the cutoff",
    "days_since_large_order": "days from the last order above the threshold to the cutoff",
    "order_value_sd": "standard deviation of order value before the cutoff (null with 1 order)",
    "order_value_p75": "75th percentile of the customer's order values before the cutoff",
    "items_per_order": "order lines per order before the cutoff",
    "mean_unit_price": "mean unit price of the customer's lines before the cutoff",
}
# Browsing beyond the last 30 days: how often a customer comes back tracks how often they buy,
# and browsing that stopped tells a customer who left from one between purchases.
BROWSING_COLUMNS: dict[str, str] = {
    "browse_sessions_90d": "sessions without a purchase in the 90 days before the cutoff",
    "browse_sessions_365d": "sessions without a purchase in the 365 days before the cutoff",
    "browse_rate": "sessions without a purchase per day since the first order (365 days at most)",
    "days_since_browse": "days from the last session without a purchase to the cutoff",
    "browse_after_order_days": "days from the last order to the last session without a purchase",
    "recency_x_browse_rate": "recency_days * browse_rate: visits expected since the last order",
}
BASELINE_FEATURES = ["recency_days", "frequency_orders", "avg_order_value"]


def _large_order_history(backend: Any, cutoff: datetime, threshold: float) -> ir.Table:
    """Per customer with an order before ``cutoff``: :data:`HISTORY_COLUMNS`."""
    import ibis

    from shopml.features._snapshot import EXACT_PLACES, Snapshot, from_units, ratio, units

    snap = Snapshot(backend, cutoff)
    it = snap.items
    # Sums in whole millionths (integers): the same whatever order the engine adds rows in.
    per_order = it.group_by(["order_id", "customer_id", "purchased_at"]).aggregate(
        value_units=units(it.line_value).sum(),
        lines=it.count(),
        price_units=units(it.unit_price).sum(),
    )
    # The spread of order values from integer sums (cents), for the same reason (a float
    # variance is not). Squared deviations are rounded to a cent².
    to_cents = 10 ** (EXACT_PLACES - 2)
    per_order = per_order.mutate(
        value=from_units(per_order.value_units),
        cents=(per_order.value_units.cast("float64") / to_cents).round().cast("int64"),
    )
    w = ibis.window(group_by=per_order.customer_id)
    mean_cents = per_order.cents.sum().over(w).cast("float64") / per_order.cents.count().over(
        w
    ).cast("float64")
    dev = per_order.cents.cast("float64") - mean_cents
    per_order = per_order.mutate(dev2=(dev * dev).round().cast("int64"))
    large = per_order.value > threshold
    h = per_order.group_by("customer_id").aggregate(
        n_orders=per_order.count(),
        n_lines=per_order.lines.sum(),
        large_orders=per_order.count(where=large),
        large_orders_365d=per_order.count(where=large & (per_order.purchased_at >= snap.ago(365))),
        last_large_at=per_order.purchased_at.max(where=large),
        dev2=per_order.dev2.sum(),
        n_valued=per_order.cents.count(),
        order_value_p75=per_order.value.quantile(0.75),
        mean_unit_price=from_units(per_order.price_units.sum()) / per_order.lines.sum(),
    )
    return h.select(
        "customer_id",
        large_orders=h.large_orders.cast("int64"),
        large_order_rate=ratio(h.large_orders, h.n_orders),
        large_orders_365d=h.large_orders_365d.cast("int64"),
        days_since_large_order=snap.days_before_cutoff(h.last_large_at),
        order_value_sd=(ratio(h.dev2, h.n_valued - 1).sqrt() / 100).cast("float64"),
        order_value_p75=h.order_value_p75.cast("float64"),
        items_per_order=ratio(h.n_lines, h.n_orders),
        mean_unit_price=h.mean_unit_price.cast("float64"),
    )


def _browsing(backend: Any, cutoff: datetime) -> ir.Table:
    """Per logged-in visitor before ``cutoff``: :data:`BROWSING_COLUMNS` (first-order span
    added by the caller, which knows the customer's history)."""
    from shopml.features._snapshot import Snapshot

    snap = Snapshot(backend, cutoff)
    e = snap.web_events.filter(lambda t: t.customer_id.notnull())
    sessions = e.group_by(["customer_id", "session_id"]).aggregate(
        started_at=e.event_at.min(), bought=(e.event_type == "purchase").any()
    )
    b = sessions.filter(~sessions.bought)
    agg = b.group_by("customer_id").aggregate(
        browse_sessions_90d=b.count(where=b.started_at >= snap.ago(90)),
        browse_sessions_365d=b.count(where=b.started_at >= snap.ago(365)),
        last_browse_at=b.started_at.max(),
    )
    return agg.select(
        "customer_id",
        browse_sessions_90d=agg.browse_sessions_90d.cast("int64"),
        browse_sessions_365d=agg.browse_sessions_365d.cast("int64"),
        days_since_browse=snap.days_before_cutoff(agg.last_browse_at),
    )


class HighValue(_boosting.BoostedParams, UseCase):
    name = "high-value"
    question = "Will this customer place a large order (above a threshold) in the next 30 days?"
    entity = "customer"
    key = "customer_id"
    kind = "binary"
    required_tables = ("customers", "products", "orders", "order_items")
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
            "recency_days",
            "frequency_orders",
            "avg_order_value",
            "max_order_value",
            "spend_90d",
            "large_order_rate",
            "views_30d",
        ),
        prediction=OUTPUT,
        label=LABEL,
        label_delay_days=30,
    )
    horizon_days = 30
    # Positives are rare (about 3%): a year of monthly cutoffs gives the model enough of them.
    train_cutoffs = 12
    train_step_days = 30

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = threshold
        self._resolved: dict[str, tuple[float, str]] = {}

    # -- the label's definition -----------------------------------------------------------
    def resolve_threshold(self, wh: Warehouse) -> tuple[float, str]:
        """The threshold for this warehouse and where it came from (fixed per warehouse)."""
        if self.threshold is not None:
            return float(self.threshold), "argument"
        key = f"{wh.path}#{wh.dataset_version(['orders', 'order_items'])}"
        if key not in self._resolved:
            meta = wh.get_meta("large_order_threshold")
            if meta:
                self._resolved[key] = (float(meta), "warehouse meta large_order_threshold")
            else:
                self._resolved[key] = (self._quantile_threshold(wh), "p90 of training orders")
        return self._resolved[key]

    def _quantile_threshold(self, wh: Warehouse) -> float:
        # Only orders before the validation cutoff: the definition must not peek at the
        # windows the model is judged on.
        end = self.split(wh).valid_cutoff
        df = wh.sql(
            "SELECT sum(i.unit_price * i.quantity) AS v FROM order_items i "
            "JOIN orders o USING (order_id) WHERE o.purchased_at < ? GROUP BY i.order_id",
            [end],
        )
        if df.empty:
            return float("inf")
        return round(float(np.quantile(df["v"].to_numpy(dtype="float64"), DEFAULT_QUANTILE)), 2)

    # -- data -------------------------------------------------------------------------------
    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        import ibis

        from shopml.features import FEATURE_SETS, customer_features
        from shopml.features._snapshot import attach, exact_sum

        threshold, _ = self.resolve_threshold(wh)
        b = wh.ibis()
        feats = customer_features(b, cutoff)
        feats = feats.filter(feats.frequency_orders > 0)
        feats = attach(
            feats, [_large_order_history(b, cutoff, threshold), _browsing(b, cutoff)], "customer_id"
        )
        span = ibis.greatest(ibis.least(feats.days_since_first_order, 365.0), 30.0)
        feats = feats.mutate(
            browse_sessions_90d=feats.browse_sessions_90d.fill_null(0),
            browse_sessions_365d=feats.browse_sessions_365d.fill_null(0),
            browse_rate=feats.browse_sessions_365d.fill_null(0).cast("float64") / span,
        )
        # A customer who left stops coming back: browsing long after the last order, or none
        # where their usual rate says there should have been some, separates the two.
        feats = feats.mutate(
            browse_after_order_days=feats.recency_days - feats.days_since_browse,
            recency_x_browse_rate=feats.recency_days * feats.browse_rate,
        )

        o = b.table("orders")
        c = ibis.literal(cutoff, type="timestamp")
        end = ibis.literal(cutoff + timedelta(days=self.horizon_days), type="timestamp")
        # Same definition as the oracle: non-canceled orders purchased in (cutoff, end].
        future = o.filter(o.purchased_at > c, o.purchased_at <= end, o.status != "canceled")
        i = b.table("order_items").semi_join(future, "order_id")
        values = i.group_by("order_id").aggregate(value=exact_sum(i.unit_price * i.quantity))
        large = (
            values.filter(values.value > threshold)
            .join(future.select("order_id", "customer_id"), "order_id")
            .select("customer_id")
            .distinct()
            .mutate(**{LABEL: ibis.literal(1)})
        )
        t = attach(feats, [large], "customer_id")
        df = t.order_by("customer_id").to_pandas()
        df[LABEL] = pd.to_numeric(df[LABEL], errors="coerce").fillna(0).astype("int64")
        # The oracle's truth costs seconds per cutoff, so it is computed only for the window
        # that is scored against it (in :meth:`oracle_metrics`), not for every training cutoff.
        features = [*FEATURE_SETS["customers"].feature_columns, *HISTORY_COLUMNS, *BROWSING_COLUMNS]
        return LabelledData(df, KEYS, features, [LABEL], [], [cutoff])

    def oracle_truth(self, wh: Warehouse, cutoff: datetime) -> pd.DataFrame | None:
        """The simulator's true chance of a large order per customer at ``cutoff`` (column
        ``oracle_p_large_order``), or None when the warehouse was not simulated."""
        from shopml.data.warehouse import WarehouseError

        if wh.get_meta("source") != "simulator":
            return None
        threshold, _ = self.resolve_threshold(wh)
        try:
            from shopml.data.oracle import p_large_order

            truth = p_large_order(wh, cutoff, threshold, horizon_days=self.horizon_days)
        except (ImportError, WarehouseError):  # no oracle, or simulated by another version
            return None
        return truth.rename(columns={"p_large_order": f"oracle_{OUTPUT}"})

    # -- models -----------------------------------------------------------------------------
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
            [("binary", {})],
            [OUTPUT],
            seed=seed,
            kind="probability",
            clip=(0.0, 1.0),
        )
        self._record_threshold(wh, scorer)
        return scorer

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        from sklearn.linear_model import LogisticRegression

        classes = set(np.unique(train.y.to_numpy()))
        if len(classes) < 2:
            seen = "no large order" if classes <= {0} else "only large orders"
            raise BaselineUnavailable(
                f"logistic RFM: the {len(train)} training rows have {seen}: a logistic "
                "regression needs both outcomes"
            )
        scorer = LinearScorer(
            features=list(BASELINE_FEATURES),
            outputs=[OUTPUT],
            link="logit",
            clip=(0.0, 1.0),
            meta={"name": "logistic RFM"},
        )
        z, fill, mean, scale = fill_and_scale(scorer.to_matrix(train.frame))
        model = LogisticRegression(max_iter=1000).fit(z, train.y.to_numpy())
        scorer.coef = [float(v) for v in model.coef_[0]]
        scorer.intercept = float(model.intercept_[0])
        scorer.mean, scorer.scale, scorer.fill = mean.tolist(), scale.tolist(), fill.tolist()
        self._record_threshold(wh, scorer)
        return scorer

    def _record_threshold(self, wh: Warehouse | None, scorer: Scorer) -> None:
        if wh is None:
            if self.threshold is not None:
                scorer.meta["threshold"] = float(self.threshold)
            return
        threshold, source = self.resolve_threshold(wh)
        scorer.meta["threshold"] = threshold
        scorer.meta["threshold_source"] = source
        scorer.meta["horizon_days"] = self.horizon_days

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        return _metrics.binary_metrics(data.y.to_numpy(), predictions.column(0))

    def oracle_metrics(self, wh: Warehouse, data: LabelledData) -> dict[str, float] | None:
        if len(data.cutoffs) != 1:
            return None
        truth = self.oracle_truth(wh, data.cutoffs[0])
        if truth is None:
            return None
        p = data.frame[KEYS].merge(truth, on="customer_id", how="left")[f"oracle_{OUTPUT}"]
        # A customer the oracle does not know had no chance by its account.
        return _metrics.binary_metrics(data.y.to_numpy(), p.fillna(0.0).to_numpy())

    def plots(self, scorer: Scorer, data: LabelledData, outdir: Path) -> list[Path]:
        y = data.y.to_numpy(dtype="float64")
        p = np.asarray(scorer.predict_matrix(scorer.to_matrix(data.frame))).reshape(-1)
        return _plots.binary_diagnostics(y, p, scorer.meta, outdir)
