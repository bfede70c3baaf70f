"""Property-based fuzzing of the OpenAPI schema (schemathesis): no request, however malformed,
gets a 5xx, and every answer matches the documented schema's status codes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import free_port, wait_http
from tests.unit.serving.conftest import SERVED, build_served_home, serving_settings

KEY = "fuzz-key-0b9e"


@pytest.fixture(scope="session")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving unit tests' trained home (built once per session, whoever asks first)."""
    return build_served_home(tmp_path_factory)


@pytest.fixture(scope="module")
def live_url(served_home: Path) -> Any:
    import uvicorn

    from shopml.serving import create_app

    app = create_app(
        serving_settings(served_home, api_keys=[KEY], admin_keys=[KEY + "-admin"]), usecases=SERVED
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=120)
    while not server.started:
        time.sleep(0.05)
    yield url, app
    server.should_exit = True
    thread.join(timeout=30)


def test_fuzz_every_route_never_5xx(live_url: Any) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    url, app = live_url
    schema = schemathesis.openapi.from_dict(app.openapi())
    failures: list[str] = []
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 10

    def fuzz(operation: Any) -> None:
        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(case: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {KEY}"}
            response = case.call(base_url=url)
            if response.status_code >= 500:
                failures.append(
                    f"{operation.label}: {response.status_code} "
                    f"{response.text[:200]} for {case.body!r}"
                )

        run()

    for operation in operations:
        fuzz(operation)
    assert not failures, failures[:5]
