"""An injected clock drives the service through simulated days: it stamps every prediction-log
row and feature ages are measured against it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.unit.serving.conftest import AS_OF, a_customer

DAY = 86400.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def test_clock_stamps_the_log_and_ages_features(
    client_factory: Any, served_home: Path, tmp_path: Path
) -> None:
    materialised = AS_OF.replace(tzinfo=UTC).timestamp()  # the online features' as-of
    now = [materialised]
    db = tmp_path / "monitoring.sqlite"
    client = client_factory({"clock": lambda: now[0]}, monitoring_store_uri=f"sqlite:///{db}")
    cid = a_customer(served_home)
    stamps = []
    for day in range(4):
        now[0] = materialised + 3600 + day * DAY
        stamps.append(now[0])
        r = client.post("/v1/clv/predict", json={"customer_id": cid})
        assert r.status_code == 200, r.text
        assert r.json()["feature_age_seconds"] == 3600 + day * DAY
        assert r.json()["stale"] is (day >= 2)  # older than 48 hours from the third day on
    now[0] += 0.25
    assert client.post("/v1/recommender/recommend", json={"customer_id": cid, "k": 2}).is_success
    assert client.post("/v1/pricing/suggest", json={"product_id": "P000001"}).is_success
    client.__exit__(None, None, None)  # flushes the log
    con = sqlite3.connect(db)
    rows = con.execute("SELECT usecase, ts FROM prediction_log ORDER BY rowid").fetchall()
    con.close()
    assert [ts for uc, ts in rows if uc == "clv"] == [iso(t) for t in stamps]
    assert [(uc, ts) for uc, ts in rows if uc != "clv"] == [
        ("recommender", iso(now[0])),
        ("pricing", iso(now[0])),
    ]
