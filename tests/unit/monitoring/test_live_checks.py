"""Live checks and the prediction record on small hand-made frames: no model, no service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopml.runtime.predictions import PredictionRecord, window_of
from shopml.usecases import _live, get_usecase

T0 = datetime(2024, 3, 1, 12)


def _records(usecase: str, key: str, answers: list[tuple[str, dict]], day: datetime = T0) -> list:
    ts = day.replace(tzinfo=UTC).timestamp()
    return [
        PredictionRecord(f"r{i}", ts + i, usecase, "1", key, entity, output)
        for i, (entity, output) in enumerate(answers)
    ]


def _context(records: list, now: datetime, wh: object = None, reference=None) -> _live.LiveContext:
    window = window_of(records[0].usecase, records, T0 - timedelta(days=1), now)
    return _live.LiveContext(wh, now, window, lambda since: window, reference)  # type: ignore[arg-type]


def test_the_record_is_one_row_of_the_log_and_reads_back() -> None:
    rec = PredictionRecord(
        "r1", T0.timestamp(), "clv", "3", "customer_id", "C1", {"spend": 2.5, "p": float("nan")},
        np.array([1.0, np.nan]), ["recency_days", "spend_90d"],
    )  # fmt: skip
    row = rec.row()
    assert row[0] == "r1" and row[2:6] == ("clv", "3", "customer_id", "C1")
    assert row[6] == '{"recency_days":1.0,"spend_90d":null}'  # NaN is written as null
    assert row[7] == '{"spend":2.5,"p":null}'
    window = window_of("clv", [rec], T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert window.features["recency_days"].tolist() == [1.0]
    assert np.isnan(window.outputs["p"].iloc[0])


def test_pricing_counts_suggestions_that_break_their_guardrails() -> None:
    uc = get_usecase("pricing")
    band = {"min_price": 9.0, "max_price": 11.0, "max_change": 0.1, "conflict": False}
    answers = [
        ("P1", {"suggested_price": 10.5, "current_price": 10.0, "guardrails": band}),
        ("P2", {"suggested_price": 11.5, "current_price": 10.0, "guardrails": band}),  # above max
        ("P3", {"suggested_price": 9.0, "current_price": 10.0, "guardrails": band}),
    ]
    # Checked the day after: no suggestion is a week old, so no revenue is read.
    figures = {
        f.metric: f
        for f in uc.live_checks(
            _context(_records("pricing", "product_id", answers), T0 + timedelta(days=1))
        )
    }
    assert figures["guardrail_violations"].value == 1.0
    assert figures["guardrail_violation_rate"].value == pytest.approx(1 / 3)
    assert "revenue_realised_vs_expected" not in figures


def test_segment_shares_and_their_move_from_training() -> None:
    uc = get_usecase("segments")
    answers = [
        (f"C{i}", {"segment_id": float(s), "segment_name": "x"}) for i, s in enumerate([0, 0, 1, 2])
    ]
    reference = pd.DataFrame({"output.segment_id": [0, 1, 1, 1]})
    figures = uc.live_checks(
        _context(
            _records("segments", "customer_id", answers),
            T0 + timedelta(days=1),
            reference=reference,
        )
    )
    shares = {f.feature: f.value for f in figures if f.metric == "segment_share"}
    assert shares == {"0": 0.5, "1": 0.25, "2": 0.25}
    change = next(f.value for f in figures if f.metric == "segment_share_max_change")
    assert change == pytest.approx(0.5)  # segment 1: 75% in training, 25% now


def test_ranking_checks_judge_recommendations_on_what_was_bought(tmp_path: Path) -> None:
    from tests.unit.features.shop import load_warehouse, make_tables

    tables = make_tables(customers=60, days=200, seed=4)
    wh = load_warehouse(tmp_path / "shop.duckdb", tables)
    try:
        day = datetime(2024, 5, 1, 12)
        bought = wh.sql(
            "SELECT o.customer_id, i.product_id FROM orders o JOIN order_items i USING (order_id) "
            "WHERE o.purchased_at >= ? AND o.purchased_at < ? AND o.status <> 'canceled'",
            [day.replace(hour=0), day.replace(hour=0) + timedelta(days=30)],
        )
        assert len(bought), "the hand-made shop sells in May"
        hit_customer, hit_product = bought.iloc[0]
        answers = [
            (hit_customer, {"products": [hit_product, "p-none"]}),  # one hit of two
            ("c-nobody", {"products": ["p-none", "p-none-2"]}),  # no hit
        ]
        uc = get_usecase("recommender")
        now = day + timedelta(days=31)
        figures = {
            f.metric: f
            for f in uc.live_checks(
                _context(_records("recommender", "customer_id", answers, day), now, wh)
            )
        }
    finally:
        wh.close()
    catalogue = len(tables["products"])
    assert figures["coverage"].value == pytest.approx(3 / catalogue)  # three distinct ids
    assert figures["precision"].value == pytest.approx(1 / 4) and figures["precision"].performance
    assert figures["hit_rate"].value == pytest.approx(1 / 2)
    assert figures["novelty"].value > 0
