"""The Spark engine builds every entity's features from the same Ibis definitions as DuckDB,
equal frame for frame, blind to the future, over a lake whose data versions Spark recomputes
to the warehouse's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from shopml.data.warehouse import Warehouse
from shopml.features import FEATURE_SETS, build_features
from tests.unit.features.shop import load_warehouse, make_tables
from tests.unit.features.test_point_in_time import _assert_same, as_of, scramble_future

from .conftest import spark_settings

pytestmark = pytest.mark.slow  # a local Spark session; each entity is a few Spark jobs

# A cutoff in the middle of a day (times of day must count the same) and one at midnight.
CUTOFFS = [datetime(2024, 5, 17, 13, 45, 10), datetime(2024, 11, 29)]
Tables = dict[str, pd.DataFrame]


def on_spark(path: Path, home: Path, lake: Path, tables: Tables | None = None) -> Warehouse:
    """The warehouse at ``path`` (loaded with ``tables`` first) on the Spark engine."""
    if tables is not None:
        load_warehouse(path, tables).close()
    return Warehouse(path, read_only=True, engine="spark", settings=spark_settings(home, lake))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Tables:
    return make_tables(customers=150)


@pytest.fixture(scope="module")
def engines(
    shop: Tables, spark_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Warehouse, Warehouse]]:
    tmp = tmp_path_factory.mktemp("engines")
    duck = load_warehouse(tmp / "wh.duckdb", shop)
    duck.close()
    duck = Warehouse(tmp / "wh.duckdb", read_only=True)
    spark = on_spark(tmp / "wh.duckdb", spark_home, tmp / "lake")
    yield duck, spark
    duck.close()
    spark.close()


@pytest.fixture(scope="module")
def duckdb_features(engines: tuple[Warehouse, Warehouse]) -> dict[datetime, dict]:
    duck, _ = engines
    return {c: {e: build_features(duck, c, e) for e in FEATURE_SETS} for c in CUTOFFS}


def test_the_lake_holds_what_the_warehouse_validated(
    engines: tuple[Warehouse, Warehouse], spark_home: Path
) -> None:
    from shopml.data.spark import get_spark

    duck, spark = engines
    spark.ibis()  # publishes the lake
    lake = spark.lake()
    recomputed = lake.verify(get_spark(spark.settings))  # type: ignore[arg-type]
    assert recomputed == duck.versions(list(recomputed))
    assert set(recomputed) >= {"customers", "orders", "order_items", "web_events"}


@pytest.mark.parametrize("cutoff", CUTOFFS, ids=str)
def test_every_feature_set_is_equal_on_both_engines(
    engines: tuple[Warehouse, Warehouse], duckdb_features: dict, cutoff: datetime
) -> None:
    _, spark = engines
    on_spark_ = {e: build_features(spark, cutoff, e) for e in FEATURE_SETS}
    assert all(len(df) for df in on_spark_.values())
    _assert_same(duckdb_features[cutoff], on_spark_, "Spark vs DuckDB")


def test_spark_features_ignore_the_future(
    shop: Tables, duckdb_features: dict, spark_home: Path, tmp_path: Path
) -> None:
    cutoff = CUTOFFS[0]
    full = duckdb_features[cutoff]
    for what, tables in (
        ("future deleted", as_of(shop, cutoff)),
        ("future scrambled", scramble_future(shop, cutoff, 7)),
    ):
        wh = on_spark(tmp_path / f"{what}.duckdb", spark_home, tmp_path / f"lake-{what}", tables)
        _assert_same(full, {e: build_features(wh, cutoff, e) for e in FEATURE_SETS}, what)
        wh.close()
