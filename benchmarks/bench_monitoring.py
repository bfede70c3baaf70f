"""Monitoring one use case over 1M logged predictions: shopml's check beside Evidently's own time.

Set-up (not timed): a small ShopSim shop in a temporary home; one use case trained through the
lifecycle (``TrainConfig(trials=0)``), which logs its training reference with the model; then
1,000,000 prediction-log rows for its champion, written with the service's own row format
(:func:`shopml.serving.predlog._row`) and writer into ``<home>/monitoring.sqlite``. The logged
rows are rows of the training reference drawn with replacement, with a real shift (half a
standard deviation) added to four of the use case's watched numeric features, scored by the
champion's own scorer; their timestamps are spread over the 7 days before the check's ``now``.

Timed, in the same run:

- shopml: ``check_usecase(..., act=False)`` (what ``shopml monitor --dry-run`` does for one use
  case: count the window, sample it, Evidently drift against the reference, the delayed-label
  performance window, the policy, the stored metrics, the HTML report and workspace snapshot).
  The first check runs cold (the reference downloaded from MLflow, Evidently imported); two
  more follow. Its pieces are timed by wrapping the functions it calls.
- Evidently alone on the same data: all rows of the window decoded into one DataFrame (the cost
  of getting the data out of the log, timed apart), then ``Report([DataDriftPreset(columns=
  ...)])`` run on the full current frame against the same reference and the same columns, in a
  child process with a time limit, its peak memory measured.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import ROOT, Result

# The use case: returns has 36 input features (delivery-time 26, the others more or fewer; see
# the result). BENCH_MONITORING_USECASE picks another for a comparison run.
USECASE = os.environ.get("BENCH_MONITORING_USECASE", "returns")
SEED = 7
WINDOW_DAYS = 7
SHIFTED = 4  # watched numeric features that get a real shift
SHIFT_STD = 0.5  # the shift, in standard deviations of the reference
GOAL_SECONDS = 60.0
WRITE_BATCH = 50_000


def _uptime() -> str:
    try:
        done = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _rss_mb() -> float:
    """This process's peak resident memory so far (MB; Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- set-up ------------------------------------------------------------------------------------
def _settings(home: Path) -> Any:
    from shopml.settings import Settings

    # Everything under the temporary home, whatever the environment says.
    return Settings(
        home=home,
        warehouse_path=home / "warehouse.duckdb",
        monitoring_store_uri=None,
        mlflow_tracking_uri=None,
        mlflow_artifact_root=None,
        monitor_policy={},
        alert_webhook_url=None,
        monitor_reports=True,
    )


def _shop_and_model(home: Path, customers: int) -> tuple[Any, Any, Any, Any, datetime]:
    """Simulate the shop, train the use case; returns (uc, warehouse, settings, scorer, now)."""
    from shopml.data.simulator import SimConfig, simulate
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.tracking import configure, model_name
    from shopml.lifecycle.train import TrainConfig, train_usecase
    from shopml.runtime.pyfunc import load_scorer
    from shopml.usecases import get_usecase

    settings = _settings(home)
    wh = Warehouse(settings.warehouse)
    simulate(SimConfig(customers=customers, days=730, seed=SEED)).load(wh)
    uc = get_usecase(USECASE)
    trained = train_usecase(uc, wh, settings, TrainConfig(trials=0))
    if trained.status != "promoted":
        raise RuntimeError(f"{USECASE} did not become champion: {trained.status} {trained.reason}")
    configure(settings)
    scorer = load_scorer(f"models:/{model_name(uc.name)}@champion")
    end = wh.con.execute("SELECT max(purchased_at) FROM orders").fetchone()[0]  # type: ignore[index]
    now = datetime(end.year, end.month, end.day) + timedelta(days=1)  # naive UTC, as the CLI
    return uc, wh, settings, scorer, now


def _shift_columns(uc: Any, reference: pd.DataFrame, features: list[str]) -> list[str]:
    """The first watched features that are numeric (not codes) and vary in the reference."""
    from shopml.monitoring.drift import categorical_columns

    watched = [c for c in uc.monitoring.features if c in features and c in reference.columns]
    cats = categorical_columns(reference, watched)
    numeric = [c for c in watched if c not in cats and float(reference[c].std()) > 0]
    return numeric[:SHIFTED]


