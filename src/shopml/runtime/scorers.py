"""Scorers: the fitted, self-contained objects that are registered in MLflow and served.

A scorer holds everything a prediction needs (feature order, defaults, the fitted model's own
state) and depends only on numpy, pandas and, for boosted trees, LightGBM's booster, so the
serving image needs no training library. Each scorer answers :meth:`Scorer.predict_frame` for
batch work and :meth:`Scorer.predict_matrix` for the fast single-row path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

CENT = 0.01  # the smallest price a pricing scorer suggests


@dataclass
class Explanation:
    """How each input moved one output, for every row: ``base + contributions.sum(axis=1)`` is
    the output on the model's own scale (``units``: log-odds for a probability, the log for a
    log-link regression, else the output's own units before clipping, a calibration offset in
    the base). ``inputs`` names the columns of ``values`` and ``contributions`` (a model may
    explain features it derives from the request's, such as a BG/NBD summary's expected
    purchases)."""

    output: str
    units: str
    inputs: list[str]
    values: np.ndarray  # (rows, inputs)
    contributions: np.ndarray  # (rows, inputs)
    base: np.ndarray  # (rows,)

    def top(self, row: int, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` largest contributions of one row (by size), with the input's value."""
        c = self.contributions[row]
        order = np.argsort(-np.abs(c), kind="stable")[:k]
        return [
            {
                "feature": self.inputs[i],
                "value": _finite(self.values[row, i]),
                "contribution": _finite(c[i]),
            }
            for i in order
        ]

    def answer(self, row: int, k: int = 5) -> dict[str, Any]:
        """One row's explanation as the service answers it."""
        return {
            "output": self.output,
            "units": self.units,
            "base": _finite(self.base[row]),
            "total": _finite(self.base[row] + float(np.nansum(self.contributions[row]))),
            "top": self.top(row, k),
        }


def _finite(value: Any) -> float | None:
    v = float(value)
    return v if np.isfinite(v) else None


# LightGBM objectives whose raw score is the log of the prediction.
_LOG_LINK = ("poisson", "tweedie", "gamma")


def booster_explanation(booster: Any, x: np.ndarray, inputs: list[str], output: str) -> Explanation:
    """TreeSHAP contributions of one LightGBM booster (its own ``pred_contrib``)."""
    contrib = np.asarray(booster.predict(x, pred_contrib=True, num_threads=1), dtype="float64")
    objective = str(booster.params.get("objective", ""))
    if objective in ("binary", "cross_entropy", "xentropy"):
        units = "log-odds"
    elif objective.startswith(_LOG_LINK):
        units = "log"
    else:
        units = output
    return Explanation(output, units, list(inputs), x, contrib[:, :-1], contrib[:, -1])


