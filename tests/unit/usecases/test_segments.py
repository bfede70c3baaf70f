"""segments: point-in-time rows, k-means vs the RFM grid, stable ids, the scorer, the flow."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.unit.usecases.conftest import train

from shopml.data.warehouse import Warehouse
from shopml.runtime.scorers import SegmentScorer
from shopml.usecases import get_usecase
from shopml.usecases.base import LabelledData
from shopml.usecases.segments import match_ids, name_segments, rfm_grid

CUTOFF = datetime(2024, 9, 1)


@pytest.fixture(scope="module")
def seg_data(small_sim_wh: Warehouse) -> dict[str, LabelledData]:
    uc = get_usecase("segments")
    return {str(d): uc.dataset(small_sim_wh, CUTOFF + timedelta(days=d)) for d in (-30, 0, 30)}


@pytest.fixture(scope="module")
def seg_model(small_sim_wh: Warehouse, seg_data: dict[str, LabelledData]) -> SegmentScorer:
    uc = get_usecase("segments")
    model = uc.fit(small_sim_wh, seg_data["-30"], seg_data["0"], {}, seed=0)
    assert isinstance(model, SegmentScorer)
    return model


def test_rows_are_buyers_before_the_cutoff_with_point_in_time_features(
    small_sim_wh: Warehouse, seg_data: dict[str, LabelledData]
) -> None:
    data = seg_data["0"]
    last = small_sim_wh.sql(
        "SELECT customer_id, max(purchased_at) AS at FROM orders WHERE purchased_at < ? GROUP BY 1",
        [CUTOFF],
    ).set_index("customer_id")["at"]
    assert set(data.frame["customer_id"]) == set(last.index)
    recency = (CUTOFF - last.reindex(data.frame["customer_id"])).dt.total_seconds() / 86400
    np.testing.assert_allclose(data.frame["recency_days"], recency.to_numpy(), atol=1e-6)
    assert data.labels == [] and "oracle_purchase_rate" in data.frame.columns


def test_kmeans_beats_the_rfm_grid_and_round_trips(
    seg_data: dict[str, LabelledData], seg_model: SegmentScorer
) -> None:
    uc = get_usecase("segments")
    test = seg_data["30"]
    m = uc.evaluate(seg_model, test)
    b = uc.evaluate(uc.baseline(None, seg_data["-30"], CUTOFF), test)  # type: ignore[arg-type]
    assert m["silhouette"] > b["silhouette"]
    assert 3 <= m["n_segments"] <= 8 and m["min_segment_share"] >= 0.01
    assert np.isfinite(m["davies_bouldin"]) and 0 < m["size_balance"] <= 1
    assert "stability" not in m  # no previous model
    again = pickle.loads(pickle.dumps(seg_model))
    x = again.to_matrix(test.frame)
    np.testing.assert_array_equal(again.predict_matrix(x), seg_model.predict_matrix(x))
    assert len(set(again.segment_names)) == len(again.segment_names)


def test_ids_are_stable_across_retrains(
    small_sim_wh: Warehouse, seg_data: dict[str, LabelledData], seg_model: SegmentScorer
) -> None:
    uc = get_usecase("segments")
    test = seg_data["30"]
    same = uc.fit(small_sim_wh, seg_data["-30"], seg_data["0"], {}, seed=0, previous=seg_model)
    x = seg_model.to_matrix(test.frame)
    np.testing.assert_array_equal(same.predict_matrix(x), seg_model.predict_matrix(x))
    assert uc.evaluate(same, test)["stability"] == 1.0
    later = uc.fit(small_sim_wh, seg_data["0"], seg_data["30"], {}, seed=0, previous=seg_model)
    assert uc.evaluate(later, test)["stability"] > 0.6


def test_match_ids_undoes_a_relabelling() -> None:
    rng = np.random.default_rng(0)
    old = rng.integers(0, 4, 500) + 10
    perm = {10: 2, 11: 0, 12: 3, 13: 1}
    new = np.asarray([perm[o] for o in old])
    ids = match_ids(new, old, 4)
    assert [ids[perm[o]] for o in (10, 11, 12, 13)] == [10, 11, 12, 13]
    # A fifth, new cluster gets a fresh id above the old ones.
    new5 = new.copy()
    new5[:20] = 4
    assert match_ids(new5, old, 5)[4] == 14


def test_rfm_grid_reproduces_tertiles() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"recency_days": rng.exponential(100, 900), "frequency_orders": rng.integers(1, 12, 900)}
    )
    grid = rfm_grid(frame)
    got = grid.predict_matrix(grid.to_matrix(frame)).astype(int)
    logs = np.log1p(frame.to_numpy(dtype="float64"))
    cells = []
    for j in range(2):
        cuts = sorted(set(np.quantile(logs[:, j], [1 / 3, 2 / 3]).tolist()))
        cells.append(np.searchsorted(cuts, logs[:, j], side="left"))
    n_f = len({*cells[1].tolist()})
    np.testing.assert_array_equal(got, cells[0] * n_f + cells[1])


def test_names_follow_the_centroids() -> None:
    # recency, frequency, aov, return rate, sessions, tenure (z-scores)
    c = np.asarray(
        [
            [-0.5, 1.2, 0.8, 0, 0, 0.5],
            [1.5, -0.5, 0, 0, -0.5, 0.3],
            [0, -0.6, 0, 0, 0, -1.2],
            [0, -0.2, -1.0, 0, 0, 0],
        ]
    )
    assert name_segments(c, np.asarray([0.2, 0.3, 0.2, 0.3])) == [
        "loyal high spenders",
        "lapsed",
        "new",
        "bargain hunters",
    ]


def test_skipped_with_a_reason_without_orders(tmp_path: Path) -> None:
    with Warehouse(tmp_path / "empty.duckdb") as wh:
        result = train("segments", wh)
    assert result.status == "skipped" and "orders" in result.reason


@pytest.mark.slow
def test_trains_and_registers(shop_copy: Warehouse) -> None:
    result = train("segments", shop_copy, trials=2)
    assert result.status in {"promoted", "challenger"}, result.reason
    assert result.version is not None
    assert result.metrics["silhouette"] > result.baseline["silhouette"]
    assert result.oracle is None
