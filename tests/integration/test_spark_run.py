"""``shopml run --engine spark``: the whole pipeline on a simulated shop with the Spark engine
(features, labelled datasets and batch scores on a local Spark session; the lake published on
the way), for four use cases covering four kinds of model: customer regression
(clv), clustering (segments), ranking (recommender) and a product entity (pricing).

All eight ran once on the same 300-customer shop (docs/how-to/spark.md: 17 min 46 s on this
shared 2-core machine at a load average of 6-10, against 2 min 9 s on DuckDB); the other four
are the slowest on Spark (100-260 s each there: many small Spark jobs per labelled dataset), so
they are left to that run and to the engine's dataset and scoring tests. This test took 3 min
17 s at a load average of 3-4."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from shopml.data.lake import Lake
from shopml.data.warehouse import Warehouse
from shopml.usecases import get_usecases
from tests.unit.flows.test_pipeline import shopml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Spark session for the module, stopped after it (no JVM left behind)."""
    from shopml.data.spark import get_spark, stop_spark
    from shopml.settings import Settings

    get_spark(Settings(home=tmp_path_factory.mktemp("spark-home"), engine="spark"))
    yield
    stop_spark()


USECASES = ["clv", "segments", "recommender", "pricing"]


def test_shopml_run_with_the_spark_engine(
    shopml_home: Path,
    spark_session: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Restored after the test: --engine sets SHOPML_ENGINE for the process.
    monkeypatch.setenv("SHOPML_ENGINE", "duckdb")
    args = ["run", "--engine", "spark", "--customers", "300", "--trials", "0", "--timeout", "5",
            "--json", *[a for name in USECASES for a in ("--usecase", name)]]  # fmt: skip
    code, out, err = shopml(args, capsys, monkeypatch)
    assert code == 0, err[-3000:]
    summary = json.loads(out)
    status = {u["usecase"]: u["status"] for u in summary["usecases"]}
    assert status == dict.fromkeys(USECASES, "promoted"), summary
    # Spark read the canonical tables from the lake, which holds the warehouse's versions.
    with Warehouse(shopml_home / "warehouse.duckdb", read_only=True) as wh:
        versions = wh.versions()
    lake = Lake(str(shopml_home / "lake")).manifest()
    assert lake and {n: t.version for n, t in lake.items()} == {n: versions[n] for n in lake}
    assert set(USECASES) <= set(get_usecases())
    for name in USECASES:
        scores = pd.read_parquet(shopml_home / "scores" / f"{name}.parquet")
        assert len(scores) > 0, name
