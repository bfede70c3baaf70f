"""recommender: which products should this customer see next?

Rows are the customers who buy something in the 30 days after the cutoff (the horizon); the
label is the set of products they buy then (non-canceled orders), kept as a comma-separated
string, and ``new_products`` the part of it the customer had never bought before the cutoff.

The model ranks by three signals learned from the interactions strictly before the cutoff:

- implicit-feedback ALS (``implicit``, CPU, one thread): purchases count fully, add-to-carts and
  views less (the view weight is tuned), with confidence ``1 + alpha * log1p(strength / 0.1)``
  so a heavy browser does not drown a buyer;
- a tuned multiple of the product's log popularity, folded into the factors as one extra
  dimension (ALS treats every unobserved pair alike, so it under-weights how much more often
  best-sellers are bought by everyone);
- the customer's own purchases: ``repeat_weight * log1p(times bought) * 2 ** (-age /
  half-life)``, because in most shops the best single predictor of next month's basket is last
  month's (replenishment, favourites, a wholesaler's stock lines).

Customers the model has never seen get popularity. Whether already-bought products are shown
is a request parameter (``exclude_seen``, see :attr:`Recommender.parameters`); its default is
the model's, chosen on the validation window by a model trained only on what precedes that
window (the served model is then refitted on everything before the test cutoff).

Baselines, each a plain :class:`~shopml.runtime.scorers.RecommenderScorer`: ``popularity`` (the
products most bought in the last N days, N in 30/90/365 picked on the training rows, repeats
allowed) and ``buy-again`` (the customer's own most bought, most recent products, then
popularity). Metrics: precision@10, recall@10 and NDCG@10 (the gate's metric) over all the
products bought, the same with ``_new`` over the products new to the customer, ranked with
already-bought products left out (discovery: what a shop wants shown beside "buy again"), and
catalogue coverage. On simulated data the oracle ranks by the simulator's true next-purchase
distribution (:func:`shopml.data.oracle.purchase_scores`).

Scorers are numpy factors, a popularity vector and the purchase history: no ``implicit`` at
prediction time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from shopml.runtime.answers import Recommend
from shopml.runtime.scorers import RecommenderScorer, Scorer
from shopml.usecases import _live, _metrics, _plots
from shopml.usecases.base import GatePolicy, LabelledData, MonitorSpec, Predictions, UseCase

if TYPE_CHECKING:
    import optuna

    from shopml.data.warehouse import Warehouse

K = 10
LABEL = "purchased_products"
NEW_LABEL = "new_products"
ORACLE = "oracle_top10"
FEATURES = ["history_products", "history_purchases"]
# A purchase is the strongest signal; add-to-carts and views are weaker (views are tuned).
CART_WEIGHT = 0.3
LOG_SCALE = 0.1  # confidence grows with log1p(strength / LOG_SCALE)
POPULARITY_WINDOWS = (30, 90, 365)
# The buy-again baseline's recency half-life: long, so it ranks mostly by how often.
BUY_AGAIN_HALF_LIFE_DAYS = 365.0


@dataclass
class RepeatAwareScorer(RecommenderScorer):
    """A :class:`RecommenderScorer` whose score for a customer's past products also counts how
    often and how recently they bought them: ``repeat_weight * strength`` on top of the factor
    (or popularity) score, with ``strength = log1p(times bought) * 2 ** (-age / half-life)`` as
    of the training cutoff. With no factors and a tiny popularity it is "buy again, then the
    best-sellers"."""

    # customer -> (product positions, strengths)
    history: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    repeat_weight: float = 1.0

    def scores(self, customer_id: str) -> np.ndarray:
        out = super().scores(customer_id)
        past = self.history.get(customer_id)
        if past is None or not self.repeat_weight:
            return out
        out = np.array(out, dtype="float64", copy=True)
        out[np.asarray(past[0], dtype=int)] += self.repeat_weight * np.asarray(past[1])
        return out


