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


def test_history_is_as_of_each_lines_own_delivery(small_sim_wh: Warehouse) -> None:
    """Not as of the window's start: a line delivered in the window's fourth week knows the
    returns and orders of the three weeks before."""
    from shopml.features import order_item_features
    from shopml.features.lines import LINE_HISTORY_COLUMNS

    cutoff = UC.split(small_sim_wh).test_cutoff
    data = UC.dataset(small_sim_wh, cutoff)
    orders = small_sim_wh.read("orders").set_index("order_id")
    delivered = orders.loc[data.frame["order_id"], "delivered_at"].to_numpy()
    frame = data.frame.assign(delivered_at=delivered).set_index("order_item_id")
    late = frame[frame["delivered_at"] > cutoff + timedelta(days=14)]
    b = small_sim_wh.ibis()
    checked = 0
    for moment, rows in list(late.groupby("delivered_at"))[:5]:
        items = b.table("order_items")
        want = order_item_features(
            b, moment, items.filter(items.order_item_id.isin(list(rows.index)))
        )
        want = want.to_pandas().set_index("order_item_id")
        for col in LINE_HISTORY_COLUMNS:
            np.testing.assert_allclose(
                rows[col].astype(float), want.loc[rows.index, col].astype(float), rtol=1e-9
            )
        checked += len(rows)
    assert checked > 0
    # The window's start would have given a different history to these lines.
    start = (
        order_item_features(
            b,
            cutoff,
            b.table("order_items").filter(lambda t: t.order_item_id.isin(list(late.index))),
        )
        .to_pandas()
        .set_index("order_item_id")
    )
    assert (start.loc[late.index, "customer_orders"] != late["customer_orders"]).any()


def test_final_model_is_refitted_on_validation_too_and_has_two_baselines(
    small_sim_wh: Warehouse,
) -> None:
    plan = UC.split(small_sim_wh)
    splits = build_splits(UC, small_sim_wh, plan)
    params = {**UC.default_params(), "num_boost_round": 60}
    final = UC.final_fit(small_sim_wh, splits.train, splits.valid, params, as_of=plan.test_cutoff)
    refit = final.meta["refit"]
    assert refit["rows"] == len(splits.train) + len(splits.valid)
    assert 1 <= refit["rounds"][0] <= 60
    made = UC.baselines(small_sim_wh, splits.train, plan.test_cutoff)
    assert list(made) == ["category-rate", "logistic"]
    scores = {n: UC.evaluate(s, splits.test) for n, s in made.items()}
    model = UC.evaluate(final, splits.test)
    assert model["auc"] > scores["category-rate"]["auc"]
    assert 0 < model["pr_auc"] < 1 and 0.5 < scores["logistic"]["auc"] < 1


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
