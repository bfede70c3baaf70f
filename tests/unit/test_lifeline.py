"""A ``shopml serve`` worker whose supervisor died while it was still starting exits instead of
serving orphaned (it would otherwise hold the port with nobody to stop it)."""

from __future__ import annotations

import os
import subprocess
import sys

from shopml.lifeline import SUPERVISOR_ENV


def test_a_worker_whose_supervisor_is_gone_exits_before_serving() -> None:
    code = "from shopml.api import serve_app; serve_app(); print('served')"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that is nobody's parent now
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, SUPERVISOR_ENV: str(gone.pid)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "served" not in proc.stdout
    assert "is gone before this worker started" in proc.stderr
