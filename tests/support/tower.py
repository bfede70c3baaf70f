"""A monitoring history for the control tower's tests, written through the monitoring store's
own functions as ``shopml monitor`` writes it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path


def write_history(
    home: Path, usecase: str, store_uri: str | None = None, version: str = "1"
) -> None:
    """Two checks of ``usecase`` a week apart (ending at the warehouse's last order), the
    second one alerting: drift measured by Evidently on two windows (the second shifted) and
    stored as the monitor stores it, with its HTML report under the home; live AUC against the
    served version's test figure and the oracle's; and a decision each. ``store_uri`` is the
    monitoring store (None: the home's SQLite file)."""
    import duckdb
    import numpy as np
    import pandas as pd

    from shopml.monitoring.drift import compute_drift
    from shopml.monitoring.monitor import _drift_rows
    from shopml.monitoring.reports import drift_report_path
    from shopml.monitoring.store import MetricRow, MonitoringStore
    from shopml.settings import Settings

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        row = con.execute("SELECT max(purchased_at) FROM orders").fetchone()
    finally:
        con.close()
    assert row is not None
    end = row[0]
    rng = np.random.default_rng(7)

    def window(shift: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "price": rng.lognormal(3.0 + shift, 0.5, 400),
                "freight": rng.lognormal(1.5, 0.4, 400),
                "probability": rng.beta(2 + 4 * shift, 8, 400),
            }
        )

    reference = window(0.0)
    store = MonitoringStore(store_uri, home)
    try:
        for i, (shift, auc, alert) in enumerate(((0.0, 0.71, False), (0.8, 0.63, True))):
            when = end - timedelta(days=7 * (1 - i))
            drift = compute_drift(
                reference, window(shift), ["price", "freight"], ["probability"], calibrate=False
            )
            html = drift_report_path(Settings(home=home).reports_dir, usecase, when)
            html.parent.mkdir(parents=True, exist_ok=True)
            drift.snapshot.save_html(str(html))
            rows = [
                *_drift_rows(drift),
                MetricRow("performance", "auc", auc, n=320),
                MetricRow("reference", "auc", 0.71),
                MetricRow("oracle", "auc", 0.8, n=320),
            ]
            run = store.write_metrics(
                usecase, version, when, (when - timedelta(days=7), when), rows
            )
            store.write_decision(
                run,
                usecase,
                version,
                when,
                alert,
                "alert" if alert else "none",
                "alerted" if alert else "",
                [f"drift: {drift.share:.0%} of watched features"] if alert else [],
                {"findings": {"rows": 400}, "alert": {"delivered": False, "url": None}},
            )
    finally:
        store.close()
