"""The service's /metrics carries the monitor's gauges, read from the monitoring store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi.testclient import TestClient

from shopml.monitoring.store import MetricRow, MonitoringStore
from shopml.serving import create_app
from shopml.serving.models import VersionInfo
from shopml.settings import Settings


class NoModels:
    """A registry with no champion (the gauges do not need one)."""

    def alias_version(self, usecase: str, alias: str) -> VersionInfo | None:
        return None

    def load(self, usecase: str, version: str) -> object:
        raise AssertionError("nothing to load")


def test_metrics_page_shows_the_newest_monitoring_check(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, registry_poll_seconds=60)
    app = create_app(settings, source_factory=NoModels, usecases=["delivery-time"])
    with TestClient(app) as client:
        page = client.get("/metrics").text
        assert "shopml_monitor_drift_share{" not in page  # no check yet: no samples
        store = MonitoringStore(None, tmp_path)
        when = datetime(2024, 6, 1)
        run = store.write_metrics(
            "delivery-time",
            "7",
            when,
            None,
            [MetricRow("drift", "share", 0.375), MetricRow("performance", "mae", 8.1)],
        )
        store.write_decision(run, "delivery-time", "7", when, True, "retrain", "", ["x"], {})
        store.close()
        from shopml.serving import metrics

        metrics._MONITOR.ttl = 0  # read the store now, not after the cache's 10 s
        page = client.get("/metrics").text
    assert 'shopml_monitor_drift_share{usecase="delivery-time"} 0.375' in page
    assert 'shopml_monitor_performance{metric="mae",usecase="delivery-time"} 8.1' in page
    assert 'shopml_monitor_alert_active{usecase="delivery-time"} 1.0' in page
    assert "shopml_requests_total" in page  # beside the service's own metrics
