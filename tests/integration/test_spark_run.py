"""``shopml run --engine spark``: the whole pipeline on a simulated shop with the Spark engine
(features, labelled datasets and batch scores on Spark; the lake published on the way)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from shopml.data.lake import Lake
from shopml.data.warehouse import Warehouse
from tests.unit.flows.test_pipeline import shopml

pytestmark = pytest.mark.slow  # a simulated shop, two use cases trained and scored on Spark


def test_shopml_run_with_the_spark_engine(
    shopml_home: Path,
    spark_home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Restored after the test: --engine sets SHOPML_ENGINE for the process.
    monkeypatch.setenv("SHOPML_ENGINE", "duckdb")
    args = ["run", "--engine", "spark", "--customers", "300", "--trials", "0", "--timeout", "5",
            "--usecase", "clv", "--usecase", "segments", "--json"]  # fmt: skip
    code, out, err = shopml(args, capsys, monkeypatch)
    assert code == 0, err[-3000:]
    summary = json.loads(out)
    assert {u["usecase"]: u["status"] for u in summary["usecases"]} == {
        "clv": "promoted",
        "segments": "promoted",
    }, summary
    # Spark read the canonical tables from the lake, which holds the warehouse's versions.
    with Warehouse(shopml_home / "warehouse.duckdb", read_only=True) as wh:
        versions = wh.versions()
    lake = Lake(str(shopml_home / "lake")).manifest()
    assert {n: t.version for n, t in lake.items()} == {n: versions[n] for n in lake}
    for name in ("clv", "segments"):
        scores = pd.read_parquet(shopml_home / "scores" / f"{name}.parquet")
        assert len(scores) > 0 and "customer_id" in scores.columns
