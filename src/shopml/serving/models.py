"""The model store: each use case's champion, loaded at start and swapped when the alias moves.

A background thread polls the registry every ``registry_poll_seconds``. When a champion alias
points somewhere new, the new version is downloaded and unpickled in that thread, then put in
place with one reference assignment: a request holds the :class:`LoadedModel` it started with,
so no request sees half a swap and none fails during it. When the registry cannot be reached
the store keeps what it has and reports the outage (``/ready``).

Only MLflow's client is used (no pyfunc loading, no lifecycle code): the scorer pickle is read
straight from the model version's artifacts.
"""

from __future__ import annotations

import logging
import os
import shutil
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

    def __init__(self, settings: Settings) -> None:
        # A registry outage must fail fast instead of retrying for minutes: the poller's next
        # round is the retry.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow import MlflowClient

        if settings.s3_endpoint_url:
            os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint_url)
        self.tracking_uri = settings.tracking_uri
        self.registry_uri = settings.mlflow_registry_uri or self.tracking_uri
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        self.cache = settings.home / "serving-cache"

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

        target = self.cache / usecase / str(version)
        scorer = target / "artifacts" / "scorer.pkl"
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
    """Champions by use case, refreshed in the background when their alias moves."""

    def __init__(
        self,
        usecases: Iterable[str],
        source_factory: Callable[[], ModelSource],
        poll_seconds: float = 30.0,
        on_swap: Callable[[str, str | None, str], None] | None = None,
    ) -> None:
        self.usecases = list(usecases)
        self._source_factory = source_factory
        self.source: ModelSource | None = None
        self.poll_seconds = poll_seconds
        self.models: dict[str, LoadedModel] = {}
        self.registry_ok = False
        self.registry_error: str | None = None
        self.last_poll: float | None = None
        self.errors: dict[str, str] = {}
        self.on_swap = on_swap
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one refresh at a time (poller and admin reload)
        self._thread: threading.Thread | None = None

    def get(self, usecase: str) -> LoadedModel | None:
        return self.models.get(usecase)

    def refresh(self) -> dict[str, str]:
        """Check every alias once; load and swap in what moved. Returns use case -> change."""
        changes: dict[str, str] = {}
        with self._lock:
            try:
                if self.source is None:
                    self.source = self._source_factory()
                source = self.source
                wanted = {uc: source.alias_version(uc, CHAMPION) for uc in self.usecases}
            except Exception as exc:
                self.registry_ok = False
                self.registry_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.warning(
                    "registry unreachable, serving the loaded models: %s", self.registry_error
                )
                return changes
            self.registry_ok, self.registry_error = True, None
            self.last_poll = time.time()
            for uc, info in wanted.items():
                current = self.models.get(uc)
                if info is None:
                    if current is None:
                        self.errors[uc] = "no champion in the registry"
                    continue
                if current is not None and current.version == info.version:
                    continue
                try:
                    loaded = LoadedModel(uc, source.load(uc, info.version), info)
                except Exception as exc:
                    self.errors[uc] = f"v{info.version} failed to load: {str(exc)[:200]}"
                    log.exception("loading %s v%s failed", uc, info.version)
                    continue
                self.models[uc] = loaded  # the swap: one assignment
                self.errors.pop(uc, None)
                old = current.version if current else None
                changes[uc] = f"{'v' + old if old else 'none'} -> v{info.version}"
                log.info("%s: serving v%s (was %s)", uc, info.version, old or "none")
                if self.on_swap is not None:
                    self.on_swap(uc, old, info.version)
        return changes

    def start(self) -> None:
        """Load what the registry has now, then watch it from a daemon thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="shopml-model-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
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
