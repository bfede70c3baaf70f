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
purchase model and a Gamma-Gamma spend model from pymc-marketing, fitted by MAP on the RFM
summary of the history before the validation cutoff, predicting expected spend over the horizon.
Metrics: MAE of the point prediction (decides); RMSE, normalised Gini, the share of actual spend
in the top predicted decile and total predicted over total actual, of the expected value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from shopml.runtime.scorers import Scorer
from shopml.usecases import _boosting, _metrics, _plots
from shopml.usecases.base import GatePolicy, LabelledData, MonitorSpec, Predictions, UseCase

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
        df[LABEL] = df[LABEL].fillna(0.0).astype("float64")
        for c in WEB_COLUMNS[:3]:
            df[c] = df[c].fillna(0).astype("int64")
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


@dataclass
class BgNbdSpendScorer(Scorer):
    """Expected spend over ``horizon_days`` from fitted BG/NBD and Gamma-Gamma parameters.

    Evaluated in numpy from the summary features (``bg_frequency``, ``bg_recency``, ``bg_T``,
    ``bg_monetary``). The BG/NBD conditional expectation of purchases in the next ``t`` days is
    ``P(alive) * E[(1 - (1 + p t / (alpha + T)) ** -(r + x)) / p]`` with ``p`` drawn from its
    posterior ``Beta(a, b + x)``: the integral form of the usual Gaussian hypergeometric
    expression, computed by Gauss-Legendre quadrature after the substitution ``p = u ** (1/a)``
    (which removes the density's singularity at 0) and ``u = v ** 3``, so no special functions
    are needed.
    """

    r: float = 1.0
    alpha: float = 1.0
    a: float = 1.0
    b: float = 1.0
    gg_p: float = 1.0
    gg_q: float = 2.0
    gg_v: float = 1.0
    horizon_days: float = 90.0
    nodes: int = 64

    def expected_purchases(self, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
        """BG/NBD expected purchases in the next ``horizon_days`` given (x, t_x, T)."""
        r, alpha, a, b, t = self.r, self.alpha, self.a, self.b, self.horizon_days
        x = np.maximum(np.nan_to_num(x, nan=0.0), 0.0)
        big_t = np.maximum(np.nan_to_num(big_t, nan=0.0), 0.0)
        t_x = np.clip(np.nan_to_num(t_x, nan=0.0), 0.0, big_t)
        # P(alive): 1 / (1 + [x > 0] * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)),
        # in logs so long histories do not overflow.
        log_odds = (
            np.log(a)
            - np.log(np.maximum(b + x - 1, 1e-12))
            + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
        )
        p_alive = np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700.0))), 1.0)
        v, w = np.polynomial.legendre.leggauss(self.nodes)
        v = (v + 1) / 2  # nodes on (0, 1)
        # u = v ** 3 crowds the nodes near p = 0, where Beta(a, b + x) with many repeats puts
        # its mass (relative error ~1e-12 at 64 nodes against the 2F1 form).
        u, w = v**3, w * 3 * v**2
        p = u ** (1.0 / a)  # p ** (a - 1) dp = du / a
        dens = (1 - p)[None, :] ** (b + x[:, None] - 1)  # the rest of Beta(a, b + x)
        c = t / (alpha + big_t)
        # (1 - (1 + p c) ** -(r + x)) / p, whose limit at p -> 0 is (r + x) c: a small fitted
        # ``a`` (real data gives a ~ 0.01) makes u ** (1 / a) underflow to exactly 0.
        pp = p[None, :]
        tiny = pp < 1e-300
        safe = np.where(tiny, 1.0, pp)
        g = np.where(
            tiny,
            (r + x)[:, None] * c[:, None],
            -np.expm1(-(r + x)[:, None] * np.log1p(safe * c[:, None])) / safe,
        )
        ratio = (dens * g) @ w / (dens @ w)
        return p_alive * ratio

    def expected_value(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Gamma-Gamma conditional mean spend per purchase given x repeats of mean m."""
        x = np.maximum(np.nan_to_num(x, nan=0.0), 0.0)
        m = np.nan_to_num(m, nan=0.0)
        p, q, v = self.gg_p, self.gg_q, self.gg_v
        prior = p * v / (q - 1)
        w = p * x / (p * x + q - 1)
        return (1 - w) * prior + w * m

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        freq, rec, big_t, mon = (x[:, i] for i in range(4))
        return self.expected_purchases(freq, rec, big_t) * self.expected_value(freq, mon)


def fit_bgnbd_gamma_gamma(wh: Warehouse, cutoff: datetime, horizon_days: int) -> BgNbdSpendScorer:
    """Fit BG/NBD and Gamma-Gamma (pymc-marketing, MAP) on the RFM summary of every order
    before ``cutoff``; return a numpy scorer of the expected spend over ``horizon_days``."""
    import logging
    import warnings

    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel
    from pymc_marketing.clv.utils import rfm_summary

    from shopml.features._snapshot import as_cutoff

    cutoff = as_cutoff(cutoff)
    tx = wh.sql(
        """
        SELECT o.customer_id, o.purchased_at, sum(i.unit_price * i.quantity) AS value
        FROM orders o JOIN order_items i USING (order_id)
        WHERE o.purchased_at < ?
        GROUP BY ALL
        """,
        [cutoff],
    )
    rfm = rfm_summary(
        tx,
        "customer_id",
        "purchased_at",
        "value",
        observation_period_end=observation_end(cutoff),
        time_unit="D",
    )
    logging.getLogger("pymc").setLevel(logging.ERROR)
    logging.getLogger("pymc_marketing").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bg = BetaGeoModel(data=rfm[["customer_id", "frequency", "recency", "T"]])
        bg.fit(method="map", progressbar=False)
        bgp = bg.fit_summary()
        repeat = rfm[rfm["frequency"] > 0]
        gg = GammaGammaModel(data=repeat[["customer_id", "frequency", "monetary_value"]])
        gg.fit(method="map", progressbar=False)
        ggp = gg.fit_summary()
    return BgNbdSpendScorer(
        features=list(BG_COLUMNS),
        outputs=["expected_spend_90d"],
        r=float(bgp["r"]),
        alpha=float(bgp["alpha"]),
        a=float(bgp["a"]),
        b=float(bgp["b"]),
        gg_p=float(ggp["p"]),
        gg_q=float(ggp["q"]),
        gg_v=float(ggp["v"]),
        horizon_days=float(horizon_days),
        meta={
            "name": "BG/NBD + Gamma-Gamma (pymc-marketing, MAP)",
            "fitted_on": cutoff.isoformat(),
            "customers": len(rfm),
        },
    )
