"""recommender: point-in-time rows and labels, ALS vs popularity, the scorer, the whole flow."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from tests.unit.usecases.conftest import train

from shopml.data.warehouse import Warehouse
from shopml.runtime.scorers import RecommenderScorer
from shopml.usecases import get_usecase
from shopml.usecases.base import LabelledData
from shopml.usecases.recommender import LABEL, ORACLE

CUTOFF = datetime(2024, 9, 1)


@pytest.fixture(scope="module")
def rec_data(small_sim_wh: Warehouse) -> tuple[LabelledData, LabelledData]:
    uc = get_usecase("recommender")
    return uc.dataset(small_sim_wh, CUTOFF - timedelta(days=30)), uc.dataset(small_sim_wh, CUTOFF)


@pytest.fixture(scope="module")
def rec_models(
    small_sim_wh: Warehouse, rec_data: tuple[LabelledData, LabelledData]
) -> tuple[RecommenderScorer, RecommenderScorer]:
    uc = get_usecase("recommender")
    valid, _ = rec_data
    model = uc.fit(small_sim_wh, valid, valid, uc.default_params(), seed=0)
    base = uc.baseline(small_sim_wh, valid, valid.cutoffs[0])
    assert isinstance(model, RecommenderScorer) and isinstance(base, RecommenderScorer)
    return model, base


def test_label_is_what_each_buyer_bought_in_the_30_days_after(
    small_sim_wh: Warehouse, rec_data: tuple[LabelledData, LabelledData]
) -> None:
    _, data = rec_data
    bought = small_sim_wh.sql(
        """SELECT o.customer_id, i.product_id FROM orders o JOIN order_items i USING (order_id)
           WHERE o.purchased_at >= ? AND o.purchased_at < ? AND o.status <> 'canceled'""",
        [CUTOFF, CUTOFF + timedelta(days=30)],
    )
    expected = bought.groupby("customer_id")["product_id"].agg(set)
    got = data.frame.set_index("customer_id")[LABEL].str.split(",").map(set)
    assert set(got.index) == set(expected.index)
    assert all(got[c] == expected[c] for c in got.index)
    assert data.has_oracle and data.frame[ORACLE].str.count(",").eq(9).all()


def test_history_features_use_only_what_came_before_the_cutoff(
    small_sim_wh: Warehouse, rec_data: tuple[LabelledData, LabelledData]
) -> None:
    _, data = rec_data
    before = small_sim_wh.sql(
        """SELECT o.customer_id, count(DISTINCT i.product_id) AS n
           FROM orders o JOIN order_items i USING (order_id) WHERE o.purchased_at < ?
           GROUP BY 1""",
        [CUTOFF],
    ).set_index("customer_id")["n"]
    got = data.frame.set_index("customer_id")["history_purchases"]
    np.testing.assert_array_equal(got.to_numpy(), before.reindex(got.index).fillna(0).to_numpy())


def test_als_beats_popularity_and_is_self_contained(
    rec_data: tuple[LabelledData, LabelledData],
    rec_models: tuple[RecommenderScorer, RecommenderScorer],
) -> None:
    uc = get_usecase("recommender")
    _, test = rec_data
    model, base = rec_models
    m, b = uc.evaluate(model, test), uc.evaluate(base, test)
    assert m["ndcg_at_10"] > b["ndcg_at_10"]
    assert m["catalogue_coverage"] > b["catalogue_coverage"]
    assert 0 < m["known_share"] <= 1 and b["known_share"] == 0
    assert isinstance(model.meta["exclude_seen"], bool)
    # Plain numpy state: nothing from implicit is needed to predict.
    assert isinstance(model.customer_factors, np.ndarray)
    assert isinstance(model.product_factors, np.ndarray)
    assert not any(type(v).__module__.startswith("implicit") for v in vars(model).values())


def test_scorer_round_trips_and_answers_the_generic_paths(
    rec_data: tuple[LabelledData, LabelledData],
    rec_models: tuple[RecommenderScorer, RecommenderScorer],
) -> None:
    _, test = rec_data
    model, _ = rec_models
    again = pickle.loads(pickle.dumps(model))
    frame = test.frame.head(20)
    assert again.predict_frame(frame).equals(model.predict_frame(frame))
    x = again.to_matrix(frame)
    top = again.predict_matrix(x)
    assert top.shape == (20, 10) and np.isfinite(top).all() and (top >= 0).all()
    # An unknown customer gets the popularity ranking.
    unknown = again.predict_matrix(again.row_matrix({"customer_id": "nobody"}))
    best = np.argsort(-np.asarray(again.popularity), kind="stable")[:10]
    assert set(unknown[0].astype(int)) == set(best)
    # Excluding already-bought products really removes them.
    cid = next(c for c in frame["customer_id"] if again.seen.get(c))
    seen = {again.product_ids[j] for j in again.seen[cid]}
    recs = {p for p, _ in again.recommend(cid, 50, exclude_seen=True)}
    assert not recs & seen


def test_skipped_with_a_reason_without_order_items(tmp_path: Path) -> None:
    with Warehouse(tmp_path / "empty.duckdb") as wh:
        result = train("recommender", wh)
    assert result.status == "skipped" and "order" in result.reason


@pytest.mark.slow
def test_trains_registers_and_beats_popularity(shop_copy: Warehouse) -> None:
    result = train("recommender", shop_copy, trials=2, timeout_s=10)
    assert result.status in {"promoted", "challenger"}, result.reason
    assert result.version is not None
    assert result.metrics["ndcg_at_10"] > result.baseline["ndcg_at_10"]
    assert result.oracle is not None and result.oracle["ndcg_at_10"] > 0
    assert result.decision is not None and result.decision["sanity"]["missing"] == 0