@dataclass
class Scorer:
    """Base: a list of input features and a prediction over a float matrix in that order."""

    features: list[str]
    outputs: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    # Outputs an answer carries beside the numeric ones (a segment's name beside its id),
    # made by :meth:`describe` from the numeric ones.
    described_outputs: ClassVar[tuple[str, ...]] = ()

    def describe(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """The :attr:`described_outputs` for one answer's numeric ``outputs`` (by name)."""
        return {}

    def to_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Columns in training order as float64; a missing column is all-missing (NaN)."""
        cols = [
            pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            if c in frame.columns
            else np.full(len(frame), np.nan)
            for c in self.features
        ]
        if not cols:
            return np.empty((len(frame), 0))
        return np.column_stack(cols)

    def row_matrix(self, values: Mapping[str, Any]) -> np.ndarray:
        """One instance as a 1-row matrix; missing or null features are NaN."""
        row = np.empty((1, len(self.features)))
        for i, name in enumerate(self.features):
            v = values.get(name)
            row[0, i] = np.nan if v is None else float(v)
        return row

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # Why :meth:`explain` has nothing to say for this kind of model (answered to a caller).
    unexplained: ClassVar[str] = "this kind of model has no per-feature contributions"

    def explain(self, x: np.ndarray) -> Explanation | None:
        """Per-feature contributions to the first output for the rows of ``x`` (the model's
        own equivalent of SHAP values), or None when the model has none
        (:attr:`unexplained` says why)."""
        return None

    def parts(self) -> list[Scorer]:
        """The scorers this one is built on (serving speeds up their boosters)."""
        return []

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = self.predict_matrix(self.to_matrix(frame))
        if out.ndim == 1:
            out = out.reshape(-1, 1)
        return pd.DataFrame(out, columns=self.outputs, index=frame.index)


def _booster_from_string(model: str) -> Any:
    import lightgbm

    return lightgbm.Booster(model_str=model)


@dataclass
class BoosterScorer(Scorer):
    """One or more LightGBM boosters stored as model strings (portable across versions).

    ``kind`` ``probability``: the first booster's output is a probability; ``value``: each
    booster gives one output column (for example the median and the 90th percentile).
    ``offsets`` add a calibrated shift per output (conformal adjustment of a quantile), and
    ``clip`` bounds the outputs.
    """

    models: list[str] = field(default_factory=list)
    kind: str = "value"
    offsets: list[float] = field(default_factory=list)
    clip: tuple[float | None, float | None] = (None, None)
    monotone_outputs: bool = False  # enforce out[:, i] <= out[:, i+1] (quantiles)

    def __post_init__(self) -> None:
        self._boosters: list[Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_boosters"] = None  # rebuilt from the model strings on load
        return state

    @property
    def boosters(self) -> list[Any]:
        if self._boosters is None:
            self._boosters = [_booster_from_string(m) for m in self.models]
        return self._boosters

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        cols = [b.predict(x, num_threads=1) for b in self.boosters]
        out = np.column_stack(cols) if len(cols) > 1 else cols[0].reshape(-1, 1)
        if self.offsets:
            out = out + np.asarray(self.offsets)
        if self.monotone_outputs and out.shape[1] > 1:
            out = np.maximum.accumulate(out, axis=1)
        lo, hi = self.clip
        if lo is not None or hi is not None:
            out = np.clip(out, lo, hi)
        return out[:, 0] if out.shape[1] == 1 else out

    def explain(self, x: np.ndarray) -> Explanation | None:
        """The first booster's TreeSHAP; an output in its own units carries its calibration
        offset in the base (``base + sum`` is the output before clipping)."""
        if not self.boosters:
            return None
        found = booster_explanation(self.boosters[0], x, self.features, self.outputs[0])
        if self.offsets and found.units == self.outputs[0]:
            found.base = found.base + float(self.offsets[0])
        return found


@dataclass
class UpliftScorer(Scorer):
    """Two-model (T-learner) uplift: P(response | treated) - P(response | control)."""

    treated: BoosterScorer | None = None
    control: BoosterScorer | None = None

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        assert self.treated is not None and self.control is not None
        pt = np.asarray(self.treated.predict_matrix(x)).reshape(-1)
        pc = np.asarray(self.control.predict_matrix(x)).reshape(-1)
        return np.column_stack([pt, pc, pt - pc])

    def parts(self) -> list[Scorer]:
        return [s for s in (self.treated, self.control) if s is not None]

    def explain(self, x: np.ndarray) -> Explanation | None:
        """The first output (the response if treated), explained by the treated model."""
        return self.treated.explain(x) if self.treated is not None else None


@dataclass
class LinearScorer(Scorer):
    """A linear model on standardised inputs (baselines and simple models)."""

    coef: list[float] = field(default_factory=list)
    intercept: float = 0.0
    mean: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    fill: list[float] = field(default_factory=list)
    link: str = "identity"  # or "logit"
    clip: tuple[float | None, float | None] = (None, None)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        x = np.where(np.isnan(x), np.asarray(self.fill), x)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        eta = z @ np.asarray(self.coef) + self.intercept
        if self.link == "logit":
            with np.errstate(over="ignore"):  # exp(-eta) = inf for eta << 0: the answer is 0
                out = 1.0 / (1.0 + np.exp(-eta))
        else:
            out = eta
        lo, hi = self.clip
        if lo is not None or hi is not None:
            out = np.clip(out, lo, hi)
        return out

    def explain(self, x: np.ndarray) -> Explanation | None:
        """Each coefficient times its standardised input (missing ones at their fill)."""
        filled = np.where(np.isnan(x), np.asarray(self.fill), x)
        z = (filled - np.asarray(self.mean)) / np.asarray(self.scale)
        units = "log-odds" if self.link == "logit" else self.outputs[0]
        base = np.full(len(x), float(self.intercept))
        return Explanation(
            self.outputs[0], units, list(self.features), x, z * np.asarray(self.coef), base
        )


@dataclass
class ConstantScorer(Scorer):
    """Predicts the same values for everyone (a base rate, a global median)."""

    values: list[float] = field(default_factory=list)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        out = np.tile(np.asarray(self.values, dtype="float64"), (x.shape[0], 1))
        return out[:, 0] if out.shape[1] == 1 else out


@dataclass
class ColumnScorer(Scorer):
    """Passes input columns through, optionally scaled: for baselines that are a feature
    already (the shop's own estimated delivery days, a customer's past spend)."""

    scale: list[float] = field(default_factory=list)
    fill: list[float] = field(default_factory=list)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        if self.fill:
            x = np.where(np.isnan(x), np.asarray(self.fill), x)
        out = x * (np.asarray(self.scale) if self.scale else 1.0)
        return out[:, 0] if out.shape[1] == 1 else out


@dataclass
class SegmentScorer(Scorer):
    """k-means assignment on standardised (log-scaled where stated) features."""

    centroids: list[list[float]] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    fill: list[float] = field(default_factory=list)
    log_features: list[bool] = field(default_factory=list)
    segment_ids: list[int] = field(default_factory=list)
    segment_names: list[str] = field(default_factory=list)

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.where(np.isnan(x), np.asarray(self.fill), x)
        logm = np.asarray(self.log_features, dtype=bool)
        if logm.any():
            x = x.copy()
            x[:, logm] = np.log1p(np.clip(x[:, logm], 0, None))
        return (x - np.asarray(self.mean)) / np.asarray(self.scale)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        z = self.transform(x)
        c = np.asarray(self.centroids)
        d = ((z[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
        nearest = d.argmin(axis=1)
        return np.asarray(self.segment_ids, dtype="float64")[nearest]

    described_outputs: ClassVar[tuple[str, ...]] = ("segment_name",)
    unexplained: ClassVar[str] = (
        "a segment is the nearest centroid: no feature adds to it (the centroids describe them)"
    )

    def name_of(self, segment_id: int) -> str:
        return self.segment_names[self.segment_ids.index(int(segment_id))]

    def describe(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """The segment's name (None for a missing or unknown id)."""
        first = outputs.get(self.outputs[0]) if self.outputs else None
        try:
            return {"segment_name": self.name_of(int(first)) if first is not None else None}
        except (ValueError, IndexError):
            return {"segment_name": None}


@dataclass
class RecommenderScorer(Scorer):
    """Ranks products for a customer by factor dot products (from ALS), with popularity as
    the answer for customers the model has never seen."""

    customer_ids: list[str] = field(default_factory=list)
    product_ids: list[str] = field(default_factory=list)
    customer_factors: np.ndarray | None = None
    product_factors: np.ndarray | None = None
    popularity: np.ndarray | None = None  # a score per product
    seen: dict[str, list[int]] = field(default_factory=dict)  # products bought before

    def __post_init__(self) -> None:
        self._cindex: dict[str, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cindex"] = None
        return state

    @property
    def cindex(self) -> dict[str, int]:
        if self._cindex is None:
            self._cindex = {c: i for i, c in enumerate(self.customer_ids)}
        return self._cindex

    def knows(self, customer_id: str) -> bool:
        return customer_id in self.cindex

    def scores(self, customer_id: str) -> np.ndarray:
        assert self.popularity is not None
        i = self.cindex.get(customer_id)
        if i is None or self.customer_factors is None or self.product_factors is None:
            return np.asarray(self.popularity, dtype="float64")
        return self.product_factors @ self.customer_factors[i]

    def recommend(
        self,
        customer_id: str,
        k: int = 10,
        exclude: Sequence[str] = (),
        exclude_seen: bool = False,
    ) -> list[tuple[str, float]]:
        s = self.scores(customer_id).astype("float64", copy=True)
        banned: list[int] = []
        if exclude:
            pindex = self._pindex()
            banned.extend(pindex[p] for p in exclude if p in pindex)
        if exclude_seen:
            banned.extend(self.seen.get(customer_id, []))
        if banned:
            s[np.asarray(banned, dtype=int)] = -np.inf
        k = min(k, len(s))
        top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
        top = top[np.argsort(-s[top], kind="stable")]
        return [(self.product_ids[j], float(s[j])) for j in top if np.isfinite(s[j])]

    def _pindex(self) -> dict[str, int]:
        cached: dict[str, int] | None = self.meta.get("_pindex")
        if cached is None:
            cached = {p: j for j, p in enumerate(self.product_ids)}
            self.meta["_pindex"] = cached
        return cached

    # The generic matrix path (sanity checks, latency): a row is the customer's position in
    # ``customer_ids`` (-1 for an unknown customer), the output the top-k product positions.
    def to_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        if "customer_id" not in frame.columns:
            return np.full((len(frame), 1), -1.0)
        idx = self.cindex
        return np.asarray(
            [idx.get(str(c), -1) for c in frame["customer_id"]], dtype="float64"
        ).reshape(-1, 1)

    def row_matrix(self, values: Mapping[str, Any]) -> np.ndarray:
        return np.asarray([[self.cindex.get(str(values.get("customer_id")), -1)]], "float64")

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Top-k product positions per row (NaN where the catalogue has fewer than k)."""
        k = int(self.meta.get("k", 10))
        exclude_seen = bool(self.meta.get("exclude_seen", False))
        pindex = self._pindex()
        out = np.full((x.shape[0], k), np.nan)
        for r, i in enumerate(np.asarray(x, dtype="float64")[:, 0]):
            cid = self.customer_ids[int(i)] if 0 <= i < len(self.customer_ids) else ""
            recs = self.recommend(cid, k, exclude_seen=exclude_seen)
            out[r, : len(recs)] = [pindex[p] for p, _ in recs]
        return out

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        k = int(self.meta.get("k", 10))
        exclude_seen = bool(self.meta.get("exclude_seen", False))
        recs = [
            ",".join(p for p, _ in self.recommend(str(c), k, exclude_seen=exclude_seen))
            for c in frame["customer_id"]
        ]
        return pd.DataFrame({"recommendations": recs}, index=frame.index)


@dataclass
class PricingScorer(Scorer):
    """Constant-elasticity demand, and the price that maximises the objective (revenue or
    margin) within guardrails: a minimum and maximum price and a maximum change per step.

    Demand for a row of ``features``: ``level * exp(elasticity * x[price_feature])`` where
    ``level`` is ``exp(intercept + coef . other features)`` (``link="log"``) or that linear
    predictor itself (``link="identity"``), and ``price_feature`` is the log of the price over
    the product's reference price. The elasticity of a row comes from its ``category`` (else
    the pooled value); :meth:`to_matrix` appends it as a last column so
    :meth:`predict_matrix` stays a pure function of one float matrix.

    For :meth:`suggest` the scorer keeps, per product, the state as of its training cutoff:
    elasticity, expected units per day at the reference price, the reference and current
    prices, the unit cost and the default guardrails. With constant elasticity the best price
    has a closed form (:meth:`optimal_prices`), so no grid search is needed.
    """

    product_ids: list[str] = field(default_factory=list)
    elasticity: list[float] = field(default_factory=list)
    base_demand: list[float] = field(default_factory=list)  # units/day at the reference price
    ref_price: list[float] = field(default_factory=list)
    current_price: list[float] = field(default_factory=list)
    unit_cost: list[float] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    min_price: list[float] = field(default_factory=list)  # default guardrails per product
    max_price: list[float] = field(default_factory=list)
    objective: str = "revenue"
    max_change: float = 0.10  # fraction of the current price per step
    min_factor: float = 0.5  # fallback band relative to the reference price
    max_factor: float = 2.0
    # The demand model over `features`.
    price_feature: str = "log_price_ratio"
    link: str = "log"
    intercept: float = 0.0
    coef: list[float] = field(default_factory=list)  # one per feature but the price feature
    fill: list[float] = field(default_factory=list)  # one per feature but the price feature
    pooled_elasticity: float = -1.0
    category_elasticity: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index: dict[str, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_index"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index = None

    def index(self, product_id: str) -> int | None:
        if self._index is None:
            self._index = {p: i for i, p in enumerate(self.product_ids)}
        return self._index.get(product_id)

    # -- demand ------------------------------------------------------------------------------
    def elasticity_for(self, frame: pd.DataFrame) -> np.ndarray:
        """Per row: the category's elasticity, else the pooled one."""
        if "category" not in frame.columns or not self.category_elasticity:
            return np.full(len(frame), float(self.pooled_elasticity))
        cats = frame["category"].astype(str)
        return (
            cats.map(self.category_elasticity)
            .fillna(self.pooled_elasticity)
            .to_numpy(dtype="float64")
        )

    def to_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The features in order, then each row's elasticity as one more column."""
        x = super().to_matrix(frame)
        return np.column_stack([x, self.elasticity_for(frame)])

    def row_matrix(self, values: Mapping[str, Any]) -> np.ndarray:
        x = super().row_matrix(values)
        cat = values.get("category")
        e = (
            self.category_elasticity.get(str(cat), self.pooled_elasticity)
            if cat is not None
            else self.pooled_elasticity
        )
        return np.column_stack([x, [[float(e)]]])

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = len(self.features)
        e = x[:, k] if x.shape[1] > k else np.full(x.shape[0], float(self.pooled_elasticity))
        pi = self.features.index(self.price_feature)
        others = [j for j in range(k) if j != pi]
        z = x[:, others]
        if self.fill:
            z = np.where(np.isnan(z), np.asarray(self.fill), z)
        r = np.nan_to_num(x[:, pi])
        return z, r, e

    def base_units(self, x: np.ndarray) -> np.ndarray:
        """Expected units per period at the reference price (price feature at 0)."""
        z, _, _ = self._split(x)
        eta = self.intercept + z @ np.asarray(self.coef, dtype="float64")
        if self.link == "log":
            return np.exp(np.clip(eta, -30, 30))
        return np.maximum(eta, 0.0)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Expected units per period at the row's price."""
        _, r, e = self._split(x)
        return self.base_units(x) * np.exp(e * r)

    def demand(self, i: int, price: float | np.ndarray) -> Any:
        """Expected units per day of product ``i`` at ``price``."""
        return self.base_demand[i] * (np.asarray(price) / self.ref_price[i]) ** self.elasticity[i]

    def load_state(self, frame: pd.DataFrame) -> None:
        """Per-product state for :meth:`suggest` from one row per product (features as of a
        cutoff, with ``product_id``, ``category``, ``current_price``, ``ref_price``,
        ``unit_cost``, ``min_price`` and ``max_price``; periods of 7 days)."""
        x = self.to_matrix(frame)
        self.product_ids = frame["product_id"].astype(str).tolist()
        self.categories = frame["category"].astype(str).tolist()
        self.elasticity = [float(v) for v in self.elasticity_for(frame)]
        self.base_demand = [float(v) / 7.0 for v in self.base_units(x)]

        def col(name: str) -> list[float]:
            return [float(v) for v in frame[name].to_numpy(dtype="float64")]

        self.ref_price = col("ref_price")
        self.current_price = col("current_price")
        self.unit_cost = col("unit_cost")
        self.min_price = col("min_price")
        self.max_price = col("max_price")
        self._index = None

    # -- optimisation ------------------------------------------------------------------------
    @staticmethod
    def optimal_prices(
        elasticity: np.ndarray,
        current: np.ndarray,
        cost: np.ndarray,
        min_price: np.ndarray,
        max_price: np.ndarray,
        *,
        max_change: float,
        objective: str = "revenue",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best prices (rounded to cents, inside the guardrails) and the guardrail band.

        With demand ``k * p**e`` revenue ``p**(1+e)`` falls with price when ``e < -1`` (go to
        the band's bottom) and rises otherwise (top; ``e == -1`` is flat: keep the price).
        Margin ``(p - c) * p**e`` peaks at ``p = c * e / (1 + e)`` for ``e < -1`` and is
        unimodal, so the band's closest point to that peak is the best. Guardrails that cannot
        all hold (a floor above the ceiling, or a band out of one step's reach) apply in order:
        the step limit, then the floor, then the ceiling. No price is below one cent.
        """
        e = np.asarray(elasticity, dtype="float64")
        cur = np.asarray(current, dtype="float64")
        c = np.nan_to_num(np.asarray(cost, dtype="float64")) if objective == "margin" else 0.0
        step_lo, step_hi = cur * (1 - max_change), cur * (1 + max_change)
        lo = np.fmax(step_lo, np.nan_to_num(np.asarray(min_price, dtype="float64"), nan=0.0))
        hi = np.fmin(step_hi, np.nan_to_num(np.asarray(max_price, dtype="float64"), nan=np.inf))
        # Inside the band on the cent grid, so rounding cannot break a guardrail.
        lo_c = np.maximum(np.ceil(lo * 100 - 1e-6) / 100, CENT)
        hi_c = np.maximum(np.floor(hi * 100 + 1e-6) / 100, CENT)
        conflict = lo_c > hi_c
        step_hi_c = np.maximum(np.floor(step_hi * 100 + 1e-6) / 100, CENT)
        lo_c = np.where(conflict, np.minimum(lo_c, step_hi_c), lo_c)
        hi_c = np.where(conflict, lo_c, hi_c)
        with np.errstate(divide="ignore", invalid="ignore"):
            if objective == "margin":
                peak = np.where(e < -1, c * e / (1 + e), np.inf)
                # No cost known: margin is revenue.
                peak = np.where((c <= 0) & (e < -1), 0.0, peak)
            else:
                peak = np.where(e < -1, 0.0, np.where(e > -1, np.inf, cur))
        best = np.round(np.clip(peak, lo_c, hi_c), 2)
        return np.clip(best, lo_c, hi_c), lo_c, hi_c

    def suggest(
        self,
        product_id: str,
        min_price: float | None = None,
        max_price: float | None = None,
        max_change: float | None = None,
        current_price: float | None = None,
    ) -> dict[str, Any]:
        """The best price for a product within guardrails, and its expected effect (units and
        revenue per day under the model's demand). Unset guardrails take the product's
        defaults; an unknown product raises ``KeyError``."""
        i = self.index(product_id)
        if i is None:
            raise KeyError(product_id)
        cur = float(current_price if current_price is not None else self.current_price[i])
        step = self.max_change if max_change is None else float(max_change)
        ref = self.ref_price[i]
        lo_default = self.min_price[i] if self.min_price else ref * self.min_factor
        hi_default = self.max_price[i] if self.max_price else ref * self.max_factor
        lo_in = float(min_price) if min_price is not None else min(lo_default, cur)
        hi_in = float(max_price) if max_price is not None else max(hi_default, cur)
        cost = self.unit_cost[i] if self.unit_cost else float("nan")
        best, lo, hi = self.optimal_prices(
            np.asarray([self.elasticity[i]]),
            np.asarray([cur]),
            np.asarray([cost]),
            np.asarray([lo_in]),
            np.asarray([hi_in]),
            max_change=step,
            objective=self.objective,
        )
        new = float(best[0])
        # A current price of 0 (a free item in the data) has no finite demand: a cent's.
        d_cur, d_new = float(self.demand(i, max(cur, CENT))), float(self.demand(i, new))
        out = {
            "product_id": product_id,
            "current_price": round(cur, 2),
            "suggested_price": round(new, 2),
            "elasticity": float(self.elasticity[i]),
            "expected_units_current": d_cur,
            "expected_units_suggested": d_new,
            "expected_revenue_change": new * d_new - cur * d_cur,
            "guardrails": {
                "min_price": round(float(lo[0]), 2),
                "max_price": round(float(hi[0]), 2),
                "max_change": step,
                "conflict": bool(
                    lo_in > cur * (1 + step) or hi_in < cur * (1 - step) or lo_in > hi_in
                ),
            },
        }
        if np.isfinite(cost):
            out["expected_margin_change"] = (new - cost) * d_new - (cur - cost) * d_cur
        return out

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Expected units at the row's price when the frame has the features; with a
        ``product_id`` the suggested price and its expected revenue change per day (NaN for a
        product the scorer does not know)."""
        out = pd.DataFrame(index=frame.index)
        if any(f in frame.columns for f in self.features):
            out["expected_units"] = self.predict_matrix(self.to_matrix(frame))
        if "product_id" in frame.columns:
            rows = [
                self.suggest(str(p)) if self.index(str(p)) is not None else None
                for p in frame["product_id"]
            ]
            out["suggested_price"] = [r["suggested_price"] if r else np.nan for r in rows]
            out["expected_revenue_change"] = [
                r["expected_revenue_change"] if r else np.nan for r in rows
            ]
        return out
