"""Monitoring results as Prometheus gauges, read from the monitoring store.

The monitor writes each check to the store (``monitor_metrics``, ``monitor_decisions``); this
collector turns the newest check of every use case into gauges. The service adds it to its
``/metrics`` (so one scrape target has traffic, latency and model health), and ``shopml monitor``
writes the same page to ``<home>/reports/monitoring/metrics.prom`` for a node exporter's
textfile collector. Small on purpose: the service imports it, and it imports nothing of
monitoring's libraries.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# name -> (help, labels). ``usecase`` is always the first label.
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "shopml_monitor_drift_share": (
        "Share of the watched input features that drifted (what the policy judges).",
        ("usecase",),
    ),
    "shopml_monitor_drift_share_all": (
        "Share of all input features that drifted (calendar and lifetime counters included).",
        ("usecase",),
    ),
    "shopml_monitor_drifted_features": ("Input features that drifted.", ("usecase",)),
    "shopml_monitor_feature_drift": (
        "Drift score per input feature (normed Wasserstein or Jensen-Shannon).",
        ("usecase", "feature"),
    ),
    "shopml_monitor_prediction_drift": (
        "Drift score of each served output against the training reference.",
        ("usecase", "output"),
    ),
    "shopml_monitor_performance": (
        "Live metric on labelled predictions.",
        ("usecase", "metric"),
    ),
    "shopml_monitor_performance_reference": (
        "The served model's own test figure for the metric.",
        ("usecase", "metric"),
    ),
    "shopml_monitor_degradation": (
        "How much worse the live decisive metric is than at test (relative).",
        ("usecase", "metric"),
    ),
    "shopml_monitor_predictions": ("Predictions in the drift window.", ("usecase",)),
    "shopml_monitor_labelled_predictions": (
        "Predictions with final labels in the performance window.",
        ("usecase",),
    ),
    "shopml_monitor_usecase_value": (
        "Use-case specifics (coverage, novelty, guardrail violations, revenue realised vs "
        "expected, segment shares).",
        ("usecase", "metric", "item"),
    ),
    "shopml_monitor_alert_active": (
        "1 when the newest check crossed a threshold.",
        ("usecase",),
    ),
    "shopml_monitor_last_check_timestamp_seconds": (
        "When the newest check ran (its own clock: replays use simulated time).",
        ("usecase",),
    ),
    "shopml_monitor_model_version": (
        "The model version the newest check judged (1 for that version).",
        ("usecase", "version"),
    ),
}


def _gauge_for(kind: str, metric: str) -> str | None:
    if kind == "drift":
        return {
            "share": "shopml_monitor_drift_share",
            "share_all": "shopml_monitor_drift_share_all",
            "drifted": "shopml_monitor_drifted_features",
            "score": "shopml_monitor_feature_drift",
        }.get(metric)
    return {
        "prediction_drift": "shopml_monitor_prediction_drift",
        "performance": "shopml_monitor_performance",
        "reference": "shopml_monitor_performance_reference",
        "degradation": "shopml_monitor_degradation",
        "specific": "shopml_monitor_usecase_value",
    }.get(kind) or (
        {
            "predictions": "shopml_monitor_predictions",
            "labelled": "shopml_monitor_labelled_predictions",
        }.get(metric)
        if kind == "volume"
        else None
    )


_LATEST = """
SELECT m.usecase, m.model_version, m.kind, m.metric, m.feature, m.value, m.ts
FROM monitor_metrics m
JOIN (SELECT usecase, max(ts) AS ts FROM monitor_metrics GROUP BY usecase) l
  ON m.usecase = l.usecase AND m.ts = l.ts
"""
_DECISIONS = """
SELECT d.usecase, d.triggered FROM monitor_decisions d
JOIN (SELECT usecase, max(ts) AS ts FROM monitor_decisions GROUP BY usecase) l
  ON d.usecase = l.usecase AND d.ts = l.ts
"""


def read_latest(uri: str | None, home: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The newest check's rows and the newest decision per use case (empty when the store or
    its tables do not exist yet)."""
    if uri is None or uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///")) if uri else home / "monitoring.sqlite"
        if not path.exists():
            return [], []
        lite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return list(lite.execute(_LATEST)), list(lite.execute(_DECISIONS))
        except sqlite3.OperationalError:  # tables not created yet
            return [], []
        finally:
            lite.close()
    import psycopg

    from shopml.online.postgres_store import _conninfo

    with psycopg.connect(_conninfo(uri), connect_timeout=5) as con:
        try:
            return list(con.execute(_LATEST)), list(con.execute(_DECISIONS))
        except psycopg.errors.UndefinedTable:
            return [], []


def families(rows: list[tuple[Any, ...]], decisions: list[tuple[Any, ...]]) -> Iterator[Any]:
    """Prometheus gauge families for the newest rows."""
    from datetime import datetime

    from prometheus_client.core import GaugeMetricFamily

    fams = {name: GaugeMetricFamily(name, h, labels=list(lbl)) for name, (h, lbl) in GAUGES.items()}
    seen: dict[str, tuple[str, Any]] = {}
    for usecase, version, kind, metric, feature, value, ts in rows:
        seen[usecase] = (str(version or ""), ts)
        name = _gauge_for(kind, metric)
        if name is None or value is None:
            continue
        labels = GAUGES[name][1]
        if len(labels) == 1:
            values = [usecase]
        elif name == "shopml_monitor_usecase_value":
            values = [usecase, metric, str(feature or "")]
        elif labels[1] in ("feature", "output"):
            values = [usecase, str(feature or metric)]
        else:
            values = [usecase, metric]
        fams[name].add_metric(values, float(value))
    for usecase, (version, ts) in seen.items():
        if version:
            fams["shopml_monitor_model_version"].add_metric([usecase, version], 1.0)
        when = ts if isinstance(ts, datetime) else datetime.fromisoformat(str(ts))
        fams["shopml_monitor_last_check_timestamp_seconds"].add_metric([usecase], when.timestamp())
    for usecase, triggered in decisions:
        fams["shopml_monitor_alert_active"].add_metric([usecase], 1.0 if triggered else 0.0)
    yield from fams.values()


class MonitorCollector:
    """A Prometheus collector over the monitoring store, cached for ``ttl`` seconds."""

    def __init__(self, uri: str | None, home: Path, ttl: float = 10.0) -> None:
        self.uri, self.home, self.ttl = uri, home, ttl
        self._cached: tuple[float, list[Any], list[Any]] | None = None
        self._lock = threading.Lock()
        self.error: str | None = None

    def collect(self) -> Iterator[Any]:
        now = time.monotonic()
        with self._lock:
            if self._cached is None or now - self._cached[0] > self.ttl:
                try:
                    rows, decisions = read_latest(self.uri, self.home)
                    self.error = None
                except Exception as exc:  # the metrics page must not fail with the store
                    rows, decisions = [], []
                    self.error = f"{type(exc).__name__}: {exc}"
                self._cached = (now, rows, decisions)
            _, rows, decisions = self._cached
        yield from families(rows, decisions)

    def describe(self) -> list[Any]:
        return []


def render_text(uri: str | None, home: Path) -> bytes:
    """The gauges as a Prometheus text page (for a textfile collector)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(MonitorCollector(uri, home, ttl=0))
    return generate_latest(registry)


def metric_names() -> list[str]:
    """Every gauge this module exports (what dashboards may query)."""
    return sorted(GAUGES)
