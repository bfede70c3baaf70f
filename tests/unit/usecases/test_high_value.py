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
from shopml.usecases import get_usecase
from shopml.usecases.high_value import HighValue

UC = get_usecase("high-value")


def _large_buyers(wh: Warehouse, start, end, threshold: float) -> set[str]:  # type: ignore[no-untyped-def]
    o = wh.read("orders")
    i = wh.read("order_items")
    value = (i.unit_price * i.quantity).groupby(i.order_id).sum()
    o = o[(o.purchased_at > start) & (o.purchased_at <= end) & (o.status != "canceled")]
    big = o[o.order_id.map(value).fillna(0) > threshold]
    return set(big.customer_id)


def test_threshold_comes_from_the_argument_the_shop_or_the_training_orders(
    small_sim_wh: Warehouse,
) -> None:
    assert HighValue(threshold=123.0).resolve_threshold(small_sim_wh) == (123.0, "argument")
    value, source = UC.resolve_threshold(small_sim_wh)
    assert value == float(small_sim_wh.get_meta("large_order_threshold"))
    assert "meta" in source
    p90 = HighValue()._quantile_threshold(small_sim_wh)
    assert 0 < p90 < float("inf")


def test_dataset_is_point_in_time(small_sim_wh: Warehouse) -> None:
    cutoff = UC.split(small_sim_wh).test_cutoff
    data = UC.dataset(small_sim_wh, cutoff)
    orders = small_sim_wh.read("orders")
    known = set(orders.loc[orders.purchased_at < cutoff, "customer_id"])
    # Rows: exactly the customers with an order before the cutoff.
    assert set(data.frame.customer_id) == known
    # Label: a non-canceled order above the threshold in (cutoff, cutoff + 30 days].
    threshold, _ = UC.resolve_threshold(small_sim_wh)
    end = cutoff + timedelta(days=UC.horizon_days)
    positives = set(data.frame.loc[data.frame.large_order == 1, "customer_id"])
    assert positives == _large_buyers(small_sim_wh, cutoff, end, threshold) & known
    assert 0 < data.y.mean() < 0.5
    # Features: history strictly before the cutoff.
    before = orders[orders.purchased_at < cutoff].groupby("customer_id").size()
    np.testing.assert_array_equal(
        data.frame.frequency_orders.to_numpy(), before.reindex(data.frame.customer_id).to_numpy()
    )
    assert (data.frame.large_orders <= data.frame.frequency_orders).all()
    assert "customer_id" not in data.features and "large_order" not in data.features


def test_model_beats_the_rfm_baseline_and_round_trips(small_sim_wh: Warehouse) -> None:
    plan = UC.split(small_sim_wh)
    splits = build_splits(UC, small_sim_wh, plan)
    train, valid, test = splits.train, splits.valid, splits.test
    scorer = UC.fit(small_sim_wh, train, valid, UC.default_params())
    baseline = UC.baseline(small_sim_wh, train, plan.valid_cutoff)
    model, base = UC.evaluate(scorer, test), UC.evaluate(baseline, test)
    assert model["auc"] > base["auc"] > 0.6
    assert scorer.meta["threshold"] == baseline.meta["threshold"] > 0
    again = pickle.loads(pickle.dumps(scorer))
    x = scorer.to_matrix(test.frame.head(50))
    np.testing.assert_allclose(again.predict_matrix(x), scorer.predict_matrix(x))
    # The baseline serves without scikit-learn: plain numpy on its stored coefficients.
    p = baseline.predict_matrix(baseline.to_matrix(test.frame))
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()


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
        assert result.oracle is not None and result.oracle["auc"] > 0.6
        wh.con.execute("DROP TABLE order_items")
        skipped = train_usecase(UC, wh, get_settings(), TrainConfig(trials=0))
    assert skipped.status == "skipped" and "order_items" in skipped.reason
