"""MLflow set-up from settings: the same code for the embedded store (SQLite and local files),
a PostgreSQL backend store, an S3 artifact store and a remote tracking server."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from shopml.settings import Settings


# The Prefect flow run that made an MLflow run (set by the flows; absent for `shopml train`).
FLOW_RUN_TAG = "shopml.prefect.flow_run_id"


def model_name(usecase: str) -> str:
    """The registered model's name for a use case."""
    return f"shopml-{usecase}"


def experiment_name(usecase: str, purpose: str | None = None) -> str:
    """``shopml-<usecase>`` for trainings, ``shopml-<usecase>-<purpose>`` for other work
    (``backtest``), which must never mix with the runs behind registered models."""
    return f"shopml-{usecase}" + (f"-{purpose}" if purpose else "")


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured stores and return a client for them."""
    import mlflow
    from mlflow import MlflowClient

    if settings.s3_endpoint_url:
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    registry = settings.mlflow_registry_uri or uri
    mlflow.set_registry_uri(registry)
    return MlflowClient(tracking_uri=uri, registry_uri=registry)


def _uses_local_artifacts(settings: Settings) -> bool:
    # A tracking server decides where artifacts go unless a root is configured explicitly.
    remote = settings.tracking_uri.startswith(("http://", "https://", "databricks"))
    return settings.mlflow_artifact_root is not None or not remote


def ensure_experiment(
    client: MlflowClient, settings: Settings, usecase: str, purpose: str | None = None
) -> str:
    """The experiment id for a use case (and purpose), created on first use."""
    name = experiment_name(usecase, purpose)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return str(exp.experiment_id)
    location = (
        f"{settings.artifact_root.rstrip('/')}/{usecase}" + (f"-{purpose}" if purpose else "")
        if _uses_local_artifacts(settings)
        else None
    )
    return str(
        client.create_experiment(name, artifact_location=location, tags={"shopml.usecase": usecase})
    )


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit the code runs from ('unknown' outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def register_scorer(settings: Settings, usecase: str, scorer: Any, example: Any) -> str:
    """Log ``scorer`` as a pyfunc model in the use case's experiment and register it as a new
    version of the use case's model, outside training (a hand-made challenger, a benchmark's
    model); returns the version. ``example``: a few input rows (the signature)."""
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    from shopml.runtime.pyfunc import SCORER_ARTIFACT, ShopmlModel, write_scorer

    client = configure(settings)
    experiment = ensure_experiment(client, settings, usecase)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=experiment):
        path = write_scorer(scorer, Path(tmp) / "scorer.pkl")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ShopmlModel(),
            artifacts={SCORER_ARTIFACT: str(path)},
            signature=infer_signature(example, scorer.predict_frame(example)),
            pip_requirements=["lightgbm", "pandas"],
        )
    return str(mlflow.register_model(info.model_uri, model_name(usecase)).version)
