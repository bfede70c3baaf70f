"""The control tower: one page for the state of every model, and the admin actions on them.

``shopml ui`` serves it on its own; ``SHOPML_SERVE_UI=true`` mounts it in the API at ``/ui``.
It reads the registry, the monitoring store and the prediction log through their public
functions, and acts through the functions the CLI calls (``shopml promote``, ``shopml
rollback``, the monitor's retrain). Importing it loads no training or orchestration library.
"""

from shopml.ui.app import create_ui_app, mount_ui, standalone_app

__all__ = ["create_ui_app", "mount_ui", "standalone_app"]
