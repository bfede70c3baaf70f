"""The classical CLV model, fitted the way the literature does it, with its limits and fallbacks.

BG/NBD (Fader, Hardie and Lee 2005, "Counting your customers the easy way") for the number of
repeat purchases and Gamma-Gamma (Fader, Hardie and Lee 2005, "RFM and CLV"; Fader and Hardie
2013) for the value of a purchase, both fitted by maximum likelihood on the RFM summary in days
(purchases counted per calendar day, as lifetimes' and pymc-marketing's summaries count them).

Real histories break the textbook fit in ordinary ways, and each is handled here rather than in
a traceback:

- Gamma-Gamma is fitted only on customers with a repeat purchase whose mean repeat value is
  positive (the model is a density over positive amounts: a free or refunded repeat day has no
  likelihood). A fit whose ``q <= 1`` has no finite mean spend and is not used.
- BG/NBD's likelihood often peaks on the boundary of its parameter space: ``a -> 0`` (nobody is
  seen to drop out: the model becomes the NBD), ``b -> 0`` (every purchase is the last), or huge
  ``r`` and ``alpha`` (every customer buys at the same rate: a Poisson process). The scorer
  evaluates these as limits, not as divisions by zero.
- When a piece cannot be fitted the next simpler model answers: BG/NBD with the population's
  mean spend per purchase day, then each customer's historical repeat rate times their mean
  spend. The scorer's ``meta`` says which model answers and why (``meta["steps"]``).

Everything the scorer needs at prediction time is numpy: the BG/NBD conditional expectation is
an expectation over the posterior Beta of the dropout probability, computed with a Gauss-Jacobi
rule built for that Beta (Golub-Welsch), exact for polynomials of degree ``2 * nodes - 1`` and
so accurate to ~1e-11 for the smooth integrand here, from ``a`` near 0 to thousands of repeats.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from shopml.runtime.scorers import Scorer

# Columns the scorer reads, in order: the BG/NBD summary in days (see ``clv.bgnbd_summary``).
SUMMARY_FEATURES = ["bg_frequency", "bg_recency", "bg_T", "bg_monetary"]

# Below these the parameters are not identified by the data and the next simpler model answers:
# BG/NBD's four parameters need some customers and at least one repeat purchase among them (with
# none, the likelihood only says "nobody buys again", which the historical rate says as well);
# Gamma-Gamma's three need a handful of repeat customers with positive spend.
MIN_BGNBD_CUSTOMERS = 10
MIN_BGNBD_REPEATERS = 2
MIN_GG_CUSTOMERS = 10

# Parameters are fitted on the log scale within these bounds; one that ends within a hair of a
# bound is on the boundary of the likelihood, and is reported (and for a, b, evaluated) as the
# limit there.
LOG_BOUND = 18.0
_AT_BOUND = LOG_BOUND - 1e-3
# A log-likelihood within this of the optimum's is as good (the fit's own tolerance).
FLAT_LOG_LIKELIHOOD = 1e-6


class FitFailed(RuntimeError):
    """A model could not be fitted on this history (the message says why)."""


# -- the summary -------------------------------------------------------------------------------


def rfm_summary(transactions: pd.DataFrame, observation_end: datetime) -> pd.DataFrame:
    """Per customer: ``frequency`` (repeat purchase days), ``recency`` (days from the first to the
    last purchase day), ``T`` (days from the first purchase day to ``observation_end``) and
    ``monetary`` (mean value of the repeat days; NaN without one), plus ``mean_value`` over every
    purchase day.

    ``transactions`` has ``customer_id``, ``at`` (timestamps) and ``value``; rows at or after
    ``observation_end``'s day are ignored, several purchases on one day are one purchase day of
    their summed value, and values may be zero or negative (a free order, a refund-only day).
    """
    if transactions.empty:
        return pd.DataFrame(
            columns=["customer_id", "frequency", "recency", "T", "monetary", "mean_value"]
        )
    end = pd.Timestamp(observation_end).floor("D")
    tx = transactions.assign(day=pd.to_datetime(transactions["at"]).dt.floor("D"))
    tx = tx[tx["day"] <= end]
    daily = tx.groupby(["customer_id", "day"], sort=True)["value"].sum().reset_index()
    daily["value"] = daily["value"].astype("float64")
    g = daily.groupby("customer_id", sort=True)
    first = g["day"].min()
    last = g["day"].max()
    n = g.size()
    total = g["value"].sum()
    first_value = daily.loc[g["day"].idxmin(), ["customer_id", "value"]].set_index("customer_id")
    repeats = (n - 1).astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        monetary = (total - first_value["value"]) / repeats.where(repeats > 0)
    return pd.DataFrame(
        {
            "customer_id": first.index,
            "frequency": repeats.to_numpy(),
            "recency": ((last - first).dt.days).to_numpy(dtype="float64"),
            "T": ((end - first).dt.days).to_numpy(dtype="float64"),
            "monetary": monetary.to_numpy(dtype="float64"),
            "mean_value": (total / n).to_numpy(dtype="float64"),
        }
    ).reset_index(drop=True)


# -- the likelihoods -----------------------------------------------------------------------------


def bgnbd_log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray, weight: np.ndarray
) -> float:
    """Total BG/NBD log-likelihood (FHL 2005, eq. 6) of (r, alpha, a, b) on summary rows, each
    counted ``weight`` times."""
    from scipy.special import betaln, gammaln

    r, alpha, a, b = (float(v) for v in params)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    alive = -(r + x) * np.log(alpha + big_t)
    with np.errstate(divide="ignore"):
        dropped = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return float(np.sum(weight * (common + np.logaddexp(alive, dropped))))


def gamma_gamma_log_likelihood(
    params: np.ndarray, x: np.ndarray, m: np.ndarray, weight: np.ndarray
) -> float:
    """Total Gamma-Gamma log-likelihood of (p, q, v) for mean repeat values ``m > 0`` over ``x``
    repeat purchases (Fader and Hardie 2013, eq. 4)."""
    from scipy.special import gammaln

    p, q, v = (float(val) for val in params)
    px = p * x
    ll = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + v)
    )
    return float(np.sum(weight * ll))


@dataclass
class Fit:
    """Maximum-likelihood parameters, the log-likelihood and the bounds the fit ended on."""

    params: dict[str, float]
    log_likelihood: float
    customers: int
    boundary: list[str] = field(default_factory=list)


def _maximise(
    ll: Any, starts: list[np.ndarray], names: list[str], what: str
) -> tuple[np.ndarray, float, list[str]]:
    """Maximise ``ll(params)`` over positive parameters (on the log scale, within bounds) from
    several starts; the best finite optimum, and which parameters ended on a bound."""
    from scipy.optimize import minimize

    def objective(theta: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            value = ll(np.exp(theta))
        return -value if math.isfinite(value) else 1e300

    best: Any = None
    for start in starts:
        res = minimize(
            objective,
            np.log(start),
            method="L-BFGS-B",
            bounds=[(-LOG_BOUND, LOG_BOUND)] * len(start),
        )
        if math.isfinite(res.fun) and res.fun < 1e299 and (best is None or res.fun < best.fun):
            best = res
    if best is None:
        raise FitFailed(f"{what}: the likelihood is not finite anywhere the optimiser looked")
    x, fun = np.array(best.x, dtype="float64"), float(best.fun)
    # Where the likelihood is flat toward a bound (it peaks at the limit), the optimiser stops
    # wherever its steps became too small (scipy 1.17 left a at 1.6e-7, not at the bound): a
    # parameter whose bound is at least as likely is taken to that bound, the limit.
    for i in range(len(x)):
        for side in (-LOG_BOUND, LOG_BOUND):
            if abs(x[i] - side) < 1e-3:
                continue
            moved = x.copy()
            moved[i] = side
            at = objective(moved)
            if at <= fun + FLAT_LOG_LIKELIHOOD:
                x, fun = moved, min(fun, at)
    edges = []
    for name, t in zip(names, x, strict=True):
        if t <= -_AT_BOUND:
            edges.append(f"{name} -> 0")
        elif t >= _AT_BOUND:
            edges.append(f"{name} -> inf")
    return np.exp(x), -fun, edges


def fit_bgnbd(summary: pd.DataFrame) -> Fit:
    """BG/NBD by maximum likelihood on an :func:`rfm_summary` (days); raises :class:`FitFailed`
    when the history cannot identify it."""
    s = summary[summary["T"] >= 0]
    n = len(s)
    repeaters = int((s["frequency"] > 0).sum())
    if n < MIN_BGNBD_CUSTOMERS or repeaters < MIN_BGNBD_REPEATERS:
        raise FitFailed(
            f"BG/NBD needs at least {MIN_BGNBD_CUSTOMERS} customers and {MIN_BGNBD_REPEATERS} "
            f"with a repeat purchase; the history has {n} customers, {repeaters} with a repeat "
            "purchase"
        )
    rows = s.groupby(["frequency", "recency", "T"]).size().reset_index(name="w")
    x, t_x, big_t, w = (
        rows[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T", "w")
    )
    scale = max(float(np.average(big_t, weights=w)), 1.0)
    rate = max(float(np.average(x, weights=w)) / scale, 1e-3)
    params, ll, edges = _maximise(
        lambda p: bgnbd_log_likelihood(p, x, t_x, big_t, w),
        [np.array([1.0, 1.0 / rate, 1.0, 1.0]), np.array([0.5, scale, 0.5, 2.0])],
        ["r", "alpha", "a", "b"],
        "BG/NBD",
    )
    return Fit(dict(zip(["r", "alpha", "a", "b"], map(float, params), strict=True)), ll, n, edges)


def fit_gamma_gamma(summary: pd.DataFrame) -> Fit:
    """Gamma-Gamma by maximum likelihood on the customers with a repeat purchase of positive
    mean value; raises :class:`FitFailed` when there are too few or the fit has no finite mean."""
    s = summary[(summary["frequency"] > 0) & (summary["monetary"] > 0)]
    s = s[np.isfinite(s["monetary"])]
    if len(s) < MIN_GG_CUSTOMERS:
        raise FitFailed(
            f"Gamma-Gamma needs at least {MIN_GG_CUSTOMERS} customers with a repeat purchase of "
            f"positive value; the history has {len(s)}"
        )
    x = s["frequency"].to_numpy(dtype="float64")
    m = s["monetary"].to_numpy(dtype="float64")
    w = np.ones(len(s))
    mean = float(np.mean(m))
    params, ll, edges = _maximise(
        lambda p: gamma_gamma_log_likelihood(p, x, m, w),
        [np.array([1.0, 2.0, mean]), np.array([5.0, 3.0, 2.0 * mean])],
        ["p", "q", "v"],
        "Gamma-Gamma",
    )
    p, q, v = (float(val) for val in params)
    if q <= 1.0 + 1e-6:
        raise FitFailed(
            f"the Gamma-Gamma fit has q = {q:.3g} <= 1: spend per purchase has no finite mean "
            "under it (a few extreme amounts dominate)"
        )
    return Fit({"p": p, "q": q, "v": v}, ll, len(s), edges)


# -- evaluation ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def beta_rule(a: float, b: float, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in (0, 1) and weights summing to 1 for expectations under Beta(a, b) (a, b > 0):
    the Gauss-Jacobi rule from the eigen-decomposition of the Jacobi matrix (Golub-Welsch).

    Cached (read-only arrays): a fitted model asks for the same few rules (its ``a``, ``b``
    plus each repeat count) on every call, and the eigen-decomposition is nearly all of a
    one-row prediction's time."""
    # Jacobi weight (1 - y) ** al * (1 + y) ** be on [-1, 1], with p = (1 + y) / 2.
    al, be = b - 1.0, a - 1.0
    n = np.arange(nodes, dtype="float64")
    s = 2 * n + al + be
    with np.errstate(divide="ignore", invalid="ignore"):
        diag = (be**2 - al**2) / (s * (s + 2))
    diag[0] = (be - al) / (al + be + 2)
    k = n[1:]
    sk = 2 * k + al + be
    with np.errstate(divide="ignore", invalid="ignore"):
        off2 = 4 * k * (k + al) * (k + be) * (k + al + be) / (sk**2 * (sk + 1) * (sk - 1))
    # k = 1: the factor (1 + al + be) cancels (it is 0 when a + b = 1).
    off2[0] = 4 * (1 + al) * (1 + be) / ((2 + al + be) ** 2 * (3 + al + be))
    jacobi = np.diag(diag) + np.diag(np.sqrt(np.maximum(off2, 0.0)), 1)
    y, vectors = np.linalg.eigh(jacobi + np.triu(jacobi, 1).T)
    weights = vectors[0] ** 2
    nodes_01, weights = (1 + y) / 2, weights / weights.sum()
    nodes_01.flags.writeable = False
    weights.flags.writeable = False
    return nodes_01, weights


