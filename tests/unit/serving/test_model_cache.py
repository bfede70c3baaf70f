"""The model store's serving cache and bounded start: a service restarted while the registry is
down serves the champions it served last and says why; a registry that does not answer (of any
kind) delays the start by ``start_seconds`` at most. Fake sources, real files."""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from pathlib import Path

import pytest

from shopml.runtime.scorers import ConstantScorer
from shopml.serving.models import (
    REGISTRY_FAIL_FAST,
    MlflowSource,
    ModelStore,
    RegistryUnreachable,
    ServingCache,
    VersionInfo,
    probe_registry,
)
from shopml.settings import Settings


class CachingSource:
    """A registry in memory that downloads into the serving cache as MlflowSource does."""

    def __init__(self, cache: ServingCache, champions: dict[str, str]) -> None:
        self.cache = cache
        self.champions = champions
        self.down = False
        self.hang = threading.Event()  # set: every call blocks until released
        self.release = threading.Event()
        self.loads: list[tuple[str, str]] = []

    def alias_version(self, usecase: str, alias: str) -> VersionInfo | None:
        if self.hang.is_set():
            self.release.wait(30)
        if self.down:
            raise ConnectionError("registry at 127.0.0.1:5000 refused the connection")
        version = self.champions.get(usecase)
        return VersionInfo(version, tags={"shopml.cutoff": "2025-01-01"}) if version else None

    def load(self, usecase: str, version: str) -> ConstantScorer:
        self.loads.append((usecase, version))
        path = self.cache.scorer_path(usecase, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        scorer = ConstantScorer(["x"], ["p"], values=[float(version)])
        path.write_bytes(pickle.dumps(scorer))
        return scorer


def _store(source: CachingSource, cache: ServingCache, start_seconds: float = 5.0) -> ModelStore:
    def factory() -> CachingSource:
        if source.down and not source.hang.is_set():
            raise ConnectionError("registry at 127.0.0.1:5000 refused the connection")
        return source

    return ModelStore(
        ["a", "b"], factory, poll_seconds=3600, cache=cache, start_seconds=start_seconds
    )


def test_a_restart_while_the_registry_is_down_serves_the_cached_champions(tmp_path: Path) -> None:
    cache = ServingCache(tmp_path / "serving-cache")
    source = CachingSource(cache, {"a": "3", "b": "7"})
    first = _store(source, cache)
    first.start()
    first.stop()
    assert {uc: m.version for uc, m in first.models.items()} == {"a": "3", "b": "7"}
    assert cache.champion("a") == VersionInfo("3", tags={"shopml.cutoff": "2025-01-01"})

    source.down = True
    again = _store(source, cache)
    again.start()
    try:
        assert {uc: m.version for uc, m in again.models.items()} == {"a": "3", "b": "7"}
        assert again.models["b"].scorer.predict_matrix(again.models["b"].row)[0] == 7.0
        assert not again.registry_ok
        assert again.registry_error is not None
        assert "refused the connection" in again.registry_error
        assert "serving cached champions: a v3, b v7" in again.registry_error
        assert again.models["a"].info.tags == {"shopml.cutoff": "2025-01-01"}

        # The registry is back, with a new champion for b: confirmed and swapped.
        source.down = False
        source.champions["b"] = "8"
        assert again.refresh() == {"b": "v7 -> v8"}
        assert again.registry_ok and again.registry_error is None and again.from_cache == {}
        assert cache.champion("b") is not None and cache.champion("b").version == "8"  # type: ignore[union-attr]
    finally:
        again.stop()


def test_a_registry_that_does_not_answer_delays_the_start_by_start_seconds_at_most(
    tmp_path: Path,
) -> None:
    cache = ServingCache(tmp_path / "serving-cache")
    source = CachingSource(cache, {"a": "1"})
    warm = _store(source, cache)
    warm.start()
    warm.stop()

    source.hang.set()
    store = _store(source, cache, start_seconds=0.5)
    began = time.monotonic()
    store.start()
    try:
        assert time.monotonic() - began < 20  # not the registry's own (30 s) wait
        assert store.get("a") is not None and store.get("a").version == "1"  # type: ignore[union-attr]
        assert store.registry_error is not None
        assert store.registry_error.startswith("no answer within 0.5 s at start-up")
        assert "serving cached champions: a v1" in store.registry_error
        assert store.get("b") is None
    finally:
        source.hang.clear()
        source.release.set()  # the poller's first round answers now
        deadline = time.monotonic() + 30
        while not store.registry_ok and time.monotonic() < deadline:
            time.sleep(0.05)
        store.stop()
    assert store.registry_ok and store.from_cache == {}


def test_nothing_cached_and_no_registry_serves_nothing_and_says_why(tmp_path: Path) -> None:
    cache = ServingCache(tmp_path / "serving-cache")
    source = CachingSource(cache, {"a": "1"})
    source.down = True
    store = _store(source, cache)
    store.start()
    store.stop()
    assert store.models == {} and store.registry_error is not None
    assert "cached" not in store.registry_error


@pytest.mark.parametrize(
    "pointer",
    [b"", b"{not json", b'{"version": "9"}', b"[1, 2]"],
    ids=["empty", "garbage", "version-not-in-cache", "wrong-shape"],
)
def test_a_damaged_pointer_is_no_champion(tmp_path: Path, pointer: bytes) -> None:
    cache = ServingCache(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ServingCache.POINTER).write_bytes(pointer)
    assert cache.champion("a") is None


def test_the_pointer_is_only_written_for_a_cached_scorer(tmp_path: Path) -> None:
    cache = ServingCache(tmp_path)
    cache.remember("a", VersionInfo("1"))
    assert not (tmp_path / "a" / ServingCache.POINTER).exists()
    path = cache.scorer_path("a", "1")
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(ConstantScorer(["x"], ["p"], values=[1.0])))
    cache.remember("a", VersionInfo("1", run_id="r"))
    assert cache.champion("a") == VersionInfo("1", run_id="r")
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")] == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)  # MLflow's own retries would take about two minutes
def test_an_unreachable_sql_registry_is_refused_in_seconds(tmp_path: Path) -> None:
    port = _closed_port()
    uri = f"postgresql+psycopg://shopml@127.0.0.1:{port}/mlflow"
    with pytest.raises(RegistryUnreachable, match=f"postgresql registry at 127.0.0.1:{port}"):
        probe_registry(uri, timeout=2)
    settings = Settings(home=tmp_path, mlflow_tracking_uri=uri)
    with pytest.raises(RegistryUnreachable):
        MlflowSource(settings, probe_seconds=2)


