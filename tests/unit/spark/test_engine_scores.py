"""Labelled datasets and batch scores on the Spark engine: every use case's dataset at a cutoff
is the one DuckDB builds, and every champion's batch scores, computed on the executors, are the
ones the local batch gives."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from shopml.data.warehouse import Warehouse
from shopml.serving.batch import score_batch
from shopml.settings import Settings
from shopml.usecases import get_usecase, get_usecases
from tests.unit.serving.conftest import SERVED, served_home  # noqa: F401 - the shared fixture

from .conftest import spark_settings

pytestmark = pytest.mark.slow  # trained champions and a local Spark session

CUTOFF = datetime(2024, 11, 1)


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def _same(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], what: str) -> None:
    """Equal frames (rows in key order); floats to 1e-9 relative: sums of floats may add up in
    another order on another engine."""
    pd.testing.assert_frame_equal(
        _sorted(a, keys), _sorted(b, keys), check_exact=False, rtol=1e-9, atol=1e-9, obj=what
    )


@pytest.mark.parametrize("name", [n for n in get_usecases() if n not in SERVED], ids=str)
def test_labelled_datasets_are_equal_on_both_engines(
    served_home: Path,  # noqa: F811
    spark_home: Path,
    tmp_path: Path,
    name: str,
) -> None:
    uc = get_usecase(name)
    path = served_home / "warehouse.duckdb"
    with Warehouse(path, read_only=True) as duck:
        cutoff = uc.split(duck).test_cutoff  # the window the model is judged on: labelled
        expected = uc.dataset(duck, cutoff)
    settings = spark_settings(spark_home, tmp_path / "lake")
    with Warehouse(path, read_only=True, engine="spark", settings=settings) as spark:
        got = uc.dataset(spark, cutoff)
    assert len(expected) > 0
    assert got.features == expected.features and got.labels == expected.labels
    _same(expected.frame, got.frame, expected.keys, f"{name} dataset at {cutoff:%Y-%m-%d}")


def test_every_champion_scores_the_same_on_both_engines(
    served_home: Path,  # noqa: F811
    spark_home: Path,
    tmp_path: Path,
) -> None:
    duck = Settings(home=served_home)
    spark = spark_settings(served_home, tmp_path / "lake")
    for name in SERVED:
        uc = get_usecase(name)
        local = tmp_path / f"{name}-duckdb.parquet"
        distributed = tmp_path / f"{name}-spark.parquet"
        a = score_batch(duck, name, str(local), cutoff=CUTOFF, latest=True)
        b = score_batch(spark, name, str(distributed), cutoff=CUTOFF, latest=True)
        assert a.rows == b.rows > 0 and a.model_version == b.model_version, name
        left, right = pd.read_parquet(local), pd.read_parquet(distributed)
        assert list(left.columns) == list(right.columns), name
        keys = [c for c in left.columns if c.endswith("_id")] or [uc.key]
        _same(left, right, keys, f"{name} scores")
