from __future__ import annotations

import pickle
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from shopml.data.warehouse import Warehouse
from shopml.lifecycle.train import TrainConfig, build_splits, train_usecase
from shopml.settings import get_settings
from shopml.usecases import _metrics, get_usecase
from shopml.usecases.delivery_time import DeliveryTime, conformal_offset

UC = get_usecase("delivery-time")


def test_pinball_loss() -> None:
    y = np.array([1.0, 2.0, 3.0, np.nan])
    q = np.array([2.0, 2.0, 2.0, 5.0])
    # Over by 1 costs 1 - alpha, under by 1 costs alpha; the NaN row is ignored.
    assert _metrics.pinball(y, q, 0.9) == pytest.approx((0.1 + 0.0 + 0.9) / 3)
    assert _metrics.pinball(y, q, 0.5) == pytest.approx(_metrics.mae(y, q) / 2)
    assert np.isnan(_metrics.pinball(np.array([]), np.array([]), 0.5))


def test_conformal_offset_reaches_the_target_coverage() -> None:
    rng = np.random.default_rng(0)
    y = rng.exponential(5.0, 5000)
    upper = np.full_like(y, 5.0)  # far too low for a 90% promise
    shift = conformal_offset(y, upper, 0.9)
    assert _metrics.coverage(y, upper + shift) == pytest.approx(0.9, abs=0.002)
    assert conformal_offset(np.array([]), np.array([]), 0.9) == 0.0


def test_dataset_is_point_in_time(small_sim_wh: Warehouse) -> None:
    cutoff = UC.split(small_sim_wh).test_cutoff
    data = UC.dataset(small_sim_wh, cutoff)
    assert len(data) > 100
    orders = small_sim_wh.read("orders").set_index("order_id")
    rows = orders.loc[data.frame["order_id"]]
    # Orders placed in the window after the cutoff, delivered before the label horizon ends.
    assert (rows.purchased_at >= cutoff).all()
    assert (rows.purchased_at < cutoff + timedelta(days=UC.entity_window_days)).all()
    assert (rows.delivered_at < cutoff + timedelta(days=UC.horizon_days)).all()
    expected = (rows.delivered_at - rows.purchased_at).dt.total_seconds() / 86400
    np.testing.assert_allclose(data.y.to_numpy(), expected.to_numpy())
    assert (data.y > 0).all()
    # History features count only orders before the cutoff.
    before = orders[orders.purchased_at < cutoff].groupby("customer_id").size()
    counts = before.reindex(data.frame["customer_id"]).fillna(0).to_numpy()
    np.testing.assert_array_equal(data.frame["customer_orders"].to_numpy(), counts)
    assert not {"order_id", "customer_id", "delivery_days"} & set(data.features)
    assert data.has_oracle and (data.frame.delivery_days_p90 >= data.frame.delivery_days_p50).all()


def test_model_beats_the_promised_date_and_round_trips(small_sim_wh: Warehouse) -> None:
    uc = DeliveryTime()
    uc.train_cutoffs = 4  # type: ignore[misc]  # fewer windows: a quick test, same logic
    plan = uc.split(small_sim_wh)
    splits = build_splits(uc, small_sim_wh, plan)
    train, valid, test = splits.train, splits.valid, splits.test
    scorer = uc.fit(small_sim_wh, train, valid, uc.default_params())
    model = uc.evaluate(scorer, test)
    base = uc.evaluate(uc.baseline(small_sim_wh, train, plan.valid_cutoff), test)
    assert model["mae"] < base["mae"]
    assert model["coverage_gap"] < 0.05
    out = scorer.predict_frame(test.frame)
    assert list(out.columns) == ["days_p50", "days_p90"]
    assert (out.days_p90 >= out.days_p50).all() and (out.days_p50 >= 0).all()
    again = pickle.loads(pickle.dumps(scorer))
    x = scorer.to_matrix(test.frame.head(50))
    np.testing.assert_allclose(again.predict_matrix(x), scorer.predict_matrix(x))


@pytest.mark.slow
def test_trains_registers_and_skips_without_order_items(
    small_sim_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "shop.duckdb"
    shutil.copy(small_sim_path, path)
    with Warehouse(path) as wh:
        result = train_usecase(UC, wh, get_settings(), TrainConfig(trials=1, timeout_s=10))
        assert result.status in ("promoted", "challenger"), result.reason
        assert result.version == "1"
        assert result.oracle is not None and result.metrics["mae"] < 1.3 * result.oracle["mae"]
        wh.con.execute("DROP TABLE order_items")
        skipped = train_usecase(UC, wh, get_settings(), TrainConfig(trials=0))
    assert skipped.status == "skipped" and "order_items" in skipped.reason
