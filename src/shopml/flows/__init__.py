"""Prefect flows: the pipeline, retrain, monitor and ingest, and their deployments.

The flows are thin: they loop over the use cases and call the layers below (data, features,
lifecycle, online, runtime). Everything is importable without a Prefect server; running a flow
without ``PREFECT_API_URL`` uses Prefect's ephemeral mode.
"""

from shopml.flows._env import set_prefect_defaults

set_prefect_defaults()  # before Prefect is imported anywhere below

from shopml.flows.pipeline import ingest, monitor, pipeline, retrain  # noqa: E402
from shopml.flows.progress import listen  # noqa: E402
from shopml.flows.summary import PipelineSummary, UseCaseSummary  # noqa: E402

__all__ = [
    "PipelineSummary",
    "UseCaseSummary",
    "ingest",
    "listen",
    "monitor",
    "pipeline",
    "retrain",
]
