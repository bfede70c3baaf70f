"""The Spark engine's tests share one local Spark session (``local[2]``), started by the first
test that needs it and stopped when the test session ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shopml.settings import Settings


@pytest.fixture(scope="session")
def spark_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home whose settings start the session (the engine's own helper, as in production)."""
    from shopml.data.spark import get_spark, stop_spark

    home = tmp_path_factory.mktemp("spark-home")
    get_spark(Settings(home=home, engine="spark"))
    yield home
    stop_spark()


def spark_settings(home: Path, lake: Path) -> Settings:
    return Settings(home=home, engine="spark", lake_uri=str(lake))
