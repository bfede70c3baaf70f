"""clv: point-in-time rows and labels, the BG/NBD closed form, the scorer, the whole flow."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from tests.unit.usecases.conftest import train

from shopml.data.warehouse import Warehouse
from shopml.usecases import get_usecase
from shopml.usecases.base import LabelledData
from shopml.usecases.clv import LABEL, BgNbdSpendScorer

CUTOFF = datetime(2024, 6, 1)


@pytest.fixture(scope="module")
def clv_data(small_sim_wh: Warehouse) -> tuple[LabelledData, LabelledData]:
    uc = get_usecase("clv")
    return uc.dataset(small_sim_wh, CUTOFF - timedelta(days=90)), uc.dataset(small_sim_wh, CUTOFF)


def test_rows_are_customers_with_an_order_before_the_cutoff(
    small_sim_wh: Warehouse, clv_data: tuple[LabelledData, LabelledData]
) -> None:
    _, data = clv_data
    first = small_sim_wh.sql(
        "SELECT customer_id FROM orders GROUP BY 1 HAVING min(purchased_at) < ?", [CUTOFF]
    )
    assert set(data.frame["customer_id"]) == set(first["customer_id"])
    assert (data.frame["frequency_orders"] > 0).all()
    assert (data.frame["bg_frequency"] == data.frame["bg_frequency"].round()).all()
    assert (data.frame["bg_recency"] <= data.frame["bg_T"]).all()


def test_label_is_goods_spend_in_the_90_days_after_the_cutoff(
    small_sim_wh: Warehouse, clv_data: tuple[LabelledData, LabelledData]
) -> None:
    _, data = clv_data
    spend = small_sim_wh.sql(
        """SELECT o.customer_id, sum(i.unit_price * i.quantity) AS s
           FROM orders o JOIN order_items i USING (order_id)
           WHERE o.purchased_at >= ? AND o.purchased_at < ? AND o.status <> 'canceled'
           GROUP BY 1""",
        [CUTOFF, CUTOFF + timedelta(days=90)],
    ).set_index("customer_id")["s"]
    got = data.frame.set_index("customer_id")[LABEL]
    expected = spend.reindex(got.index).fillna(0.0)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9)
    # Nothing from after the cutoff leaks into the features.
    last = small_sim_wh.sql(
        "SELECT customer_id, max(purchased_at) AS at FROM orders WHERE purchased_at < ? GROUP BY 1",
        [CUTOFF],
    ).set_index("customer_id")["at"]
    recency = (CUTOFF - last.reindex(got.index)).dt.total_seconds() / 86400
    np.testing.assert_allclose(data.frame["recency_days"], recency.to_numpy(), atol=1e-6)


def test_bgnbd_quadrature_matches_the_hypergeometric_closed_form() -> None:
    from scipy.special import hyp2f1

    s = BgNbdSpendScorer(
        features=[], outputs=["x"], r=0.6, alpha=25.0, a=1.9, b=15.0, horizon_days=90.0
    )
    x = np.array([0.0, 1.0, 3.0, 10.0, 25.0])
    t_x = np.array([0.0, 40.0, 200.0, 300.0, 500.0])
    big_t = np.array([100.0, 300.0, 250.0, 320.0, 600.0])
    r, al, a, b, t = 0.6, 25.0, 1.9, 15.0, 90.0
    z = t / (al + big_t + t)
    num = 1 - ((al + big_t) / (al + big_t + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
    den = 1 + (x > 0) * a / (b + x - 1) * ((al + big_t) / (al + t_x)) ** (r + x)
    expected = (a + b + x - 1) / (a - 1) * num / den
    np.testing.assert_allclose(s.expected_purchases(x, t_x, big_t), expected, rtol=1e-6)


def test_model_fits_and_round_trips_through_pickle(
    small_sim_wh: Warehouse, clv_data: tuple[LabelledData, LabelledData]
) -> None:
    uc = get_usecase("clv")
    train, valid = clv_data
    params = {**uc.default_params(), "num_boost_round": 60}
    scorer = uc.fit(small_sim_wh, train, valid, params)
    metrics = uc.evaluate(scorer, valid)
    assert np.isfinite(metrics["mae"]) and metrics["gini"] > 0.3
    again = pickle.loads(pickle.dumps(scorer))
    x = scorer.to_matrix(valid.frame.head(50))
    np.testing.assert_allclose(again.predict_matrix(x), scorer.predict_matrix(x))
    out = scorer.predict_frame(valid.frame.head(5))
    assert list(out.columns) == ["predicted_spend_90d", "expected_spend_90d"]
    assert (out.to_numpy() >= 0).all()


def test_skipped_with_a_reason_without_orders(tmp_path: Path) -> None:
    with Warehouse(tmp_path / "empty.duckdb") as wh:
        result = train("clv", wh)
    assert result.status == "skipped" and "orders" in result.reason


@pytest.mark.slow
def test_trains_registers_and_beats_bgnbd(shop_copy: Warehouse) -> None:
    result = train("clv", shop_copy, trials=2, timeout_s=10)
    assert result.status in {"promoted", "challenger"}, result.reason
    assert result.version is not None
    assert result.metrics["mae"] < result.baseline["mae"]
    assert result.oracle is not None and np.isfinite(result.oracle["mae"])


def test_bgnbd_scorer_is_finite_for_a_tiny_fitted_a() -> None:
    """Real data (Online Retail) fits a ~ 0.01, where p = u ** (1 / a) underflows to 0."""
    from shopml.usecases.clv import BgNbdSpendScorer

    scorer = BgNbdSpendScorer(features=[], outputs=["x"], r=0.704, alpha=58.9, a=0.011, b=0.989)
    x = np.array([0.0, 1, 5, 20])
    out = scorer.expected_purchases(
        x, np.array([0.0, 30, 100, 200]), np.array([50.0, 100, 200, 250])
    )
    assert np.isfinite(out).all() and (out > 0).all()
    assert np.all(np.diff(out) > 0), "more repeat purchases, recently, mean more expected"


@pytest.mark.slow
def test_trains_on_a_history_with_free_repeat_orders_and_refunds(tmp_path: Path) -> None:
    """The issue's first crash: a repeat customer whose repeat orders were free has mean repeat
    spend 0, which made the Gamma-Gamma fit (and so the whole training) fail."""
    import numpy as np
    from tests.unit.usecases.nasty import free_and_refunded

    with Warehouse(tmp_path / "free.duckdb") as wh:
        wh.write_tables(free_and_refunded(np.random.default_rng(0)), source="test", mode="dataset")
        result = train("clv", wh)
    assert result.status in {"promoted", "challenger"}, result.reason
    assert np.isfinite(result.baseline["rmse"])


def test_model_features_leave_out_lifetime_totals_and_unseen_seasons() -> None:
    from shopml.usecases.clv import LIFETIME_TOTALS, SEASON, model_features

    features = ["recency_days", "bg_frequency", "monetary_total", "bgnbd_p_alive", *SEASON]
    short = [datetime(2024, 1, 1), datetime(2024, 6, 1)]
    year = [datetime(2023, 1, 1), datetime(2023, 12, 1)]
    assert model_features(features, short) == ["recency_days", "bgnbd_p_alive"]
    assert model_features(features, year) == ["recency_days", "bgnbd_p_alive", *SEASON]
    assert not set(model_features(features, year)) & LIFETIME_TOTALS


def test_mean_model_leaves_grow_with_the_spread_of_spend() -> None:
    """The mean booster's leaves hold enough customers for their mean spend to be known to
    30%: (cv / 0.3) ** 2 customers for labels of coefficient of variation cv; the point
    model's tuned values stand where they ask for more, and the L2 penalty has a floor."""
    from shopml.usecases.clv import MEAN_MIN_L2, mean_params

    tuned = {"min_data_in_leaf": 11, "lambda_l2": 0.01, "num_leaves": 18}
    # One customer in ten spends: cv = 3, so a leaf needs about 100 customers.
    skewed = np.r_[np.zeros(900), np.full(100, 50.0)]
    got = mean_params(tuned, skewed)
    assert 100 <= got["min_data_in_leaf"] <= 101
    assert got["lambda_l2"] == MEAN_MIN_L2 and got["num_leaves"] == 18
    assert tuned["min_data_in_leaf"] == 11  # the point model's parameters are not changed
    # Everyone spends about the same: the tuned leaves are already large enough.
    even = np.r_[np.full(500, 40.0), np.full(500, 60.0)]
    assert mean_params({**tuned, "lambda_l2": 20.0}, even) == {
        **mean_params({}, even),
        **tuned,
        "lambda_l2": 20.0,
    }
    # Nobody spent, refunds only, or no finite label: nothing to scale by, no crash.
    for y in (np.zeros(50), np.full(50, -5.0), np.array([np.nan, np.inf])):
        assert mean_params(tuned, y)["min_data_in_leaf"] == 11


