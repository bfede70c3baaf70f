"""clv: how much will this customer spend in the next 90 days?

Rows are the customers known at the cutoff with at least one order before it. The features are
the point-in-time customer features (RFM, recent windows, returns, browsing, campaigns,
reviews) plus the BG/NBD summary of the same history (repeat purchase days, recency and age in
days, mean repeat-day spend), a few rates derived from them, and where in the year the
prediction is made (the next 90 days' season). The label is the goods value (unit price times
quantity, no freight) of the customer's non-canceled orders placed in the 90 days from the
cutoff, 0 for customers who do not buy.

The model is two LightGBM regressions on the customer's rates, recency, recent windows and
value per order, plus what BG/NBD + Gamma-Gamma (fitted on the history before the row's cutoff)
say of the customer: P(alive), expected purchases in 30 days, expected value of a purchase.
Lifetime totals are left out (customers scored are older than those trained on, and trees read
totals beyond their range as extremes), and so is the season unless the training windows span
the year. The first booster gives ``predicted_spend_90d``, the point prediction the gate scores
by MAE; its objective is a tuned choice among ``l1``, ``huber`` and ``tweedie``, picked on the
validation MAE (a median is 0 for most customers and minimises MAE). A median badly
underestimates totals, so the second booster gives ``expected_spend_90d``, the conditional
mean, for budgets, sums and ranking by value: a tweedie booster started from the log of BG/NBD
x Gamma-Gamma's expected spend, so it learns how far to correct the classical answer, customer
by customer, in leaves large enough that their mean spend is known to 30% (shrinkage toward
BG/NBD where data is thin: :func:`mean_params`). After tuning, both are refitted on every
window labelled before the test cutoff (rounds chosen by folds over customers). A long horizon
on a short history (39 weeks after 39 weeks of data) is learned on shorter labels and carried
to the full horizon by BG/NBD (:meth:`CustomerLifetimeValue.final_fit`). The baselines are the
textbook CLV model, a BG/NBD purchase model and a Gamma-Gamma spend model fitted by maximum
likelihood on the RFM summary of the history before the test cutoff
(:mod:`shopml.usecases._bgnbd`: boundary fits evaluated as limits, simpler models where a piece
cannot be fitted, and ``meta["steps"]`` saying which and why), and ``historical-rate``: each
customer's repeat rate times their mean spend.
Metrics: MAE of the point prediction (decides); RMSE, normalised Gini, the share of actual spend
in the top predicted decile and total predicted over total actual, of the expected value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from shopml.runtime.scorers import BoosterScorer, Explanation, Scorer, booster_explanation
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
# What BG/NBD and Gamma-Gamma, fitted on the history before the row's cutoff, say about the
# customer, in terms that do not depend on the horizon (so a model trained on a shorter label
# horizon reads them the same way): P(alive), expected purchases in the next 30 days, expected
# value of a purchase.
BGNBD_FEATURES = ["bgnbd_p_alive", "bgnbd_purchases_30d", "bgnbd_expected_value"]
# BG/NBD x Gamma-Gamma's expected spend over the row's own horizon: not a feature but the
# offset the mean model corrects (its log is the booster's starting point).
OFFSET = "bgnbd_expected_spend"
# Spend below this is treated as this for the offset's log (a customer BG/NBD gives nothing).
OFFSET_FLOOR = 1e-2
# Lifetime totals grow with a customer's age, and the customers a model scores are older than
# those of the windows it was trained on (by the horizon at least; by months when a long
# horizon is learned on a short history, and for a whole cohort that joined together): trees
# read such totals beyond their training range as the most extreme customers seen. The boosters
# describe a customer by rates, recency, recent windows, value per order and what BG/NBD makes
# of the totals (P(alive), expected purchases), which stay in range as customers age.
LIFETIME_TOTALS = frozenset(
    {
        "tenure_days", "days_since_first_order", "frequency_orders", "monetary_total",
        "items_total", "units_total", "distinct_products", "distinct_categories", "n_returns",
        "returned_items", "refund_total", "bg_frequency", "bg_recency", "bg_T",
        "sessions_total", "campaigns_received", "campaign_responses", "n_reviews",
        "orders_365d", "spend_365d", "sessions_365d",
    }
)  # fmt: skip
# Where in the year the window starts: used only when the training windows start in every
# season (otherwise trees map an unseen season onto the nearest one seen).
SEASON = ("cutoff_doy_sin", "cutoff_doy_cos")
SEASON_SPAN_DAYS = 300
# The mean model's leaves hold enough customers that their mean spend is known to 30% (relative
# standard error), with at least this L2 penalty (see :func:`mean_params`).
LEAF_RELATIVE_SE = 0.3
MEAN_MIN_L2 = 10.0
# Folds (by customer) that choose the final refit's number of boosting rounds.
REFIT_FOLDS = 3
# Not features: the key, and coordinates (where a customer lives says little about how much
# they spend here and would only let trees memorise places).
NON_FEATURES = {"customer_id", "lat", "lon", OFFSET}
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
        # Inputs of the model (it reads rates and the BG/NBD summary, not lifetime totals).
        features=(
            "recency_days",
            "bg_recency",
            "bg_monetary",
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
    # A long horizon on a short history (39 weeks after 39 weeks of data) is learned on a
    # shorter label horizon: the mean model's BG/NBD offset and the point model's BG/NBD ratio
    # carry it to the full one (see :meth:`final_fit`).
    extrapolates_horizon: ClassVar[bool] = True

    def __init__(self) -> None:
        self._bgnbd: dict[tuple[str, datetime], BgNbdSpendScorer] = {}

    def bgnbd_at(self, wh: Warehouse, cutoff: datetime) -> BgNbdSpendScorer:
        """The classical model fitted on every order before ``cutoff`` (cached per data
        version and cutoff: every training cutoff, tuning trial and baseline reuses it).
        Raises :class:`BaselineUnavailable` when there is no order before the cutoff."""
        from shopml.features._snapshot import as_cutoff

        cutoff = as_cutoff(cutoff)
        key = (f"{wh.path}@{wh.dataset_version(list(self.required_tables))}", cutoff)
        if key not in self._bgnbd:
            if len(self._bgnbd) >= 32:
                self._bgnbd.pop(next(iter(self._bgnbd)))
            self._bgnbd[key] = fit_bgnbd_gamma_gamma(wh, cutoff, self.horizon_days)
        return self._bgnbd[key]

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
        if len(df):
            bg = self.bgnbd_at(wh, cutoff)
            columns = bgnbd_columns(bg, df[BG_COLUMNS].to_numpy(dtype="float64"), self.horizon_days)
            for name, values in columns.items():
                df[name] = values
        else:
            for name in [*BGNBD_FEATURES, OFFSET]:
                df[name] = pd.Series(dtype="float64")
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
        # The classical model as known at the latest cutoff whose rows this model will be
        # judged on (the validation cutoff in tuning).
        at = max(valid.cutoffs) if valid is not None and valid.cutoffs else max(train.cutoffs)
        return fit_hybrid(
            train, valid, params, seed, self.bgnbd_at(wh, at), self.horizon_days, refit=None
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
        """The model as served from ``as_of``: its boosters' rounds found by early stopping on
        the validation window, then refitted on every window labelled before ``as_of`` (the
        training windows, those between the last of them and the validation cutoff, which
        tuning had to leave out, and the validation window), with the classical model fitted
        on everything before ``as_of``.

        With ``label_horizon_days`` shorter than :attr:`horizon_days` (a long horizon on a
        short history) the windows are labelled over that shorter horizon and the answers are
        carried to the full one by BG/NBD: the mean model's offset is the expected spend over
        the full horizon, and the point prediction is scaled by each customer's ratio of
        expected spend over the full and the shorter horizon."""
        label_h = int(kwargs.pop("label_horizon_days", None) or self.horizon_days)
        learner = self.with_horizon(label_h)
        extra: list[LabelledData] = []
        if valid is not None and valid.cutoffs and train.cutoffs:
            last, step = max(train.cutoffs), timedelta(days=self.train_step_days)
            c = max(valid.cutoffs) - step
            while c > last and c + timedelta(days=label_h) <= as_of:
                rows = learner.dataset(wh, c)
                if len(rows):
                    extra.append(rows)
                c -= step
        return fit_hybrid(
            train,
            valid,
            params,
            seed,
            self.bgnbd_at(wh, as_of),
            self.horizon_days,
            label_horizon_days=label_h,
            refit=extra,
        )

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        bg = self.bgnbd_at(wh, cutoff)
        return replace(bg, horizon_days=float(self.horizon_days), meta=dict(bg.meta))

    def baselines(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> dict[str, Any]:
        """``bgnbd`` (BG/NBD x Gamma-Gamma, or the simpler model it fell back to, as its meta
        says) and ``historical-rate`` (each customer's repeat purchase rate times their mean
        spend: what a spreadsheet would do)."""
        from shopml.features._snapshot import as_cutoff

        out: dict[str, Any] = {}
        try:
            out["bgnbd"] = self.baseline(wh, train, cutoff)
        except BaselineUnavailable as exc:
            out["bgnbd"] = exc
        try:
            c = as_cutoff(cutoff)
            out["historical-rate"] = _bgnbd.fit_spend_baseline(
                transactions(wh, c), observation_end(c), self.horizon_days,
                output=OUTPUTS[1], simple=True,
            )  # fmt: skip
        except _bgnbd.FitFailed as exc:
            out["historical-rate"] = BaselineUnavailable(f"historical rate: {exc}")
        return out

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

    from shopml.features._snapshot import Snapshot, days_between, from_units, units

    snap = Snapshot(backend, cutoff)
    items = snap.items
    daily = items.group_by("customer_id", day=items.purchased_at.truncate("D")).aggregate(
        value=units(items.line_value).sum()  # whole millionths: exact sums
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
        bg_monetary=from_units(per.total - per.first_value) / repeat.nullif(0.0),
    )


def future_spend(backend: Any, cutoff: datetime, horizon_days: int) -> Any:
    """Per customer: goods value of non-canceled orders placed in ``horizon_days`` from the
    cutoff (the label; the status is read after the window, when it is settled)."""
    import ibis

    from shopml.features._snapshot import exact_sum

    c = ibis.literal(cutoff, type="timestamp")
    end = ibis.literal(cutoff + timedelta(days=horizon_days), type="timestamp")
    o = backend.table("orders")
    o = o.filter(o.purchased_at >= c, o.purchased_at < end, o.status != "canceled")
    i = backend.table("order_items")
    j = i.join(o.select("order_id", "customer_id"), "order_id")
    return j.group_by("customer_id").aggregate(**{LABEL: exact_sum(j.unit_price * j.quantity)})


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
    zero for a free order; summed exactly (whole millionths) and in a fixed order, so the
    model fitted on them is the same whatever order the rows are stored in."""
    from shopml.features._snapshot import EXACT_PLACES, as_cutoff

    scale = 10**EXACT_PLACES
    return wh.sql(
        f"""
        SELECT o.customer_id, o.purchased_at AS at,
               sum(round(i.unit_price * i.quantity * {scale})::BIGINT)::DOUBLE / {scale} AS value
        FROM orders o JOIN order_items i USING (order_id)
        WHERE o.purchased_at < ?
        GROUP BY o.order_id, o.customer_id, o.purchased_at
        ORDER BY o.customer_id, o.purchased_at, o.order_id
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


# -- the model: boosters on top of BG/NBD -----------------------------------------------------


def bgnbd_columns(bg: BgNbdSpendScorer, summary: np.ndarray, horizon_days: float) -> dict[str, Any]:
    """:data:`BGNBD_FEATURES` and the :data:`OFFSET` (expected spend over ``horizon_days``)
    for rows of the BG/NBD summary (``bg_frequency``, ``bg_recency``, ``bg_T``,
    ``bg_monetary``) under the fitted classical model ``bg``."""
    month = replace(bg, horizon_days=30.0).components(summary)
    spend = replace(bg, horizon_days=float(horizon_days)).components(summary)["expected_spend"]
    return {
        "bgnbd_p_alive": month["p_alive"],
        "bgnbd_purchases_30d": month["expected_purchases"],
        "bgnbd_expected_value": month["expected_value"],
        OFFSET: spend,
    }


@dataclass
class HybridSpendScorer(Scorer):
    """Two boosters on the customer's features and what BG/NBD + Gamma-Gamma say of them.

    The point prediction (``outputs[0]``, scored by MAE) is a booster of the tuned objective
    on the spend over ``label_horizon_days``, scaled to ``horizon_days`` by the customer's
    ratio of BG/NBD expected spend over the two horizons (1 when they are equal). The expected
    spend (``outputs[1]``) is a tweedie booster whose starting point is the log of BG/NBD's
    expected spend over ``horizon_days``: it learns how far to correct the classical answer,
    customer by customer, and keeps its time shape for any horizon.

    ``features`` are the scorer's inputs, in the order of the matrix :meth:`predict_matrix`
    takes (the serving contract): the boosters' customer features and the BG/NBD summary
    (``bg_*``). The BG/NBD features, the offset and the ratio are computed from the summary
    with the classical model fitted when this model was.
    """

    booster: BoosterScorer | None = None
    bgnbd: BgNbdSpendScorer | None = None
    offsets: list[bool] = field(default_factory=list)  # per booster: starts at the log offset
    horizon_days: float = 90.0
    label_horizon_days: float = 90.0

    def _inputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The boosters' matrix, BG/NBD's expected spend over ``horizon_days`` and the
        horizon ratio, for the scorer's input rows ``x``."""
        assert self.booster is not None and self.bgnbd is not None
        x = np.asarray(x, dtype="float64").reshape(-1, len(self.features))
        index = {f: i for i, f in enumerate(self.features)}
        summary = x[:, [index[c] for c in BG_COLUMNS]]
        cols = bgnbd_columns(self.bgnbd, summary, self.horizon_days)
        xb = np.column_stack(
            [cols[f] if f in BGNBD_FEATURES else x[:, index[f]] for f in self.booster.features]
        ).reshape(len(x), len(self.booster.features))
        spend = cols[OFFSET]
        ratio = np.ones(len(x))
        if self.label_horizon_days != self.horizon_days:
            short = bgnbd_columns(self.bgnbd, summary, self.label_horizon_days)[OFFSET]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(
                    short > 0, spend / short, self.horizon_days / self.label_horizon_days
                )
        return xb, spend, ratio

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        assert self.booster is not None
        xb, spend, ratio = self._inputs(x)
        log_offset = np.log(np.maximum(spend, OFFSET_FLOOR))
        out = []
        for booster, offset in zip(self.booster.boosters, self.offsets, strict=True):
            if offset:
                raw = booster.predict(xb, num_threads=1, raw_score=True)
                out.append(np.exp(np.minimum(raw + log_offset, 700.0)))
            else:
                out.append(booster.predict(xb, num_threads=1) * ratio)
        return np.maximum(np.column_stack(out), 0.0)

    def parts(self) -> list[Scorer]:
        return [self.booster] if self.booster is not None else []

    def explain(self, x: np.ndarray) -> Explanation | None:
        """The point prediction (``outputs[0]``), explained: :meth:`explain_output`."""
        return self.explain_output(x, 0)

    def explain_output(self, x: np.ndarray, i: int) -> Explanation:
        """Output ``i`` as its booster's TreeSHAP contributions over the booster's inputs (the
        customer's features and the BG/NBD features computed from the summary, ``bgnbd_*``,
        with their values), plus what is applied outside the booster as named contributions:

        - a booster started from BG/NBD's answer (the mean): ``bgnbd_expected_spend``, the log
          of BG/NBD + Gamma-Gamma's expected spend (the prior the booster corrects);
        - a booster learned on a shorter label horizon: ``bgnbd_horizon_ratio``, BG/NBD's
          expected spend over the full horizon over that of the label's.

        Units: ``log`` where the output is the exponential of the sum (a tweedie booster):
        ``base + sum`` is the log of the output; otherwise the output's own units, and
        ``base + sum`` is the output before it is floored at 0.
        """
        assert self.booster is not None
        xb, spend, ratio = self._inputs(x)
        booster = self.booster.boosters[i]
        found = booster_explanation(booster, xb, self.booster.features, self.outputs[i])
        log_units = bool(self.offsets[i]) or found.units == "log"
        names, values, parts = [], [], []
        if self.offsets[i]:
            names.append(OFFSET)
            values.append(spend)
            parts.append(np.log(np.maximum(spend, OFFSET_FLOOR)))
        elif self.label_horizon_days != self.horizon_days:
            names.append("bgnbd_horizon_ratio")
            values.append(ratio)
            if log_units:
                parts.append(np.log(ratio))
            else:  # the output is the booster's times the ratio
                raw = found.base + found.contributions.sum(axis=1)
                parts.append(raw * (ratio - 1.0))
        if not names:
            return replace(found, units="log" if log_units else found.units)
        return Explanation(
            self.outputs[i],
            "log" if log_units else found.units,
            [*found.inputs, *names],
            np.column_stack([found.values, *values]),
            np.column_stack([found.contributions, *parts]),
            found.base,
        )


def fit_hybrid(
    train: LabelledData,
    valid: LabelledData | None,
    params: Mapping[str, Any],
    seed: int,
    bgnbd: BgNbdSpendScorer,
    horizon_days: int,
    *,
    label_horizon_days: int | None = None,
    refit: list[LabelledData] | None = None,
) -> HybridSpendScorer:
    """The point and mean boosters on ``train`` (early stopping on ``valid``). With ``refit``
    (a list of more labelled windows, possibly empty) they are then refitted on ``train``,
    those windows and ``valid`` together, with the rounds early stopping found; with None the
    boosters are those judged on ``valid`` (tuning). ``bgnbd`` is the classical model the
    scorer computes its BG/NBD features with."""
    p = dict(params)
    objective = str(p.pop("objective", "l1"))
    y = train.y.to_numpy(dtype="float64")
    extra: dict[str, Any] = {}
    if objective == "huber":
        # Huber's delta is in the label's units: about a typical order value, so small
        # errors are squared and large spenders' errors count linearly.
        extra["alpha"] = float(np.median(y[y > 0])) if (y > 0).any() else 1.0
    elif objective == "tweedie":
        extra["tweedie_variance_power"] = 1.5
    # Two boosters: the point prediction the gate scores (MAE), and the conditional mean
    # (tweedie, from BG/NBD's answer) for what a median cannot give: totals, budgets, ranking.
    plan = [(objective, extra, False), ("tweedie", {"tweedie_variance_power": 1.5}, True)]
    all_rows = [train, *(refit or ()), *([valid] if valid is not None and len(valid) else [])]
    features = model_features(train.features, [c for d in all_rows for c in d.cutoffs])
    inner = BoosterScorer(features=features, outputs=list(OUTPUTS), kind="value")

    def matrix(d: LabelledData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            inner.to_matrix(d.frame),
            d.y.to_numpy(dtype="float64"),
            np.log(np.maximum(d.frame[OFFSET].to_numpy(dtype="float64"), OFFSET_FLOOR)),
        )

    x, y, off = matrix(train)
    _boosting.check_learnable(y, train.labels[0])
    final = refit is not None and len(all_rows) > 1
    if final:  # every labelled window, folds by customer choose the rounds
        everything = LabelledData.concat(all_rows)
        fold = customer_folds(everything.frame["customer_id"], REFIT_FOLDS)
        # Customers for fewer than two folds (a shop with one customer): nothing to hold
        # out, so the validation window chooses the rounds, as in tuning.
        final = len(np.unique(fold)) > 1
        if final:
            x, y, off = matrix(everything)
    xv, yv, offv = matrix(valid) if valid is not None and len(valid) else (None, None, None)
    point_params, mean_p = p, mean_params(p, y)
    rounds = []
    for obj, kw, offset in plan:
        p = mean_p if offset else point_params
        if final:
            found = []
            for k in np.unique(fold):  # the folds that hold customers
                fit_rows, held = fold != k, fold == k
                probe = _boosting.train_booster(
                    x[fit_rows], y[fit_rows], p, obj, x[held], y[held], seed=seed,
                    init_score=off[fit_rows] if offset else None,
                    init_score_valid=off[held] if offset else None,
                    **kw,
                )  # fmt: skip
                found.append(int(probe.best_iteration or probe.current_iteration()))
            n = max(int(np.median(found)), 1)
            booster = _boosting.train_booster(
                x, y, {**p, "num_boost_round": n}, obj, seed=seed,
                init_score=off if offset else None, **kw,
            )  # fmt: skip
        else:
            booster = _boosting.train_booster(
                x, y, p, obj, xv, yv, seed=seed,
                init_score=off if offset else None,
                init_score_valid=offv if offset else None,
                **kw,
            )  # fmt: skip
            n = int(booster.best_iteration or booster.current_iteration())
        rounds.append(n)
        inner.models.append(booster.model_to_string(num_iteration=n))
    label_h = float(label_horizon_days or horizon_days)
    # The scorer's inputs: the boosters' features less those it computes, plus the summary.
    inputs = [f for f in features if f not in BGNBD_FEATURES]
    inputs += [c for c in BG_COLUMNS if c not in inputs]
    scorer = HybridSpendScorer(
        features=inputs,
        outputs=list(OUTPUTS),
        booster=inner,
        bgnbd=replace(bgnbd, horizon_days=float(horizon_days), meta=dict(bgnbd.meta)),
        offsets=[o for _, _, o in plan],
        horizon_days=float(horizon_days),
        label_horizon_days=label_h,
    )
    scorer.meta.update(
        {
            "name": "LightGBM on customer features and BG/NBD (mean: a correction of it)",
            "objective": objective,
            "feature_importance": _boosting.feature_importance(inner),
            "rounds": rounds,
            "mean_min_data_in_leaf": mean_p["min_data_in_leaf"],
            "bgnbd_model": bgnbd.meta.get("model"),
            "bgnbd_fitted_on": bgnbd.meta.get("fitted_on"),
            "horizon_days": float(horizon_days),
            "label_horizon_days": label_h,
            "rows": sum(len(d) for d in all_rows) if refit is not None else len(train),
        }
    )
    if refit is not None:
        scorer.meta["refit_windows"] = sorted(c.isoformat() for d in all_rows for c in d.cutoffs)
    return scorer


def mean_params(params: Mapping[str, Any], y: np.ndarray) -> dict[str, Any]:
    """The mean booster's parameters: ``params`` (tuned for the point model's MAE) with leaves
    large enough that a leaf's mean spend is known to :data:`LEAF_RELATIVE_SE` (for labels
    whose coefficient of variation is ``cv``, that takes ``(cv / LEAF_RELATIVE_SE) ** 2``
    customers) and at least :data:`MEAN_MIN_L2` of L2 penalty: spend is heavy-tailed, and
    small leaves let the correction of BG/NBD chase a few large spenders. Too few rows for
    such a leaf leave the trees without splits: BG/NBD's answer, rescaled."""
    out = {**_boosting.DEFAULTS, **params}
    y = y[np.isfinite(y)]
    mean = float(np.mean(y)) if len(y) else 0.0
    if mean > 0:
        cv = float(np.std(y)) / mean
        need = int(np.ceil((cv / LEAF_RELATIVE_SE) ** 2))
        out["min_data_in_leaf"] = max(int(out["min_data_in_leaf"]), need)
    out["lambda_l2"] = max(float(out["lambda_l2"]), MEAN_MIN_L2)
    return out


def model_features(features: list[str], cutoffs: list[datetime]) -> list[str]:
    """The boosters' features: ``features`` less :data:`LIFETIME_TOTALS`, and less
    :data:`SEASON` unless the windows' cutoffs span :data:`SEASON_SPAN_DAYS`."""
    span = (max(cutoffs) - min(cutoffs)).days if cutoffs else 0
    drop = set(LIFETIME_TOTALS) | (set(SEASON) if span < SEASON_SPAN_DAYS else set())
    return [f for f in features if f not in drop]


def customer_folds(customers: pd.Series, folds: int) -> np.ndarray:
    """A fold per row, the same for every row of a customer (a customer's windows overlap in
    time: splitting them would let a fold be judged on purchases it was trained on)."""
    codes = pd.util.hash_pandas_object(customers.astype(str), index=False).to_numpy()
    return (codes % np.uint64(folds)).astype(int)
