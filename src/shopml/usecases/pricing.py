"""pricing: what price should this product have, within guardrails?

Question: how many units will each product sell per week at a given price, and which price
maximises expected revenue (or margin, ``Pricing(objective="margin")``) within the shop's
guardrails (a minimum and maximum price, and a maximum change per step)?

Rows: one per product and week in the four weeks after the cutoff, for products with a list
price in force at the cutoff and at least a week of price history before it. The price of the
week is the list price in force (``price_history``, time-weighted over the week): the shop sets
it, so it is the decision, not a leak. Everything else is known before the cutoff.

Features (all before the cutoff): the product's weekly units over the last 26 weeks
(``log_base_rate``) and the last 8 (``log_recent_rate``) and its category's average
(``log_category_rate``), all on the log scale with half a unit added; the price of the week
against the product's average price over those 26 weeks (``log_price_ratio``, the variable
whose slope is the elasticity); the shop's seasonality for that week as seen a year earlier
(``log_season_index``: the shop's units in the same week last year over its average week in
the 26 weeks before it, with ``has_season_index`` when a year of history exists) and its
recent momentum (``log_momentum``: the last 4 weeks against the last 26); and the share of the
week spent in a randomised price test (``price_test_share``).

Label: units sold in the week (all order lines of orders not canceled, at any price paid).

Model: a Poisson GLM with a log link, ``log E[units] = b0 + b.x + e_category *
log_price_ratio``: constant elasticity per category, shrunk toward one pooled elasticity by an
L2 penalty on each category's deviation (``lambda_category``, tuned on the validation window
by Poisson deviance); rows in randomised price tests can be up-weighted (``test_weight``).
Fitted with numpy and scipy's L-BFGS; the scorer (:class:`~shopml.runtime.scorers.PricingScorer`)
is numpy-only. Per-product elasticities are not estimated: at well under one unit a week for
the median product, a product's own price moves cannot separate its slope from noise, so each
product takes its category's.

Baseline: no elasticity. Each product keeps selling its average weekly units of the last 26
weeks whatever the price, so, with revenue as the objective, it raises every price as far as
the guardrails allow; under the simulator's true demand (elasticities below -1) that loses
revenue, which the ``revenue_uplift_true`` metric shows.

Metrics (test window): demand error (``poisson_deviance``, ``mae_units`` per product-week,
``mae_units_window`` per product over the 4 weeks, ``bias``); for the suggestions made at the
cutoff from the price in force: ``revenue_uplift_model`` and ``margin_uplift_model`` (expected
revenue or margin of the suggested prices over the current ones under the model's own demand),
``revenue_uplift_true`` and ``margin_uplift_true`` (under the simulator's true demand, when the
data has an oracle),
``guardrail_violations`` (suggestions outside [min, max] or changing more than the maximum
step; must be 0), ``price_cut_share`` and ``mean_price_change``. ``oracle_metrics`` gives the
same numbers for the truth: its demand at the week's prices, and its own suggestions (the true
elasticities optimised under the same guardrails: the best possible uplift).

Gate: on ``poisson_deviance`` (lower is better), because it exists on real data too and it is
what the elasticity is fitted to; an uplift under the model's own demand cannot be the gate (a
model that believes demand ignores price promises the most). Floors: ``objective_uplift_gate``
>= 0, the uplift of the objective (revenue or margin) under the true demand when an oracle
exists (a model whose prices lose in truth is never promoted) and otherwise under the model's
own demand (non-negative by construction: the current price is always feasible, so the floor
is then vacuous and the deviance decides); and a ceiling of 0 guardrail violations.

Guardrails used for evaluation and as the scorer's defaults: at most 10% change per step, a
maximum price of twice the list price, and a minimum of half the list price but never below the
unit cost, unless the current price is already outside that band (then the band is widened to
the current price so the rule never forces a jump).

Data without ``price_history`` (Olist, Online Retail, CDNOW) is skipped: the prices on their
order lines are what each buyer paid (tiered by quantity, discounted per invoice), not a list
price the shop set, so an elasticity fitted on them would mostly measure who buys in bulk.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.runtime.answers import Suggest
from shopml.runtime.scorers import PricingScorer, Scorer
from shopml.usecases import _live, _metrics, _plots
from shopml.usecases.base import GatePolicy, LabelledData, MonitorSpec, Predictions, UseCase

if TYPE_CHECKING:
    import optuna

    from shopml.data.warehouse import Warehouse

HIST_DAYS = 182  # the base rate's window: long enough for sparse products
RECENT_DAYS = 56
MOMENTUM_DAYS = 28
WEEKS = 4
YEAR_DAYS = 364  # 52 weeks: the same weekdays a year earlier
MAX_CHANGE = 0.10
MIN_LIST_FACTOR = 0.5
MAX_LIST_FACTOR = 2.0
MIN_HISTORY_DAYS = 7

KEYS = ["product_id", "week_start"]
FEATURES = [
    "log_price_ratio", "log_base_rate", "log_recent_rate", "log_category_rate",
    "log_season_index", "has_season_index", "log_momentum", "price_test_share",
]  # fmt: skip
PRICE_FEATURE = "log_price_ratio"
ORACLE = ["true_base_demand", "true_ref_price", "true_elasticity"]


class Pricing(UseCase):
    name = "pricing"
    question = "What price should this product have, within guardrails?"
    entity = "product"
    key = "product_id"
    kind = "elasticity + optimisation"
    required_tables = ("price_history", "order_items", "orders", "products")
    metrics = (
        "poisson_deviance", "mae_units", "mae_units_window", "bias", "revenue_uplift_model",
        "revenue_uplift_true", "margin_uplift_true", "margin_uplift_model",
        "objective_uplift_gate",
        "guardrail_violations", "price_cut_share", "mean_price_change",
    )  # fmt: skip
    gate = GatePolicy(
        "poisson_deviance",
        higher_is_better=False,
        min_improvement=0.002,
        floors={"objective_uplift_gate": 0.0},
        ceilings={"guardrail_violations": 0.0},
        output_range=(0.0, None),
    )
    monitoring = MonitorSpec(
        features=(
            "log_price_ratio",
            "log_base_rate",
            "log_recent_rate",
            "log_season_index",
            "log_momentum",
        ),
        prediction="expected_units",
        label="units",
        label_delay_days=7,
        performance_metric="poisson_deviance",
    )
    answer = Suggest()
    horizon_days = WEEKS * 7
    train_cutoffs = 18
    train_step_days = WEEKS * 7

    def __init__(self, objective: str = "revenue") -> None:
        if objective not in ("revenue", "margin"):
            raise ValueError(f"objective must be 'revenue' or 'margin', not {objective!r}")
        self.objective = objective

    def live_checks(self, live: _live.LiveContext) -> list[_live.LiveFigure]:
        """Guardrail violations among the served suggestions, and for suggestions a week old
        the revenue realised against the revenue the model expected at the price charged."""
        window = live.history(live.window.start - timedelta(days=self.horizon_days))
        out = window.outputs
        if not len(window) or "suggested_price" not in out.columns:
            return []
        g = pd.json_normalize([v if isinstance(v, dict) else {} for v in out.get("guardrails", [])])

        def number(frame: pd.DataFrame, col: str) -> np.ndarray:
            return pd.to_numeric(frame.get(col), errors="coerce").to_numpy(dtype="float64")

        price, current = number(out, "suggested_price"), number(out, "current_price")
        lo = number(g, "min_price") if len(g) else price
        hi = number(g, "max_price") if len(g) else price
        conflict = g.get("conflict", pd.Series(False, index=g.index)).fillna(False).to_numpy()
        tol = 0.011  # suggestions are rounded to the cent
        bad = (price < lo - tol) | (price > hi + tol)
        if len(g):
            step = number(g, "max_change")
            with np.errstate(divide="ignore", invalid="ignore"):
                bad |= (np.abs(price - current) > step * current + tol) & ~conflict.astype(bool)
        figures = [
            _live.LiveFigure("guardrail_violations", float(bad.sum()), n=len(out)),
            _live.LiveFigure("guardrail_violation_rate", float(bad.mean()), n=len(out)),
        ]
        week = timedelta(days=7)
        frame = window.frame.assign(day=_live.days_of(window.frame["ts"]))
        done = (frame["day"] + week <= pd.Timestamp(live.now)).to_numpy()
        if done.any():
            expected = (current * number(out, "expected_units_current"))[done] * 7
            sub = frame[done]
            first, last = sub["day"].min().to_pydatetime(), sub["day"].max().to_pydatetime()
            sold = _live.purchases(live.wh, first, last + week)
            realised = []
            by_product = {p: grp for p, grp in sold.groupby("product_id")}
            for pid, day in zip(sub["entity_id"], sub["day"], strict=True):
                grp = by_product.get(pid)
                if grp is None:
                    realised.append(0.0)
                    continue
                m = (grp["purchased_at"] >= day) & (grp["purchased_at"] < day + week)
                realised.append(float(grp.loc[m, "revenue"].sum()))
            total = float(np.nansum(expected))
            figures.append(
                _live.LiveFigure(
                    "revenue_realised_vs_expected",
                    float(np.sum(realised)) / total if total else float("nan"),
                    n=int(done.sum()),
                    detail={"realised": float(np.sum(realised)), "expected": total},
                )
            )
        return figures

    # -- data ----------------------------------------------------------------------------------
    def skip_reason(self, wh: Warehouse) -> str | None:
        reason = super().skip_reason(wh)
        if reason and "price_history" in reason:
            reason += (
                " (prices on order lines are what each buyer paid, tiered by quantity and "
                "discounted per invoice, not a list price the shop set: an elasticity fitted "
                "on them would be confounded)"
            )
        return reason

    def arrivals(self, wh: Warehouse, start: datetime, end: datetime) -> pd.DataFrame:
        """Products sold between ``start`` and ``end`` (a price is suggested for each)."""
        return wh.con.execute(
            "SELECT DISTINCT i.product_id FROM order_items i JOIN orders o USING (order_id) "
            "WHERE o.purchased_at >= ? AND o.purchased_at < ? ORDER BY 1",
            [start, end],
        ).df()

    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        frame = build_frame(wh, cutoff, WEEKS)
        oracle: list[str] = []
        if wh.exists("oracle_products") and len(frame):
            op = wh.read("oracle_products").rename(
                columns={
                    "base_demand": "true_base_demand",
                    "ref_price": "true_ref_price",
                    "elasticity": "true_elasticity",
                }
            )
            frame = frame.merge(op, on="product_id", how="left")
            oracle = list(ORACLE)
        return LabelledData(frame, KEYS, list(FEATURES), ["units"], oracle, [cutoff])

    # -- model ---------------------------------------------------------------------------------
    def default_params(self) -> dict[str, Any]:
        return {"lambda_category": 300.0, "test_weight": 1.0}

    def search_space(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "lambda_category": trial.suggest_float("lambda_category", 1.0, 1e5, log=True),
            "test_weight": trial.suggest_float("test_weight", 1.0, 5.0),
        }

    def fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
    ) -> Scorer:
        p = {**self.default_params(), **params}
        fitted = fit_elasticity_glm(
            train.frame, float(p["lambda_category"]), float(p["test_weight"])
        )
        scorer = PricingScorer(
            features=list(FEATURES),
            outputs=["expected_units"],
            objective=self.objective,
            max_change=MAX_CHANGE,
            price_feature=PRICE_FEATURE,
            link="log",
            intercept=fitted["intercept"],
            coef=fitted["coef"],
            fill=fitted["fill"],
            pooled_elasticity=fitted["pooled"],
            category_elasticity=fitted["categories"],
            meta={
                "name": "category elasticity GLM",
                "params": dict(p),
                "elasticity_se": fitted["se"],
            },
        )
        # Serving state: the newest rows whose features are known (valid's, else train's
        # latest cutoff); their labels are never used here.
        latest = valid if valid is not None and len(valid) else _latest(train)
        scorer.load_state(_state_rows(latest.frame))
        return scorer

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        # Demand does not respond to price: each product sells its 26-week average.
        scorer = PricingScorer(
            features=["base_rate", PRICE_FEATURE],
            outputs=["expected_units"],
            objective=self.objective,
            max_change=MAX_CHANGE,
            price_feature=PRICE_FEATURE,
            link="identity",
            intercept=0.0,
            coef=[1.0],
            fill=[0.0],
            pooled_elasticity=0.0,
            category_elasticity={},
            meta={"name": "no elasticity (26-week average units)"},
        )
        scorer.load_state(_state_rows(_latest(train).frame))
        return scorer

    # -- evaluation ----------------------------------------------------------------------------
    def predict(self, scorer: Scorer, data: LabelledData) -> Predictions:
        """Expected units per row, and per row the product's elasticity and model units/week
        at the reference price (what the price decision uses on the decision rows)."""
        assert isinstance(scorer, PricingScorer)
        f = data.frame
        x = scorer.to_matrix(f)
        values = pd.DataFrame(
            {
                "expected_units": np.asarray(scorer.predict_matrix(x), dtype="float64").reshape(-1),
                "elasticity": np.asarray(scorer.elasticity_for(f), dtype="float64").reshape(-1),
                "base_units": np.asarray(scorer.base_units(x), dtype="float64").reshape(-1),
            }
        )
        return Predictions(values)

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        f = data.frame
        y = f["units"].to_numpy(dtype="float64")
        out = demand_metrics(f, y, predictions.column("expected_units"))
        # The price is decided on each product's first week after its cutoff. Every such row
        # counts (a bootstrap resample may draw a product twice, and it then weighs twice).
        first = (f["week_start"] == f["cutoff"]).to_numpy()
        now = f[first].reset_index(drop=True)
        decided = predictions.values[first]
        out.update(
            pricing_metrics(
                now,
                decided["elasticity"].to_numpy(dtype="float64"),
                decided["base_units"].to_numpy(dtype="float64"),
                self.objective,
                MAX_CHANGE,
            )
        )
        return out

    def oracle_metrics(self, wh: Warehouse, data: LabelledData) -> dict[str, float] | None:
        if not data.has_oracle:
            return None
        from shopml.data.oracle import expected_demand

        f = data.frame
        truth = expected_demand(wh, f["product_id"].tolist(), f["price"].to_numpy(), days=7.0)
        out = demand_metrics(
            f, f["units"].to_numpy(dtype="float64"), truth["expected_units"].to_numpy()
        )
        now = _decision_rows(f)
        e = now["true_elasticity"].to_numpy(dtype="float64")
        base = (
            now["true_base_demand"]
            * 7.0
            * (now["ref_price"] / now["true_ref_price"]) ** now["true_elasticity"]
        ).to_numpy(dtype="float64")
        out.update(pricing_metrics(now, e, base, self.objective, MAX_CHANGE))
        return out

    def plots(self, scorer: Scorer, data: LabelledData, outdir: Path) -> list[Path]:
        assert isinstance(scorer, PricingScorer)
        f = data.frame
        y = f["units"].to_numpy(dtype="float64")
        p = np.asarray(scorer.predict_matrix(scorer.to_matrix(f))).reshape(-1)
        out = [_plots.residuals(y, p, outdir / "residuals.png")]
        cats = dict(sorted(scorer.category_elasticity.items()))
        truth = None
        if data.has_oracle:
            truth = f.groupby("category")["true_elasticity"].mean().to_dict()
        out.append(
            _plots.elasticities(
                cats,
                outdir / "elasticity_by_category.png",
                pooled=scorer.pooled_elasticity,
                truth=truth,
            )
        )
        return out

    def input_example(self, data: LabelledData) -> pd.DataFrame:
        return data.frame[[*KEYS, "category", *FEATURES]].head(5)


# -- dataset ------------------------------------------------------------------------------------
def _day_index(ts: pd.Series | pd.DatetimeIndex, origin: pd.Timestamp) -> np.ndarray:
    return np.asarray((pd.to_datetime(ts) - origin) // pd.Timedelta(days=1), dtype=np.int64)


def build_frame(wh: Warehouse, cutoff: datetime, weeks: int = WEEKS) -> pd.DataFrame:
    """Product x week rows for the ``weeks`` weeks after ``cutoff``: features from data strictly
    before it, the week's list price (the decision) and units sold in the week (the label)."""
    c = pd.Timestamp(cutoff).normalize()
    start = c - pd.Timedelta(days=YEAR_DAYS + HIST_DAYS)
    end = c + pd.Timedelta(days=7 * weeks)
    n_days = (end - start).days
    products = wh.read("products", ["product_id", "category", "list_price", "unit_cost"])
    pids = products["product_id"].astype(str).to_numpy()
    pindex = pd.Index(pids)

    # Daily units per product over [start, end): history for the features, weeks for labels.
    sales = wh.sql(
        "SELECT i.product_id, CAST(o.purchased_at AS DATE) AS day, sum(i.quantity) AS units "
        "FROM order_items i JOIN orders o USING (order_id) "
        "WHERE o.status <> 'canceled' AND o.purchased_at >= ? AND o.purchased_at < ? "
        "GROUP BY ALL",
        [start.to_pydatetime(), end.to_pydatetime()],
    )
    units = np.zeros((len(pids), n_days))
    if len(sales):
        rows = pindex.get_indexer(sales["product_id"].astype(str))
        ok = rows >= 0
        np.add.at(
            units,
            (rows[ok], _day_index(sales["day"], start)[ok]),
            sales["units"].to_numpy(dtype="float64")[ok],
        )
    first_sale = wh.sql("SELECT min(purchased_at) FROM orders").iloc[0, 0]
    data_start = max(start, pd.Timestamp(first_sale).normalize()) if first_sale else end
    observed = np.arange(n_days) >= (data_start - start).days  # days the shop has data for

    logp, test = _daily_prices(wh, pindex, start, end)
    ci = (c - start).days  # index of the cutoff day
    h0 = ci - HIST_DAYS
    priced = ~np.isnan(logp)
    hist_avail = priced[:, h0:ci] & observed[None, h0:ci]
    exposure = hist_avail.sum(axis=1).astype("float64")
    keep = priced[:, ci - 1] & (exposure >= MIN_HISTORY_DAYS)
    if not keep.any():
        return _empty_frame()

    hist_units = np.where(hist_avail, units[:, h0:ci], 0.0).sum(axis=1)
    base_rate = hist_units / np.maximum(exposure, 1.0) * 7.0
    r0 = ci - RECENT_DAYS
    rec_avail = priced[:, r0:ci] & observed[None, r0:ci]
    rec_exposure = rec_avail.sum(axis=1)
    rec_units = np.where(rec_avail, units[:, r0:ci], 0.0).sum(axis=1)
    recent_rate = np.where(
        rec_exposure > 0, rec_units / np.maximum(rec_exposure, 1) * 7.0, base_rate
    )
    with np.errstate(invalid="ignore"):
        ref_logp = np.nanmean(np.where(hist_avail, logp[:, h0:ci], np.nan), axis=1)
    cur_logp = logp[:, ci - 1]

    shop = units.sum(axis=0)
    obs_hist = observed[h0:ci].sum()
    shop_week = shop[h0:ci].sum() / max(obs_hist, 1) * 7.0
    obs_mom = observed[ci - MOMENTUM_DAYS : ci].sum()
    momentum = (shop[ci - MOMENTUM_DAYS : ci].sum() / max(obs_mom, 1) * 7.0) / max(shop_week, 1e-9)
    # Last year's seasonality: the same week a year earlier over its own 26-week average.
    ly0 = ci - YEAR_DAYS - HIST_DAYS
    has_ly = bool(observed[ly0]) and shop[ly0 : ci - YEAR_DAYS].sum() > 0
    ly_week = shop[ly0 : ci - YEAR_DAYS].sum() / HIST_DAYS * 7.0 if has_ly else np.nan

    cat = products["category"].astype(str).to_numpy()
    frame_parts = []
    idx = np.flatnonzero(keep)
    cat_rate = pd.Series(base_rate[idx]).groupby(cat[idx]).mean()
    for w in range(weeks):
        d0, d1 = ci + 7 * w, ci + 7 * w + 7
        in_week = priced[idx, d0:d1]
        full = in_week.all(axis=1)
        with np.errstate(invalid="ignore"):
            week_logp = np.nanmean(logp[idx, d0:d1], axis=1)
        season = np.nan
        if has_ly:
            season = shop[d0 - YEAR_DAYS : d1 - YEAR_DAYS].sum() / max(ly_week, 1e-9)
        part = pd.DataFrame(
            {
                "product_id": pids[idx],
                "week_start": c + pd.Timedelta(days=7 * w),
                "week": w,
                "cutoff": c,
                "category": cat[idx],
                "price": np.exp(week_logp),
                "current_price": np.exp(cur_logp[idx]),
                "ref_price": np.exp(ref_logp[idx]),
                "base_rate": base_rate[idx],
                "log_price_ratio": week_logp - ref_logp[idx],
                "log_base_rate": np.log((hist_units[idx] + 0.5) / (exposure[idx] / 7.0)),
                "log_recent_rate": np.log(recent_rate[idx] + 0.5),
                "log_category_rate": np.log(cat_rate.reindex(cat[idx]).to_numpy() + 0.5),
                "log_season_index": np.log(season) if np.isfinite(season) and season > 0 else 0.0,
                "has_season_index": float(np.isfinite(season) and season > 0),
                "log_momentum": np.log(max(momentum, 1e-3)),
                "price_test_share": test[idx, d0:d1].mean(axis=1),
                "units": units[idx, d0:d1].sum(axis=1),
            }
        )
        frame_parts.append(part[full])
    frame = pd.concat(frame_parts, ignore_index=True)
    frame = frame.merge(
        products[["product_id", "list_price", "unit_cost"]], on="product_id", how="left"
    )
    frame["list_price"] = frame["list_price"].fillna(frame["ref_price"])
    lo, hi = default_guardrails(frame)
    frame["min_price"], frame["max_price"] = lo, hi
    return frame.sort_values(["week_start", "product_id"], ignore_index=True)


