"""Customer history features shared by the customer-level use cases (clv, campaign), beyond the
generic customer feature set: browsing over long windows, which estimates a customer's activity
far better than a handful of orders, and is the clearest sign that a customer is still around."""

from __future__ import annotations

from datetime import datetime
from typing import Any

WEB_COLUMNS = ["sessions_90d", "sessions_365d", "sessions_total", "session_rate", "visit_gap_ratio"]


def web_history(backend: Any, cutoff: datetime) -> Any:
    """Per customer with web events before ``cutoff``: sessions in the last 90 and 365 days and
    ever, sessions per day since the first one, and the days since the last visit over the mean
    gap between sessions (large when a regular visitor has gone quiet)."""
    from shopml.features._snapshot import Snapshot, days_between

    snap = Snapshot(backend, cutoff)
    e = snap.web_events.filter(lambda t: t.customer_id.notnull())
    agg = e.group_by("customer_id").aggregate(
        sessions_90d=e.session_id.nunique(where=e.event_at >= snap.ago(90)),
        sessions_365d=e.session_id.nunique(where=e.event_at >= snap.ago(365)),
        sessions_total=e.session_id.nunique(),
        first_visit_at=e.event_at.min(),
        last_visit_at=e.event_at.max(),
    )
    span = days_between(snap.c, agg.first_visit_at)
    since = days_between(snap.c, agg.last_visit_at)
    active = days_between(agg.last_visit_at, agg.first_visit_at)
    return agg.select(
        "customer_id",
        "sessions_90d",
        "sessions_365d",
        "sessions_total",
        session_rate=agg.sessions_total.cast("float64") / span.nullif(0.0),
        visit_gap_ratio=since
        / (active / (agg.sessions_total - 1).cast("float64").nullif(0.0)).nullif(0.0),
    )
