"""The FastAPI service for every use case: ``create_app()`` builds it from settings.

Routes are generated from the use cases; each use case's champion is loaded from the registry
at start and swapped in the background when the alias moves. This package imports no training,
orchestration or monitoring library (a test checks), so the serving image stays small.
"""

from shopml.serving.app import ServingConfigError, create_app

__all__ = ["ServingConfigError", "create_app"]
