"""`shopml serve` as real processes on loopback: two workers sharing metrics and the prediction
log, a real SIGTERM that flushes the log, and the serving guide's curl examples
(docs/how-to/serve.md) run as written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import free_port, tie_to_this_process, wait_http
from tests.unit.serving.conftest import a_customer, build_served_home, registry_client

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
KEY, ADMIN = "live-key-5d1e", "live-admin-93af"


@pytest.fixture(scope="session")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving unit tests' trained home (built once per session, whoever asks first)."""
    return build_served_home(tmp_path_factory)


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    db: Path


@contextlib.contextmanager
def serve(
    home: Path,
    tmp: Path,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """``shopml serve ARGS --port P`` in its own process group; stopped (SIGTERM, then SIGKILL
    after 60 s) when the block ends unless the test already stopped it."""
    port = free_port()
    db = tmp / "monitoring.sqlite"
    full_env = {
        **os.environ,
        "SHOPML_HOME": str(home),
        "SHOPML_API_KEYS": KEY,
        "SHOPML_ADMIN_KEYS": ADMIN,
        "SHOPML_MONITORING_STORE_URI": f"sqlite:///{db}",
        "SHOPML_PREDICTION_LOG_FLUSH_SECONDS": "0.05",
        **(env or {}),
    }
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopml.cli", "serve", *(args or []), "--port", str(port)],
            env=full_env,
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    tie_to_this_process(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        # Every worker loads the models before it accepts: wait for all of them.
        workers = int(args[args.index("--workers") + 1]) if args and "--workers" in args else 1
        try:
            wait_http(f"{url}/health", timeout=180, proc=proc)
            deadline = time.monotonic() + 180
            while log.read_text().count("Application startup complete") < workers:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        except Exception:
            raise AssertionError(log.read_text()[-3000:]) from None
        yield Served(url, proc, log, db)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def call(
    url: str, body: Any = None, key: str | None = KEY, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: (status, headers, body)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def logged_ids(db: Path, usecase: str) -> list[str]:
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return [
            r[0]
            for r in con.execute(
                "SELECT request_id FROM prediction_log WHERE usecase = ?", (usecase,)
            ).fetchall()
        ]
    except sqlite3.OperationalError:  # the table is not there yet
        return []
    finally:
        con.close()


def counter(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample of ``name`` with exactly these labels (0 when absent)."""
    for line in metrics_text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) == labels:
            return float(m.group(2))
    return 0.0


def test_two_workers_answer_share_metrics_and_log_predictions(
    served_home: Path, tmp_path: Path
) -> None:
    cid = a_customer(served_home)
    with serve(served_home, tmp_path, ["--workers", "2"]) as s:
        url = f"{s.url}/v1/clv/predict"
        answers: list[tuple[int, dict[str, str], bytes]] = []
        # Concurrent requests on fresh connections until both workers have answered (the
        # request ids' first 16 hex digits are per process), in bounded rounds.
        with ThreadPoolExecutor(8) as pool:
            for _ in range(15):
                answers += pool.map(lambda _: call(url, {"customer_id": cid}), range(40))
                if len({json.loads(b)["request_id"][:16] for _, _, b in answers}) >= 2:
                    break
        assert all(status == 200 for status, _, _ in answers), answers[:3]
        ids = [json.loads(b)["request_id"] for _, _, b in answers]
        workers = {rid[:16] for rid in ids}
        assert len(workers) == 2, "only one worker answered"
        assert len(set(ids)) == len(ids)
        assert all(h["x-request-id"] == rid for (_, h, _), rid in zip(answers, ids, strict=True))

        # Any worker's /metrics adds up both workers' samples. (A worker counts a request just
        # after answering it: on a busy host the count may trail the answers for a moment.)
        def figures() -> tuple[float, float, str]:
            status, _, page = call(f"{s.url}/metrics", key=None)
            assert status == 200
            text = page.decode()
            served = counter(
                text, "shopml_requests_total", method="POST", route="/v1/clv/predict", status="200"
            )
            predicted = counter(
                text, "shopml_prediction_count", output="predicted_spend_90d", usecase="clv"
            )
            return served, predicted, text

        deadline = time.monotonic() + 10
        served, predicted, text = figures()
        while time.monotonic() < deadline and (served, predicted) != (len(ids), len(ids)):
            time.sleep(0.2)
            served, predicted, text = figures()
        assert (served, predicted) == (len(ids), len(ids))
        for _ in range(4):  # whichever worker answers
            served, predicted, text = figures()
            assert (served, predicted) == (len(ids), len(ids))
            assert 'shopml_model_version_info{usecase="clv",version="1"} 1.0' in text

        # Both workers' predictions reach the prediction log (written every 0.05 s).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(logged_ids(s.db, "clv")) < len(ids):
            time.sleep(0.2)
        logged = logged_ids(s.db, "clv")
        assert sorted(logged) == sorted(ids)
        assert {rid[:16] for rid in logged} == workers


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_flushes_the_prediction_log(
    workers: int, served_home: Path, tmp_path: Path
) -> None:
    cid = a_customer(served_home)
    # Nothing is written before the signal: an hour between flushes, a batch never reached.
    env = {"SHOPML_PREDICTION_LOG_FLUSH_SECONDS": "3600", "SHOPML_PREDICTION_LOG_BATCH": "100000"}
    with serve(served_home, tmp_path, ["--workers", str(workers)], env) as s:
        ids = []
        for i in range(30):
            body: dict[str, Any] = {"customer_id": cid}
            if i % 3 == 0:
                body = {"instances": [{"customer_id": cid}, {"features": {"recency_days": i}}]}
            status, _, raw = call(f"{s.url}/v1/clv/predict", body)
            assert status == 200, raw
            ids += [json.loads(raw)["request_id"]] * (2 if "instances" in body else 1)
        assert logged_ids(s.db, "clv") == []
        # The signal goes to the `shopml serve` process alone, as a supervisor would send it.
        s.proc.send_signal(signal.SIGTERM)
        code = s.proc.wait(timeout=90)
        output = s.log.read_text()
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert code in (0, -signal.SIGTERM), output[-3000:]
        assert "Application shutdown complete" in output, output[-3000:]
        assert sorted(logged_ids(s.db, "clv")) == sorted(ids), output[-3000:]


# -- the README's examples -------------------------------------------------------------------
def readme_commands() -> list[list[str]]:
    """The shell commands of the serving guide's example, as argument lists (comments, line
    continuations and quoting handled as the shell would; ``$VAR`` left for the caller)."""
    from benchmarks.common import DOC_FILES

    text = next(t for p in DOC_FILES() if "<!-- serving -->" in (t := p.read_text()))
    section = text[text.index("<!-- serving -->") : text.index("<!-- /serving -->")]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "no bash example in the serving guide"
    lexer = shlex.shlex(block.group(1).replace("\\\n", " "), posix=True, punctuation_chars=";&|\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|\n"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def shape_of(path: str, answer: Any) -> set[str]:
    """The keys the serving guide promises for an answer on ``path``."""
    if path.endswith("/predict"):
        common = {"request_id", "usecase", "model_version"}
        if "predictions" in answer:
            return common | {"predictions"}
        return common | {"entity", "prediction", "feature_age_seconds", "stale"}
    return {
        "/v1/recommender/recommend": {"request_id", "model_version", "recommendations"},
        "/v1/pricing/suggest": {"request_id", "model_version", "suggested_price", "guardrails"},
        "/v1/models": {"models"},
        "/ready": {"status", "models", "problems"},
        "/v1/admin/reload": {"changes", "models"},
    }[path]


@pytest.fixture(scope="module")
def every_champion(served_home: Path) -> Path:
    """The served home with a champion for all eight use cases (the guide's examples touch
    each one); a version the gate rejected on the small shop is made champion anyway."""

    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.train import TrainConfig, train_usecase
    from shopml.settings import Settings
    from shopml.usecases import get_usecase, get_usecases

    settings = Settings(home=served_home)
    client = registry_client(served_home)
    wh = Warehouse(served_home / "warehouse.duckdb")
    try:
        for name in get_usecases():
            with contextlib.suppress(Exception):
                client.get_model_version_by_alias(f"shopml-{name}", "champion")
                continue
            result = train_usecase(get_usecase(name), wh, settings, TrainConfig(trials=0))
            assert result.version, (name, result.status, result.reason)
            client.set_registered_model_alias(f"shopml-{name}", "champion", str(result.version))
    finally:
        wh.close()
    return served_home


def test_readme_curl_examples_work(every_champion: Path, tmp_path: Path) -> None:
    commands = readme_commands()
    variables: dict[str, str] = {}
    env: dict[str, str] = {}
    served: Served | None = None
    checked = 0
    with contextlib.ExitStack() as stack:
        for argv in commands:
            if argv[0] == "export":
                env.update(a.partition("=")[::2] for a in argv[1:])
            elif len(argv) == 1 and re.match(r"^\w+=", argv[0]):
                name, value = argv[0].split("=", 1)
                variables[name] = value
            elif argv[:2] == ["shopml", "serve"]:
                # The guide's own command line (and keys), on a free port.
                served = stack.enter_context(serve(every_champion, tmp_path, argv[2:], env))
                wait_ready(served.url)
            elif argv[0] == "curl":
                assert served is not None, "the guide calls the service before starting it"
                args = [
                    re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], a).replace(
                        "localhost:8000", served.url.removeprefix("http://")
                    )
                    for a in argv[1:]
                ]
                proc = subprocess.run(
                    ["curl", "--max-time", "60", *args, "-w", "\n%{http_code}"],
                    capture_output=True,
                    text=True,
                    timeout=90,
                    check=False,
                )
                body, _, status = proc.stdout.rpartition("\n")
                shown = shlex.join(argv)
                assert proc.returncode == 0, (shown, proc.stderr)
                assert status.startswith("2"), (shown, status, body[:500])
                target = next(a for a in args if a.startswith(served.url.removeprefix("http://")))
                path = urllib.parse.urlsplit(f"http://{target}").path
                answer = json.loads(body)
                missing = shape_of(path, answer) - set(answer)
                assert not missing, (shown, missing, answer)
                if "predictions" in answer:
                    for p in answer["predictions"]:
                        assert {"entity", "prediction", "feature_age_seconds", "stale"} <= set(p)
                checked += 1
            else:
                raise AssertionError(f"the test does not know how to run {shlex.join(argv)!r}")
    assert served is not None
    assert checked >= 10, f"only {checked} curl examples found"


def wait_ready(url: str, timeout: float = 120) -> None:
    """Until ``/ready`` says every model is loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = call(f"{url}/ready", key=None)
        if status == 200 and json.loads(body)["status"] == "ready":
            return
        time.sleep(0.5)
    raise AssertionError(f"not ready: {body[:1000]!r}")