def test_an_unreadable_sqlite_registry_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryUnreachable, match=r"mlflow\.db"):
        probe_registry(f"sqlite:///{db}", timeout=1)
    probe_registry(f"sqlite:///{tmp_path / 'new.db'}")  # MLflow creates a missing one
    probe_registry("http://127.0.0.1:1")  # HTTP fails fast in the service's requests instead


def test_the_source_leaves_the_process_environment_alone(tmp_path: Path) -> None:
    """Training in the same process (replay, tests) keeps MLflow's retries and timeouts."""
    before = {k: os.environ.get(k) for k in REGISTRY_FAIL_FAST}
    MlflowSource(Settings(home=tmp_path, mlflow_tracking_uri="http://127.0.0.1:1"))
    assert {k: os.environ.get(k) for k in REGISTRY_FAIL_FAST} == before


def test_old_versions_are_pruned_from_the_cache(tmp_path: Path) -> None:
    cache = ServingCache(tmp_path)
    for version in ("1", "2", "3", "9", "10"):
        path = cache.scorer_path("a", version)
        path.parent.mkdir(parents=True)
        path.write_bytes(pickle.dumps(ConstantScorer(["x"], ["p"], values=[1.0])))
    cache.remember("a", VersionInfo("2"))  # a rollback to an old version keeps it
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir()) == ["10", "2", "3", "9"]
    assert cache.champion("a") == VersionInfo("2")
    cache.remember("a", VersionInfo("10"))
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir()) == ["10", "3", "9"]
