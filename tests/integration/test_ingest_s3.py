"""The ``ingest`` flow end to end on an ``s3://`` object (a moto S3 server on loopback).

The S3 watcher is tested in test_landing_and_deploy.py; this is the other half: the flow the
watcher's event triggers, downloading the landed object and importing it into the warehouse.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import boto3
import numpy as np
import pytest

from shopml.data.warehouse import Warehouse
from shopml.flows import ingest
from shopml.flows.tasks import result_of
from shopml.settings import get_settings, reset_settings
from tests.support.services import s3_server

pytestmark = pytest.mark.integration

BUCKET = "landing"
KEY = "landing/processed/cdnow/cdnow_sample.txt"
CUSTOMERS = 50


def cdnow_sample(customers: int = CUSTOMERS, seed: int = 3) -> tuple[str, int]:
    """A CDNOW sample-layout file (master_id sample_id yyyymmdd n_cds dollars) over ~18
    months; returns the text and its number of lines."""
    rng = np.random.default_rng(seed)
    start = date(1997, 1, 1)
    lines: list[str] = []
    for i in range(customers):
        master = f"{i * 7 + 4:05d}"
        first = int(rng.integers(0, 90))  # everyone joins in the first quarter, as in CDNOW
        days = sorted({first, *(int(d) for d in rng.integers(first, 540, rng.integers(2, 12)))})
        for d in days:
            n_cds = int(rng.integers(1, 6))
            dollars = round(float(n_cds * rng.uniform(9.0, 16.0)), 2)
            day = start + timedelta(days=d)
            lines.append(f"{master} {i + 1:5d} {day:%Y%m%d} {n_cds:2d} {dollars:8.2f}")
    return "\n".join(lines) + "\n", len(lines)


def test_ingest_imports_a_cdnow_object_from_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    text, n_lines = cdnow_sample()
    assert 200 <= n_lines <= 600
    with s3_server(BUCKET) as endpoint:
        for var, value in {
            "SHOPML_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(var, value)
        reset_settings()
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=text.encode("ascii"))
        # Another object whose name starts with the key must not turn the key into a folder.
        s3.put_object(Bucket=BUCKET, Key=KEY + ".bak", Body=b"not cdnow")

        # Only the import: the pipeline after it is tested in test_pipeline.py.
        state = ingest(f"s3://{BUCKET}/{KEY}", run_pipeline=False, return_state=True)

    assert state.is_completed(), state.message
    out = result_of(state)
    assert out["ingest"]["source"] == "cdnow"
    assert out["ingest"]["loaded"] is True
    assert out["ingest"]["path"] == f"s3://{BUCKET}/{KEY}"
    assert "pipeline" not in out
    with Warehouse.open(get_settings(), read_only=True) as wh:
        assert wh.get_meta("source") == "cdnow"
        count = wh.con.execute("SELECT count(*) FROM customers").fetchone()
        assert count is not None and count[0] == CUSTOMERS
        orders = wh.con.execute("SELECT count(*) FROM orders").fetchone()
        assert orders is not None and orders[0] == n_lines
    # The download lived in a temporary folder: nothing is left in the home folder.
    assert not list(Path(get_settings().home).rglob("cdnow_sample.txt"))