def test_customer_folds_keep_a_customers_windows_together() -> None:
    import pandas as pd

    from shopml.usecases.clv import customer_folds

    customers = pd.Series([f"c{i % 50}" for i in range(400)])
    folds = customer_folds(customers, 3)
    assert set(folds) == {0, 1, 2}
    assert (pd.Series(folds).groupby(customers).nunique() == 1).all()


def test_final_model_refits_every_window_and_extrapolates_the_horizon(
    small_sim_wh: Warehouse,
) -> None:
    """A 120-day answer from 60-day labels: the windows tuning could not use (between the
    last training cutoff and the validation cutoff) are learned from, and BG/NBD carries the
    answers from 60 to 120 days."""
    from shopml.usecases.clv import HybridSpendScorer

    uc = get_usecase("clv")
    learner = uc.with_horizon(60)
    as_of = CUTOFF
    valid = learner.dataset(small_sim_wh, as_of - timedelta(days=60))
    train = learner.dataset(small_sim_wh, as_of - timedelta(days=180))
    params = {**uc.default_params(), "num_boost_round": 80}
    final = uc.with_horizon(120).final_fit(
        small_sim_wh, train, valid, params, as_of=as_of, label_horizon_days=60
    )
    assert isinstance(final, HybridSpendScorer)
    windows = final.meta["refit_windows"]
    assert len(windows) >= 4  # train, the gap's windows and the validation window
    assert (as_of - timedelta(days=90)).isoformat() in windows
    assert final.horizon_days == 120 and final.label_horizon_days == 60
    test = uc.with_horizon(120).dataset(small_sim_wh, as_of)
    long = final.predict_frame(test.frame)
    short = replace(final, horizon_days=60.0).predict_frame(test.frame)
    # Twice the horizon: more expected spend for every customer, the classical model's shape.
    assert (long["expected_spend_90d"] >= short["expected_spend_90d"] - 1e-9).all()
    assert long["expected_spend_90d"].sum() > 1.3 * short["expected_spend_90d"].sum()
    # The single-row path gives the batch answer: the serving contract is a matrix over
    # ``features`` (the BG/NBD summary among them), nothing more.
    from shopml.usecases.clv import BG_COLUMNS, BGNBD_FEATURES

    assert set(BG_COLUMNS) <= set(final.features)
    assert not set(BGNBD_FEATURES) & set(final.features)
    row = test.frame.iloc[0].to_dict()
    np.testing.assert_allclose(
        final.predict_matrix(final.row_matrix(row))[0], long.iloc[0].to_numpy(), rtol=1e-9
    )
    x = np.array([[row.get(f, np.nan) for f in final.features]], dtype="float64")
    np.testing.assert_allclose(final.predict_matrix(x)[0], long.iloc[0].to_numpy(), rtol=1e-9)
    empty = final.predict_matrix(np.full((1, len(final.features)), np.nan))
    assert empty.shape == (1, 2) and np.isfinite(empty).all() and (empty >= 0).all()
    again = pickle.loads(pickle.dumps(final))
    pd_equal = again.predict_frame(test.frame.head(30)).equals(
        final.predict_frame(test.frame.head(30))
    )
    assert pd_equal


@pytest.mark.slow
@pytest.mark.realdata
def test_beats_bgnbd_on_cdnow_over_39_weeks(tmp_path: Path) -> None:
    """The Fader-Hardie-Lee protocol: 39 weeks of calibration (to 1997-10-01), 39 of holdout."""
    from tests.conftest import shared_data_dir

    from shopml.data.importers import read_cdnow
    from shopml.lifecycle.backtest import backtest
    from shopml.lifecycle.train import TrainConfig

    path = shared_data_dir() / "cdnow" / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip(f"the CDNOW sample is not at {path}")
    with Warehouse(tmp_path / "cdnow.duckdb") as wh:
        read_cdnow(path).load(wh)
        result = backtest(
            get_usecase("clv"),
            wh,
            [datetime(1997, 10, 1)],
            horizon_days=273,
            config=TrainConfig(trials=0, register=False, draws=50),
            track=False,
        )
    origin = result.origins[0]
    assert origin.status == "ok", origin.reason
    model, bgnbd = origin.model, origin.baselines["bgnbd"]
    assert model["mae"].estimate < bgnbd["mae"].estimate
    assert model["rmse"].estimate < bgnbd["rmse"].estimate
    assert model["gini"].estimate > bgnbd["gini"].estimate
