"""Delivery time on the real Olist orders: shopml's model against Olist's own promise and a
constant median / 90th percentile, with paired bootstrap intervals.

The Olist sample in ``../shared/data/olist`` is imported as a user would (``shopml ingest
olist``: contracts, orphans quarantined, inconsistent fields repaired); every order the
warehouse keeps gets purchase-time features and history as of its purchase
(:func:`shopml.usecases.delivery_time.purchase_time_frame`); the model is trained on the
orders delivered before a cutoff and answers for the orders purchased after it
(:func:`~shopml.usecases.delivery_time.real_data_evaluation`). Every metric carries a 95%
bootstrap interval over test orders, and the model is compared with each baseline *paired*, on
the same resamples (:mod:`shopml.lifecycle.intervals`).

The real-data benchmark (``benchmarks/bench_real.py``) calls :func:`rows` and :func:`markdown`;
this module also runs on its own: ``python -m benchmarks.real_olist`` (writes
``benchmarks/results/real_olist.{json,md}`` and the README block ``bench:real_olist``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, Result, timer, update_readme

NAME = "real_olist"
COMMAND = "python -m benchmarks.real_olist"
METRICS = ("mae", "coverage_p90", "pinball_p50", "pinball_p90")
BASELINES = ("promise", "constant")


def default_folder() -> Path:
    """The shared Olist sample beside the project (or SHOPML_SHARED_DATA_DIR)."""
    import os

    configured = os.environ.get("SHOPML_SHARED_DATA_DIR")
    base = Path(configured) if configured else ROOT.parent / "shared" / "data"
    return base / "olist"


def evaluate(folder: Path | None = None, *, draws: int = 400, seed: int = 0) -> dict[str, Any]:
    """Import the Olist folder into a temporary warehouse, evaluate, bootstrap.

    Returns ``{"rows": [...], "counts": {...}, "cutoff": ..., "notes": {...}}``: one row per
    answer (model, promise, constant) and metric, with the estimate and its interval, and for
    the model the paired difference to each baseline.
    """
    from shopml.data.importers import read_olist
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.intervals import bootstrap
    from shopml.usecases.delivery_time import (
        DeliveryTime,
        purchase_time_frame,
        real_data_evaluation,
    )

    folder = Path(folder) if folder is not None else default_folder()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: the Olist sample is absent (put the shared data beside the project, "
            "or set SHOPML_SHARED_DATA_DIR)"
        )
    with (
        tempfile.TemporaryDirectory(prefix="shopml-olist-") as tmp,
        Warehouse(Path(tmp) / "olist.duckdb") as wh,
    ):
        report = read_olist(folder).load(wh)
        frame = purchase_time_frame(wh)
    ev = real_data_evaluation(frame, seed=seed)
    uc = DeliveryTime()
    boot = bootstrap(uc, ev.test, ev.answers, draws=draws, seed=seed)
    rows: list[dict[str, Any]] = []
    for name in ev.answers:
        for metric in METRICS:
            iv = boot.interval(name, metric)
            row: dict[str, Any] = {"answer": name, "metric": metric, **iv.to_dict()}
            if name == "model":
                for base in BASELINES:
                    d = boot.difference("model", base, metric)
                    row[f"vs_{base}"] = d.to_dict()
            rows.append(row)
    orders = report.table("orders")
    counts = {
        "orders_in_files": orders.rows_read,
        "orders_kept": orders.rows_kept,
        "orders_quarantined": orders.rows_quarantined,
        "orders_repaired": orders.rows_repaired,
        "delivered_kept": int(frame["delivery_days"].notna().sum()),
        "with_lines": int((frame["n_items"] > 0).sum()),
        "with_distance": int(frame["distance_km"].notna().sum()),
        **ev.rows,
    }
    return {
        "rows": rows,
        "counts": counts,
        "cutoff": ev.cutoff.isoformat(sep=" "),
        "notes": {k: v for k, v in ev.notes.items() if k != "importance"},
        "importance": dict(
            sorted(ev.notes.get("importance", {}).items(), key=lambda kv: -kv[1])[:6]
        ),
    }


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}"


def _iv(d: dict[str, Any], digits: int = 2) -> str:
    est, low, high = d.get("estimate"), d.get("low"), d.get("high")
    if low is None or high is None:
        return f"{_fmt(est, digits)} (no interval)"
    return f"{_fmt(est, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def markdown(result: dict[str, Any]) -> str:
    """The README table: each answer's metrics with 95% intervals, and the model's paired
    differences to each baseline, then the counts that bound what it can show."""
    c = result["counts"]
    by = {(r["answer"], r["metric"]): r for r in result["rows"]}
    lines = [
        f"Olist sample: {c['orders_in_files']:,} orders in the files, {c['orders_kept']:,} kept "
        f"(the others' customers are not in the sample: quarantined as orphans), "
        f"{c['delivered_kept']:,} delivered. Cutoff {result['cutoff'][:16]}: the model trains "
        f"on {c['train']} orders delivered before it (last {c['valid']} of them calibrate the "
        f"90th percentile) and answers for the **{c['test']} orders** purchased after it. Of "
        f"those, {c['test_with_seller']} have their order lines (seller known) and "
        f"{c['test_with_distance']} a customer-seller distance.",
        "",
        "| answer | MAE (days) | P90 coverage | pinball p50 | pinball p90 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    names = {
        "model": "shopml (purchase-time features)",
        "promise": "Olist's promise (`order_estimated_delivery_date`)",
        "constant": "constant training median / P90",
    }
    for answer, label in names.items():
        cells = [
            _iv(by[(answer, "mae")]),
            _iv(by[(answer, "coverage_p90")], 3),
            _iv(by[(answer, "pinball_p50")]),
            _iv(by[(answer, "pinball_p90")]),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model minus | MAE | pinball p50 | pinball p90 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for base in BASELINES:
        cells = [_iv(by[("model", m)][f"vs_{base}"]) for m in ("mae", "pinball_p50", "pinball_p90")]
        lines.append(f"| {names[base]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Estimates with 95% bootstrap intervals over test orders (paired for the differences: "
        "negative means the model's error is lower). Top features by gain: "
        + ", ".join(f"{k} {v:.0%}" for k, v in result["importance"].items())
        + ".",
    ]
    return "\n".join(lines)


def run(quick: bool = False) -> Result:
    """The benchmark as a :class:`~benchmarks.common.Result` (``quick``: fewer draws)."""
    with timer() as elapsed:
        result = evaluate(draws=100 if quick else 400)
    result["seconds"] = round(elapsed(), 1)
    return Result(NAME, "Delivery time on the real Olist orders", markdown(result), result)


def save(result: Result) -> None:
    """Write results/real_olist.{json,md} and the README block, naming this module's command."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    block = (
        f"{result.markdown.strip()}\n\n"
        f"_Measured {result.measured_at} on {result.machine}; `{COMMAND}` reproduces it._"
    )
    (RESULTS / f"{NAME}.md").write_text(block + "\n")
    update_readme(NAME, block)


def rows(folder: Path | None = None, draws: int = 400) -> list[dict[str, Any]]:
    """The result rows alone, for a caller that lays out its own table (``bench_real``)."""
    return list(evaluate(folder, draws=draws)["rows"])


if __name__ == "__main__":
    out = run(quick="--quick" in sys.argv[1:])
    if "--quick" not in sys.argv[1:]:
        save(out)
    print(out.markdown)
