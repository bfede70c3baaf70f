"""Prometheus metrics and the ASGI middleware that times every request.

With several server workers ``shopml serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before they
start, so each worker writes its samples to shared files and ``/metrics`` (answered by any
worker) aggregates them all. The middleware is plain ASGI (no ``BaseHTTPMiddleware``, whose
per-request task costs more than everything else here): it reads the matched route's template
from the scope so labels stay bounded (``/v1/returns/predict``, not one per id).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
# One bucket set for every output: probabilities and uplift (0-1), days, segment ids, spend.
PREDICTION_BUCKETS = (
    -0.5,
    -0.1,
    0.0,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1.0,
    2.0,
    3.0,
    5.0,
    7.0,
    10.0,
    15.0,
    20.0,
    30.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    5000.0,
)

REQUESTS = Counter(
    "shopml_requests_total",
    "HTTP requests by route, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "shopml_request_duration_seconds",
    "Server-side request latency by route, method and status.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter(
    "shopml_errors_total", "Failed requests by route and kind (client, server).", ["route", "kind"]
)
PREDICTIONS = Histogram(
    "shopml_prediction",
    "Distribution of predicted values.",
    ["usecase", "output"],
    buckets=PREDICTION_BUCKETS,
)
MODEL_INFO = Gauge(
    "shopml_model_version_info",
    "The model version served per use case (1 for the version being served).",
    ["usecase", "version"],
    # Several workers: 1 while any live worker serves that version (one sample per version,
    # not one per worker process).
    multiprocess_mode="livemax",
)
REGISTRY_UP = Gauge(
    "shopml_registry_up",
    "1 when the last registry poll succeeded (in every live worker).",
    multiprocess_mode="livemin",
)
ROLLOUT_ANSWERS = Counter(
    "shopml_rollout_answers_total",
    "Challenger answers during a rollout by use case, arm (challenger: returned; shadow: "
    "logged only) and outcome (ok, failed, dropped: the shadow queue was full).",
    ["usecase", "arm", "outcome"],
)
LOG_DROPPED = Counter(
    "shopml_prediction_log_dropped_total", "Predictions not logged because the log queue was full."
)
LOG_QUEUE = Gauge(
    "shopml_prediction_log_queue",
    "Predictions waiting to be written (all live workers).",
    multiprocess_mode="livesum",
)


def model_swapped(usecase: str, old: str | None, new: str) -> None:
    """Move the info metric to the version now served."""
    if old is not None:
        # Zero first: in multi-process mode a removed child's last value stays in its file.
        MODEL_INFO.labels(usecase, old).set(0)
        with contextlib.suppress(KeyError):
            MODEL_INFO.remove(usecase, old)
    MODEL_INFO.labels(usecase, new).set(1)


# The monitor's gauges (drift, live performance, alerts per use case), read from the
# monitoring store, so that one scrape of the service shows traffic and model health together.
_MONITOR: Any = None


def watch_monitoring(uri: str | None, home: Any) -> None:
    """Serve the newest monitoring results from the store at ``uri`` on the metrics page."""
    global _MONITOR  # noqa: PLW0603 - one collector per process, as for every other metric
    from shopml.gauges import MonitorCollector

    collector = MonitorCollector(uri, home)
    if not MULTIPROC:
        from prometheus_client import REGISTRY

        if _MONITOR is not None:
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(_MONITOR)
        REGISTRY.register(collector)
    _MONITOR = collector


def render() -> tuple[bytes, str]:
    """The metrics page (every worker's samples in multi-process mode)."""
    if MULTIPROC:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        if _MONITOR is not None:
            registry.register(_MONITOR)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request by route template, method and status.

    ``fast`` maps the paths of the scoring routes to their plain ASGI handlers (which return
    the status they answered): a ``POST`` to one of them is handed over here, without the
    router's matching and FastAPI's per-request machinery; any other request goes down the
    app as usual.
    """

    def __init__(self, app: Any, fast: dict[str, Any] | None = None) -> None:
        self.app = app
        self.fast = fast if fast is not None else {}
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def _record(self, path: str, method: str, code: int, seconds: float) -> None:
        # Label lookups cost more than the increments: keep the bound children.
        key = (path, method, code)
        children = self._children.get(key)
        if children is None:
            labels = (path, method, str(code))
            error = (
                ERRORS.labels(path, "server" if code >= 500 else "client") if code >= 400 else None
            )
            children = (REQUESTS.labels(*labels), LATENCY.labels(*labels), error)
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2].inc()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        handler = self.fast.get(path)
        if handler is not None and scope["method"] == "POST":
            code = 500
            try:
                code = await handler(scope, receive, send)
            finally:
                self._record(path, "POST", code, time.perf_counter() - start)
            return
        status = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self._record(template, scope.get("method", ""), status[0], time.perf_counter() - start)
