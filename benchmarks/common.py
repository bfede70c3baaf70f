"""Shared plumbing for benchmarks: timing, results files, and the README's results block.

Each benchmark module ``benchmarks/bench_<name>.py`` defines ``run(quick=False) -> Result``.
``python -m benchmarks [NAME ...] [--quick]`` runs them, writes
``benchmarks/results/<name>.json`` and ``.md``, and rewrites the block between
``<!-- bench:<name> -->`` and ``<!-- /bench:<name> -->`` in whichever page holds it (the README
or a page of the documentation site under ``docs/``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def DOC_FILES() -> list[Path]:
    """The README and every page of the documentation site: where result blocks live."""
    return [README, *sorted(DOCS.rglob("*.md"))]


@dataclass
class Result:
    """What a benchmark measured: a markdown table for people, figures for scripts."""

    name: str
    title: str
    markdown: str
    figures: dict[str, Any] = field(default_factory=dict)
    # A short form for the README (block ``<!-- bench:<name>:summary -->``), when the full
    # table lives in the docs.
    summary: str = ""
    measured_at: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    )
    machine: str = field(
        default_factory=lambda: (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        )
    )


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as elapsed: ...`` then ``elapsed()`` gives seconds (frozen at exit)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls: the least disturbed run on a shared machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def best_of_each(fns: dict[str, Callable[[], object]], repeat: int = 3) -> dict[str, float]:
    """Best wall time of each function, calling them in turn ``repeat`` times: all are sampled
    over the same minutes of a shared machine's load, not one in a quiet spell and another in a
    busy one."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: min(ts) for name, ts in times.items()}


def save(result: Result) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{result.name}.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    block = (
        f"{result.markdown.strip()}\n\n"
        f"_Measured {result.measured_at} on {result.machine}; "
        f"`python -m benchmarks {result.name}` reproduces it._"
    )
    (RESULTS / f"{result.name}.md").write_text(block + "\n")
    update_readme(result.name, block)
    if result.summary:
        again = f"`python -m benchmarks {result.name}` reproduces it"
        short = f"{result.summary.strip()}\n\n_Measured {result.measured_at}; {again}._"
        update_readme(f"{result.name}:summary", short)


def update_readme(name: str, block: str, readme: Path | None = None) -> bool:
    """Replace the block for ``name`` in ``readme``, or else in whichever of the README and the
    docs pages holds its markers; returns False when no file has them."""
    pattern = re.compile(
        rf"(<!-- bench:{re.escape(name)} -->)\n?.*?\n?(<!-- /bench:{re.escape(name)} -->)", re.S
    )
    for path in [readme] if readme is not None else DOC_FILES():
        if not path.exists():
            continue
        text = path.read_text()
        if pattern.search(text):
            path.write_text(pattern.sub(lambda m: f"{m.group(1)}\n{block}\n{m.group(2)}", text))
            return True
    return False
