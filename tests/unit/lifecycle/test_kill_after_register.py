"""A training killed with SIGKILL just after its model version was created: every later
training, forced or not, cleans up the version left without a verdict and the run left
RUNNING (issue 13)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shopml.data.warehouse import Warehouse
from shopml.lifecycle.tracking import configure, experiment_name, model_name
from shopml.lifecycle.train import TrainConfig, train_usecase
from shopml.settings import get_settings
from tests.support.toy import ToyUseCase, toy_warehouse

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = """
import sys
from shopml.data.warehouse import Warehouse
from shopml.lifecycle.train import TrainConfig, train_usecase
from shopml.settings import get_settings
from tests.support.toy import ToyUseCase
with Warehouse(sys.argv[1]) as wh:
    train_usecase(ToyUseCase(), wh, get_settings(), TrainConfig(trials=0, force=True))
"""


def kill_just_after_registering(warehouse: Path, home: Path, marker: Path) -> None:
    """Run a forced training in a subprocess and SIGKILL it once its version exists."""
    env = {
        **os.environ,
        "SHOPML_HOME": str(home),
        "SHOPML_TEST_PAUSE_AT": "registered",
        "SHOPML_TEST_PAUSE_FILE": str(marker),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(warehouse)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
            assert time.monotonic() < deadline, "the training never reached its version"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    marker.unlink()


def state(home: Path) -> tuple[dict[str, str | None], list[str]]:
    """Versions with their verdict, and the statuses of the training runs."""
    client = configure(get_settings())
    versions = {
        str(v.version): (v.tags or {}).get("shopml.gate.verdict")
        for v in client.search_model_versions(f"name = '{model_name('toy')}'")
    }
    exp = client.get_experiment_by_name(experiment_name("toy"))
    runs = [r.info.status for r in client.search_runs([exp.experiment_id])]
    return versions, runs


def test_reruns_clean_up_what_a_kill_9_after_registering_left(tmp_path: Path) -> None:
    home = Path(os.environ["SHOPML_HOME"])
    warehouse = tmp_path / "toy.duckdb"
    toy_warehouse(warehouse).close()
    marker = tmp_path / "registered"

    kill_just_after_registering(warehouse, home, marker)
    versions, runs = state(home)
    assert versions == {"1": None} and runs == ["RUNNING"]  # what issue 13 found

    # A forced rerun (`shopml run --force`) cleans up before training again.
    with Warehouse(warehouse) as wh:
        forced = train_usecase(ToyUseCase(), wh, get_settings(), TrainConfig(trials=0, force=True))
    assert forced.status == "promoted" and forced.version == "2"
    assert any("deleted v1" in line for line in forced.cleaned)
    versions, runs = state(home)
    assert versions == {"2": "promoted"} and sorted(runs) == ["FAILED", "FINISHED"]

    # Killed again; this time the rerun is not forced and an older complete version with the
    # same training key exists: the unfinished one is still cleaned up, the older one reused.
    kill_just_after_registering(warehouse, home, marker)
    assert state(home)[0] == {"2": "promoted", "3": None}
    with Warehouse(warehouse) as wh:
        reused = train_usecase(ToyUseCase(), wh, get_settings(), TrainConfig(trials=0))
    assert reused.status == "unchanged" and reused.version == "2"
    assert any("deleted v3" in line for line in reused.cleaned)
    versions, runs = state(home)
    assert versions == {"2": "promoted"} and "RUNNING" not in runs
    assert sorted(runs) == ["FAILED", "FAILED", "FINISHED"]
