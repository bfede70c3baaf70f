"""Shadow rollout: the champion's answers with the challenger shadowing every request, beside
the same service with rollout off, under the same load in one run.

The serving benchmark's model (a 200-tree LightGBM classifier on 20 features) is registered
twice in one registry: champion and challenger (the same size, so the shadow doubles the
model work). Two ``shopml serve`` services (2 workers each, auth, metrics and the prediction
log on, each its own log) start at once from that registry: ``off`` (no rollout) and
``shadow`` (``SHOPML_ROLLOUT={"returns": "shadow"}``). ``wrk`` sends the same request to
each, the two taking turns in every round (the median round counts), in three loads:

- *flat out*: 8 connections, each sending its next request as soon as the last is answered
  (each service's peak);
- *paced*: 8 connections at the same rate for both, half the lower of the two peaks (the
  delay calibrated per service until the rate is near it);
- *one connection*: one request at a time (what a single caller waits).

Reported for each: the champion's answers per second, p50 and p99 latency, failed answers
(non-2xx and socket errors), and shadow/off ratios; then what the shadow service logged per
arm (champion answers, shadow answers). The host is shared: the load average before and after
is printed beside the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.bench_serving import (
    BIN,
    KEY,
    PACED_CONNECTIONS,
    _free_port,
    _paced,
    _stop,
    _train,
    _wait,
    _wrk,
    register_model,
    start_server,
)
from benchmarks.common import Result

SERVICES = ("off", "shadow")
LOADS = ("flat out", "paced", "one connection")


def _post(url: str, body: str, headers: dict[str, str]) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={**headers, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def _get(url: str, headers: dict[str, str]) -> dict[str, Any]:
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def _logged(path: Path) -> dict[str, int]:
    """Prediction-log rows per arm."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT arm, count(*) FROM prediction_log GROUP BY arm").fetchall()
    finally:
        con.close()
    return {"champion": 0, "shadow": 0, **{str(a): int(n) for a, n in rows}}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    ordered = sorted(runs, key=lambda f: f["p50_ms"])
    return {**ordered[len(ordered) // 2], "rounds_p50_ms": [f["p50_ms"] for f in runs]}


def run(quick: bool = False) -> Result:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    load_before = os.getloadavg()
    seconds, rounds = (4.0, 1) if quick else (8.0, 3)
    work = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    home = work / "home"
    home.mkdir()
    clf, frame = _train(work)
    register_model(clf, frame, home, challenger=True)
    row = {f"f{i}": round(float(v), 4) for i, v in enumerate(frame.iloc[7])}
    body = json.dumps({"features": row})
    auth = {"Authorization": f"Bearer {KEY}"}
    env = {
        **os.environ,
        "SHOPML_HOME": str(home),
        "SHOPML_API_KEYS": KEY,
        "SHOPML_ADMIN_KEYS": KEY + "-admin",
        "SHOPML_MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("SHOPML_ROLLOUT", None)
    figures: dict[str, Any] = {"seconds_per_run": seconds, "rounds": rounds}
    urls: dict[str, str] = {}
    procs: list[tuple[subprocess.Popen[Any], Any]] = []
    runs: dict[tuple[str, str], list[dict[str, float]]] = {
        (s, load): [] for s in SERVICES for load in LOADS
    }
    try:
        for name in SERVICES:
            port = _free_port()
            own = {**env, "SHOPML_MONITORING_STORE_URI": f"sqlite:///{work / f'{name}.sqlite'}"}
            if name == "shadow":
                own["SHOPML_ROLLOUT"] = '{"returns": "shadow"}'
            proc = start_server(
                [str(BIN / "shopml"), "serve", "--workers", "2", "--port", str(port)],
                own,
                work,
                name,
                procs,
            )
            base = f"http://127.0.0.1:{port}"
            _wait(f"{base}/ready", proc)
            urls[name] = f"{base}/v1/returns/predict"
            figures[f"{name}_answer"] = _post(urls[name], body, auth)
            figures[f"{name}_rollout"] = _get(
                f"{base}/v1/admin/rollout", {"Authorization": f"Bearer {KEY}-admin"}
            )["rollout"][0]
        mode = figures["shadow_rollout"]["mode"]
        if mode != "shadow" or figures["off_rollout"]["mode"] != "off":
            raise RuntimeError(f"the services are not in off and shadow: {mode!r}")
        if figures["off_answer"]["prediction"] != figures["shadow_answer"]["prediction"]:
            raise RuntimeError("the champion answers differently with shadow on")
        for name in SERVICES:
            _wrk(urls[name], body, auth, 2, workdir=work)  # warm-up
        for r in range(rounds):
            order = SERVICES if r % 2 == 0 else SERVICES[::-1]
            for name in order:
                runs[(name, "flat out")].append(_wrk(urls[name], body, auth, seconds, workdir=work))
        peaks = {n: sorted(f["rps"] for f in runs[(n, "flat out")])[rounds // 2] for n in SERVICES}
        target = 0.5 * min(peaks.values())
        figures["paced_target_rps"] = target
        for r in range(rounds):
            order = SERVICES if r % 2 == 0 else SERVICES[::-1]
            for name in order:
                runs[(name, "paced")].append(_paced(urls[name], body, auth, target, seconds, work))
                runs[(name, "one connection")].append(
                    _wrk(urls[name], body, auth, seconds, connections=1, threads=1, workdir=work)
                )
    finally:
        for proc, log in procs:
            _stop(proc)  # SIGTERM: each worker drains its shadow queue and flushes its log
            log.close()
    load_after = os.getloadavg()
    for name in SERVICES:
        figures[f"{name}_logged"] = _logged(work / f"{name}.sqlite")
    shutil.rmtree(work, ignore_errors=True)

    table = [
        "| load | rollout | champion answers/s | p50 ms | p99 ms | failed answers | "
        "p50 shadow/off | p99 shadow/off |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for load in LOADS:
        both = {n: _median(runs[(n, load)]) for n in SERVICES}
        figures[load] = both
        off, on = both["off"], both["shadow"]
        for name in SERVICES:
            f = both[name]
            failed = f["non_2xx"] + f["socket_errors"]
            ratio = (
                f"{on['p50_ms'] / off['p50_ms']:.2f}x | {on['p99_ms'] / off['p99_ms']:.2f}x"
                if name == "shadow"
                else " | "
            )
            table.append(
                f"| {load} | {name} | {f['rps']:,.0f} | {f['p50_ms']:.2f} | "
                f"{f['p99_ms']:.2f} | {failed:.0f} | {ratio} |"
            )
    logged_off, logged_on = figures["off_logged"], figures["shadow_logged"]
    figures["load_before"], figures["load_after"] = load_before, load_after
    markdown = "\n".join(
        [
            f"Model: the serving benchmark's LightGBM classifier (200 trees, 20 features), "
            "registered as champion and again as challenger; two `shopml serve` services (2 "
            "workers each, auth, metrics and prediction log on), rollout `off` and `shadow`, "
            f"measured by `wrk` taking turns, {rounds} round{'s' if rounds > 1 else ''} of "
            f"{seconds:.0f} s per load, the median round shown. *Paced*: the same rate for both, "
            f"{target:,.0f} requests/s on {PACED_CONNECTIONS} connections (half the lower "
            "peak). *Failed answers*: non-2xx and socket errors. The host's 2 cores are shared "
            "with other work: load average (1, 5 min) "
            f"{load_before[0]:.1f}, {load_before[1]:.1f} before the run and "
            f"{load_after[0]:.1f}, {load_after[1]:.1f} after it (the run itself keeps both "
            "cores busy).",
            "",
            *table,
            "",
            "| prediction log | champion answers | shadow answers |",
            "| --- | ---: | ---: |",
            f"| rollout off | {logged_off['champion']:,} | {logged_off['shadow']:,} |",
            f"| shadow | {logged_on['champion']:,} | {logged_on['shadow']:,} |",
        ]
    )
    return Result("shadow", "Shadow rollout: champion answers with and without", markdown, figures)


if __name__ == "__main__":  # pragma: no cover
    print(run(quick="--quick" in sys.argv).markdown)
