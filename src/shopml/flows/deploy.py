"""Deployments for a Prefect server, and the worker that runs them.

``deploy_all`` registers four deployments in the ``shopml`` work pool (a process pool):

- ``pipeline/shopml``: the whole pipeline on the warehouse's current data, on a daily cron
  (``retrain_cron``): every use case is retrained when its data, config or code changed, and
  skipped (cached) otherwise;
- ``retrain/shopml``: one use case (parameter ``usecase``), on demand;
- ``monitor/shopml``: the monitoring report, on an hourly cron (``monitor_cron``);
- ``ingest/shopml``: triggered by each ``shopml.landing.file`` event: imports the file, then
  runs the pipeline on it.

Entrypoints are module paths (``shopml.flows.pipeline.pipeline``): a worker runs the shopml
installed in its environment, so there is no source to pull and nothing to build.

``run_worker`` starts Prefect's own process worker (``prefect worker start``) as a child and
the landing watcher in this process; if either stops, both stop, so a supervisor (systemd,
Kubernetes) sees one failure and restarts the whole thing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopml.flows.landing import EVENT, landing_for, watch
from shopml.flows.pipeline import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_TRIALS,
    ingest,
    monitor,
    pipeline,
    retrain,
)

log = logging.getLogger("shopml.worker")

DEPLOYMENT = "shopml"


class NoPrefectServer(RuntimeError):
    """Deployments need a Prefect server; ``PREFECT_API_URL`` is not set."""


def api_url() -> str:
    """The Prefect server's API URL, or a clear error when none is configured."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise NoPrefectServer(
            "no Prefect server configured: start one with `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (deployments need a server; "
            "`shopml run` does not)"
        )
    return str(url)


@dataclass
class DeployedFlow:
    name: str
    deployment_id: str
    schedule: str
    trigger: str


def ensure_work_pool(name: str) -> None:
    """Create the process work pool if it does not exist.

    Its concurrency limit is 1: the DuckDB warehouse takes one writer at a time, so a
    triggered ingest waits for a scheduled pipeline to finish instead of failing on the lock.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process", concurrency_limit=1))


def build_deployments(
    settings: Any,
    trials: int = DEFAULT_TRIALS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    usecases: list[str] | None = None,
) -> list[Any]:
    """The four RunnerDeployments, not yet applied (see :func:`deploy_all`). ``usecases``
    limits the pipeline, monitor and ingest deployments to those use cases (default: all)."""
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    common: dict[str, Any] = {
        "name": DEPLOYMENT,
        "work_pool_name": settings.work_pool,
        "tags": ["shopml"],
        "entrypoint_type": EntrypointType.MODULE_PATH,
        # This is sync code: never let Prefect guess from the thread's state (a running event
        # loop left by a caller turns to_deployment into a coroutine).
        "_sync": True,
    }
    budget = {"trials": trials, "timeout_s": timeout_s}
    only: dict[str, Any] = {"usecases": list(usecases)} if usecases else {}
    tz = settings.schedule_timezone
    return [
        pipeline.to_deployment(
            **common,
            parameters={"source": "warehouse", **budget, **only},
            schedules=[Cron(settings.retrain_cron, timezone=tz)],
            description="Daily: retrain, gate and promote every use case on the warehouse's "
            "current data (unchanged inputs are skipped), rescore, report.",
        ),
        retrain.to_deployment(
            **common,
            parameters=budget,
            description="On demand: retrain one use case (parameter usecase).",
        ),
        monitor.to_deployment(
            **common,
            parameters=only,
            # An empty monitor_cron leaves the schedule to another scheduler (the Kubernetes
            # CronJob in deploy/kubernetes starts runs of this deployment).
            schedules=[Cron(settings.monitor_cron, timezone=tz)]
            if settings.monitor_cron.strip()
            else [],
            description="Hourly: data freshness and quality, latest score distributions.",
        ),
        ingest.to_deployment(
            **common,
            # One flow run per landed file; ingest then runs the pipeline on the new data.
            triggers=[
                DeploymentEventTrigger(
                    name="landed file",
                    expect={EVENT},
                    match={"prefect.resource.id": "shopml.landing.*"},
                    parameters={
                        "path": "{{ event.payload.path }}",
                        "kind": "{{ event.payload.kind }}",
                        **budget,
                        **only,
                    },
                )
            ],
            description="Triggered by a file landing: import it, then run the pipeline.",
        ),
    ]


def deploy_all(
    settings: Any,
    trials: int = DEFAULT_TRIALS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    usecases: list[str] | None = None,
) -> list[DeployedFlow]:
    """Create or update the deployments on the configured Prefect server."""
    api_url()
    ensure_work_pool(settings.work_pool)
    out = []
    for dep in build_deployments(settings, trials, timeout_s, usecases):
        deployment_id = dep.apply(work_pool_name=settings.work_pool)
        schedule = ", ".join(getattr(s.schedule, "cron", "") for s in dep.schedules or []) or ""
        trigger = ", ".join(sorted(next(iter(t.expect), "") for t in dep.triggers or []))
        out.append(
            DeployedFlow(f"{dep.flow_name}/{dep.name}", str(deployment_id), schedule, trigger)
        )
    return out


def _worker_command(pool: str) -> list[str]:
    prefect = Path(sys.executable).with_name("prefect")
    base = [str(prefect)] if prefect.exists() else [sys.executable, "-m", "prefect"]
    return [*base, "worker", "start", "--pool", pool, "--type", "process"]


def pinned_environment(settings: Any) -> dict[str, str]:
    """This environment with shopml's paths made absolute.

    The process worker starts each flow run in a temporary folder, where a relative home
    (``.shopml``) or config file would point somewhere else; pinning them keeps flow runs on
    the same state as the worker's own directory.
    """
    env = os.environ.copy()
    env["SHOPML_HOME"] = str(Path(settings.home).resolve())
    env["SHOPML_WAREHOUSE_PATH"] = str(Path(settings.warehouse).resolve())
    env["SHOPML_LANDING_DIR"] = str(Path(settings.landing).resolve())
    config = Path(env.get("SHOPML_CONFIG", "shopml.toml"))
    if config.exists():
        env["SHOPML_CONFIG"] = str(config.resolve())
    return env


def run_worker(
    settings: Any, watch_landing: bool = True, stop: threading.Event | None = None
) -> int:
    """Run the process worker for the work pool and the landing watcher until stopped.

    Returns the worker's exit code. SIGINT and SIGTERM stop both cleanly.
    """
    api_url()
    stop = stop or threading.Event()
    ensure_work_pool(settings.work_pool)
    proc = subprocess.Popen(_worker_command(settings.work_pool), env=pinned_environment(settings))

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
    landing = landing_for(settings) if watch_landing else None
    if landing is not None:
        log.info(
            "watching %s for new files",
            getattr(landing, "root", None) or getattr(landing, "uri", None),
        )
    try:
        if landing is not None:
            watch(
                landing,
                settings.landing_poll_seconds,
                stop=lambda: stop.is_set() or proc.poll() is not None,
            )
        else:
            while not stop.is_set() and proc.poll() is None:
                stop.wait(0.5)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return int(proc.returncode or 0)
