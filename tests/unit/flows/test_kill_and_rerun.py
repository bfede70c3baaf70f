"""A pipeline killed in the middle of a training and started again finishes with nothing
duplicated or half-written: one model version per use case, no run left RUNNING, the same
warehouse tables, one online table per entity, no temporary files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shopml.data.warehouse import Warehouse
from shopml.flows import pipeline
from shopml.lifecycle.tracking import configure, model_name
from shopml.online import SQLiteOnlineStore
from shopml.settings import get_settings
from tests.support.toy import ToyUseCase

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


class HangingToy(ToyUseCase):
    """Hangs inside its MLflow run (while plotting) when SHOPML_TEST_HANG names a marker file."""

    name = "toy-slow"

    def plots(self, scorer: Any, data: Any, outdir: Any) -> list[Any]:
        marker = os.environ.get("SHOPML_TEST_HANG")
        if marker:
            Path(marker).write_text("training started")
            time.sleep(600)
        return []


SCRIPT = """
import shopml.usecases
from tests.support.toy import ToyUseCase
from tests.unit.flows.test_kill_and_rerun import HangingToy
usecases = {"toy": ToyUseCase(), "toy-slow": HangingToy()}
shopml.usecases.get_usecases = lambda: usecases
from shopml.flows import pipeline
pipeline(source="warehouse", trials=0, timeout_s=5)
"""


def snapshot(home: Path) -> dict[str, Any]:
    with Warehouse(home / "warehouse.duckdb", read_only=True) as wh:
        tables = {t.table: (t.rows, t.version) for t in wh.info()}
        derived = sorted(wh.table_names())
    return {"tables": tables, "all": derived}


def test_kill_midway_then_rerun_duplicates_nothing(
    loaded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(loaded)
    marker = tmp_path / "hanging"
    env = {
        **os.environ,
        "SHOPML_TEST_HANG": str(marker),
        "PYTHONPATH": str(ROOT),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, (
                proc.stderr.read().decode()[-3000:] if proc.stderr else "the pipeline exited early"
            )
            assert time.monotonic() < deadline, "the second use case never started training"
            time.sleep(0.2)
    finally:
        # The whole session: the flow process and the ephemeral Prefect server it started.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    client = configure(get_settings())
    runs = client.search_runs([client.get_experiment_by_name("shopml-toy-slow").experiment_id])
    assert [r.info.status for r in runs] == ["RUNNING"]  # killed inside its MLflow run

    import shopml.usecases

    usecases = {"toy": ToyUseCase(), "toy-slow": HangingToy()}
    monkeypatch.setattr(shopml.usecases, "get_usecases", lambda: usecases)
    summary = pipeline(source="warehouse", trials=0, timeout_s=5)
    rows = {u.usecase: u for u in summary.usecases}
    assert rows["toy"].cached  # finished before the kill: not redone
    assert rows["toy-slow"].status == "promoted" and not rows["toy-slow"].cached

    for name in ("toy", "toy-slow"):
        assert [
            str(v.version) for v in client.search_model_versions(f"name = '{model_name(name)}'")
        ] == ["1"]
        exp = client.get_experiment_by_name(f"shopml-{name}")
        statuses = sorted(r.info.status for r in client.search_runs([exp.experiment_id]))
        assert "RUNNING" not in statuses
        assert statuses.count("FINISHED") == 1
    assert snapshot(loaded) == before  # the warehouse is exactly as loaded
    store = SQLiteOnlineStore(loaded / "online.sqlite")
    names = [
        r[0]
        for r in store._con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'fs_%'"
        )
    ]
    assert len(names) == 3
    assert not [p for p in loaded.rglob("*.tmp")]
