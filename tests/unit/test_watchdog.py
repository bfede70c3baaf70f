"""The tests' watchdog (``tests.support.services.tie_to_this_process``): a server group a test
process started is stopped when that process dies without its teardown, and the watchdog ends
by itself when the group ends first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.support.services import group_alive

STARTER = """
import subprocess, sys, time
from tests.support.services import tie_to_this_process
proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                        start_new_session=True)
tie_to_this_process(proc)
print(proc.pid, flush=True)
time.sleep(600)
"""


def _wait_gone(pgid: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not group_alive(pgid)


def test_a_group_is_stopped_when_the_process_that_started_it_is_killed() -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert starter.stdout is not None
        server = int(starter.stdout.readline())
        assert group_alive(server)
        starter.kill()  # no teardown runs: SIGKILL
        starter.wait()
        assert _wait_gone(server), "the orphaned server group was left running"
    finally:
        if starter.poll() is None:
            starter.kill()


def test_the_watchdog_ends_with_the_group() -> None:
    from tests.support.services import tie_to_this_process

    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    before = set(_children())
    tie_to_this_process(proc)
    watchdogs = set(_children()) - before - {proc.pid}
    assert len(watchdogs) == 1
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait()
    (dog,) = watchdogs
    deadline = time.monotonic() + 30
    while _running(dog) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(dog), "the watchdog outlived its group"


def _children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        found.append(int(entry))
            except (OSError, IndexError):
                continue
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":
        os.waitpid(pid, os.WNOHANG)  # reap it: our own child
        return False
    return True
