"""campaign: sends as rows with features before the assignment, labels in the response window,
the T-learner's outputs, pickling, the whole flow and the skip."""

from __future__ import annotations

import pickle
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from tests.unit.usecases.conftest import train

from shopml.data.warehouse import Warehouse
from shopml.usecases import _metrics, get_usecase
from shopml.usecases.base import LabelledData
from shopml.usecases.campaign import LABEL, TREATED

TRAIN_CUTOFF = datetime(2023, 9, 1)
CUTOFF = datetime(2024, 3, 1)


@pytest.fixture(scope="module")
def camp_data(small_sim_wh: Warehouse) -> tuple[LabelledData, LabelledData]:
    uc = get_usecase("campaign")
    parts = [
        uc.dataset(small_sim_wh, c)
        for c in (datetime(2023, 5, 1), datetime(2023, 7, 1), TRAIN_CUTOFF, datetime(2023, 11, 1))
    ]
    return LabelledData.concat(parts), uc.dataset(small_sim_wh, CUTOFF)


def test_rows_are_sends_of_campaigns_in_the_window(
    small_sim_wh: Warehouse, camp_data: tuple[LabelledData, LabelledData]
) -> None:
    _, data = camp_data
    sends = small_sim_wh.sql(
        """SELECT s.campaign_id, s.customer_id, s."group", s.responded_at, c.sent_at,
                  c.response_window_days AS win, s.assigned_at
           FROM campaign_sends s JOIN campaigns c USING (campaign_id)
           WHERE c.sent_at >= ? AND c.sent_at < ?""",
        [CUTOFF, CUTOFF + pd.Timedelta(days=60)],
    )
    assert len(data) == len(sends) > 0
    merged = data.frame.merge(sends, on=["campaign_id", "customer_id"])
    assert (merged[TREATED] == (merged["group"] == "treatment")).all()
    closes = merged["sent_at"] + pd.to_timedelta(merged["win"], unit="D")
    expected = merged["responded_at"].notna() & (merged["responded_at"] <= closes)
    assert (merged[LABEL] == expected.astype(int)).all()
    # Labels after the assignment; features from before it (recency measured to it).
    hit = merged[merged[LABEL] == 1]
    assert (hit["responded_at"] > hit["assigned_at"]).all()
    last = small_sim_wh.sql(
        """SELECT s.campaign_id, s.customer_id, max(o.purchased_at) AS last_at
           FROM campaign_sends s JOIN orders o USING (customer_id)
           WHERE o.purchased_at < s.assigned_at GROUP BY 1, 2"""
    )
    m = merged.merge(last, on=["campaign_id", "customer_id"])
    recency = (m["assigned_at"] - m["last_at"]).dt.total_seconds() / 86400
    np.testing.assert_allclose(m["recency_days"], recency, atol=1e-6)


def test_t_learner_outputs_and_pickle(
    small_sim_wh: Warehouse, camp_data: tuple[LabelledData, LabelledData]
) -> None:
    uc = get_usecase("campaign")
    train, valid = camp_data
    scorer = uc.fit(small_sim_wh, train, valid, {**uc.default_params(), "num_boost_round": 60})
    out = scorer.predict_frame(valid.frame)
    assert list(out.columns) == ["p_response_treated", "p_response_control", "uplift"]
    np.testing.assert_allclose(out["uplift"], out["p_response_treated"] - out["p_response_control"])
    metrics = uc.evaluate(scorer, valid)
    assert metrics["auc"] > 0.6 and np.isfinite(metrics["qini"])
    again = pickle.loads(pickle.dumps(scorer))
    x = scorer.to_matrix(valid.frame.head(20))
    np.testing.assert_allclose(again.predict_matrix(x), scorer.predict_matrix(x))


def test_uplift_at_reads_the_observed_difference() -> None:
    y = np.array([1, 0, 1, 1, 0, 0, 0, 0])
    t = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    u = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.1, 0.1, 0.1])
    # Top half: treated responses 2/2, control 1/2.
    assert _metrics.uplift_at(y, t, u, 0.5) == pytest.approx(0.5)
    assert np.isnan(_metrics.uplift_at(y, t, u, 0.125))  # one row: no control in the slice


def test_top_share_capture() -> None:
    y = np.array([10.0, 0.0, 0.0, 30.0, 60.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    p = np.arange(10.0)[::-1]  # ranks row 0 first
    assert _metrics.top_share_capture(y, p, 0.1) == pytest.approx(0.1)
    assert _metrics.top_share_capture(y, y, 0.1) == pytest.approx(0.6)


def test_skipped_with_a_reason_without_campaigns(shop_copy: Warehouse) -> None:
    shop_copy.con.execute("DROP TABLE campaign_sends")
    result = train("campaign", shop_copy)
    assert result.status == "skipped" and "campaign_sends" in result.reason


@pytest.mark.slow
def test_trains_registers_and_beats_response_targeting(shop_copy: Warehouse) -> None:
    result = train("campaign", shop_copy, trials=2, timeout_s=10)
    assert result.status in {"promoted", "challenger"}, result.reason
    assert result.version is not None
    assert result.oracle is not None and result.oracle["qini"] > 0
    assert result.metrics["auc"] > 0.6
