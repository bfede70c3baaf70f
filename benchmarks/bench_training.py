"""Train all eight use cases on the default simulated shop with the default tuning budget:
quality against the baseline and the simulator's oracle, and time per use case against the
10-minute goal. Then the same on the real samples (no oracle there: the baseline is the bar).

The peers here are the baseline and the oracle, scored on the same test window.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Result

GOAL_SECONDS = 600.0

# (metric, how the target reads, check(model, baseline, oracle) -> bool | None)
Check = Callable[[float, float, float], bool | None]


def _ratio_at_least(r: float) -> Check:
    return lambda m, b, o: None if not _ok(m, o) else m >= r * o


def _ratio_at_most(r: float) -> Check:
    return lambda m, b, o: None if not _ok(m, o) else m <= r * o


def _ok(*values: float) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


TARGETS: dict[str, tuple[str, str, Check]] = {
    "returns": ("auc", "AUC >= 0.97 x oracle", _ratio_at_least(0.97)),
    "delivery-time": ("mae", "MAE <= 1.10 x oracle", _ratio_at_most(1.10)),
    "clv": ("mae", "MAE <= 1.10 x oracle", _ratio_at_most(1.10)),
    "high-value": ("auc", "AUC >= 0.97 x oracle", _ratio_at_least(0.97)),
    "campaign": ("auc", "AUC >= 0.97 x oracle", _ratio_at_least(0.97)),
    "recommender": (
        "ndcg_at_10",
        "NDCG@10 >= 1.5 x popularity",
        lambda m, b, o: None if not _ok(m, b) else m >= 1.5 * b,
    ),
    "segments": (
        "silhouette",
        "beats RFM tertiles",
        lambda m, b, o: None if not _ok(m, b) else m > b,
    ),
    "pricing": (
        "revenue_uplift_true",
        ">= 3% revenue uplift, 0 violations",
        lambda m, b, o: None if not _ok(m) else m >= 0.03,
    ),
}


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return "n/a"
    return f"{f:.4g}"


def _train_all(home: Path, load: Callable[[Any], Any]) -> tuple[list[Any], float]:
    os.environ["SHOPML_HOME"] = str(home)
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.train import TrainConfig, train_usecase
    from shopml.settings import get_settings, reset_settings
    from shopml.usecases import get_usecases

    reset_settings()
    settings = get_settings()
    settings.ensure_home()
    with Warehouse(settings.warehouse) as wh:
        load(wh)
        results = []
        started = time.perf_counter()
        for uc in get_usecases().values():
            print(f"  training {uc.name}", flush=True)
            results.append(train_usecase(uc, wh, settings, TrainConfig()))
        total = time.perf_counter() - started
    return results, total


def _quality_rows(results: list[Any]) -> list[str]:
    rows = []
    for r in results:
        metric, target, check = TARGETS.get(r.usecase, (r.metric or "", "", lambda *a: None))
        m = r.metrics.get(metric)
        b = r.baseline.get(metric) if r.baseline else None
        o = (r.oracle or {}).get(metric)
        verdict = check(m, b, o) if m is not None else None
        ratio = ""
        if _ok(m, o) and o:
            ratio = f"{m / o:.3f}"
        if r.usecase == "recommender" and _ok(m, b) and b:
            ratio = f"{ratio} ({m / b:.2f} x popularity)".strip()
        mark = {True: "met", False: "missed", None: "n/a"}[verdict]
        if r.status in ("skipped", "failed"):
            rows.append(f"| `{r.usecase}` | {r.status}: {r.reason[:120]} | | | | | | |")
            continue
        rows.append(
            f"| `{r.usecase}` | {metric} | {_fmt(m)} | {_fmt(b)} | {_fmt(o)} | {ratio} | "
            f"{target}: **{mark}** | {r.seconds:.0f} |"
        )
    return rows


def _real_rows(name: str, results: list[Any]) -> list[str]:
    rows = []
    for r in results:
        if r.status in ("skipped", "failed"):
            rows.append(f"| {name} | `{r.usecase}` | {r.status}: {r.reason[:100]} | | | |")
            continue
        metric = r.metric or ""
        rows.append(
            f"| {name} | `{r.usecase}` | {metric} | {_fmt(r.metrics.get(metric))} | "
            f"{_fmt(r.baseline.get(metric))} | {r.seconds:.0f} |"
        )
    return rows


def run(quick: bool = False) -> Result:
    from shopml.data.simulator import SimConfig, simulate

    work = Path(tempfile.mkdtemp(prefix="shopml-bench-training-"))
    try:
        load_before = os.getloadavg()[0]
        customers = 2_000 if quick else SimConfig().customers
        print(f"simulating {customers:,} customers", flush=True)
        dataset = simulate(SimConfig(customers=customers))
        results, total = _train_all(work / "sim", dataset.load)
        lines = [
            f"Default simulated shop ({customers:,} customers, two years, seed 42), default "
            "tuning budget (8 trials or 45 s per use case), test window at the end of the data. "
            "Oracle = the simulator's true probabilities or expectations, scored the same way.",
            "",
            "| use case | metric | model | baseline | oracle | model / oracle | target | seconds |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |",
            *_quality_rows(results),
            "",
            f"All eight trained in **{total:.0f} s** (goal {GOAL_SECONDS:.0f} s: "
            f"{'met' if total <= GOAL_SECONDS else 'missed'}; ratio {total / GOAL_SECONDS:.2f}); "
            f"load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after "
            "(other work on the machine slows the times, not the metrics).",
        ]
        real: list[str] = []
        if not quick:
            real = _real_samples(work)
        if real:
            lines += [
                "",
                "Real samples (no oracle: the baseline is the bar):",
                "",
                "| data | use case | metric | model | baseline | seconds |",
                "| --- | --- | --- | ---: | ---: | ---: |",
                *real,
            ]
        figures = {
            "total_seconds": total,
            "results": [r.to_dict() for r in results],
        }
        return Result("training", "Training and quality", "\n".join(lines), figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _real_samples(work: Path) -> list[str]:
    from shopml.data.importers import IMPORTERS

    shared = Path(os.environ.get("SHOPML_SHARED_DATA_DIR", ROOT.parent / "shared" / "data"))
    samples = {
        "Online Retail II": (
            "online-retail",
            shared / "online_retail_ii" / "online_retail_II_2009_2010.csv.gz",
        ),
        "CDNOW": ("cdnow", shared / "cdnow" / "CDNOW_sample.txt"),
    }
    rows: list[str] = []
    for label, (kind, path) in samples.items():
        if not path.exists():
            rows.append(f"| {label} | | not found at {path} | | | |")
            continue
        print(f"importing {label}", flush=True)
        dataset = IMPORTERS[kind](path)
        results, _ = _train_all(work / kind, dataset.load)
        rows += _real_rows(label, results)
    return rows
