"""Environment defaults Prefect must see before it is imported (it reads them at import)."""

from __future__ import annotations

import os

# Without a network, Prefect's telemetry logs errors; the ephemeral server needs more than the
# default 20 s to start on a loaded 2-core machine. Only defaults: the user's values win.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "OPENBLAS_NUM_THREADS": "1",
}


def set_prefect_defaults() -> None:
    """Set shopml's Prefect environment defaults where the user has not set them."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
