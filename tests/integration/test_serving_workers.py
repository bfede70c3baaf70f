"""`POST /v1/admin/reload` under `shopml serve --workers 2` reaches every worker: once it has
answered, every request, whichever worker takes it, is answered by the reloaded version (a
promotion, then an emergency rollback), with the registry poll far away (an hour)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_serving_live import ADMIN, call, serve
from tests.unit.serving.conftest import (
    a_customer,
    build_served_home,
    registry_client,
    serving_settings,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="session")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving unit tests' trained home (built once per session, whoever asks first)."""
    return build_served_home(tmp_path_factory)


def test_a_reload_reaches_every_worker(served_home: Path, tmp_path: Path) -> None:
    import mlflow

    uri = serving_settings(served_home).tracking_uri
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # a new version's source is resolved through it
    try:
        check_reloads(registry_client(served_home), served_home, tmp_path)
    finally:
        mlflow.set_tracking_uri(previous)


def check_reloads(mlc: Any, served_home: Path, tmp_path: Path) -> None:
    name = "shopml-segments"
    v1 = mlc.get_model_version_by_alias(name, "champion")
    cid = a_customer(served_home)
    # Only a reload moves a worker: the background poll is an hour away.
    env = {"SHOPML_REGISTRY_POLL_SECONDS": "3600"}
    with serve(served_home, tmp_path, ["--workers", "2"], env) as s:
        url = f"{s.url}/v1/segments/predict"

        def answers() -> list[tuple[str, str]]:
            """(version, worker) of concurrent requests on fresh connections, in bounded rounds
            until both workers have answered (a request id's first 16 digits are its
            process's)."""
            got: list[tuple[str, str]] = []
            with ThreadPoolExecutor(8) as pool:
                for _ in range(15):
                    for status, _, raw in pool.map(
                        lambda _: call(url, {"customer_id": cid}), range(40)
                    ):
                        assert status == 200, raw[:300]
                        body = json.loads(raw)
                        got.append((body["model_version"], body["request_id"][:16]))
                    if len({w for _, w in got}) == 2:
                        break
            assert len({w for _, w in got}) == 2, "only one worker answered"
            return got

        def reload() -> dict[str, object]:
            status, _, raw = call(f"{s.url}/v1/admin/reload", {}, key=ADMIN)
            assert status == 200, raw[:300]
            reply: dict[str, object] = json.loads(raw)
            return reply

        assert {v for v, _ in answers()} == {str(v1.version)}
        v2 = mlc.create_model_version(name, v1.source, run_id=v1.run_id)
        try:
            mlc.set_registered_model_alias(name, "champion", str(v2.version))
            reply = reload()
            assert reply["models"]["segments"] == str(v2.version), reply  # type: ignore[index]
            promoted = answers()
            assert {v for v, _ in promoted} == {str(v2.version)}, promoted
            assert reply["workers"] == "all", reply
        finally:
            # An emergency rollback: the alias back, one reload, every worker on v1 again.
            mlc.set_registered_model_alias(name, "champion", str(v1.version))
        reload()
        rolled_back = answers()
        assert {v for v, _ in rolled_back} == {str(v1.version)}, rolled_back
