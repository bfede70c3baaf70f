"""The monitoring report the monitor flow writes: data freshness and quality, the latest batch
scores' distributions, and the checks. Plain functions over the warehouse and files (the flow's
tasks only call them)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse


def atomic_json(value: Any, path: Path) -> Path:
    """Write JSON under a temporary name in the same folder, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(value, indent=2, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def drift_report_path(reports_dir: Path, usecase: str, when: datetime) -> Path:
    """Where the HTML drift report of the check of ``usecase`` at ``when`` is written."""
    return reports_dir / "monitoring" / usecase / f"drift-{when:%Y%m%dT%H%M%S}.html"


def data_quality(wh: Warehouse, now: datetime | None = None) -> dict[str, Any]:
    """Freshness and quality of the warehouse: rows, quarantined share and age per table."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    end = wh.data_end()
    tables = []
    for t in wh.info():
        if t.oracle:
            continue
        total = t.rows + t.quarantined
        tables.append(
            {
                "table": t.table,
                "rows": t.rows,
                "quarantined": t.quarantined,
                "quarantined_share": round(t.quarantined / total, 6) if total else 0.0,
                "version": t.version,
                "written_at": t.written_at.isoformat() if t.written_at else None,
                "hours_since_written": round((now - t.written_at).total_seconds() / 3600, 2)
                if t.written_at
                else None,
            }
        )
    return {
        "source": wh.get_meta("source"),
        "dataset_version": wh.dataset_version(),
        "data_end": end.isoformat(),
        "days_since_last_order": round((now - end).total_seconds() / 86400, 1),
        "tables": tables,
    }


def distribution(series: pd.Series) -> dict[str, Any]:
    """A column's distribution: numeric summary and histogram, or the top categories."""
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().sum() and numeric.notna().mean() > 0.5:
        values = numeric.dropna().to_numpy(dtype="float64")
        counts, edges = np.histogram(values, bins=10)
        return {
            "kind": "numeric",
            "count": int(series.size),
            "missing": int(numeric.isna().sum()),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
            "quantiles": {
                str(q): float(np.quantile(values, q))
                for q in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
            },
            "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        }
    values = series.dropna().astype(str)
    top = values.value_counts().head(10)
    return {
        "kind": "categorical",
        "count": int(series.size),
        "missing": int(series.isna().sum()),
        "distinct": int(values.nunique()),
        "top": {str(k): int(v) for k, v in top.items()},
    }


def score_distribution(usecase: str, path: Path) -> dict[str, Any] | None:
    """The distribution of each output column of a batch-scores file (None when missing)."""
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    skip = {"model_version", "as_of"}
    keys = [c for c in frame.columns if c.endswith("_id") or c == "week_start"]
    outputs = [c for c in frame.columns if c not in skip and c not in keys]
    return {
        "usecase": usecase,
        "rows": len(frame),
        "model_version": str(frame["model_version"].iloc[0]) if len(frame) else None,
        "as_of": str(frame["as_of"].iloc[0]) if len(frame) else None,
        "scored_at": datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(),
        "outputs": {c: distribution(frame[c]) for c in outputs},
    }


def write_report(
    folder: Path,
    quality: dict[str, Any],
    scores: dict[str, dict[str, Any] | None],
    checks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write the report under ``folder`` (timestamped, and ``latest.json``); returns where and
    a summary (scored, not scored, alerts, each check's status)."""
    now = datetime.now(UTC)
    checks = checks or []
    body: dict[str, Any] = {
        "generated_at": now.isoformat(),
        "data_quality": quality,
        "score_distributions": {k: v for k, v in scores.items() if v is not None},
        "not_scored": sorted(k for k, v in scores.items() if v is None),
        "checks": checks,
    }
    path = atomic_json(body, folder / f"monitoring-{now:%Y%m%dT%H%M%SZ}.json")
    atomic_json(body, folder / "latest.json")
    return {
        "path": str(path),
        "latest": str(folder / "latest.json"),
        "scored": sorted(body["score_distributions"]),
        "not_scored": body["not_scored"],
        "alerts": sorted(c["usecase"] for c in checks if c.get("status") == "alert"),
        "checked": {c["usecase"]: c.get("status") for c in checks},
    }
