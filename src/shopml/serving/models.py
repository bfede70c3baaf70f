"""The model store: each use case's champion, loaded at start and swapped when the alias moves.

A background thread polls the registry every ``registry_poll_seconds``. When a champion alias
points somewhere new, the new version is downloaded and unpickled in that thread, then put in
place with one reference assignment: a request holds the :class:`LoadedModel` it started with,
so no request sees half a swap and none fails during it. When the registry cannot be reached
the store keeps what it has and reports the outage (``/ready``).

Every champion served is remembered in the serving cache (:class:`ServingCache`, under the
home): a service started while the registry is down serves the champions it served last, and
says so (``/ready`` degraded, with the reason). Start-up waits for the registry at most
``registry_start_seconds``, whatever the registry's kind (an HTTP server, PostgreSQL, a SQLite
file): past that the service starts from the cache and the poller keeps trying.

Only MLflow's client is used (no pyfunc loading, no lifecycle code): the scorer pickle is read
straight from the model version's artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shopml.runtime.scorers import Scorer
from shopml.serving.rowpredict import fast_rows

if TYPE_CHECKING:
    from shopml.settings import Settings

log = logging.getLogger("shopml.serving")

CHAMPION = "champion"

# A service's registry calls fail fast: the poller's next round is the retry, and a request
# stuck in MLflow's own retries (minutes) would hold the poller and an admin reload.
REGISTRY_FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
# How long a bounded start-up waits at most for the source to be made (MLflow imported, a SQL
# registry probed) before it counts the registry's own bound.
SOURCE_SECONDS = 120.0
# SQL registries: the default port of each scheme, for the reachability probe.
_SQL_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}


def fail_fast_registry() -> None:
    """Make this process's MLflow HTTP calls fail fast (no retries, 5 s timeout) unless the
    environment says otherwise. For the service's own processes only (``shopml serve``): it
    changes the process environment, which training in the same process would inherit."""
    for key, value in REGISTRY_FAIL_FAST.items():
        os.environ.setdefault(key, value)


def model_name(usecase: str) -> str:
    """The registered model's name (the lifecycle's convention; not imported to stay slim)."""
    return f"shopml-{usecase}"


def read_scorer(path: Path) -> Scorer:
    """The pickled scorer of a model version (``runtime.pyfunc`` reads the same file, but
    importing it pulls in ``mlflow.pyfunc``, which the slim service does not need)."""
    import pickle

    with path.open("rb") as fh:
        scorer = pickle.load(fh)
    if not isinstance(scorer, Scorer):
        raise TypeError(f"{path} does not hold a shopml scorer")
    return scorer


@dataclass(frozen=True)
class VersionInfo:
    """What the registry says about the version an alias points to."""

    version: str
    created_at: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


class RegistryUnreachable(ConnectionError):
    """The registry's store did not answer a quick probe."""


def probe_registry(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`RegistryUnreachable` quickly when a SQL registry cannot be reached.

    MLflow retries the creation of a SQL store's engine ten times with backoff (about two
    minutes) before giving up; a TCP connect (PostgreSQL, MySQL, SQL Server) or a read of the
    SQLite file answers in ``timeout`` seconds at most. HTTP registries need no probe: the
    service's requests fail fast (:func:`fail_fast_registry`).
    """
    from urllib.parse import urlsplit

    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in _SQL_PORTS:
        parts = urlsplit(uri)
        host, port = parts.hostname or "localhost", parts.port or _SQL_PORTS[scheme]
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            raise RegistryUnreachable(
                f"{scheme} registry at {host}:{port}: {exc.strerror or exc}"
            ) from None
    elif scheme == "sqlite":
        path = Path(uri.split(":///", 1)[1]) if ":///" in uri else None
        if path is None or not path.exists():
            return  # MLflow creates a new, empty registry
        import sqlite3

        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout) as con:
                con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise RegistryUnreachable(f"SQLite registry {path}: {exc}") from None


def _with_connect_timeout(uri: str, seconds: int) -> str:
    """A PostgreSQL URI with libpq's ``connect_timeout`` (an unreachable host otherwise takes
    the system's TCP timeout, minutes, on every poll)."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("postgresql", "postgres") or "connect_timeout=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}connect_timeout={seconds}"


