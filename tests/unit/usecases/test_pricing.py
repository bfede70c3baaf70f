"""pricing: point-in-time rows, the elasticity model against the no-elasticity baseline and the
simulator's truth, guardrails, the scorer's closed-form optimum, and the generic train flow."""

from __future__ import annotations

import pickle
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopml.data.warehouse import Warehouse
from shopml.lifecycle.train import TrainConfig, build_splits, train_usecase
from shopml.runtime.scorers import PricingScorer
from shopml.settings import get_settings
from shopml.usecases import _metrics, get_usecase
from shopml.usecases.pricing import FEATURES, Pricing, build_frame, count_violations

CUTOFF = datetime(2024, 9, 10)


@pytest.fixture(scope="module")
def splits(small_sim_wh: Warehouse):
    uc = Pricing()
    s = build_splits(uc, small_sim_wh, uc.split(small_sim_wh))
    return uc, s.train, s.valid, s.test


@pytest.fixture(scope="module")
def fitted(splits, small_sim_wh: Warehouse):
    uc, train, valid, _ = splits
    scorer = uc.fit(small_sim_wh, train, valid, uc.default_params())
    return scorer, uc.baseline(small_sim_wh, train, uc.split(small_sim_wh).valid_cutoff)


# -- metrics and the scorer's optimiser (no data needed) ----------------------------------------
def test_poisson_deviance() -> None:
    assert _metrics.poisson_deviance(np.array([1.0, 3.0]), np.array([1.0, 3.0])) == 0.0
    y = np.array([0.0, 1.0, 3.0])
    mu = np.array([0.5, 1.5, 2.0])
    expected = 2 * np.mean([0.5, np.log(1 / 1.5) + 0.5, 3 * np.log(3 / 2) - 1.0])
    assert _metrics.poisson_deviance(y, mu) == pytest.approx(expected)
    # A zero forecast is floored, so one miss cannot make the mean infinite.
    assert np.isfinite(_metrics.poisson_deviance(np.array([2.0]), np.array([0.0])))


def test_optimal_prices_closed_forms_and_guardrails() -> None:
    e = np.array([-2.0, -0.5, -1.0, -3.0])
    cur = np.array([10.0, 10.0, 10.0, 9.99])
    lo, hi = np.full(4, 1.0), np.full(4, 100.0)
    best, _, _ = PricingScorer.optimal_prices(e, cur, np.full(4, np.nan), lo, hi, max_change=0.1)
    # Elastic: cut to the step limit; inelastic: raise; unit-elastic: keep; on the cent grid
    # inside the band (9.99 * 0.9 = 8.991 must round up to 9.00, not down to 8.99).
    assert best.tolist() == [9.0, 11.0, 10.0, 9.0]
    # Margin peaks at c * e / (1 + e): 4 * -3 / -2 = 6, inside a wide band.
    best, _, _ = PricingScorer.optimal_prices(
        np.array([-3.0]),
        np.array([6.2]),
        np.array([4.0]),
        np.array([1.0]),
        np.array([100.0]),
        max_change=0.1,
        objective="margin",
    )
    assert best[0] == pytest.approx(6.0)
    # A min price above the allowed step: the step wins and the price moves toward the band.
    best, lo_c, hi_c = PricingScorer.optimal_prices(
        np.array([-2.0]),
        np.array([10.0]),
        np.array([np.nan]),
        np.array([50.0]),
        np.array([100.0]),
        max_change=0.1,
    )
    assert best[0] == pytest.approx(11.0) and lo_c[0] == hi_c[0]
    # A floor above the ceiling, both within a step: the floor holds, then the ceiling.
    best, lo_c, hi_c = PricingScorer.optimal_prices(
        np.array([-2.0]),
        np.array([10.0]),
        np.array([np.nan]),
        np.array([10.5]),
        np.array([9.5]),
        max_change=0.1,
    )
    assert best[0] == pytest.approx(10.5) and lo_c[0] == hi_c[0]
    # No price under a cent, however small the current one.
    best, lo_c, _ = PricingScorer.optimal_prices(
        np.array([-2.0, -0.5]),
        np.array([0.001, 5e-324]),
        np.full(2, np.nan),
        np.zeros(2),
        np.full(2, 100.0),
        max_change=0.1,
    )
    assert best.tolist() == [0.01, 0.01] and lo_c.min() == 0.01
    assert count_violations(cur, np.array([9.0, 11.0, 10.0, 8.98]), lo, hi, 0.1) == 1


