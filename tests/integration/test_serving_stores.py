"""The Redis and PostgreSQL online stores (real servers on loopback): atomic swap, lookups,
and the service answering from them; the prediction log on PostgreSQL."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shopml.online.store import OnlineStore
from tests.support.services import ensure_redis, postgres_database, redis_database

pytestmark = pytest.mark.integration
AS_OF = datetime(2025, 1, 1)


@pytest.fixture(params=["redis", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[OnlineStore]:
    if request.param == "redis":
        from shopml.online.redis_store import RedisOnlineStore

        s = RedisOnlineStore(ensure_redis(), prefix=f"shopml-test-{uuid.uuid4().hex[:8]}")
        yield s
        for key in s._redis.scan_iter(f"{s.prefix}*"):
            s._redis.unlink(key)
        s.close()
    else:
        from shopml.online.postgres_store import PostgresOnlineStore

        with postgres_database() as url:
            s = PostgresOnlineStore(url)
            yield s
            s.close()


def test_write_get_and_swap(store: OnlineStore) -> None:
    first = pd.DataFrame(
        {"customer_id": ["a", "b"], "recency_days": [3.0, float("nan")], "segment": ["x", "y"]}
    )
    assert store.write("customers", first, "customer_id", AS_OF) == 2
    got = store.get("customers", "a")
    assert got is not None and got[0] == {"recency_days": 3.0, "segment": "x"}
    assert got[1] == AS_OF
    assert store.get("customers", "b")[0]["recency_days"] is None  # type: ignore[index]
    assert store.get("customers", "zz") is None and store.get("nobody", "a") is None
    later = datetime(2025, 2, 1)
    store.write(
        "customers",
        pd.DataFrame({"customer_id": ["b", "c"], "recency_days": [1, 2]}),
        "customer_id",
        later,
    )
    assert store.get("customers", "a") is None  # the old version is gone whole
    assert store.get("customers", "c") == ({"recency_days": 2}, later)
    assert set(store.get_many("customers", ["b", "c", "zz"])) == {"b", "c"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_service_answers_from_the_store(kind: str, tmp_path: Path) -> None:
    """A service whose online store and prediction log are the real servers."""
    from fastapi.testclient import TestClient

    from shopml.runtime.scorers import LinearScorer
    from shopml.serving import create_app
    from shopml.serving.models import VersionInfo
    from shopml.settings import Settings

    scorer = LinearScorer(
        features=["recency_days", "frequency_orders"],
        outputs=["y"],
        coef=[1.0, 2.0],
        intercept=0.0,
        mean=[0.0, 0.0],
        scale=[1.0, 1.0],
        fill=[0.0, 0.0],
    )

    class Source:
        def alias_version(self, usecase: str, alias: str) -> VersionInfo:
            return VersionInfo("7")

        def load(self, usecase: str, version: str) -> Any:
            return scorer

    with postgres_database() as pg, contextlib.ExitStack() as stack:
        # Redis: a throwaway database index of its own, away from anything real.
        uri = stack.enter_context(redis_database()) if kind == "redis" else pg
        settings = Settings(
            home=tmp_path, online_store_uri=uri, monitoring_store_uri=pg, feature_cache_seconds=0
        )
        from shopml.online import open_store

        s = open_store(settings)
        s.write(
            "customers",
            pd.DataFrame({"customer_id": ["C1"], "recency_days": [4.0], "frequency_orders": [3.0]}),
            "customer_id",
            AS_OF,
        )
        s.close()
        app = create_app(settings, source_factory=Source, usecases=["clv"])
        with TestClient(app) as client:
            r = client.post("/v1/clv/predict", json={"customer_id": "C1"})
            assert r.status_code == 200, r.text
            assert r.json()["prediction"]["y"] == pytest.approx(10.0)
            assert client.post("/v1/clv/predict", json={"customer_id": "C9"}).status_code == 404
            assert client.get("/ready").json()["online_store"]["ok"] is True
        import psycopg

        from shopml.online.postgres_store import _conninfo

        with psycopg.connect(_conninfo(pg)) as con:
            row = con.execute(
                "SELECT usecase, entity_id, model_version, output->>'y' FROM prediction_log"
            ).fetchone()
        assert row == ("clv", "C1", "7", "10.0")