def purchase_history(
    inter: pd.DataFrame, cutoff: datetime, pindex: Mapping[str, int], half_life_days: float
) -> dict[str, tuple[list[int], list[float]]]:
    """Per customer, the products they bought before ``cutoff`` with their repeat strength:
    ``log1p(times bought) * 2 ** (-days since the last purchase / half_life_days)``."""
    bought = inter[inter["n_purchases"] > 0]
    if bought.empty:
        return {}
    age = (pd.Timestamp(cutoff) - pd.to_datetime(bought["last_at"])).dt.total_seconds() / 86400
    strength = np.log1p(bought["n_purchases"].to_numpy(dtype="float64")) * np.exp2(
        -np.clip(age.to_numpy(dtype="float64"), 0.0, None) / max(half_life_days, 1e-9)
    )
    frame = pd.DataFrame(
        {
            "customer_id": bought["customer_id"].to_numpy(),
            "j": bought["product_id"].map(pindex).to_numpy(),
            "s": strength,
        }
    ).dropna(subset=["j"])
    return {
        str(c): (g["j"].astype(int).tolist(), g["s"].astype(float).tolist())
        for c, g in frame.groupby("customer_id", sort=True)
    }


def _split(text: Any) -> list[str]:
    return [p for p in str(text).split(",") if p] if isinstance(text, str) else []


# Fewer distinct products than this and a top-K ranking is trivial (CDNOW sells one: "cd").
MIN_PRODUCTS = 20