def default_guardrails(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The shop's price band per row: half to twice the list price, never below unit cost;
    widened to include the current price so the band itself never forces a jump."""
    cur = frame["current_price"].to_numpy(dtype="float64")
    lst = frame["list_price"].to_numpy(dtype="float64")
    cost = frame["unit_cost"].to_numpy(dtype="float64")
    lo = np.fmax(MIN_LIST_FACTOR * lst, cost)  # fmax: an unknown cost does not bind
    hi = MAX_LIST_FACTOR * lst
    return np.minimum(lo, cur), np.maximum(hi, cur)


def _daily_prices(
    wh: Warehouse, pindex: pd.Index, start: pd.Timestamp, end: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray]:
    """Log list price in force at noon of each day in [start, end), NaN before a product's
    first price; and whether that price was a randomised test."""
    ph = wh.sql(
        "SELECT product_id, valid_from, price, is_test FROM price_history "
        "WHERE valid_from < ? AND price > 0 ORDER BY product_id, valid_from",
        [end.to_pydatetime()],
    )
    n_days = (end - start).days
    logp = np.full((len(pindex), n_days), np.nan)
    test = np.zeros((len(pindex), n_days))
    if ph.empty:
        return logp, test
    noon = start + pd.Timedelta(hours=12)
    day_ts = (noon + pd.to_timedelta(np.arange(n_days), unit="D")).to_numpy()
    ph["row"] = pindex.get_indexer(ph["product_id"].astype(str))
    ph = ph[ph["row"] >= 0]
    for row, g in ph.groupby("row", sort=False):
        at = np.searchsorted(g["valid_from"].to_numpy(), day_ts, side="right") - 1
        ok = at >= 0
        logp[row, ok] = np.log(g["price"].to_numpy(dtype="float64")[at[ok]])
        test[row, ok] = g["is_test"].to_numpy(dtype="float64")[at[ok]]
    return logp, test


def _empty_frame() -> pd.DataFrame:
    cols = [
        *KEYS,
        "week",
        "cutoff",
        "category",
        "price",
        "current_price",
        "ref_price",
        "base_rate",
        *FEATURES,
        "units",
        "list_price",
        "unit_cost",
        "min_price",
        "max_price",
    ]
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})


def _latest(data: LabelledData) -> LabelledData:
    f = data.frame
    last = f["cutoff"].max()
    return LabelledData(
        f[f["cutoff"] == last], data.keys, data.features, data.labels, data.oracle, [last]
    )


def _decision_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per product: the first week after the cutoff, where the price is decided."""
    first = frame[frame["week_start"] == frame["cutoff"]]
    return first.drop_duplicates("product_id").reset_index(drop=True)


def _state_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return _decision_rows(frame)


# -- model fitting --------------------------------------------------------------------------------
def fit_elasticity_glm(
    frame: pd.DataFrame, lambda_category: float, test_weight: float = 1.0
) -> dict[str, Any]:
    """Penalised Poisson GLM: ``log mu = b0 + b.x + (e + d_category) * log_price_ratio`` with
    an L2 penalty ``lambda_category * sum(d^2)`` pulling each category toward the pooled
    elasticity ``e``. Returns raw-scale coefficients for the scorer."""
    from scipy.optimize import minimize

    others = [c for c in FEATURES if c != PRICE_FEATURE]
    z = frame[others].to_numpy(dtype="float64")
    fill = np.nanmean(z, axis=0)
    fill = np.where(np.isfinite(fill), fill, 0.0)
    z = np.where(np.isnan(z), fill, z)
    mean, scale = z.mean(axis=0), z.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    zs = (z - mean) / scale
    r = frame[PRICE_FEATURE].to_numpy(dtype="float64")
    y = frame["units"].to_numpy(dtype="float64")
    cats = sorted(frame["category"].astype(str).unique())
    code = pd.Categorical(frame["category"].astype(str), categories=cats).codes
    onehot_r = np.zeros((len(frame), len(cats)))
    onehot_r[np.arange(len(frame)), code] = r
    x = np.column_stack([np.ones(len(frame)), zs, r, onehot_r])
    w = np.where(frame["price_test_share"].to_numpy(dtype="float64") > 0, test_weight, 1.0)
    wsum = w.sum()
    k = 1 + zs.shape[1]  # intercept and controls
    pen = np.zeros(x.shape[1])
    pen[k + 1 :] = lambda_category / wsum

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        eta = np.clip(x @ theta, -30, 30)
        mu = np.exp(eta)
        value = float((w * (mu - y * eta)).sum() / wsum + (pen * theta**2).sum())
        grad = x.T @ (w * (mu - y)) / wsum + 2 * pen * theta
        return value, grad

    theta0 = np.zeros(x.shape[1])
    theta0[0] = np.log(max(y.mean(), 1e-6))
    theta0[k] = -1.0
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    theta = res.x
    # Standard errors of the category elasticities from the penalised information matrix.
    mu = np.exp(np.clip(x @ theta, -30, 30))
    info = (x * (w * mu)[:, None]).T @ x / wsum + 2 * np.diag(pen)
    try:
        cov = np.linalg.inv(info) / wsum
        se_pooled = float(np.sqrt(max(cov[k, k], 0)))
        se = {
            c: float(np.sqrt(max(cov[k, k] + cov[k + 1 + j, k + 1 + j] + 2 * cov[k, k + 1 + j], 0)))
            for j, c in enumerate(cats)
        }
    except np.linalg.LinAlgError:
        se_pooled, se = float("nan"), {}
    b = theta[1:k] / scale
    intercept = float(theta[0] - (b * mean).sum())
    pooled = float(theta[k])
    return {
        "intercept": intercept,
        "coef": [float(v) for v in b],
        "fill": [*fill.tolist()],
        "pooled": pooled,
        "categories": {c: pooled + float(theta[k + 1 + j]) for j, c in enumerate(cats)},
        "se": {"pooled": se_pooled, **se},
        "converged": bool(res.success),
    }


# -- metrics --------------------------------------------------------------------------------------
def demand_metrics(frame: pd.DataFrame, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Weekly demand error, and the 4-week total per product (less dominated by zeros)."""
    window = (
        pd.DataFrame({"p": frame["product_id"].to_numpy(), "y": y, "m": pred})
        .groupby("p")[["y", "m"]]
        .sum()
    )
    total = float(np.sum(y))
    return {
        "poisson_deviance": _metrics.poisson_deviance(y, pred),
        "mae_units": _metrics.mae(y, pred),
        "mae_units_window": _metrics.mae(window["y"].to_numpy(), window["m"].to_numpy()),
        "bias": float(np.sum(pred) / total - 1.0) if total > 0 else float("nan"),
    }


def pricing_metrics(
    now: pd.DataFrame,
    elasticity: np.ndarray,
    base_units: np.ndarray,
    objective: str,
    max_change: float,
) -> dict[str, float]:
    """Suggest a price per product (``now``: one row per product at the cutoff) from the given
    elasticities, and score the suggestions: expected uplift under the given demand
    (``base_units`` per week at ``ref_price``), under the true demand when ``now`` has it, and
    the number of guardrail violations."""
    cur = now["current_price"].to_numpy(dtype="float64")
    cost = now["unit_cost"].to_numpy(dtype="float64")
    lo = now["min_price"].to_numpy(dtype="float64")
    hi = now["max_price"].to_numpy(dtype="float64")
    ref = now["ref_price"].to_numpy(dtype="float64")
    new, _, _ = PricingScorer.optimal_prices(
        elasticity, cur, cost, lo, hi, max_change=max_change, objective=objective
    )
    out = {
        "revenue_uplift_model": _uplift(cur, new, base_units / ref**elasticity, elasticity),
        "margin_uplift_model": _uplift(
            cur, new, base_units / ref**elasticity, elasticity, np.nan_to_num(cost)
        ),
        "guardrail_violations": float(count_violations(cur, new, lo, hi, max_change)),
        "price_cut_share": float(np.mean(new < cur - 1e-9)) if len(cur) else float("nan"),
        "mean_price_change": float(np.mean(new / cur - 1.0)) if len(cur) else float("nan"),
        "revenue_uplift_true": float("nan"),
        "margin_uplift_true": float("nan"),
    }
    if all(c in now.columns for c in ORACLE) and now["true_elasticity"].notna().all():
        te = now["true_elasticity"].to_numpy(dtype="float64")
        scale = (
            now["true_base_demand"] / now["true_ref_price"] ** now["true_elasticity"]
        ).to_numpy(dtype="float64")
        out["revenue_uplift_true"] = _uplift(cur, new, scale, te)
        out["margin_uplift_true"] = _uplift(cur, new, scale, te, np.nan_to_num(cost))
    # The gate's floor: the objective's uplift in truth when known, else under the model.
    true_value = out[f"{objective}_uplift_true"]
    out["objective_uplift_gate"] = (
        true_value if np.isfinite(true_value) else out[f"{objective}_uplift_model"]
    )
    return out


def _uplift(
    cur: np.ndarray,
    new: np.ndarray,
    scale: np.ndarray,
    e: np.ndarray,
    cost: np.ndarray | float = 0.0,
) -> float:
    """Relative change of sum((p - cost) * scale * p**e) from the current to the new prices."""
    before = ((cur - cost) * scale * cur**e).sum()
    after = ((new - cost) * scale * new**e).sum()
    return float(after / before - 1.0) if before > 0 else float("nan")


def count_violations(
    cur: np.ndarray, new: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_change: float
) -> int:
    """Suggestions outside [lo, hi] or moving more than ``max_change`` from the current price
    (half a cent of tolerance for rounding to cents)."""
    tol = 0.005
    bad = (new < lo - tol) | (new > hi + tol) | (np.abs(new - cur) > max_change * cur + tol)
    return int(bad.sum())
