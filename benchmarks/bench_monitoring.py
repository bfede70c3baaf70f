"""Monitoring one use case over 1M logged predictions: shopml's check beside Evidently's own time.

Set-up (not timed): a small ShopSim shop in a temporary home; one use case trained through the
lifecycle (``TrainConfig(trials=0)``) as of a day ``now`` early enough that the labels of the
week before it are final inside the simulated data; the model's training reference is logged
with it. Then 1,000,000 prediction-log rows for its champion over the 7 days before ``now``,
written as the service's own records (:class:`shopml.runtime.predictions.PredictionRecord`)
through its writer into ``<home>/monitoring.sqlite``: each day's rows are drawn (with
replacement) from the entities the use case scores that day (its labelled dataset at that
day, so that labels can be joined back),
with a real shift (half a standard deviation) added to four of its watched numeric features,
and scored by the champion's own scorer.

Timed, in the same run:

- shopml at ``now``: ``check_usecase(..., act=False)`` (what ``shopml monitor --dry-run`` does
  for one use case: count the window, sample it, Evidently drift against the reference, the
  delayed-label window, the policy, the stored metrics, the HTML report and workspace
  snapshot). The first check runs cold (reference downloaded from MLflow, Evidently imported);
  two more follow. Its pieces are timed by wrapping the functions it calls.
- shopml once the same week's labels are final (``now`` + the label delay): the performance
  path, which reads the labelled window in full and joins it to the labels.
- Evidently alone on the same data: all rows of the window decoded into one DataFrame (the cost
  of getting the data out of the log, timed apart), then ``Report([DataDriftPreset(columns=
  ...)])`` on the full current frame against the same reference and columns, in a child process
  with a time limit, its peak memory measured.
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
    """Simulate the shop and train the use case as of ``now``, early enough that the labels of
    the week before it are final inside the data; returns (uc, warehouse, settings, scorer,
    now)."""
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
    end = wh.con.execute("SELECT max(purchased_at) FROM orders").fetchone()[0]  # type: ignore[index]
    # Naive UTC, as the CLI; the labels of the last logged day are final by end of data.
    now = datetime(end.year, end.month, end.day) - timedelta(
        days=uc.monitoring.label_delay_days + 10
    )
    trained = train_usecase(uc, wh, settings, TrainConfig(trials=0, as_of=now))
    if trained.status != "promoted":
        raise RuntimeError(f"{USECASE} did not become champion: {trained.status} {trained.reason}")
    configure(settings)
    scorer = load_scorer(f"models:/{model_name(uc.name)}@champion")
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
    wh: Any,
    scorer: Any,
    version: str,
    reference: pd.DataFrame,
    rows: int,
    now: datetime,
) -> dict[str, Any]:
    """``rows`` prediction-log rows for the champion over the ``WINDOW_DAYS`` days before
    ``now``, in the service's exact format: each day's rows are drawn (with replacement) from
    the entities the use case scores that day (its labelled dataset at that day), shifted,
    scored by the champion."""
    from shopml.runtime.predictions import PredictionRecord, RecordWriter

    rng = np.random.default_rng(SEED)
    shifted = _shift_columns(uc, reference, scorer.features)
    shifts = {c: SHIFT_STD * float(reference[c].std()) for c in shifted}
    names = list(scorer.features)
    outputs = list(scorer.outputs)
    prefix = os.urandom(8).hex()
    writer = RecordWriter(None, home)
    seconds_write = 0.0
    done = 0
    entities = 0
    try:
        for k in range(WINDOW_DAYS):
            day = now - timedelta(days=WINDOW_DAYS - k)
            n = rows // WINDOW_DAYS + (1 if k < rows % WINDOW_DAYS else 0)
            data = uc.dataset(wh, day)
            if not len(data):
                raise RuntimeError(f"{uc.name} has nothing to score on {day:%Y-%m-%d}")
            entities += len(data)
            frame = data.frame.iloc[rng.integers(0, len(data), n)].reset_index(drop=True)
            for c, delta in shifts.items():
                frame[c] = pd.to_numeric(frame[c], errors="coerce") + delta
            x = scorer.to_matrix(frame)
            out = np.asarray(scorer.predict_matrix(x))
            out2 = out.reshape(-1, 1) if out.ndim == 1 else out
            ids = frame[uc.key].astype(str).tolist()
            start = day.replace(tzinfo=UTC).timestamp()
            stamps = np.sort(rng.uniform(start, start + 86400, n))
            t = time.perf_counter()
            for lo in range(0, n, WRITE_BATCH):
                batch = []
                for i in range(lo, min(lo + WRITE_BATCH, n)):
                    pred = {
                        o: (None if math.isnan(v) else v)
                        for o, v in zip(outputs, out2[i].tolist(), strict=False)
                    }
                    batch.append(
                        PredictionRecord(
                            f"{prefix}{done + i + 1:016x}",
                            float(stamps[i]),
                            uc.name,
                            version,
                            uc.key,
                            ids[i],
                            pred,
                            x[i],
                            names,
                        )
                    )
                writer.write(batch)
            seconds_write += time.perf_counter() - t
            done += n
    finally:
        writer.close()
    return {
        "rows": done,
        "entities": entities,
        "shifted": shifts,
        "entity_key": uc.key,
        "seconds": seconds_write,
        "db_mb": (home / "monitoring.sqlite").stat().st_size / 1e6,
    }


# -- timing shopml's check -------------------------------------------------------------------
@contextlib.contextmanager
def _probes(uc: Any) -> Iterator[dict[str, float]]:
    """Time the pieces ``check_usecase`` calls. A store call inside another store call (the
    count a sampled read makes) is not counted twice; the label datasets and the metrics are
    timed inside the label join, and shown as parts of it."""
    from shopml.monitoring import monitor, performance
    from shopml.monitoring.store import MonitoringStore

    times: dict[str, float] = {}
    depth = [0]

    def wrap(fn: Callable[..., Any], label: Callable[..., str], part: bool) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if depth[0] and not part:
                return fn(*args, **kwargs)
            if not part:
                depth[0] += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if not part:
                    depth[0] -= 1
                name = label(*args, **kwargs)
                times[name] = times.get(name, 0.0) + time.perf_counter() - t

        return timed

    def window_label(*args: Any, **kwargs: Any) -> str:
        if kwargs.get("sample") is not None:
            return "read the drift window (sample)"
        if kwargs.get("with_features", True) is False:
            return "read the labelled window (outputs only)"
        return "read a window"

    def fixed(name: str) -> Callable[..., str]:
        return lambda *a, **k: name

    patches = [
        (monitor, "load_champion", fixed("champion and reference from MLflow"), False),
        (MonitoringStore, "count_predictions", fixed("count the window"), False),
        (MonitoringStore, "predictions", window_label, False),
        (monitor, "compute_drift", fixed("drift (Evidently on the sample)"), False),
        (monitor, "join_labels", fixed("join labels"), False),
        (performance.LabelCache, "get", fixed("join labels: labelled datasets, per day"), True),
        (monitor, "live_metrics", fixed("live metrics"), False),
        (type(uc), "oracle_metrics", fixed("oracle metrics"), False),
        (monitor, "_save_reports", fixed("HTML report and workspace snapshot"), False),
        (MonitoringStore, "write_metrics", fixed("store metrics and decision"), False),
        (MonitoringStore, "write_decision", fixed("store metrics and decision"), False),
        (MonitoringStore, "decisions", fixed("policy history"), False),
    ]
    saved = [(obj, name, obj.__dict__[name]) for obj, name, _, _ in patches]
    try:
        for obj, name, label, part in patches:
            setattr(obj, name, wrap(getattr(obj, name), label, part))
        yield times
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


def _check(uc: Any, wh: Any, settings: Any, now: datetime) -> tuple[Any, float, dict[str, float]]:
    from shopml.monitoring.monitor import check_usecase
    from shopml.monitoring.store import MonitoringStore

    store = MonitoringStore(None, settings.home)  # a fresh connection, as `shopml monitor`
    try:
        with _probes(uc) as pieces:
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
    log = _write_log(home, uc, wh, scorer, champ.version, reference, rows, now)
    setup_s = time.perf_counter() - t
    features = [c for c in scorer.features if c in reference.columns]
    # The output shopml watches for prediction drift (Evidently gets the same columns).
    outputs = [c for c in [f"output.{uc.monitoring.prediction}"] if c in reference.columns]
    start = now - timedelta(days=WINDOW_DAYS)
    later = now + timedelta(days=uc.monitoring.label_delay_days)

    load_before, uptime_before = os.getloadavg(), _uptime()

    # (1) shopml at `now`: the week just logged is the drift window. The first check runs cold
    # (reference from MLflow, Evidently imported), then twice more.
    _REFERENCES.clear()
    checks = [_check(uc, wh, settings, now) for _ in range(3)]
    result, first_s, pieces = checks[0]
    drift = result.drift or {}
    # The same week once its labels are final: the performance path over all its rows.
    _REFERENCES.clear()
    perf_checks = [_check(uc, wh, settings, later) for _ in range(2)]
    perf_result, perf_s, perf_pieces = perf_checks[0]
    performance = perf_result.performance or {}

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
    common = [c for c in ours if c in ev_scores]
    max_diff = max((abs(ours[c]["score"] - ev_scores[c]["score"]) for c in common), default=None)
    ev_total = (ev["seconds_dataset"] + ev["seconds_run"]) if ev["finished"] else None
    ratio = (decode_s + ev_total) / first_s if ev_total is not None else None

    def rounded(d: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 3) for k, v in d.items()}

    figures: dict[str, Any] = {
        "usecase": uc.name,
        "features": len(features),
        "outputs": outputs,
        "customers": customers,
        "now": now.isoformat(),
        "reference_rows": len(reference),
        "log": log,
        "window_rows": result.predictions,
        "drift_sample_rows": drift.get("current_rows"),
        "drift_sampled_from": drift.get("sampled_from"),
        "drift_reference_rows": drift.get("reference_rows"),
        "shopml_seconds_first": round(first_s, 3),
        "shopml_seconds_all": [round(c[1], 3) for c in checks],
        "shopml_pieces": [rounded(c[2]) for c in checks],
        "shopml_status": result.status,
        "shopml_drift_share": drift.get("share"),
        "shopml_drifted": ours_drifted,
        "shopml_scores": {c: v["score"] for c, v in ours.items()},
        "shopml_notes": result.notes,
        "performance_now": later.isoformat(),
        "label_delay_days": uc.monitoring.label_delay_days,
        "performance_seconds_first": round(perf_s, 3),
        "performance_seconds_all": [round(c[1], 3) for c in perf_checks],
        "performance_pieces": [rounded(c[2]) for c in perf_checks],
        "performance_labelled": performance.get("labelled"),
        "performance_unmatched": performance.get("unmatched"),
        "performance_metric": performance.get("metric"),
        "performance_live": (performance.get("live") or {}).get(performance.get("metric")),
        "performance_test": (performance.get("test") or {}).get(performance.get("metric")),
        "performance_notes": perf_result.notes,
        "performance_status": perf_result.status,
        "evidently": {k: v for k, v in ev.items() if k != "scores"},
        "evidently_scores": ev_scores,
        "evidently_drifted": ev_drifted,
        "max_score_difference": round(max_diff, 4) if max_diff is not None else None,
        "report_seconds_per_check": [
            round(c[2].get("HTML report and workspace snapshot", 0.0), 3) for c in checks
        ],
        "decode_seconds": round(decode_s, 3),
        "decode_rows": window_rows,
        "decode_peak_rss_mb": round(decode_rss, 1),
        "evidently_total_seconds": round(ev_total, 3) if ev_total is not None else None,
        "ratio_evidently_with_decode_over_shopml": round(ratio, 2) if ratio else None,
        "goal_seconds": GOAL_SECONDS,
        "goal_met": first_s <= GOAL_SECONDS,
        "setup_seconds": round(setup_s, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "uptime_before": uptime_before,
        "uptime_after": uptime_after,
        "quick": quick,
    }
    return Result(
        name="monitoring",
        title="Monitoring one use case over 1M logged predictions",
        markdown=_markdown(figures, pieces, perf_pieces, ev),
        figures=figures,
    )


def _piece_rows(pieces: dict[str, float]) -> list[str]:
    out = []
    for name, sec in sorted(pieces.items(), key=lambda kv: -kv[1]):
        if sec >= 0.005:
            out.append(f"| &nbsp;&nbsp;{name} | {sec:.2f} |")
    return out


def _markdown(
    f: dict[str, Any], pieces: dict[str, float], perf_pieces: dict[str, float], ev: dict[str, Any]
) -> str:
    shifted = ", ".join(f"`{c}`" for c in f["log"]["shifted"])
    rows = f["log"]["rows"]
    lines = [
        f"One use case, `{f['usecase']}` ({f['features']} input features and its output "
        f"`{', '.join(f['outputs'])}`), {rows:,} predictions logged over the {WINDOW_DAYS} "
        f"days before the check, in the SQLite prediction log the service writes "
        f"({f['log']['db_mb']:,.0f} MB, the service's own row format), against the training "
        f"reference logged with the model ({f['reference_rows']:,} rows). Each day's rows are "
        f"drawn from the {f['usecase']} entities of that day (ShopSim, {f['customers']:,} "
        f"customers), with {shifted} shifted by {SHIFT_STD} standard deviation, and scored "
        f"by the champion. Both sides in one run on the same data; 1-minute load average "
        f"{f['load_average_before'][0]:.2f} before, {f['load_average_after'][0]:.2f} after, on "
        "a shared 2-core machine.",
        "",
        "| | seconds |",
        "| --- | ---: |",
        f"| **shopml**: one check (`check_usecase`, as `shopml monitor --dry-run`), first call, "
        f"cold | **{f['shopml_seconds_first']:.1f}** |",
        *_piece_rows(pieces),
        "| shopml, the next two checks | "
        + ", ".join(f"{s:.1f}" for s in f["shopml_seconds_all"][1:])
        + " |",
        f"| decode all {f['decode_rows']:,} rows of the window into a DataFrame (shopml's "
        f"decoder, for Evidently) | {f['decode_seconds']:.1f} |",
    ]
    if ev["finished"]:
        lines += [
            f"| **Evidently** alone: `Report([DataDriftPreset(columns=...)])` on all "
            f"{ev['current_rows']:,} rows, `report.run` | **{ev['seconds_run']:.1f}** |",
            f"| &nbsp;&nbsp;and `Dataset.from_pandas` of both frames | "
            f"{ev['seconds_dataset']:.1f} |",
        ]
    else:
        lines.append(
            f"| **Evidently** alone on all {f['decode_rows']:,} rows | did not finish: "
            f"{ev['why']} (peak RSS {ev.get('rss_mb') or float('nan'):,.0f} MB) |"
        )
    met = "met" if f["goal_met"] else "NOT met"
    lines += [
        "",
        f"Goal (one use case, {rows:,} predictions, within {GOAL_SECONDS:.0f} s): **{met}**, "
        f"{f['shopml_seconds_first']:.1f} s for the first check. Its drift compares a seeded "
        f"random sample of {f['drift_sample_rows']:,} of the window's {f['window_rows']:,} "
        f"rows with {f['drift_reference_rows']:,} reference rows, and says so in its result.",
    ]
    if f["ratio_evidently_with_decode_over_shopml"]:
        lines.append(
            f"Evidently on the whole window, decode included "
            f"({f['decode_seconds'] + f['evidently_total_seconds']:.1f} s): "
            f"{f['ratio_evidently_with_decode_over_shopml']:.1f}x shopml's whole check; its "
            f"process peaked at {ev['rss_mb']:,.0f} MB."
        )
    lines.append(
        f"Drifted (score at or over the threshold): shopml, on the sample: "
        f"{', '.join(f['shopml_drifted']) or 'none'}; Evidently, on all rows: "
        f"{', '.join(f['evidently_drifted']) or 'none'}."
    )
    if f["max_score_difference"] is not None:
        lines.append(
            f"Per column, shopml's score on the sample and Evidently's on all rows differ by at "
            f"most {f['max_score_difference']:.3f}."
        )
    lines.append(
        "The HTML report and the Evidently workspace snapshot took "
        + ", ".join(f"{x:.2f}" for x in f["report_seconds_per_check"])
        + " s over the three checks here (the workspace is opened once per process, since "
        "opening it reloads every snapshot it holds)."
    )
    lines += [
        "",
        f"The same {rows:,} predictions checked again {f['label_delay_days']} days later (the "
        f"label delay of {f['usecase']}), when their labels are final: the performance path, "
        "with no traffic in the drift window then, the labelled window read in full (it has no "
        "sampling) and joined to the labels:",
        "",
        "| | seconds |",
        "| --- | ---: |",
        f"| **shopml**: one check, first call | **{f['performance_seconds_first']:.1f}** |",
        *_piece_rows(perf_pieces),
        f"| shopml, the next check | {f['performance_seconds_all'][1]:.1f} |",
        "",
    ]
    if f["performance_labelled"]:
        lines.append(
            f"{f['performance_labelled']:,} predictions matched to their labels "
            f"({f['performance_unmatched']:,} unmatched); live {f['performance_metric']} "
            f"{f['performance_live']:.3f} against {f['performance_test']:.3f} at test."
        )
    else:
        lines.append(f"No labelled predictions: {'; '.join(f['performance_notes'])}.")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 3 and sys.argv[1] == "--evidently-child":
        _evidently_child(Path(sys.argv[2]))
    else:
        print(run(quick="--quick" in sys.argv).markdown)