class Recommender(UseCase):
    name = "recommender"
    question = "Which products should this customer see next?"
    entity = "customer"
    key = "customer_id"
    kind = "ranking"
    required_tables = ("customers", "products", "orders", "order_items")
    metrics = (
        "ndcg_at_10",
        "precision_at_10",
        "recall_at_10",
        "ndcg_at_10_new",
        "precision_at_10_new",
        "recall_at_10_new",
        "catalogue_coverage",
        "known_share",
    )
    # Output of the matrix path: top-10 product positions, so >= 0; NaN means a short list.
    gate = GatePolicy(
        "ndcg_at_10",
        higher_is_better=True,
        min_improvement=0.01,
        floors={"ndcg_at_10": 0.01},
        output_range=(0.0, None),
        max_latency_ms=25.0,
    )
    monitoring = MonitorSpec(
        features=tuple(FEATURES),
        prediction="recommendations",
        label=LABEL,
        label_delay_days=30,
        performance_metric="ndcg_at_10",
    )
    horizon_days = 30
    # ALS learns from the interactions before the latest cutoff it is given, not from the
    # training rows' labels: one training cutoff is enough (it picks the baseline's window).
    train_cutoffs = 1
    # What a recommend request may set beyond the customer, with its default: "model" means the
    # fitted model's own choice (``scorer.meta``, chosen on validation). The service builds the
    # request schema from this; :meth:`parameter_defaults` resolves the defaults for a model.
    parameters: ClassVar[dict[str, dict[str, Any]]] = {
        "k": {"type": "int", "default": K, "minimum": 1, "maximum": 100,
              "description": "How many products."},
        "exclude_seen": {"type": "bool", "default": "model",
                         "description": "Leave out products the customer bought before (default: "
                                        "the model's, chosen on validation)."},
    }  # fmt: skip
    # Its answer: ranked products, the request taking the parameters above.
    answer = Recommend(
        k=parameters["k"]["default"],
        max_k=parameters["k"]["maximum"],
        exclude_seen=None,  # "model": the fitted model's own choice (scorer.meta)
    )

    def __init__(self) -> None:
        self._interactions: dict[tuple[str, datetime], pd.DataFrame] = {}

    def live_checks(self, live: _live.LiveContext) -> list[_live.LiveFigure]:
        """Catalogue coverage, novelty, and precision and hit rate once a month has passed."""
        return _live.ranking_checks(self, live, self.answer.output)

    # -- data --------------------------------------------------------------------------------
    def arrivals(self, wh: Warehouse, start: datetime, end: datetime) -> pd.DataFrame:
        """Visitors: recommendations are asked for by customers who are active."""
        return self.active_customers(wh, start, end)

    def interactions_at(self, wh: Warehouse, cutoff: datetime) -> pd.DataFrame:
        """Customer x product interactions strictly before ``cutoff`` (cached per warehouse
        and cutoff: tuning refits many times on the same matrix)."""
        from shopml.features import interactions

        # The data version is part of the key: a reloaded warehouse must not reuse old rows.
        key = (f"{wh.path}@{wh.dataset_version()}", cutoff)
        if key not in self._interactions:
            if len(self._interactions) >= 4:
                self._interactions.pop(next(iter(self._interactions)))
            self._interactions[key] = interactions(wh.ibis(), cutoff).to_pandas()
        return self._interactions[key]

    def skip_reason(self, wh: Warehouse) -> str | None:
        reason = super().skip_reason(wh)
        if reason is not None:
            return reason
        row = wh.con.execute("SELECT count(DISTINCT product_id) FROM order_items").fetchone()
        sold = int(row[0]) if row else 0
        if sold < MIN_PRODUCTS:
            return (
                f"only {sold} product(s) were ever sold; ranking top-{K} needs at least "
                f"{MIN_PRODUCTS}"
            )
        return None

    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        b = wh.ibis()
        o = b.table("orders")
        end = cutoff + timedelta(days=self.horizon_days)
        orders = o.filter(
            o.purchased_at >= cutoff, o.purchased_at < end, o.status != "canceled"
        ).select("order_id", "customer_id")
        items = b.table("order_items").select("order_id", "product_id")
        bought = items.join(orders, "order_id").select("customer_id", "product_id").distinct()
        lab = bought.to_pandas()
        frame = (
            lab.sort_values(["customer_id", "product_id"])
            .groupby("customer_id", sort=True)["product_id"]
            .agg(",".join)
            .rename(LABEL)
            .reset_index()
        )
        frame["n_purchased"] = frame[LABEL].str.count(",") + 1
        inter = self.interactions_at(wh, cutoff)
        hist = inter.groupby("customer_id").agg(
            history_products=("product_id", "size"),
            history_purchases=("n_purchases", lambda s: int((s > 0).sum())),
        )
        frame = frame.join(hist, on="customer_id")
        frame[FEATURES] = frame[FEATURES].fillna(0).astype("int64")
        before = inter[inter["n_purchases"] > 0].groupby("customer_id")["product_id"].agg(set)
        frame[NEW_LABEL] = [
            ",".join(p for p in _split(text) if p not in before.get(c, ()))
            for c, text in zip(frame["customer_id"], frame[LABEL], strict=True)
        ]
        oracle: list[str] = []
        truth = self._oracle_top(wh, cutoff, frame["customer_id"].tolist())
        if truth is not None:
            frame[ORACLE] = frame["customer_id"].map(truth).fillna("")
            oracle = [ORACLE]
        return LabelledData(
            frame, ["customer_id"], list(FEATURES), [LABEL, NEW_LABEL], oracle, [cutoff]
        )

    @staticmethod
    def _oracle_top(wh: Warehouse, cutoff: datetime, customers: list[str]) -> pd.Series | None:
        """The simulator's true top-10 next purchases per customer (None on real data)."""
        if wh.get_meta("source") != "simulator" or not customers:
            return None
        from shopml.data import oracle
        from shopml.data.warehouse import WarehouseError

        try:
            top = oracle.purchase_scores(wh, cutoff, customers, k=K)
        except (WarehouseError, ValueError):
            return None
        top = top.sort_values(["customer_id", "rank"])
        return top.groupby("customer_id")["product_id"].agg(",".join)

    def input_example(self, data: LabelledData) -> pd.DataFrame:
        return data.frame[["customer_id"]].head(5)

    # -- model -------------------------------------------------------------------------------
    def default_params(self) -> dict[str, Any]:
        return {
            "factors": 16,
            "regularization": 0.1,
            "alpha": 1.0,
            "iterations": 15,
            "pop_weight": 0.15,
            "view_weight": 0.1,
            "popularity_days": 90,
            "repeat_weight": 1.0,
            "repeat_half_life_days": 90.0,
        }

    def starting_params(self) -> list[dict[str, Any]]:
        """The defaults, then a model that starts from "buy again": a customer's own products
        first, ranked mostly by how often (the buy-again baseline's one-year half-life), with
        ALS and popularity filling the rest. In shops where next month's basket is mostly
        repeats (wholesale, replenishment) that is the stronger start; the validation window
        decides."""
        return [
            self.default_params(),
            {
                **self.default_params(),
                "repeat_weight": 3.0,
                "repeat_half_life_days": BUY_AGAIN_HALF_LIFE_DAYS,
            },
        ]

    def search_space(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "factors": trial.suggest_int("factors", 8, 64, log=True),
            "regularization": trial.suggest_float("regularization", 0.01, 10.0, log=True),
            "alpha": trial.suggest_float("alpha", 0.3, 20.0, log=True),
            "iterations": trial.suggest_int("iterations", 8, 30),
            "pop_weight": trial.suggest_float("pop_weight", 0.0, 0.5),
            "view_weight": trial.suggest_float("view_weight", 0.02, 0.5, log=True),
            # Recent best-sellers (a season's, a trend's) or the long-run ones.
            "popularity_days": trial.suggest_categorical("popularity_days", POPULARITY_WINDOWS),
            "repeat_weight": trial.suggest_float("repeat_weight", 0.05, 20.0, log=True),
            "repeat_half_life_days": trial.suggest_float(
                "repeat_half_life_days", 14.0, 730.0, log=True
            ),
        }

    def popularity(self, wh: Warehouse, cutoff: datetime, days: int) -> pd.Series:
        """Lines of non-canceled orders per product in the ``days`` before ``cutoff``."""
        b = wh.ibis()
        o = b.table("orders")
        o = o.filter(
            o.purchased_at < cutoff,
            o.purchased_at >= cutoff - timedelta(days=days),
            o.status != "canceled",
        ).select("order_id")
        i = b.table("order_items").join(o, "order_id")
        counts = i.group_by("product_id").aggregate(n=i.count()).to_pandas()
        return counts.set_index("product_id")["n"].astype("float64")

    def _catalogue(self, wh: Warehouse) -> list[str]:
        return sorted(wh.read("products", ["product_id"])["product_id"].astype(str).tolist())

    def _popularity_scorer(
        self,
        products: list[str],
        pop: pd.Series,
        days: int,
        seen: dict[str, list[int]] | None = None,
    ) -> RecommenderScorer:
        counts = pop.reindex(products).fillna(0.0).to_numpy()
        return RecommenderScorer(
            features=["customer_id"],
            outputs=["recommendations"],
            product_ids=products,
            popularity=counts,
            seen=seen or {},
            meta={"name": f"popularity ({days} days)", "k": K, "exclude_seen": False},
        )

    @staticmethod
    def _seen(inter: pd.DataFrame, pindex: Mapping[str, int]) -> dict[str, list[int]]:
        bought = inter[inter["n_purchases"] > 0]
        return {
            str(c): [pindex[q] for q in g if q in pindex]
            for c, g in bought.groupby("customer_id")["product_id"]
        }

    def fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
        as_of: datetime | None = None,
    ) -> Scorer:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        import scipy.sparse as sp
        from implicit.cpu.als import AlternatingLeastSquares

        p = {**self.default_params(), **params}
        # The latest cutoff whose interactions are all known before the rows it is scored on.
        cutoff = as_of or (
            max(valid.cutoffs) if valid is not None and valid.cutoffs else max(train.cutoffs)
        )
        inter = self.interactions_at(wh, cutoff)
        products = sorted(set(self._catalogue(wh)) | set(inter["product_id"]))
        pindex = {q: j for j, q in enumerate(products)}
        customers = sorted(inter["customer_id"].unique())
        cindex = {c: i for i, c in enumerate(customers)}
        strength = (
            inter["n_purchases"]
            + CART_WEIGHT * inter["n_add_to_cart"]
            + float(p["view_weight"]) * inter["n_views"]
        ).to_numpy(dtype="float64")
        value = np.log1p(strength / LOG_SCALE).astype("float32")
        rows = inter["customer_id"].map(cindex).to_numpy()
        cols = inter["product_id"].map(pindex).to_numpy()
        matrix = sp.csr_matrix((value, (rows, cols)), shape=(len(customers), len(products)))
        model = AlternatingLeastSquares(
            factors=int(p["factors"]),
            regularization=float(p["regularization"]),
            alpha=float(p["alpha"]),
            iterations=int(p["iterations"]),
            num_threads=1,
            random_state=seed,
        )
        model.fit(matrix, show_progress=False)
        days = int(p["popularity_days"])
        pop = self.popularity(wh, cutoff, days).reindex(products).fillna(0.0).to_numpy()
        half_life = float(p["repeat_half_life_days"])
        # log popularity relative to the best-seller, as one more factor dimension: the score
        # is u . v + pop_weight * log((1 + n) / (1 + n_max)).
        log_pop = np.log1p(pop) - np.log1p(pop.max())
        user = np.asarray(model.user_factors, dtype="float32")
        item = np.asarray(model.item_factors, dtype="float32")
        user = np.hstack([user, np.full((len(customers), 1), p["pop_weight"], "float32")])
        item = np.hstack([item, log_pop.astype("float32")[:, None]])
        scorer = RepeatAwareScorer(
            features=["customer_id"],
            outputs=["recommendations"],
            customer_ids=customers,
            product_ids=products,
            customer_factors=user,
            product_factors=item,
            popularity=pop,
            seen=self._seen(inter, pindex),
            history=purchase_history(inter, cutoff, pindex, half_life),
            repeat_weight=float(p["repeat_weight"]),
            meta={
                "name": "implicit ALS + popularity + repeat purchases",
                "k": K,
                "exclude_seen": False,
                "cutoff": cutoff.isoformat(),
                "params": dict(p),
            },
        )
        if valid is not None and len(valid) and as_of is None:
            # Measured, not assumed: keep already-bought products unless hiding them helps.
            # Only a model trained before the validation window may be judged on it (here the
            # cutoff is the validation cutoff: ``as_of`` is not given).
            self._choose_exclude_seen(scorer, valid)
        return scorer

    def _choose_exclude_seen(self, scorer: Scorer, valid: LabelledData) -> None:
        keep = self.evaluate(scorer, valid)["ndcg_at_10"]
        scorer.meta["exclude_seen"] = True
        hide = self.evaluate(scorer, valid)["ndcg_at_10"]
        scorer.meta["exclude_seen"] = bool(hide > keep)
        scorer.meta["valid_ndcg_keep_seen"] = keep
        scorer.meta["valid_ndcg_exclude_seen"] = hide
        scorer.meta["exclude_seen_chosen_at"] = max(valid.cutoffs).isoformat()

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
        # The default for exclude_seen is chosen by a model that knows nothing of the
        # validation window (interactions before its cutoff only); the served model then
        # learns from every interaction known when the rows are scored (before the test
        # cutoff), as a nightly retrain would, and keeps that choice.
        final = self.fit(wh, train, None, params, seed, as_of=as_of)
        if valid is not None and len(valid):
            judged = self.fit(wh, train, valid, params, seed)
            for key in ("exclude_seen", "valid_ndcg_keep_seen", "valid_ndcg_exclude_seen",
                        "exclude_seen_chosen_at"):  # fmt: skip
                final.meta[key] = judged.meta[key]
        return final

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        scorer: Scorer = self.baselines(wh, train, cutoff)["popularity"]
        return scorer

    def baselines(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> dict[str, Any]:
        """``popularity`` (the best of three windows on the training rows, repeats allowed)
        and ``buy-again`` (the customer's most bought, most recent products, then popularity),
        both from what is known before ``cutoff``."""
        # The window is chosen on the training rows (popularity at their cutoff), so the
        # baseline is the best of the three simple windows rather than an arbitrary one.
        products = self._catalogue(wh)
        inter = self.interactions_at(wh, cutoff)
        products = sorted(set(products) | set(inter["product_id"]))
        pindex = {q: j for j, q in enumerate(products)}
        at = max(train.cutoffs)
        best_days, best = POPULARITY_WINDOWS[0], -np.inf
        for days in POPULARITY_WINDOWS:
            trial = self._popularity_scorer(products, self.popularity(wh, at, days), days)
            ndcg = self.evaluate(trial, train)["ndcg_at_10"]
            if ndcg > best:
                best_days, best = days, ndcg
        seen = self._seen(inter, pindex)
        pop = self.popularity(wh, cutoff, best_days)
        popularity = self._popularity_scorer(products, pop, best_days, seen)
        counts = pop.reindex(products).fillna(0.0).to_numpy()
        # Popularity squeezed below any purchase strength: it only fills a short history.
        filler = np.log1p(counts) / (np.log1p(counts.max()) + 1.0) * 1e-3 if len(counts) else counts
        buy_again = RepeatAwareScorer(
            features=["customer_id"],
            outputs=["recommendations"],
            product_ids=products,
            popularity=filler,
            seen=seen,
            history=purchase_history(inter, cutoff, pindex, BUY_AGAIN_HALF_LIFE_DAYS),
            repeat_weight=1.0,
            meta={
                "name": f"buy again, then popularity ({best_days} days)",
                "k": K,
                "exclude_seen": False,
            },
        )
        return {"popularity": popularity, "buy-again": buy_again}

    # -- evaluation --------------------------------------------------------------------------
    def parameter_defaults(self, scorer: Scorer) -> dict[str, Any]:
        """The request parameters' defaults for this model (``"model"`` resolved)."""
        return {
            "k": K,
            "exclude_seen": bool(scorer.meta.get("exclude_seen", False)),
        }

    def recommend_all(
        self, scorer: Scorer, data: LabelledData, exclude_seen: bool | None = None
    ) -> list[list[str]]:
        """Top-10 product ids per row, as the scorer serves them (``exclude_seen`` None: the
        model's default)."""
        assert isinstance(scorer, RecommenderScorer)
        exclude = (
            self.parameter_defaults(scorer)["exclude_seen"]
            if exclude_seen is None
            else exclude_seen
        )
        return [
            [q for q, _ in scorer.recommend(str(c), K, exclude_seen=exclude)]
            for c in data.frame["customer_id"]
        ]

    def predict(self, scorer: Scorer, data: LabelledData) -> Predictions:
        """The top-10 list served to each row's customer with the model's default, the list
        with already-bought products left out, and whether the model knew the customer."""
        assert isinstance(scorer, RecommenderScorer)
        known = [
            scorer.knows(str(c)) and scorer.customer_factors is not None
            for c in data.frame["customer_id"]
        ]
        values = pd.DataFrame(
            {"recommended": pd.Series(self.recommend_all(scorer, data), dtype=object),
             "recommended_new": pd.Series(self.recommend_all(scorer, data, True), dtype=object),
             "known": pd.Series(known, dtype=bool)}
        )  # fmt: skip
        return Predictions(values, {"catalogue_size": len(scorer.product_ids)})

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        recs = list(predictions.values["recommended"])
        actual = [set(_split(t)) for t in data.frame[LABEL]]
        out = _metrics.ranking_metrics(recs, actual, K)
        if NEW_LABEL in data.frame.columns and "recommended_new" in predictions.values:
            # Discovery: products new to the customer, ranked without the ones they bought.
            new = _metrics.ranking_metrics(
                list(predictions.values["recommended_new"]),
                [set(_split(t)) for t in data.frame[NEW_LABEL]],
                K,
            )
            out.update({f"{k}_new": v for k, v in new.items()})
        out["catalogue_coverage"] = _metrics.catalogue_coverage(
            recs, int(predictions.context["catalogue_size"]), K
        )
        known = predictions.values["known"].to_numpy(dtype=bool)
        out["known_share"] = float(np.mean(known)) if len(known) else float("nan")
        return out

    def oracle_metrics(self, wh: Warehouse, data: LabelledData) -> dict[str, float] | None:
        if not data.has_oracle:
            return None
        recs = [_split(t) for t in data.frame[ORACLE]]
        actual = [set(_split(t)) for t in data.frame[LABEL]]
        out = _metrics.ranking_metrics(recs, actual, K)
        out["catalogue_coverage"] = _metrics.catalogue_coverage(recs, len(self._catalogue(wh)), K)
        return out

    def plots(self, scorer: Scorer, data: LabelledData, outdir: Path) -> list[Path]:
        recs = self.recommend_all(scorer, data)
        actual = [set(_split(t)) for t in data.frame[LABEL]]
        hist = data.frame["history_products"].to_numpy()
        buckets: dict[str, float] = {}
        for label, lo, hi in (
            ("no history", 0, 0),
            ("1-5 products", 1, 5),
            ("6-20 products", 6, 20),
            ("21+ products", 21, np.inf),
        ):
            idx = np.flatnonzero((hist >= lo) & (hist <= hi))
            if len(idx):
                m = _metrics.ranking_metrics([recs[i] for i in idx], [actual[i] for i in idx], K)
                buckets[f"{label} (n={len(idx)})"] = m["ndcg_at_10"]
        if not buckets:
            return []
        return [
            _plots.bars(
                buckets,
                outdir / "ndcg_by_history.png",
                "NDCG@10 by the customer's history before the cutoff",
                "NDCG@10",
            )
        ]


__all__ = ["Recommender"]
