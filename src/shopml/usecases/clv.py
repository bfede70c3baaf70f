"""clv: how much will this customer spend in the next 90 days?

Rows are the customers known at the cutoff with at least one order before it. The features are
the point-in-time customer features (RFM, recent windows, returns, browsing, campaigns,
reviews) plus the BG/NBD summary of the same history (repeat purchase days, recency and age in
days, mean repeat-day spend), a few rates derived from them, and where in the year the
prediction is made (the next 90 days' season). The label is the goods value (unit price times
quantity, no freight) of the customer's non-canceled orders placed in the 90 days from the
cutoff, 0 for customers who do not buy.

The model is two LightGBM regressions. The first gives ``predicted_spend_90d``, the point
prediction the gate scores by MAE; its objective is a tuned choice among ``l1``, ``huber`` and
``tweedie``, picked on the validation MAE. ``l1`` wins on simulated data, as expected: MAE is
minimised by the conditional median, which is 0 for most customers, while ``tweedie`` and the
BG/NBD model estimate the mean and pay for it in MAE (about 1.2x). A median badly underestimates
totals, so the second booster (``tweedie``) gives ``expected_spend_90d``, the conditional mean,
for budgets, sums and ranking by value. The baseline is the textbook CLV model: a BG/NBD
purchase model and a Gamma-Gamma spend model fitted by maximum likelihood on the RFM summary of
the history before the test cutoff, predicting expected spend over the horizon
(:mod:`shopml.usecases._bgnbd`: boundary fits evaluated as limits, simpler models where a piece
cannot be fitted, and ``meta["steps"]`` saying which and why).
Metrics: MAE of the point prediction (decides); RMSE, normalised Gini, the share of actual spend
in the top predicted decile and total predicted over total actual, of the expected value.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from shopml.runtime.scorers import Scorer
from shopml.usecases import _bgnbd, _boosting, _metrics, _plots
from shopml.usecases._bgnbd import BgNbdSpendScorer
from shopml.usecases.base import (
    BaselineUnavailable,
    GatePolicy,
    LabelledData,
    MonitorSpec,
    Predictions,
    UseCase,
)

if TYPE_CHECKING:
    import optuna

    from shopml.data.warehouse import Warehouse

KEYS = ["customer_id"]
LABEL = "spend_90d_future"
ORACLE = "oracle_expected_spend"
# The BG/NBD summary (lifetimes' definitions, in days): repeat purchase days, days from the
# first to the last purchase day, days from the first purchase day to the end of observation,
# and the mean spend of the repeat days.
BG_COLUMNS = ["bg_frequency", "bg_recency", "bg_T", "bg_monetary"]
DERIVED = ["repeat_rate", "recency_over_gap", "cutoff_doy_sin", "cutoff_doy_cos"]
# Not features: the key, and coordinates (where a customer lives says little about how much
# they spend here and would only let trees memorise places).
NON_FEATURES = {"customer_id", "lat", "lon"}
OBJECTIVES = ("l1", "huber", "tweedie")
# The point prediction (scored by MAE) and the expected value (scored by RMSE, Gini, capture).
OUTPUTS = ("predicted_spend_90d", "expected_spend_90d")


class CustomerLifetimeValue(UseCase):
    name = "clv"
    question = "How much will this customer spend in the next 90 days?"
    entity = "customer"
    key = "customer_id"
    kind = "regression"
    required_tables = ("customers", "products", "orders", "order_items")
    metrics = ("mae", "rmse", "gini", "top_decile_capture", "total_ratio")
    gate = GatePolicy(
        "mae",
        higher_is_better=False,
        min_improvement=0.005,
        floors={"gini": 0.2},
        output_range=(0.0, None),
    )
    monitoring = MonitorSpec(
        features=(
            "recency_days",
            "frequency_orders",
            "monetary_total",
            "spend_90d",
            "orders_90d",
            "avg_order_value",
            "bg_frequency",
            "bg_T",
        ),
        prediction="predicted_spend_90d",
        label=LABEL,
        label_delay_days=90,
        performance_metric="mae",
        # Spend swings with the season for every model (a Q4 window spends far more than a
        # summer one): only a change beyond that is a reason to retrain.
        max_degradation=0.5,
    )
    horizon_days = 90
    # Ten monthly cutoffs span most of a year, so the training windows cover every season the
    # next 90 days can fall in (the cutoff's day of year is a feature).
    train_cutoffs = 10
    train_step_days = 30
    objectives: ClassVar[tuple[str, ...]] = OBJECTIVES

    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        from shopml.features import customer_features
        from shopml.features._snapshot import as_cutoff
        from shopml.usecases._history import WEB_COLUMNS, web_history

        cutoff = as_cutoff(cutoff)
        b = wh.ibis()
        feats = customer_features(b, cutoff)
        feats = feats.filter(feats.frequency_orders > 0)
        t = feats.left_join(bgnbd_summary(b, cutoff), "customer_id").drop("customer_id_right")
        t = t.left_join(web_history(b, cutoff), "customer_id").drop("customer_id_right")
        t = t.left_join(future_spend(b, cutoff, self.horizon_days), "customer_id").drop(
            "customer_id_right"
        )
        df = t.order_by("customer_id").to_pandas()
        df[LABEL] = pd.to_numeric(df[LABEL], errors="coerce").fillna(0.0).astype("float64")
        for c in WEB_COLUMNS[:3]:
            # All null (no web events) comes back as object: convert before filling, which
            # pandas no longer downcasts silently.
            df[c] = pd.to_numeric(df[c], errors="coerce").fillna(0).astype("int64")
        add_derived(df, cutoff)
        oracle: list[str] = []
        truth = oracle_spend(wh, cutoff, self.horizon_days)
        if truth is not None:
            df = df.merge(truth, on="customer_id", how="left")
            oracle = [ORACLE]
        features = [c for c in df.columns if c not in NON_FEATURES and c not in (LABEL, ORACLE)]
        return LabelledData(df, list(KEYS), features, [LABEL], oracle, [cutoff])

    def default_params(self) -> dict[str, Any]:
        return {**_boosting.DEFAULTS, "objective": "l1"}

    def search_space(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            **_boosting.search_space(trial),
            "objective": trial.suggest_categorical("objective", list(self.objectives)),
        }

    def fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
    ) -> Scorer:
        p = dict(params)
        objective = str(p.pop("objective", "l1"))
        extra: dict[str, Any] = {}
        if objective == "huber":
            # Huber's delta is in the label's units: about a typical order value, so small
            # errors are squared and large spenders' errors count linearly.
            extra["alpha"] = float(np.median(train.y[train.y > 0])) if (train.y > 0).any() else 1.0
        elif objective == "tweedie":
            extra["tweedie_variance_power"] = 1.5
        # Two boosters: the point prediction the gate scores (MAE), and the conditional mean
        # (tweedie) for what a median cannot give: totals, budgets and value ranking.
        scorer = _boosting.fit_booster_scorer(
            train,
            valid,
            p,
            [(objective, extra), ("tweedie", {"tweedie_variance_power": 1.5})],
            list(OUTPUTS),
            seed=seed,
            kind="value",
            clip=(0.0, None),
        )
        scorer.meta["objective"] = objective
        return scorer

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        return fit_bgnbd_gamma_gamma(wh, cutoff, self.horizon_days)

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        p = predictions.values.to_numpy(dtype="float64")
        return spend_metrics(data.y.to_numpy(dtype="float64"), p[:, 0], p[:, -1])

    def oracle_metrics(self, wh: Warehouse, data: LabelledData) -> dict[str, float] | None:
        if not data.has_oracle:
            return None
        return spend_metrics(
            data.y.to_numpy(dtype="float64"), data.frame[ORACLE].to_numpy(dtype="float64")
        )

    def plots(self, scorer: Scorer, data: LabelledData, outdir: Path) -> list[Path]:
        y = data.y.to_numpy(dtype="float64")
        p = np.asarray(scorer.predict_matrix(scorer.to_matrix(data.frame))).reshape(len(data), -1)
        out = [
            _plots.residuals(y, p[:, 0], outdir / "residuals.png"),
            _plots.lift(y, p[:, -1], outdir / "spend_by_decile.png"),
        ]
        if "feature_importance" in scorer.meta:
            out.append(
                _plots.importance(
                    scorer.meta["feature_importance"], outdir / "feature_importance.png"
                )
            )
        return out


# -- dataset pieces --------------------------------------------------------------------------


def observation_end(cutoff: datetime) -> datetime:
    """The last whole day observed before ``cutoff`` (midnight at its start): the BG/NBD
    ``observation_period_end``, so a purchase on that day counts and ``T`` is in whole days."""
    last = cutoff - timedelta(microseconds=1)
    return datetime(last.year, last.month, last.day)


def bgnbd_summary(backend: Any, cutoff: datetime) -> Any:
    """Per customer with an order before ``cutoff``: the BG/NBD summary in days.

    As BG/NBD (and lifetimes' ``summary_data_from_transaction_data``) define it: purchases are
    counted per calendar day, ``bg_frequency`` is the number of purchase days after the first,
    ``bg_recency`` the days from the first to the last purchase day, ``bg_T`` the days from the
    first purchase day to the observation end, and ``bg_monetary`` the mean goods value of the
    repeat days (null without a repeat).
    """
    import ibis

    from shopml.features._snapshot import Snapshot, days_between

    snap = Snapshot(backend, cutoff)
    items = snap.items
    daily = items.group_by("customer_id", day=items.purchased_at.truncate("D")).aggregate(
        value=items.line_value.sum()
    )
    per = daily.group_by("customer_id").aggregate(
        n_days=daily.count(),
        first_day=daily.day.min(),
        last_day=daily.day.max(),
        total=daily.value.sum(),
        first_value=daily.value.argmin(daily.day),
    )
    end = ibis.literal(observation_end(snap.cutoff), type="timestamp")
    repeat = (per.n_days - 1).cast("float64")
    return per.select(
        "customer_id",
        bg_frequency=repeat,
        bg_recency=days_between(per.last_day, per.first_day).round(),
        bg_T=days_between(end, per.first_day).round(),
        bg_monetary=(per.total - per.first_value) / repeat.nullif(0.0),
    )


def future_spend(backend: Any, cutoff: datetime, horizon_days: int) -> Any:
    """Per customer: goods value of non-canceled orders placed in ``horizon_days`` from the
    cutoff (the label; the status is read after the window, when it is settled)."""
    import ibis

    c = ibis.literal(cutoff, type="timestamp")
    end = ibis.literal(cutoff + timedelta(days=horizon_days), type="timestamp")
    o = backend.table("orders")
    o = o.filter(o.purchased_at >= c, o.purchased_at < end, o.status != "canceled")
    i = backend.table("order_items")
    j = i.join(o.select("order_id", "customer_id"), "order_id")
    return j.group_by("customer_id").aggregate(
        **{LABEL: (j.unit_price * j.quantity).sum().cast("float64")}
    )


def add_derived(df: pd.DataFrame, cutoff: datetime) -> None:
    """Rates the trees would otherwise have to assemble from splits, and the season ahead."""
    with np.errstate(divide="ignore", invalid="ignore"):
        df["repeat_rate"] = df["bg_frequency"] / df["bg_T"].where(df["bg_T"] > 0)
        df["recency_over_gap"] = df["recency_days"] / df["days_between_orders_mean"].where(
            df["days_between_orders_mean"] > 0
        )
    doy = 2 * np.pi * cutoff.timetuple().tm_yday / 365.25
    df["cutoff_doy_sin"] = np.sin(doy)
    df["cutoff_doy_cos"] = np.cos(doy)


def oracle_spend(wh: Warehouse, cutoff: datetime, horizon_days: int) -> pd.DataFrame | None:
    """The simulator's expected spend per customer (``customer_id``, :data:`ORACLE`), when the
    warehouse holds a simulated shop; None otherwise."""
    if not wh.exists("oracle_customers"):
        return None
    try:
        from shopml.data import oracle
    except ImportError:
        return None
    truth = oracle.expected_spend(wh, cutoff, horizon_days=horizon_days)
    if isinstance(truth, pd.Series):
        truth = truth.rename(ORACLE).rename_axis("customer_id").reset_index()
    else:
        value = next(c for c in truth.columns if c != "customer_id")
        truth = truth[["customer_id", value]].rename(columns={value: ORACLE})
    truth[ORACLE] = truth[ORACLE].astype("float64")
    return truth


def spend_metrics(
    y: np.ndarray, point: np.ndarray, mean: np.ndarray | None = None
) -> dict[str, float]:
    """MAE of the point prediction; RMSE, normalised Gini, top-decile spend capture and total
    predicted / actual of the expected value (the point prediction when there is no other)."""
    mean = point if mean is None else mean
    total = float(np.nansum(y))
    return {
        "mae": _metrics.mae(y, point),
        "rmse": _metrics.rmse(y, mean),
        "gini": _metrics.gini(y, mean),
        "top_decile_capture": _metrics.top_share_capture(y, mean, 0.1),
        "total_ratio": float(np.nansum(mean)) / total if total > 0 else float("nan"),
    }


# -- the baseline: BG/NBD + Gamma-Gamma ------------------------------------------------------


def transactions(wh: Warehouse, cutoff: datetime) -> pd.DataFrame:
    """Every order before ``cutoff`` as (``customer_id``, ``at``, ``value``): its goods value,
    zero for a free order."""
    from shopml.features._snapshot import as_cutoff

    return wh.sql(
        """
        SELECT o.customer_id, o.purchased_at AS at, sum(i.unit_price * i.quantity) AS value
        FROM orders o JOIN order_items i USING (order_id)
        WHERE o.purchased_at < ?
        GROUP BY ALL
        """,
        [as_cutoff(cutoff)],
    )


def fit_bgnbd_gamma_gamma(wh: Warehouse, cutoff: datetime, horizon_days: int) -> BgNbdSpendScorer:
    """BG/NBD and Gamma-Gamma by maximum likelihood on the RFM summary of every order before
    ``cutoff``, as a scorer of the expected spend over ``horizon_days``; simpler models answer
    where a piece cannot be fitted (``meta["model"]``, ``meta["steps"]``). Raises
    :class:`BaselineUnavailable` when there is no order before the cutoff."""
    from shopml.features._snapshot import as_cutoff

    cutoff = as_cutoff(cutoff)
    try:
        return _bgnbd.fit_spend_baseline(
            transactions(wh, cutoff), observation_end(cutoff), horizon_days, output=OUTPUTS[1]
        )
    except _bgnbd.FitFailed as exc:
        raise BaselineUnavailable(f"BG/NBD + Gamma-Gamma: {exc}") from exc