@dataclass
class BgNbdSpendScorer(Scorer):
    """Expected spend over ``horizon_days``: expected purchases times expected value per purchase.

    ``purchases`` is ``"bgnbd"`` (the BG/NBD conditional expectation given x, t_x, T) or
    ``"historical-rate"`` (repeat purchase days per day since the first, times the horizon; the
    population's rate where a customer's own is undefined). ``spend`` is ``"gamma-gamma"`` (the
    Gamma-Gamma conditional mean given x and the mean repeat value) or ``"mean"`` (the
    customer's own mean repeat value when they have one, else ``mean_spend``). The inputs are
    the BG/NBD summary columns (``bg_frequency``, ``bg_recency``, ``bg_T``, ``bg_monetary``).

    Boundary fits are limits, not errors: ``a = 0`` (no dropout: P(alive) = 1 and the NBD
    expectation), ``b = 0`` (a customer with no repeat buys at most once more; one whose
    prior says every purchase is their last is not alive after a repeat), huge ``r`` and
    ``alpha`` (a Poisson process at rate ``r / alpha``).
    """

    r: float = 1.0
    alpha: float = 1.0
    a: float = 1.0
    b: float = 1.0
    gg_p: float = 1.0
    gg_q: float = 2.0
    gg_v: float = 1.0
    horizon_days: float = 90.0
    nodes: int = 40
    purchases: str = "bgnbd"
    spend: str = "gamma-gamma"
    mean_spend: float = 0.0
    mean_rate: float = 0.0

    # -- purchases ---------------------------------------------------------------------------
    @staticmethod
    def _clean(
        x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.maximum(np.nan_to_num(np.asarray(x, dtype="float64"), nan=0.0), 0.0)
        big_t = np.maximum(np.nan_to_num(np.asarray(big_t, dtype="float64"), nan=0.0), 0.0)
        t_x = np.clip(np.nan_to_num(np.asarray(t_x, dtype="float64"), nan=0.0), 0.0, big_t)
        return x, t_x, big_t

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
        """P(the customer has not dropped out) given x repeat purchases, the last at t_x, of T."""
        x, t_x, big_t = self._clean(x, t_x, big_t)
        if self.purchases != "bgnbd":
            return np.ones_like(x)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        # odds of having dropped = a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x), in
        # logs (long histories overflow) and with log1p (a huge alpha makes the ratio ~1).
        with np.errstate(divide="ignore", invalid="ignore"):
            log_odds = (
                np.log(a)
                - np.log(np.maximum(b + x - 1, 0.0))
                + (r + x) * np.log1p((big_t - t_x) / (alpha + t_x))
            )
        log_odds = np.nan_to_num(log_odds, nan=-np.inf)
        return np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700.0))), 1.0)

    def expected_purchases(self, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
        """Expected purchases in the next ``horizon_days`` given (x, t_x, T)."""
        x, t_x, big_t = self._clean(x, t_x, big_t)
        t = float(self.horizon_days)
        if self.purchases == "historical-rate":
            with np.errstate(divide="ignore", invalid="ignore"):
                own = x / big_t
            return np.where(big_t > 0, own, self.mean_rate) * t
        return self.p_alive(x, t_x, big_t) * self._alive_purchases(x, big_t, t)

    def _alive_purchases(self, x: np.ndarray, big_t: np.ndarray, t: float) -> np.ndarray:
        """E[purchases in t | alive] = E[(1 - (1 + p c) ** -(r + x)) / p] over the posterior
        p ~ Beta(a, b + x), with c = t / (alpha + T): the Gamma posterior of the rate
        integrated out in closed form, the Beta by a Gauss-Jacobi rule per distinct x."""
        k = self.r + x
        c = t / (self.alpha + big_t)
        out = np.empty_like(x)

        def g(p: np.ndarray, kk: np.ndarray, cc: np.ndarray) -> np.ndarray:
            # (1 - (1 + p c) ** -k) / p, whose limit at p -> 0 is k c.
            pp = np.asarray(p, dtype="float64")
            tiny = pp < 1e-300
            safe = np.where(tiny, 1.0, pp)
            return np.where(tiny, kk * cc, -np.expm1(-kk * np.log1p(safe * cc)) / safe)

        for xv in np.unique(x):
            rows = x == xv
            beta = self.b + xv
            kk, cc = k[rows][:, None], c[rows][:, None]
            if self.a <= 0.0:  # Beta(0, .): all mass at p = 0 (nobody drops out)
                out[rows] = g(np.zeros(1), kk, cc)[:, 0]
            elif beta <= 0.0:  # Beta(., 0): all mass at p = 1 (the next purchase is the last)
                out[rows] = g(np.ones(1), kk, cc)[:, 0]
            else:
                p, w = beta_rule(float(self.a), float(beta), int(self.nodes))
                out[rows] = g(p[None, :], kk, cc) @ w
        return out

    # -- spend -------------------------------------------------------------------------------
    def expected_value(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Expected value of a purchase given x repeat purchases of mean value m."""
        x = np.maximum(np.nan_to_num(np.asarray(x, dtype="float64"), nan=0.0), 0.0)
        m = np.asarray(m, dtype="float64")
        has = (x > 0) & np.isfinite(m)
        m = np.where(has, np.maximum(m, 0.0), 0.0)  # a refund-only repeat day buys nothing
        if self.spend == "mean":
            return np.where(has, m, max(self.mean_spend, 0.0))
        p, q, v = self.gg_p, self.gg_q, self.gg_v
        x = np.where(has, x, 0.0)
        return (p * v + p * x * m) / (p * x + q - 1)

    def components(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """P(alive), expected purchases, expected value per purchase and expected spend over
        the horizon, from a matrix of the summary features."""
        freq, rec, big_t, mon = (x[:, i] for i in range(4))
        purchases = self.expected_purchases(freq, rec, big_t)
        value = self.expected_value(freq, mon)
        return {
            "p_alive": self.p_alive(freq, rec, big_t),
            "expected_purchases": purchases,
            "expected_value": value,
            "expected_spend": purchases * value,
        }

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        return self.components(x)["expected_spend"]


def fit_spend_baseline(
    transactions: pd.DataFrame,
    observation_end: datetime,
    horizon_days: float,
    *,
    output: str = "expected_spend",
    simple: bool = False,
) -> BgNbdSpendScorer:
    """The classical expected-spend model on ``transactions`` (``customer_id``, ``at``,
    ``value``) up to ``observation_end``, falling back to simpler models when a piece cannot be
    fitted. ``meta["model"]`` names the model that answers and ``meta["steps"]`` what was tried,
    with the reason for each fallback. ``simple`` asks for the last fallback directly (each
    customer's repeat rate times their mean spend: a baseline of its own). Raises
    :class:`FitFailed` only when there is no purchase at all."""
    summary = rfm_summary(transactions, observation_end)
    if summary.empty:
        raise FitFailed(f"no purchase before {observation_end:%Y-%m-%d}")
    steps: list[str] = []
    repeat_values = summary.loc[summary["frequency"] > 0, ["frequency", "monetary"]]
    repeat_values = repeat_values[np.isfinite(repeat_values["monetary"])]
    if len(repeat_values):
        # The mean value of a repeat purchase day over all of them (each customer's mean
        # weighted by their repeat days).
        mean_spend = float(
            np.sum(repeat_values["frequency"] * repeat_values["monetary"])
            / np.sum(repeat_values["frequency"])
        )
    else:
        mean_spend = float(summary["mean_value"].mean())
    mean_spend = max(mean_spend, 0.0) if math.isfinite(mean_spend) else 0.0
    total_t = float(summary["T"].sum())
    mean_rate = float(summary["frequency"].sum()) / total_t if total_t > 0 else 0.0
    scorer = BgNbdSpendScorer(
        features=list(SUMMARY_FEATURES),
        outputs=[output],
        horizon_days=float(horizon_days),
        mean_spend=mean_spend,
        mean_rate=mean_rate,
    )
    meta: dict[str, Any] = {
        "fitted_on": pd.Timestamp(observation_end).isoformat(),
        "customers": len(summary),
        "repeat_customers": int((summary["frequency"] > 0).sum()),
        "mean_spend": mean_spend,
        "mean_rate_per_day": mean_rate,
    }
    try:
        if simple:
            raise FitFailed("the simple model was asked for")
        bg = fit_bgnbd(summary)
    except FitFailed as exc:
        scorer.purchases, scorer.spend = "historical-rate", "mean"
        if not simple:
            steps.append(f"BG/NBD not used: {exc}")
        meta["model"] = "historical repeat rate x mean spend"
    else:
        scorer.r, scorer.alpha = bg.params["r"], bg.params["alpha"]
        # A boundary fit is its limit: a -> 0 is the NBD (no dropout), b -> 0 the last purchase.
        scorer.a = 0.0 if "a -> 0" in bg.boundary else bg.params["a"]
        scorer.b = 0.0 if "b -> 0" in bg.boundary else bg.params["b"]
        meta["bgnbd"] = {
            **bg.params,
            "log_likelihood": bg.log_likelihood,
            "customers": bg.customers,
        }
        if bg.boundary:
            meta["bgnbd_boundary"] = bg.boundary
            steps.append(f"BG/NBD on the boundary ({', '.join(bg.boundary)}): evaluated as limits")
        try:
            gg = fit_gamma_gamma(summary)
        except FitFailed as exc:
            scorer.spend = "mean"
            steps.append(f"Gamma-Gamma not used: {exc}")
            meta["model"] = "BG/NBD x mean spend per purchase"
        else:
            scorer.gg_p, scorer.gg_q, scorer.gg_v = gg.params["p"], gg.params["q"], gg.params["v"]
            meta["gamma_gamma"] = {
                **gg.params,
                "log_likelihood": gg.log_likelihood,
                "customers": gg.customers,
            }
            if gg.boundary:
                steps.append(f"Gamma-Gamma on the boundary ({', '.join(gg.boundary)})")
            meta["model"] = "BG/NBD x Gamma-Gamma"
    meta["steps"] = steps
    meta["name"] = f"{meta['model']} (maximum likelihood)"
    scorer.meta.update(meta)
    return scorer