def _write_log(
    home: Path,
    uc: Any,
    scorer: Any,
    version: str,
    reference: pd.DataFrame,
    rows: int,
    now: datetime,
) -> dict[str, Any]:
    """``rows`` prediction-log rows for the champion, in the service's exact format."""
    from shopml.serving.predlog import SQLiteLogWriter, _row

    rng = np.random.default_rng(SEED)
    frame = reference.iloc[rng.integers(0, len(reference), rows)].reset_index(drop=True)
    shifted = _shift_columns(uc, reference, scorer.features)
    shifts = {}
    for c in shifted:
        delta = SHIFT_STD * float(reference[c].std())
        frame[c] = pd.to_numeric(frame[c], errors="coerce") + delta
        shifts[c] = delta
    x = scorer.to_matrix(frame)
    out = np.asarray(scorer.predict_matrix(x))
    out2 = out.reshape(-1, 1) if out.ndim == 1 else out
    key = uc.entity + "_id" if f"{uc.entity}_id" in frame.columns else str(frame.columns[0])
    ids = frame[key].astype(str).tolist()
    end = now.replace(tzinfo=UTC).timestamp()
    stamps = np.sort(rng.uniform(end - WINDOW_DAYS * 86400, end, rows))
    prefix = os.urandom(8).hex()
    names = list(scorer.features)
    outputs = list(scorer.outputs)
    writer = SQLiteLogWriter(home / "monitoring.sqlite")
    started = time.perf_counter()
    try:
        for lo in range(0, rows, WRITE_BATCH):
            batch = []
            for i in range(lo, min(lo + WRITE_BATCH, rows)):
                pred = {
                    o: (None if math.isnan(v) else v)
                    for o, v in zip(outputs, out2[i].tolist(), strict=False)
                }
                rec = (
                    f"{prefix}{i + 1:016x}",
                    float(stamps[i]),
                    uc.name,
                    version,
                    key,
                    ids[i],
                    names,
                    x[i],
                    pred,
                )
                batch.append(_row(rec))
            writer.write(batch)
    finally:
        writer.close()
    return {
        "rows": rows,
        "shifted": shifts,
        "entity_key": key,
        "seconds": time.perf_counter() - started,
        "db_mb": (home / "monitoring.sqlite").stat().st_size / 1e6,
    }