# -- data -----------------------------------------------------------------------------------------
def test_rows_are_point_in_time(small_sim_path: Path, tmp_path: Path) -> None:
    """Features do not change when every order from the cutoff on is deleted; labels are the
    units of each week after the cutoff, counted independently."""
    copy = tmp_path / "cut.duckdb"
    shutil.copy(small_sim_path, copy)
    with Warehouse(copy) as wh:
        full = build_frame(wh, CUTOFF)
        units = wh.sql(
            "SELECT i.product_id, sum(i.quantity) AS u FROM order_items i JOIN orders o "
            "USING (order_id) WHERE o.status <> 'canceled' AND o.purchased_at >= ? "
            "AND o.purchased_at < ? GROUP BY 1",
            [CUTOFF, CUTOFF + pd.Timedelta(days=7)],
        ).set_index("product_id")["u"]
        wh.con.execute(
            "DELETE FROM order_items WHERE order_id IN (SELECT order_id FROM orders "
            "WHERE purchased_at >= ?)",
            [CUTOFF],
        )
        wh.con.execute("DELETE FROM orders WHERE purchased_at >= ?", [CUTOFF])
        cut = build_frame(wh, CUTOFF)
    assert len(full) == len(cut) > 0
    assert (full["week_start"] >= pd.Timestamp(CUTOFF)).all()
    features = [*FEATURES, "current_price", "ref_price", "min_price", "max_price"]
    pd.testing.assert_frame_equal(full[features], cut[features])
    assert cut["units"].sum() == 0  # labels come only from after the cutoff
    week0 = full[full["week"] == 0].set_index("product_id")["units"]
    assert week0.to_dict() == pytest.approx(units.reindex(week0.index).fillna(0).to_dict())


def test_oracle_columns_match_the_oracle(splits, small_sim_wh: Warehouse) -> None:
    from shopml.data.oracle import expected_demand

    _, _, _, test = splits
    f = test.frame.head(50)
    truth = expected_demand(small_sim_wh, f["product_id"].tolist(), f["price"].to_numpy(), 7.0)
    mine = f["true_base_demand"] * (f["price"] / f["true_ref_price"]) ** f["true_elasticity"] * 7
    np.testing.assert_allclose(mine.to_numpy(), truth["expected_units"].to_numpy())


# -- model ----------------------------------------------------------------------------------------
def test_model_beats_baseline_and_prices_within_guardrails(splits, fitted) -> None:
    uc, _, _, test = splits
    scorer, baseline = fitted
    m, b = uc.evaluate(scorer, test), uc.evaluate(baseline, test)
    assert m["poisson_deviance"] < b["poisson_deviance"]
    assert m["mae_units_window"] < b["mae_units_window"]
    assert m["guardrail_violations"] == 0 and b["guardrail_violations"] == 0
    # Under the true demand the model's prices earn more; ignoring elasticity loses revenue.
    assert m["revenue_uplift_true"] > 0.03
    assert b["revenue_uplift_true"] < 0 < b["revenue_uplift_model"]
    assert -2.5 < scorer.pooled_elasticity < -1.0


def test_scorer_round_trips_through_pickle(splits, fitted) -> None:
    _, _, _, test = splits
    scorer, _ = fitted
    again = pickle.loads(pickle.dumps(scorer))
    x = scorer.to_matrix(test.frame)
    np.testing.assert_allclose(again.predict_matrix(x), scorer.predict_matrix(x))
    pid = scorer.product_ids[0]
    assert again.suggest(pid) == scorer.suggest(pid)
    out = again.predict_frame(test.frame.head(3))
    assert list(out.columns) == ["expected_units", "suggested_price", "expected_revenue_change"]
    # The single-row path gives the batch answer.
    row = test.frame.iloc[0].to_dict()
    assert again.predict_matrix(again.row_matrix(row))[0] == pytest.approx(
        scorer.predict_matrix(x[:1])[0]
    )


def test_suggest_respects_explicit_guardrails(fitted) -> None:
    scorer, _ = fitted
    pid = scorer.product_ids[0]
    cur = scorer.current_price[0]
    s = scorer.suggest(pid, min_price=cur * 0.97, max_price=cur * 1.5, max_change=0.05)
    assert cur * 0.97 - 0.005 <= s["suggested_price"] <= cur * 1.05 + 0.005
    for key in (
        "suggested_price",
        "expected_units_current",
        "expected_units_suggested",
        "expected_revenue_change",
        "guardrails",
        "elasticity",
    ):
        assert key in s
    with pytest.raises(KeyError):
        scorer.suggest("no-such-product")


def test_margin_objective_raises_prices_for_costly_products(splits, small_sim_wh) -> None:
    _, train, valid, test = splits
    uc = Pricing(objective="margin")
    m = uc.evaluate(uc.fit(small_sim_wh, train, valid, uc.default_params()), test)
    assert m["margin_uplift_true"] > 0 and m["guardrail_violations"] == 0
    with pytest.raises(ValueError, match="objective"):
        Pricing(objective="profit")


# -- lifecycle -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_trains_through_the_generic_flow(small_sim_wh: Warehouse) -> None:
    result = train_usecase(
        get_usecase("pricing"), small_sim_wh, get_settings(), TrainConfig(trials=2, timeout_s=10)
    )
    assert result.status in ("promoted", "challenger"), result.reason
    assert result.version == "1"
    assert result.metrics["guardrail_violations"] == 0
    assert result.oracle is not None and result.oracle["revenue_uplift_true"] > 0


def test_skipped_without_price_history(small_sim_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "noprices.duckdb"
    shutil.copy(small_sim_path, copy)
    with Warehouse(copy) as wh:
        wh.con.execute("DROP TABLE price_history")
        result = train_usecase(Pricing(), wh, get_settings(), TrainConfig(trials=0))
    assert result.status == "skipped"
    assert "price_history" in result.reason and "confounded" in result.reason