class ServingCache:
    """What the service has loaded, kept under ``<home>/serving-cache``: each model version's
    scorer (``<usecase>/<version>/artifacts/scorer.pkl``, downloaded once) and the champion
    served last (``<usecase>/champion.json``), to start from when the registry is down."""

    POINTER = "champion.json"
    KEEP = 3  # versions kept per use case: the champion and what a rollback most likely wants

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def version_dir(self, usecase: str, version: str) -> Path:
        return self.folder / usecase / str(version)

    def scorer_path(self, usecase: str, version: str) -> Path:
        return self.version_dir(usecase, version) / "artifacts" / "scorer.pkl"

    def remember(self, usecase: str, info: VersionInfo) -> None:
        """Record ``info`` as the champion served (written whole: a crash leaves the old
        pointer or the new). Only for versions whose scorer is in the cache."""
        if not self.scorer_path(usecase, info.version).exists():
            return
        folder = self.folder / usecase
        body = {
            "version": info.version,
            "created_at": info.created_at,
            "run_id": info.run_id,
            "tags": info.tags,
            "served_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".champion-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(body, fh)
            os.replace(tmp, folder / self.POINTER)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.prune(usecase, info.version)

    def prune(self, usecase: str, champion: str) -> list[str]:
        """Remove cached versions older than the ``KEEP`` newest (the champion always kept):
        a daily retrain would otherwise pile up a scorer a day. Returns the removed versions."""
        folder = self.folder / usecase
        versions = sorted(
            (p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=int
        )
        removed = [v for v in versions[: -self.KEEP] if v != str(champion)]
        for version in removed:
            shutil.rmtree(folder / version, ignore_errors=True)
        return removed

    def champion(self, usecase: str) -> VersionInfo | None:
        """The champion served last, if its scorer is still in the cache."""
        try:
            body = json.loads((self.folder / usecase / self.POINTER).read_text())
            info = VersionInfo(
                str(body["version"]),
                body.get("created_at"),
                body.get("run_id"),
                {str(k): str(v) for k, v in (body.get("tags") or {}).items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return info if self.scorer_path(usecase, info.version).exists() else None

    def load(self, usecase: str, version: str) -> Scorer:
        return read_scorer(self.scorer_path(usecase, version))


class ModelSource(Protocol):
    """Where models come from: the MLflow registry, or a fake in tests."""

    def alias_version(self, usecase: str, alias: str) -> VersionInfo | None:
        """The version ``alias`` points to (None when the model or alias does not exist);
        raises when the registry cannot be reached."""

    def load(self, usecase: str, version: str) -> Scorer:
        """The scorer of one model version."""


def _version_info(mv: Any) -> VersionInfo:
    created = (
        datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if mv.creation_timestamp
        else None
    )
    return VersionInfo(str(mv.version), created, mv.run_id, dict(mv.tags or {}))


class MlflowSource:
    """Models from the MLflow registry named in settings; artifacts cached under the home."""

    def __init__(self, settings: Settings, probe_seconds: float = 5.0) -> None:
        # Raises in seconds, not after MLflow's retries: the store's poller tries again later.
        # (HTTP calls fail fast in the service's processes: see fail_fast_registry.)
        probe_seconds = max(1.0, probe_seconds)
        self.tracking_uri = _with_connect_timeout(settings.tracking_uri, round(probe_seconds))
        self.registry_uri = _with_connect_timeout(
            settings.mlflow_registry_uri or settings.tracking_uri, round(probe_seconds)
        )
        for uri in dict.fromkeys((self.registry_uri, self.tracking_uri)):
            probe_registry(uri, probe_seconds)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow import MlflowClient

        if settings.s3_endpoint_url:
            os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint_url)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        self.cache = ServingCache(settings.home / "serving-cache")

    def alias_version(self, usecase: str, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException, RestException

        try:
            mv = self.client.get_model_version_by_alias(model_name(usecase), alias)
        except RestException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        except MlflowException as exc:
            # A missing model or alias is an answer; anything else (connection) is an outage.
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return _version_info(mv)

    def version_info(self, usecase: str, version: str) -> VersionInfo | None:
        """One version of the use case's model (None when it does not exist)."""
        from mlflow.exceptions import MlflowException

        if not str(version).isdigit():
            return None
        try:
            mv = self.client.get_model_version(model_name(usecase), str(version))
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return _version_info(mv)

    def load(self, usecase: str, version: str) -> Scorer:
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

        target = self.cache.version_dir(usecase, version)
        scorer = self.cache.scorer_path(usecase, version)
        if not scorer.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            # Only the scorer (not the model's code and environment files), downloaded beside
            # the target and renamed: workers sharing the cache never read half a download.
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{version}-"))
            try:
                repo = ModelsArtifactRepository(f"models:/{model_name(usecase)}/{version}")
                repo.download_artifacts("artifacts/scorer.pkl", str(tmp))
                try:
                    tmp.rename(target)
                except OSError:  # another worker won the race; its copy is as good
                    shutil.rmtree(tmp, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return read_scorer(scorer)


@dataclass
class LoadedModel:
    """A champion ready to score: the scorer, its version and what it was trained on."""

    usecase: str
    scorer: Scorer
    info: VersionInfo
    loaded_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.version = self.info.version
        self.features = list(self.scorer.features)
        self.outputs = list(self.scorer.outputs)
        self.index = {name: i for i, name in enumerate(self.features)}
        # One preallocated row: requests are handled on the event loop thread and the row is
        # filled and scored without an await in between, so it is never shared concurrently.
        self.row = np.empty((1, len(self.features)), dtype="float64")
        # LightGBM boosters score that row through the single-row fast C API.
        try:
            fast_rows(self.scorer, self.row)
        except Exception:
            log.debug(
                "no single-row fast path for %s v%s", self.usecase, self.version, exc_info=True
            )
        # Build lazy state (boosters from their strings, id indexes) now, not on a request.
        try:
            if self.features and type(self.scorer).predict_matrix is not Scorer.predict_matrix:
                self.scorer.predict_matrix(np.full((1, len(self.features)), np.nan))
        except Exception:
            log.debug("warm-up of %s v%s failed", self.usecase, self.version, exc_info=True)

    def describe(self) -> dict[str, Any]:
        import json

        tags = self.info.tags
        try:
            metrics = json.loads(tags.get("shopml.metrics", "{}"))
        except ValueError:
            metrics = {}
        return {
            "usecase": self.usecase,
            "model": model_name(self.usecase),
            "alias": CHAMPION,
            "version": self.version,
            "trained_at": self.info.created_at,
            "run_id": self.info.run_id,
            "cutoff": tags.get("shopml.cutoff"),
            "dataset_version": tags.get("shopml.dataset_version"),
            "metrics": metrics,
            "features": len(self.features),
            "outputs": self.outputs,
            "loaded_at": datetime.fromtimestamp(self.loaded_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class ModelStore:
    """Champions by use case, refreshed in the background when their alias moves; started from
    the serving cache when the registry does not answer."""

    def __init__(
        self,
        usecases: Iterable[str],
        source_factory: Callable[[], ModelSource],
        poll_seconds: float = 30.0,
        on_swap: Callable[[str, str | None, str], None] | None = None,
        cache: ServingCache | None = None,
        start_seconds: float | None = None,
        alias: str = CHAMPION,
    ) -> None:
        self.usecases = list(usecases)
        # The alias served (a rollout's store follows ``challenger``: a challenger whose alias
        # is gone is dropped, while a champion is kept through anything).
        self.alias = alias
        self._source_factory = source_factory
        self.source: ModelSource | None = None
        self.poll_seconds = poll_seconds
        self.models: dict[str, LoadedModel] = {}
        self.registry_ok = False
        self.registry_error: str | None = None
        self.last_poll: float | None = None
        self.errors: dict[str, str] = {}
        self.on_swap = on_swap
        self.cache = cache
        self.start_seconds = start_seconds
        # Use cases served from the cache, not yet confirmed by the registry: version.
        self.from_cache: dict[str, str] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._answered = threading.Event()  # the first registry round has answered or failed
        self._source_made = threading.Event()  # the source exists (or could not be made)
        self._lock = threading.Lock()  # one refresh at a time (poller and admin reload)
        self._cache_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def get(self, usecase: str) -> LoadedModel | None:
        return self.models.get(usecase)

    def _outage(self, reason: str) -> None:
        self.registry_ok = False
        self.load_cached()
        served = ", ".join(f"{uc} v{v}" for uc, v in sorted(self.from_cache.items()))
        self.registry_error = reason + (f"; serving cached champions: {served}" if served else "")
        log.warning("registry unreachable, serving the loaded models: %s", self.registry_error)

    def load_cached(self) -> dict[str, str]:
        """Serve the cached champion of every use case that has no model yet. Returns use case
        -> version loaded."""
        loaded: dict[str, str] = {}
        if self.cache is None:
            return loaded
        with self._cache_lock:
            for uc in self.usecases:
                if uc in self.models:
                    continue
                info = self.cache.champion(uc)
                if info is None:
                    continue
                try:
                    model = LoadedModel(uc, self.cache.load(uc, info.version), info)
                except Exception as exc:
                    self.errors[uc] = f"cached v{info.version} failed to load: {str(exc)[:200]}"
                    log.exception("loading cached %s v%s failed", uc, info.version)
                    continue
                if self.models.setdefault(uc, model) is not model:
                    continue  # the registry's answer came first
                self.from_cache[uc] = loaded[uc] = info.version
                self.errors.pop(uc, None)
                log.warning("%s: serving cached v%s (registry unreachable)", uc, info.version)
                if self.on_swap is not None:
                    self.on_swap(uc, None, info.version)
        return loaded

    def refresh(self) -> dict[str, str]:
        """Check every alias once; load and swap in what moved. Returns use case -> change."""
        changes: dict[str, str] = {}
        with self._lock:
            try:
                if self.source is None:
                    try:
                        self.source = self._source_factory()
                    finally:
                        self._source_made.set()
                source = self.source
                wanted = {uc: source.alias_version(uc, self.alias) for uc in self.usecases}
            except Exception as exc:
                self._outage(f"{type(exc).__name__}: {str(exc)[:200]}")
                self._answered.set()
                return changes
            self.registry_ok, self.registry_error = True, None
            self.last_poll = time.time()
            self._answered.set()
            for uc, info in wanted.items():
                if info is None:
                    current = self.models.get(uc)
                    if current is None:
                        self.errors[uc] = f"no {self.alias} in the registry"
                    elif self.alias != CHAMPION:
                        del self.models[uc]
                        changes[uc] = f"v{current.version} -> none"
                    continue
                self._swap_in(uc, info, source, changes)
        return changes

    def adopt(self, wanted: dict[str, VersionInfo]) -> dict[str, str]:
        """Serve exactly these versions (another worker's reload, ``serving.swap``), loaded
        from the serving cache that worker filled: no registry call when they are there."""
        changes: dict[str, str] = {}
        with self._lock:
            if self.source is None:
                try:
                    self.source = self._source_factory()
                finally:
                    self._source_made.set()
            for uc, info in wanted.items():
                if uc in self.usecases:
                    self._swap_in(uc, info, self.source, changes)
        return changes

    def _swap_in(
        self, uc: str, info: VersionInfo, source: ModelSource, changes: dict[str, str]
    ) -> None:
        """Load ``info``'s version of ``uc`` unless it is served already, and swap it in
        (``changes`` gets what moved)."""
        current = self.models.get(uc)
        if current is not None and current.version == info.version:
            self.from_cache.pop(uc, None)
            self._remember(uc, info)
            return
        try:
            loaded = LoadedModel(uc, source.load(uc, info.version), info)
        except Exception as exc:
            self.errors[uc] = f"v{info.version} failed to load: {str(exc)[:200]}"
            log.exception("loading %s v%s failed", uc, info.version)
            return
        self.models[uc] = loaded  # the swap: one assignment
        self.from_cache.pop(uc, None)
        self.errors.pop(uc, None)
        self._remember(uc, info)
        old = current.version if current else None
        changes[uc] = f"{'v' + old if old else 'none'} -> v{info.version}"
        log.info("%s: serving v%s (was %s)", uc, info.version, old or "none")
        if self.on_swap is not None:
            self.on_swap(uc, old, info.version)

    def _remember(self, uc: str, info: VersionInfo) -> None:
        if self.cache is None:
            return
        cached = self.cache.champion(uc)
        if cached is not None and cached.version == info.version and cached.tags == info.tags:
            return
        try:
            self.cache.remember(uc, info)
        except OSError as exc:  # a full or read-only disk must not stop serving
            log.warning("could not remember %s v%s in the serving cache: %s", uc, info.version, exc)

    def start(self) -> None:
        """Load what the registry has now, then watch it from a daemon thread.

        Waits for the registry's first answer at most ``start_seconds`` (None: as long as it
        takes; counted once the source exists: importing MLflow on a busy machine is not the
        registry being slow, and a source's own making is bounded, see
        :func:`probe_registry`); without one, the cached champions are served
        (``registry_error`` says why) while the thread keeps trying. Once the registry has
        answered, the start waits for its champions to load."""
        self._thread = threading.Thread(target=self._run, name="shopml-model-watch", daemon=True)
        self._thread.start()
        if self.start_seconds is None:
            self._answered.wait()
        else:
            self._source_made.wait(max(self.start_seconds, SOURCE_SECONDS))
        if not self._answered.wait(self.start_seconds):
            self._outage(f"no answer within {self.start_seconds:g} s at start-up (still trying)")
            return
        with self._lock:  # the registry answered: its first round's loads finish
            pass

    def _run(self) -> None:
        self.refresh()
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
