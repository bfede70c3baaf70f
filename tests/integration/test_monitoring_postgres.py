"""The monitoring store on PostgreSQL (the machine's server, a fresh database): the service's
prediction log read back, sampled and judged; results and decisions stored; the gauges read
from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shopml.monitoring.store import MetricRow, MonitoringStore
from tests.support.services import postgres_database

pytestmark = pytest.mark.integration
T0 = datetime(2024, 6, 1)


def test_monitoring_store_on_postgres(tmp_path: Path) -> None:
    from shopml.gauges import render_text
    from shopml.runtime.predictions import PredictionRecord, RecordWriter

    with postgres_database() as url:
        # The service writes the log (COPY into JSONB columns) ...
        writer = RecordWriter(url, tmp_path)
        start = T0.replace(tzinfo=UTC).timestamp()
        writer.write(
            [
                PredictionRecord(
                    f"r{i}",
                    start + i * 60,
                    "clv",
                    "4",
                    "customer_id",
                    f"C{i:05d}",
                    {"predicted_spend_90d": 1.5 * i},
                    [float(i % 30), None if i % 7 == 0 else 10.0 * i],
                    ["recency_days", "spend_90d"],
                )
                for i in range(500)
            ]
        )
        writer.close()
        # ... and monitoring reads it back.
        store = MonitoringStore(url, tmp_path)
        end = T0 + timedelta(days=1)
        assert store.count_predictions("clv", T0, end) == 500
        assert store.count_predictions("clv", T0, end, model_version="3") == 0
        window = store.predictions("clv", T0, end)
        assert set(window.features.columns) == {"recency_days", "spend_90d"}  # JSONB orders keys
        assert window.features["spend_90d"].isna().sum() == 72  # nulls survive JSONB
        assert window.outputs["predicted_spend_90d"].max() == pytest.approx(1.5 * 499)
        assert window.frame["ts"].min() == T0.replace(tzinfo=UTC)
        sample = store.predictions("clv", T0, end, sample=50, seed=3)
        again = store.predictions("clv", T0, end, sample=50, seed=3)
        assert len(sample) == 50 and list(sample.frame.request_id) == list(again.frame.request_id)

        run = store.write_metrics(
            "clv",
            "4",
            end,
            (T0, end),
            [MetricRow("drift", "share", 0.5), MetricRow("performance", "mae", 12.5, n=300)],
        )
        store.write_decision(run, "clv", "4", end, True, "retrain", "v5 promoted", ["why"], {})
        assert set(store.metrics("clv")["metric"]) == {"share", "mae"}
        decisions = store.decisions("clv")
        assert decisions["triggered"].tolist() == [True] and decisions["reasons"][0] == ["why"]
        store.close()

        page = render_text(url, tmp_path).decode()
        assert 'shopml_monitor_performance{metric="mae",usecase="clv"} 12.5' in page
        assert 'shopml_monitor_alert_active{usecase="clv"} 1.0' in page
