"""The API as ``shopml serve`` runs it: the scoring service (:func:`shopml.serving.create_app`)
and, with ``SHOPML_SERVE_UI=true``, the control tower mounted at ``/ui`` with the same keys.

The tower sits above serving (it reads the registry and the monitoring store, and the service's
own metrics); serving never imports it, and this module imports it only when it is asked for,
so the scoring service alone stays as slim as before.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shopml.settings import Settings


def create_app(settings: Settings | None = None, **kwargs: Any) -> FastAPI:
    """The service (``kwargs`` go to :func:`shopml.serving.create_app`), with the control tower
    at ``/ui`` when ``settings.serve_ui``."""
    from shopml.serving.app import auth_from_settings
    from shopml.serving.app import create_app as create_service
    from shopml.settings import get_settings

    settings = settings or get_settings()
    app = create_service(settings, **kwargs)
    if settings.serve_ui:
        from shopml.ui import mount_ui
        from shopml.usecases import get_usecases

        served = app.state.shopml.models.usecases
        usecases = [uc for name, uc in get_usecases().items() if name in served]
        auth = auth_from_settings(settings, kwargs.get("in_process", False))
        mount_ui(app, settings, auth, app.state.shopml, usecases)
    return app


def serve_app() -> Any:
    """The service for a ``shopml serve`` worker: :func:`create_app` (the control
    tower too when ``SHOPML_SERVE_UI``), with the worker set to shut down if the supervising
    ``shopml serve`` process dies."""
    from shopml.lifeline import SUPERVISOR_ENV, exit_with_parent, log

    supervisor = os.environ.get(SUPERVISOR_ENV, "")
    if supervisor.isdigit():
        if int(supervisor) != os.getppid():
            # The supervisor died while this worker was still starting: nobody would stop it.
            log.warning("supervisor %s is gone before this worker started: exiting", supervisor)
            os._exit(0)
        exit_with_parent(int(supervisor))
    return create_app()