# -- timing shopml's check -------------------------------------------------------------------
@contextlib.contextmanager
def _probes() -> Iterator[dict[str, float]]:
    """Time the pieces ``check_usecase`` calls (the outermost call only, when they nest)."""
    from shopml.monitoring import monitor
    from shopml.monitoring.store import MonitoringStore

    times: dict[str, float] = {}
    depth = [0]

    def wrap(fn: Callable[..., Any], label: Callable[..., str]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                name = label(*args, **kwargs)
                times[name] = times.get(name, 0.0) + time.perf_counter() - t

        return timed

    def window_label(*args: Any, **kwargs: Any) -> str:
        if kwargs.get("sample") is not None:
            return "read the drift window (sample)"
        if kwargs.get("with_features", True) is False:
            return "read the labelled and look-back windows (outputs only)"
        return "read a window"

    patches = [
        (monitor, "load_champion", lambda *a, **k: "champion and reference from MLflow"),
        (MonitoringStore, "count_predictions", lambda *a, **k: "count the window"),
        (MonitoringStore, "predictions", window_label),
        (monitor, "compute_drift", lambda *a, **k: "drift (Evidently on the sample)"),
        (monitor, "join_labels", lambda *a, **k: "join labels"),
        (monitor, "_save_reports", lambda *a, **k: "HTML report and workspace snapshot"),
        (MonitoringStore, "write_metrics", lambda *a, **k: "store metrics and decision"),
        (MonitoringStore, "write_decision", lambda *a, **k: "store metrics and decision"),
        (MonitoringStore, "decisions", lambda *a, **k: "policy history"),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, label in patches:
            setattr(obj, name, wrap(getattr(obj, name), label))
        yield times
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


def _check(uc: Any, wh: Any, settings: Any, now: datetime) -> tuple[Any, float, dict[str, float]]:
    from shopml.monitoring.monitor import check_usecase
    from shopml.monitoring.store import MonitoringStore

    store = MonitoringStore(None, settings.home)  # a fresh connection, as `shopml monitor`
    try:
        with _probes() as pieces:
            t = time.perf_counter()
            result = check_usecase(uc, wh, settings, store, now=now, act=False)
            seconds = time.perf_counter() - t
    finally:
        store.close()
    return result, seconds, pieces


# -- Evidently alone -----------------------------------------------------------------------------
def _evidently_child(work: Path) -> None:
    """In a child process: Evidently's DataDriftPreset on the frames written to ``work``."""
    spec = json.loads((work / "evidently.json").read_text())
    reference = pd.read_parquet(work / "reference.parquet")
    current = pd.read_parquet(work / "current.parquet")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=spec["numerical"], categorical_columns=spec["categorical"]
    )
    report = Report([DataDriftPreset(columns=spec["columns"])])
    t = time.perf_counter()
    cur = Dataset.from_pandas(current, data_definition=definition)
    ref = Dataset.from_pandas(reference, data_definition=definition)
    t_dataset = time.perf_counter() - t
    t = time.perf_counter()
    snapshot = report.run(current_data=cur, reference_data=ref)
    t_run = time.perf_counter() - t
    scores: dict[str, dict[str, Any]] = {}
    drifted_count = None
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config", {})
        col = cfg.get("column")
        value = m.get("value")
        if col is not None and isinstance(value, (int, float)):
            scores[col] = {
                "method": cfg.get("method"),
                "threshold": cfg.get("threshold"),
                "score": float(value),
            }
        elif isinstance(value, dict) and "count" in value:
            drifted_count = value.get("count")
    print(
        json.dumps(
            {
                "seconds_dataset": t_dataset,
                "seconds_run": t_run,
                "rss_mb": _rss_mb(),
                "current_rows": len(current),
                "reference_rows": len(reference),
                "scores": scores,
                "drifted_count": drifted_count,
            }
        )
    )


def _vm_hwm_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    return None


def _run_evidently(work: Path, limit_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_monitoring", "--evidently-child", str(work)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out_path, err_path = work / "evidently.out", work / "evidently.err"
    with out_path.open("w") as out_fh, err_path.open("w") as err_fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out_fh, stderr=err_fh)
    started = time.perf_counter()
    peak: float | None = None
    while proc.poll() is None:
        peak = max(peak or 0.0, _vm_hwm_mb(proc.pid) or 0.0)
        if time.perf_counter() - started > limit_s:
            proc.kill()
            proc.wait()
            return {
                "finished": False,
                "why": f"stopped at the {limit_s:.0f} s time limit",
                "rss_mb": peak,
                "wall_s": time.perf_counter() - started,
            }
        time.sleep(0.5)
    stdout, stderr = out_path.read_text(), err_path.read_text()
    if proc.returncode != 0:
        return {
            "finished": False,
            "why": f"exited with {proc.returncode} (killed for memory when -9): "
            + stderr.strip()[-500:],
            "rss_mb": peak,
            "wall_s": time.perf_counter() - started,
        }
    out = json.loads(stdout.strip().splitlines()[-1])
    out.update(finished=True, wall_s=time.perf_counter() - started)
    return out


# -- the run ---------------------------------------------------------------------------------
def run(quick: bool = False) -> Result:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "shopml", "alembic", "evidently"):
        logging.getLogger(name).setLevel(logging.ERROR)
    rows = 50_000 if quick else 1_000_000
    customers = 4_000 if quick else 20_000
    limit_s = 600.0 if quick else 1800.0
    work = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    try:
        return _run(work, rows, customers, limit_s, quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, rows: int, customers: int, limit_s: float, quick: bool) -> Result:
    from shopml.monitoring.drift import _drifted, categorical_columns
    from shopml.monitoring.monitor import _REFERENCES, load_champion
    from shopml.monitoring.store import MonitoringStore

    home = work / "home"
    home.mkdir()
    t = time.perf_counter()
    uc, wh, settings, scorer, now = _shop_and_model(home, customers)
    champ = load_champion(settings, uc.name)
    assert champ is not None and champ.reference is not None
    reference = champ.reference
    setup_train = time.perf_counter() - t
    log = _write_log(home, uc, scorer, champ.version, reference, rows, now)
    setup_total = time.perf_counter() - t
    features = [c for c in scorer.features if c in reference.columns]
    outputs = [f"output.{o}" for o in scorer.outputs if f"output.{o}" in reference.columns]
    start = now - timedelta(days=WINDOW_DAYS)

    load_before, uptime_before = os.getloadavg(), _uptime()

    # (1) shopml: the check, cold first (reference from MLflow, Evidently imported), then twice.
    _REFERENCES.clear()
    checks = []
    for _ in range(3):
        checks.append(_check(uc, wh, settings, now))
    result, first_s, pieces = checks[0]
    best_s = min(c[1] for c in checks)
    drift = result.drift or {}

    # (2) Evidently alone: decode every row of the window, then DataDriftPreset on all of them.
    store = MonitoringStore(None, home)
    try:
        t = time.perf_counter()
        window = store.predictions(uc.name, start, now, model_version=champ.version)
        current = pd.concat(
            [window.features, window.outputs.rename(columns=lambda c: f"output.{c}")], axis=1
        )
        decode_s = time.perf_counter() - t
    finally:
        store.close()
    decode_rss = _rss_mb()
    columns = [c for c in [*features, *outputs] if c in current.columns]
    cats = sorted(categorical_columns(reference, columns))
    # Both frames as float64 numbers (codes too): the log holds floats, the reference ints.
    current[columns].astype("float64").to_parquet(work / "current.parquet", index=False)
    reference[columns].apply(pd.to_numeric, errors="coerce").astype("float64").to_parquet(
        work / "reference.parquet", index=False
    )
    (work / "evidently.json").write_text(
        json.dumps(
            {
                "columns": columns,
                "categorical": cats,
                "numerical": [c for c in columns if c not in cats],
            }
        )
    )
    window_rows = len(current)
    del window, current
    ev = _run_evidently(work, limit_s)
    load_after, uptime_after = os.getloadavg(), _uptime()
    wh.close()

    # What each found.
    ours = {c["column"]: c for c in [*drift.get("features", []), *drift.get("outputs", [])]}
    ours_drifted = sorted(c for c, v in ours.items() if v["drifted"])
    ev_scores = ev.get("scores", {})
    ev_drifted = sorted(
        c
        for c, v in ev_scores.items()
        if v["threshold"] is not None and _drifted(str(v["method"]), v["score"], v["threshold"])
    )
    ev_total = (ev.get("seconds_dataset", 0.0) + ev["seconds_run"]) if ev["finished"] else None
    ratio = (decode_s + ev_total) / first_s if ev_total is not None else None

    figures: dict[str, Any] = {
        "usecase": uc.name,
        "features": len(features),
        "outputs": outputs,
        "customers": customers,
        "reference_rows": len(reference),
        "log": log,
        "window_rows": result.predictions,
        "drift_sample_rows": drift.get("current_rows"),
        "drift_sampled_from": drift.get("sampled_from"),
        "drift_reference_rows": drift.get("reference_rows"),
        "shopml_seconds_first": round(first_s, 3),
        "shopml_seconds_all": [round(c[1], 3) for c in checks],
        "shopml_seconds_best": round(best_s, 3),
        "shopml_pieces_first": {k: round(v, 3) for k, v in pieces.items()},
        "shopml_pieces_best": {
            k: round(v, 3) for k, v in min(checks, key=lambda c: c[1])[2].items()
        },
        "shopml_status": result.status,
        "shopml_drift_share": drift.get("share"),
        "shopml_drifted": ours_drifted,
        "shopml_notes": result.notes,
        "evidently": {k: v for k, v in ev.items() if k != "scores"},
        "evidently_scores": ev_scores,
        "evidently_drifted": ev_drifted,
        "decode_seconds": round(decode_s, 3),
        "decode_rows": window_rows,
        "decode_peak_rss_mb": round(decode_rss, 1),
        "evidently_total_seconds": round(ev_total, 3) if ev_total is not None else None,
        "ratio_evidently_with_decode_over_shopml": round(ratio, 2) if ratio else None,
        "goal_seconds": GOAL_SECONDS,
        "goal_met": first_s <= GOAL_SECONDS,
        "setup_seconds": round(setup_total, 1),
        "setup_train_seconds": round(setup_train, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "uptime_before": uptime_before,
        "uptime_after": uptime_after,
        "quick": quick,
    }
    return Result(
        name="monitoring",
        title="Monitoring one use case over 1M logged predictions",
        markdown=_markdown(figures, pieces, ev),
        figures=figures,
    )


def _markdown(f: dict[str, Any], pieces: dict[str, float], ev: dict[str, Any]) -> str:
    shifted = ", ".join(f"`{c}`" for c in f["log"]["shifted"])
    lines = [
        f"One use case, `{f['usecase']}` ({f['features']} input features and its output "
        f"`{', '.join(f['outputs'])}`), over {f['log']['rows']:,} logged predictions spread "
        f"over the last {WINDOW_DAYS} days, in the SQLite prediction log the service writes "
        f"({f['log']['db_mb']:,.0f} MB), against its training reference "
        f"({f['reference_rows']:,} rows, logged with the model). The logged rows are reference "
        f"rows drawn with replacement, with {shifted} shifted by {SHIFT_STD} standard "
        "deviation, scored by the champion. Same run and data for both; 1-minute load "
        f"average {f['load_average_before'][0]:.2f} before, {f['load_average_after'][0]:.2f} "
        "after, on a shared 2-core machine.",
        "",
        "| | seconds |",
        "| --- | ---: |",
        f"| **shopml** `check_usecase` (one `shopml monitor --dry-run` check), first call, cold "
        f"| **{f['shopml_seconds_first']:.1f}** |",
    ]
    for name, sec in sorted(pieces.items(), key=lambda kv: -kv[1]):
        lines.append(f"| &nbsp;&nbsp;of which {name} | {sec:.2f} |")
    lines.append(
        "| shopml, the next two calls (reference cached) | "
        + ", ".join(f"{s:.1f}" for s in f["shopml_seconds_all"][1:])
        + " |"
    )
    lines.append(
        f"| decode all {f['decode_rows']:,} rows of the window into a DataFrame (shopml's own "
        f"decoder) | {f['decode_seconds']:.1f} |"
    )
    if ev["finished"]:
        lines += [
            f"| **Evidently** `Report([DataDriftPreset(columns=...)])` on all "
            f"{ev['current_rows']:,} rows, `report.run` | **{ev['seconds_run']:.1f}** |",
            f"| Evidently `Dataset.from_pandas` (both frames) | {ev['seconds_dataset']:.1f} |",
            f"| Evidently in all, with the decode | {f['decode_seconds'] + f['evidently_total_seconds']:.1f} |",  # noqa: E501
        ]
    else:
        lines.append(
            f"| **Evidently** on all {f['decode_rows']:,} rows | did not finish: {ev['why']} "
            f"(peak RSS {ev.get('rss_mb') or float('nan'):,.0f} MB) |"
        )
    lines.append("")
    met = "met" if f["goal_met"] else "NOT met"
    lines.append(
        f"Goal (within {GOAL_SECONDS:.0f} s): **{met}**, {f['shopml_seconds_first']:.1f} s for "
        f"the first check. shopml's drift compares a seeded random sample of "
        f"{f['drift_sample_rows']:,} of the window's {f['window_rows']:,} rows "
        f"(reference: {f['drift_reference_rows']:,} rows), and says so in its result."
    )
    if f["ratio_evidently_with_decode_over_shopml"]:
        lines.append(
            f"Evidently on the full window, with the decode: "
            f"{f['ratio_evidently_with_decode_over_shopml']:.1f}x shopml's whole check "
            f"(peak memory of the Evidently process {ev['rss_mb']:,.0f} MB)."
        )
    lines.append(
        f"Drifted (score >= threshold): shopml on the sample "
        f"{', '.join(f['shopml_drifted']) or 'none'}; Evidently on all rows "
        f"{', '.join(f['evidently_drifted']) or 'none'}."
    )
    if f["shopml_notes"]:
        lines.append(f"shopml's notes: {'; '.join(f['shopml_notes'])}.")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 3 and sys.argv[1] == "--evidently-child":
        _evidently_child(Path(sys.argv[2]))
    else:
        print(run(quick="--quick" in sys.argv).markdown)
