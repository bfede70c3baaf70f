"""Progress from tasks to whoever started the flow in this process (``shopml run``'s bar).

Flow parameters must be serialisable, so a callback cannot travel as one; tasks report to a
process-wide listener instead. Runs on a worker have no listener and report to the log only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, float | None], None]

_lock = threading.Lock()
_listeners: list[Listener] = []


@contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Receive ``(stage, fraction or None)`` from flows run in this process meanwhile."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def report(stage: str, fraction: float | None = None) -> None:
    """Tell the listeners (if any) that ``stage`` is under way at ``fraction`` of the flow
    (None: the fraction has not moved, only the stage's detail)."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(stage, fraction)
