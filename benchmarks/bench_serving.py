"""Serving: shopml's service against its peers, side by side in one run, on loopback.

One 200-tree LightGBM classifier on 20 features is registered as a shopml model, then served
by each contender with 2 server workers (all five started at once) and hit by ``wrk`` with 8
connections, in rounds that take turns (the median round counts):

- ``shopml``: ``shopml serve`` with auth, validation, metrics and the prediction log on;
- ``mlflow``: ``mlflow models serve --env-manager local`` on the same registered model;
- ``pandas``: a typical FastAPI app that builds a DataFrame and calls the sklearn wrapper;
- ``lean``: a FastAPI app calling the booster on a numpy row;
- ``noop``: a FastAPI endpoint that parses the same body and returns a constant.

Then: shopml's p99 at 70% of its peak (the same 8 connections, each waiting a delay before
every request, the delay calibrated until the rate is near the target; the table shows the
rate achieved), the median server overhead (end-to-end median on one connection minus the
model's in-process predict time), and batch scoring (``score_batch``) against calling
predict directly on the same rows.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import Result

N_FEATURES = 20
N_TREES = 200
KEY = "bench-key-1"
BIN = Path(sys.executable).parent

PEER_APPS = '''
"""Peer apps for the serving benchmark (module loaded by uvicorn in each worker)."""
import os, pickle
import numpy as np
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

with open(os.environ["BENCH_MODEL"], "rb") as fh:
    CLF = pickle.load(fh)
BOOSTER = CLF.booster_
COLUMNS = [f"f{i}" for i in range(20)]


class Features(BaseModel):
    features: dict[str, float]


pandas_app = FastAPI()


@pandas_app.post("/predict")
def pandas_predict(body: Features) -> dict:
    frame = pd.DataFrame([body.features], columns=COLUMNS)
    return {"p": float(CLF.predict_proba(frame)[0, 1])}


lean_app = FastAPI()


@lean_app.post("/predict")
async def lean_predict(body: Features) -> dict:
    row = np.array([[body.features.get(c, np.nan) for c in COLUMNS]])
    return {"p": float(BOOSTER.predict(row, num_threads=1)[0])}


noop_app = FastAPI()


@noop_app.post("/predict")
async def noop_predict(body: Features) -> dict:
    return {"p": 0.5}
'''


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[Any], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.3)
    raise TimeoutError(url)


def start_server(
    cmd: list[str],
    env: dict[str, str],
    work: Path,
    name: str,
    procs: list[tuple[subprocess.Popen[Any], Any]],
) -> subprocess.Popen[Any]:
    """Start a server in its own process group (so :func:`_stop` ends all its workers), its
    output in ``work/<name>.log``; appended to ``procs`` with its log, to stop and close."""
    log = (work / f"{name}.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    procs.append((proc, log))
    return proc


def _stop(proc: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _wrk(
    url: str,
    body: str,
    headers: dict[str, str],
    seconds: float,
    connections: int = 8,
    threads: int = 2,
    delay_ms: float | None = None,
    workdir: Path = Path("."),
) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from wrk with a POST body."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = [==[{body}]==]",  # JSON bodies may contain "]]"
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    if delay_ms is not None:
        # wrk truncates a delay to whole milliseconds: draw the next whole number up with the
        # fraction's probability, so the mean delay is the one asked for.
        whole = int(delay_ms)
        lines.append(
            f"function delay() if math.random() < {delay_ms - whole:.4f} then return {whole + 1} "
            f"else return {whole} end end"
        )
    script = workdir / f"wrk-{time.monotonic_ns()}.lua"
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:.0f}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout

    def ms(text: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s)", text)
        assert m, text
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    total = re.search(r"(\d+) requests in", out)
    bad = float(non2xx.group(1)) if non2xx else 0.0
    # Only successful answers count: a server that fails fast must not look fast.
    ok_share = 1.0 - bad / float(total.group(1)) if total and float(total.group(1)) else 1.0
    rps = rps * ok_share
    return {
        "rps": rps,
        "p50_ms": pct.get("50", float("nan")),
        "p99_ms": pct.get("99", float("nan")),
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


PACED_CONNECTIONS = 8  # the same clients as the throughput runs, slowed down


def _paced(
    url: str,
    body: str,
    headers: dict[str, str],
    target: float,
    seconds: float,
    work: Path,
) -> dict[str, float]:
    """A ``seconds``-long run at about ``target`` requests/s: :data:`PACED_CONNECTIONS`
    connections, each waiting a delay before every request. The delay starts from the one that
    ignores latency and is corrected (a connection's cycle is the delay plus the latency) by
    3-second probes until the rate is at 97-108% of the target, then by the measured run
    itself (at most three) until it is at 95-110%."""
    c = PACED_CONNECTIONS

    def corrected(delay: float, rate: float) -> float:
        return max(0.0, delay + (c / target - c / max(rate, 1.0)) * 1000)

    delay = c / target * 1000
    for _ in range(6):
        rate = _wrk(url, body, headers, 3, c, workdir=work, delay_ms=delay)["rps"]
        if 0.97 <= rate / target <= 1.08:
            break
        delay = corrected(delay, rate)
    for _ in range(3):
        run = _wrk(url, body, headers, seconds, c, workdir=work, delay_ms=delay)
        run["delay_ms"] = delay
        if 0.95 <= run["rps"] / target <= 1.10:
            break
        delay = corrected(delay, run["rps"])
    return run


def _train(work: Path) -> tuple[Any, Any]:
    import lightgbm
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, N_FEATURES))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3] + rng.normal(size=len(x)) > 0).astype(int)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(N_FEATURES)])
    clf = lightgbm.LGBMClassifier(n_estimators=N_TREES, num_leaves=31, n_jobs=1, verbose=-1)
    clf.fit(frame, y)
    return clf, frame


def register_model(
    clf: Any, frame: Any, home: Path, *, challenger: bool = False
) -> tuple[str, Any]:
    """Register the classifier as a shopml model (``shopml-returns``) in ``home``'s registry
    and make it champion; with ``challenger``, register it again as the challenger (a version
    of the same size for a shadow rollout). Returns the champion's version and its scorer."""
    from shopml.lifecycle.tracking import configure, model_name, register_scorer
    from shopml.runtime.scorers import BoosterScorer
    from shopml.settings import Settings

    scorer = BoosterScorer(
        features=list(frame.columns),
        outputs=["p_return"],
        models=[clf.booster_.model_to_string()],
        kind="probability",
    )
    settings = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    example = frame.head(3)
    version = register_scorer(settings, "returns", scorer, example)
    client = configure(settings)
    client.set_registered_model_alias(model_name("returns"), "champion", version)
    if challenger:
        other = register_scorer(settings, "returns", scorer, example)
        client.set_registered_model_alias(model_name("returns"), "challenger", other)
    return version, scorer


def run(quick: bool = False) -> Result:
    import json
    import pickle

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    load_before = os.getloadavg()[0]
    seconds, rounds = (4.0, 1) if quick else (8.0, 3)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    home = work / "home"
    home.mkdir()
    clf, frame = _train(work)
    version, scorer = register_model(clf, frame, home)
    with (work / "model.pkl").open("wb") as fh:
        pickle.dump(clf, fh)
    (work / "bench_peer_apps.py").write_text(textwrap.dedent(PEER_APPS))
    row = {f"f{i}": round(float(v), 4) for i, v in enumerate(frame.iloc[7])}
    body = json.dumps({"features": row})
    env = {
        **os.environ,
        "SHOPML_HOME": str(home),
        "SHOPML_API_KEYS": KEY,
        "SHOPML_ADMIN_KEYS": KEY + "-admin",
        "BENCH_MODEL": str(work / "model.pkl"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": f"{work}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    auth = {"Authorization": f"Bearer {KEY}"}

    contenders: dict[str, tuple[list[str], str, str, dict[str, str]]] = {
        "shopml": (
            [str(BIN / "shopml"), "serve", "--workers", "2"],
            "/v1/returns/predict",
            "/ready",
            auth,
        ),
        "mlflow": (
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                "models:/shopml-returns/" + version,
                "--env-manager",
                "local",
                "-w",
                "2",
                "-h",
                "127.0.0.1",
            ],
            "/invocations",
            "/ping",
            {},
        ),
        "pandas": (
            [
                str(BIN / "uvicorn"),
                "bench_peer_apps:pandas_app",
                "--workers",
                "2",
                "--no-access-log",
            ],
            "/predict",
            "/docs",
            {},
        ),
        "lean": (
            [str(BIN / "uvicorn"), "bench_peer_apps:lean_app", "--workers", "2", "--no-access-log"],
            "/predict",
            "/docs",
            {},
        ),
        "noop": (
            [str(BIN / "uvicorn"), "bench_peer_apps:noop_app", "--workers", "2", "--no-access-log"],
            "/predict",
            "/docs",
            {},
        ),
    }
    mlflow_body = json.dumps(
        {"dataframe_split": {"columns": list(row), "data": [list(row.values())]}}
    )
    figures: dict[str, Any] = {"seconds_per_run": seconds, "rounds": rounds}
    live: dict[str, tuple[str, str, dict[str, str]]] = {}  # name -> (url, body, headers)
    procs: list[tuple[subprocess.Popen[Any], Any]] = []
    try:
        # Every contender runs at once (idle servers cost nothing), so the measurements can
        # take turns: a burst of load from elsewhere on the host hits one round of each
        # contender, not all the runs of one of them.
        for name, (cmd, path, ready, headers) in contenders.items():
            port = _free_port()
            full = [*cmd, "--port", str(port)] if name != "mlflow" else [*cmd, "-p", str(port)]
            if name in ("pandas", "lean", "noop"):
                full = [*cmd, "--host", "127.0.0.1", "--port", str(port)]
            proc = start_server(full, env, work, name, procs)
            _wait(f"http://127.0.0.1:{port}{ready}", proc)
            url = f"http://127.0.0.1:{port}{path}"
            b = mlflow_body if name == "mlflow" else body
            req = urllib.request.Request(
                url,
                data=b.encode(),
                method="POST",
                headers={**headers, "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    figures[f"{name}_answer"] = resp.read().decode()[:300]
            except urllib.error.HTTPError as exc:
                raise RuntimeError(f"{name} answered {exc.code}: {exc.read()[:500]!r}") from None
            _wrk(url, b, headers, 2, workdir=work)  # warm-up
            live[name] = (url, b, headers)
        names = list(live)
        runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                url, b, headers = live[name]
                runs[name].append(_wrk(url, b, headers, seconds, workdir=work))
        for name in names:
            # The round with the median rate, and every round's rate.
            ordered = sorted(runs[name], key=lambda f: f["rps"])
            figures[name] = {
                **ordered[len(ordered) // 2],
                "rounds_rps": [f["rps"] for f in runs[name]],
            }
        url, b, headers = live["shopml"]
        peak = figures["shopml"]["rps"]
        paced = _paced(url, b, headers, 0.7 * peak, seconds, work)
        paced["share_of_peak"] = paced["rps"] / peak
        figures["shopml_at_70pct"] = paced
        figures["shopml_single_connection"] = _wrk(
            url, b, headers, seconds, connections=1, threads=1, workdir=work
        )
    finally:
        for proc, log in procs:
            _stop(proc)
            log.close()

    # The model's own in-process predict time on one row (the overhead's baseline).
    x = scorer.row_matrix(row)
    scorer.predict_matrix(x)
    reps = 2000
    t = time.perf_counter()
    for _ in range(reps):
        scorer.predict_matrix(x)
    predict_ms = (time.perf_counter() - t) / reps * 1000
    figures["predict_ms"] = predict_ms
    figures["overhead_ms"] = figures["shopml_single_connection"]["p50_ms"] - predict_ms

    # Batch scoring against predict on the same rows.
    from shopml.serving.batch import score_batch
    from shopml.serving.models import LoadedModel, VersionInfo
    from shopml.settings import Settings

    n = 200_000 if quick else 1_000_000
    big = frame.sample(n, replace=True, random_state=0).reset_index(drop=True)
    big.insert(0, "order_item_id", [f"I{i}" for i in range(n)])
    src = work / "rows.parquet"
    big.to_parquet(src, index=False)
    t = time.perf_counter()
    scorer.predict_matrix(scorer.to_matrix(big))
    direct = n / (time.perf_counter() - t)
    settings = Settings(home=home, online_store_uri=f"sqlite:///{work / 'none.sqlite'}")
    loaded = LoadedModel("returns", scorer, VersionInfo(version))
    t = time.perf_counter()
    score_batch(
        settings,
        "returns",
        str(work / "scored.parquet"),
        input_path=str(src),
        chunk_rows=100_000,
        model=loaded,
    )
    batch = n / (time.perf_counter() - t)
    figures["batch"] = {
        "rows": n,
        "direct_rows_per_s": direct,
        "batch_rows_per_s": batch,
        "ratio": batch / direct,
    }
    shutil.rmtree(work, ignore_errors=True)

    s = figures["shopml"]["rps"]
    ratios = {
        "vs_mlflow": s / figures["mlflow"]["rps"],
        "vs_pandas": s / figures["pandas"]["rps"],
        "vs_noop": s / figures["noop"]["rps"],
        "vs_lean": s / figures["lean"]["rps"],
    }
    figures["ratios"] = ratios
    rows = [
        ("shopml (`shopml serve`, auth + metrics + prediction log)", "shopml"),
        ("`mlflow models serve --env-manager local`", "mlflow"),
        ("FastAPI + pandas DataFrame + sklearn `predict_proba`", "pandas"),
        ("FastAPI + booster on a numpy row (lean)", "lean"),
        ("FastAPI no-op (parse body, return constant)", "noop"),
    ]
    table = [
        "| server (2 workers, 8 connections) | successful requests/s | p50 ms | p99 ms | non-2xx "
        "| requests/s per round |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, key in rows:
        f = figures[key]
        each = ", ".join(f"{v:,.0f}" for v in f["rounds_rps"])
        table.append(
            f"| {label} | {f['rps']:,.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | "
            f"{f['non_2xx']:.0f} | {each} |"
        )
    at70 = figures["shopml_at_70pct"]
    goals = [
        "| goal | measured | target | met |",
        "| --- | ---: | ---: | :---: |",
        f"| shopml / mlflow serve | {ratios['vs_mlflow']:.1f}x | >= 10x | "
        f"{'yes' if ratios['vs_mlflow'] >= 10 else 'no'} |",
        f"| shopml / pandas app | {ratios['vs_pandas']:.1f}x | >= 3x | "
        f"{'yes' if ratios['vs_pandas'] >= 3 else 'no'} |",
        f"| shopml / no-op endpoint | {ratios['vs_noop']:.0%} | >= 40% | "
        f"{'yes' if ratios['vs_noop'] >= 0.4 else 'no'} |",
        f"| p99 at 70% of peak (paced: {at70['rps']:,.0f} req/s on {PACED_CONNECTIONS} "
        f"connections, {at70['share_of_peak']:.0%} of peak) | {at70['p99_ms']:.2f} ms | "
        "<= 10 ms | "
        # Met only when the paced rate really was (within 5%) at least 70% of the peak.
        f"{'yes' if at70['p99_ms'] <= 10 and at70['share_of_peak'] >= 0.665 else 'no'} |",
        f"| median overhead (1 connection p50 {figures['shopml_single_connection']['p50_ms']:.2f}"
        f" ms - predict {predict_ms:.3f} ms) | {figures['overhead_ms']:.2f} ms | <= 1 ms | "
        f"{'yes' if figures['overhead_ms'] <= 1 else 'no'} |",
        f"| batch scoring / direct predict ({n:,} rows) | {figures['batch']['ratio']:.2f}x | "
        f">= 0.8x | {'yes' if figures['batch']['ratio'] >= 0.8 else 'no'} |",
    ]
    load = os.getloadavg()[0]
    figures["load_before"], figures["load_after"] = load_before, load
    markdown = "\n".join(
        [
            f"Model: LightGBM classifier, {N_TREES} trees, {N_FEATURES} features, registered once "
            "and served by each contender on loopback, all started at once; load from `wrk` in "
            f"{rounds} rounds taking turns ({seconds:.0f} s per run, after a 2 s warm-up); each "
            "row is a contender's median round. Host load average (1 min) before "
            f"the run: {load_before:.1f}; at its end: {load:.1f} (the run itself keeps both "
            "cores busy).",
            "",
            *table,
            "",
            *goals,
        ]
    )
    return Result("serving", "Serving: shopml vs its peers", markdown, figures)


if __name__ == "__main__":  # pragma: no cover
    print(run(quick="--quick" in sys.argv).markdown)
