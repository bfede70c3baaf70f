from __future__ import annotations

import pickle
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np

from shopml.data.warehouse import Warehouse
from shopml.lifecycle.train import TrainConfig, build_splits, train_usecase
from shopml.settings import get_settings
from shopml.usecases import get_usecase

UC = get_usecase("returns")


def test_dataset_is_point_in_time(small_sim_wh: Warehouse) -> None:
    plan = UC.split(small_sim_wh)
    cutoff = plan.test_cutoff
    data = UC.dataset(small_sim_wh, cutoff)
    assert len(data) > 100
    orders = small_sim_wh.read("orders").set_index("order_id")
    placed = orders.loc[data.frame["order_id"], "purchased_at"]
    assert (placed >= cutoff).all()
    assert (placed < cutoff + timedelta(days=UC.entity_window_days)).all()
    # Labels: returns after delivery, within 30 days, observed before the label horizon ends.
    rets = small_sim_wh.read("returns")
    returned = set(rets.order_item_id)
    flagged = set(data.frame.loc[data.frame.returned == 1, "order_item_id"])
    assert flagged <= returned
    assert data.has_oracle and data.frame["p_return"].between(0, 1).all()
    assert {"delivery_delay_days", "customer_return_rate"} <= set(data.features)


def test_model_beats_baseline_and_round_trips(small_sim_wh: Warehouse) -> None:
    plan = UC.split(small_sim_wh)
    splits = build_splits(UC, small_sim_wh, plan)
    train, valid, test = splits.train, splits.valid, splits.test
    scorer = UC.fit(small_sim_wh, train, valid, UC.default_params())
    model = UC.evaluate(scorer, test)
    base = UC.evaluate(UC.baseline(small_sim_wh, train, plan.valid_cutoff), test)
    assert model["auc"] > base["auc"]
    again = pickle.loads(pickle.dumps(scorer))
    x = scorer.to_matrix(test.frame.head(50))
    np.testing.assert_allclose(again.predict_matrix(x), scorer.predict_matrix(x))


def test_trains_registers_and_skips_without_returns(small_sim_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "shop.duckdb"
    shutil.copy(small_sim_path, path)
    with Warehouse(path) as wh:
        result = train_usecase(UC, wh, get_settings(), TrainConfig(trials=1, timeout_s=10))
        assert result.status in ("promoted", "challenger") and result.version == "1"
        assert result.oracle is not None and result.oracle["auc"] > result.metrics["auc"] * 0.8
        wh.con.execute("DROP TABLE returns")
        skipped = train_usecase(UC, wh, get_settings(), TrainConfig(trials=0))
    assert skipped.status == "skipped" and "returns" in skipped.reason
