"""schemathesis against the service's own OpenAPI document, every check on (``--checks all``:
no server error, status codes, content types, headers and bodies as documented, schema-valid
requests accepted, schema-violating ones refused, auth not ignored, unsupported methods
refused), positive and negative data, a fixed seed, thousands of requests: the document says
exactly what the service takes and answers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import free_port, wait_http
from tests.unit.serving.conftest import SERVED, build_served_home, serving_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

KEY, ADMIN = "fuzz-key-0b9e", "fuzz-admin-41c7"
SEED = 20261204
EXAMPLES = 500  # per operation and mode: with the coverage phase, over 3,000 requests
ST = Path(sys.executable).parent / "st"


@pytest.fixture(scope="session")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving unit tests' trained home (built once per session, whoever asks first)."""
    return build_served_home(tmp_path_factory)


class Counted:
    """ASGI wrapper: every status the application answered, counted."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: Counter[int] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.statuses[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counted)


@pytest.fixture(scope="module")
def live(served_home: Path) -> Iterator[tuple[str, Counted]]:
    """The service on a loopback port (in this process, a server thread) over the trained
    home, with a scoring and an admin key."""
    import uvicorn

    from shopml.serving import create_app

    app = Counted(
        create_app(
            serving_settings(served_home, api_keys=[KEY], admin_keys=[ADMIN]), usecases=SERVED
        )
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=180)
    deadline = time.monotonic() + 180
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    yield url, app
    server.should_exit = True
    thread.join(timeout=60)


def test_schemathesis_every_check_finds_nothing(live: tuple[str, Counted], tmp_path: Path) -> None:
    url, counted = live
    report = tmp_path / "schemathesis.json"
    before = counted.statuses.copy()
    started = time.monotonic()
    run = subprocess.run(
        [
            str(ST),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--seed",
            str(SEED),
            "--max-examples",
            str(EXAMPLES),
            "--workers",
            "1",
            "--header",
            f"Authorization: Bearer {ADMIN}",
            "--request-timeout",
            "120",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            "--no-color",
        ],
        cwd=tmp_path,  # schemathesis keeps its state in the working directory
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    seconds = time.monotonic() - started
    assert report.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(report.read_text())
    answered = counted.statuses - before
    requests = sum(answered.values())
    server_errors = sum(n for status, n in answered.items() if status >= 500)
    print(
        f"schemathesis {result['schemathesis_version']}, seed {SEED}: "
        f"{result['test_cases']['generated']} test cases, {requests} requests answered in "
        f"{seconds:.0f} s; statuses {dict(sorted(answered.items()))}; "
        f"failures {len(result['failures'])}, errors {len(result['errors'])}"
    )
    assert result["failures"] == [] and result["errors"] == [], run.stdout[-8000:]
    assert result["operations"]["tested"] == result["operations"]["total"] >= 10
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    assert server_errors == 0, answered
    assert requests >= 3_000, answered
    # Both kinds of data reached the service: answers and refusals.
    assert answered[200] > 500 and answered[422] > 500, answered
