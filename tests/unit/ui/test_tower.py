"""The control tower without a browser: its reads (registry, monitoring store, the service's
metrics), its sign-in and CSRF tokens, its actions through the CLI's functions, the API mount,
and what importing it loads. Trained on the toy use case (seconds); the browser tests in
tests/integration/test_ui_browser.py use a real simulated shop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from shopml.lifecycle import registry
from shopml.lifecycle.tracking import configure
from shopml.lifecycle.train import TrainConfig, train_usecase
from shopml.monitoring.store import MetricRow, MonitoringStore
from shopml.serving.app import Auth
from shopml.settings import Settings
from shopml.ui import actions
from shopml.ui.app import create_ui_app, standalone_app
from shopml.ui.auth import Sessions
from shopml.ui.data import Reader, _quantile, latency_from_metrics, status_of
from tests.support.toy import ToyUseCase, toy_warehouse

ROOT = Path(__file__).resolve().parents[3]
HTML = {"accept": "text/html"}
SCORE, ADMIN = "k-score-123", "k-admin-456"


# -- pure parts ------------------------------------------------------------------------------
def test_quantiles_from_buckets_interpolate_like_prometheus() -> None:
    buckets = [(0.001, 50.0), (0.002, 90.0), (0.005, 100.0), (float("inf"), 100.0)]
    assert _quantile(buckets, 0.5) == pytest.approx(0.001)
    assert _quantile(buckets, 0.7) == pytest.approx(0.0015)
    assert _quantile(buckets, 0.95) == pytest.approx(0.0035)
    assert _quantile([(1.0, 0.0), (float("inf"), 0.0)], 0.5) is None
    assert _quantile([(0.01, 1.0), (float("inf"), 10.0)], 0.99) == 0.01  # beyond: the bound


def test_latency_is_read_per_use_case_from_the_metrics_page() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    reg = CollectorRegistry()
    h = Histogram(
        "shopml_request_duration_seconds",
        "x",
        ["route", "method", "status"],
        buckets=(0.001, 0.01, 0.1),
        registry=reg,
    )
    for _ in range(90):
        h.labels("/v1/toy/predict", "POST", "200").observe(0.0005)
    for _ in range(10):
        h.labels("/v1/toy/predict", "POST", "200").observe(0.05)
    h.labels("/v1/toy/predict", "POST", "422").observe(2.0)  # errors are not latency
    h.labels("/health", "GET", "200").observe(0.0001)
    out = latency_from_metrics(generate_latest(reg).decode(), "here")
    assert set(out) == {"toy"}
    toy = out["toy"]
    assert toy.requests == 100
    assert toy.mean_ms == pytest.approx((90 * 0.5 + 10 * 50) / 100)
    assert toy.p50_ms is not None and toy.p50_ms < 1.0
    assert toy.p99_ms is not None and 10 < toy.p99_ms <= 100


def test_status_follows_the_stored_decision() -> None:
    def decision(triggered: bool, reasons: list[str], rows: int) -> pd.Series:
        return pd.Series(
            {"triggered": triggered, "reasons": reasons, "detail": {"findings": {"rows": rows}}}
        )

    assert status_of(None)[0] == "not checked"
    assert status_of(decision(True, ["drift"], 500)) == ("alert", ["drift"])
    assert status_of(decision(False, ["drift"], 500))[0] == "pending"
    assert status_of(decision(False, [], 0))[0] == "no traffic"
    assert status_of(decision(False, [], 500)) == ("ok", [])


def test_sessions_sign_check_and_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Auth([SCORE], [ADMIN], open_=False)
    sessions = Sessions(auth, tmp_path)
    token, caller = sessions.issue(ADMIN)
    assert caller.admin and sessions.verify(token) == caller
    score_token, score_caller = sessions.issue(SCORE)
    assert not score_caller.admin
    assert ADMIN not in token and SCORE not in score_token  # never the key itself
    # A scoring session cannot be turned into an admin one by editing the token.
    forged = score_token.replace("score.", "admin.", 1)
    assert sessions.verify(forged) is None
    with pytest.raises(HTTPException) as exc:
        sessions.issue("nope")
    assert exc.value.status_code == 401
    # Keys rotated: the old sessions end.
    rotated = Sessions(Auth([SCORE], ["another-admin"], open_=False), tmp_path)
    assert rotated.verify(token) is None
    # CSRF: bound to the session; a scoring key cannot act whatever it sends.
    assert sessions.check_action(caller, sessions.csrf(caller)) == caller
    with pytest.raises(HTTPException) as exc:
        sessions.check_action(caller, "stale")
    assert exc.value.status_code == 403
    with pytest.raises(HTTPException) as exc:
        sessions.check_action(score_caller, sessions.csrf(score_caller))
    assert exc.value.status_code == 403 and "admin" in str(exc.value.detail)
    # Expired.
    monkeypatch.setattr(time, "time", lambda: 10**12)
    assert sessions.verify(token) is None


# -- on a trained toy ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Three toy versions: v1 promoted, v2 rejected (challenger), v3 promoted; monitoring
    results for two checks. Tests that move the champion put v3 back."""
    home = tmp_path_factory.mktemp("tower")
    settings = Settings(home=home)
    wh = toy_warehouse(home / "toy.duckdb")
    config = TrainConfig(trials=0, timeout_s=5)
    for strength in (0.6, 0.0, 1.0):
        train_usecase(ToyUseCase(strength=strength), wh, settings, config)
    wh.close()
    store = MonitoringStore(None, settings.home)
    t0 = datetime(2024, 6, 1)
    for i, (share, auc, triggered) in enumerate(((0.1, 0.8, False), (0.7, 0.6, True))):
        when = t0 + timedelta(days=7 * i)
        rows = [
            MetricRow("drift", "share", share, n=300),
            MetricRow("drift", "score", share, feature="x_signal", detail={"threshold": 0.1}),
            MetricRow("drift", "score", 0.05, feature="x_noise", detail={"threshold": 0.1}),
            MetricRow("prediction_drift", "score", share / 2, feature="output.p"),
            MetricRow(
                "performance", "auc", auc, n=250, detail={"low": auc - 0.05, "high": auc + 0.05}
            ),
            MetricRow("reference", "auc", 0.75),
            MetricRow("oracle", "auc", 0.9, n=250),
        ]
        run = store.write_metrics("toy", "3", when, (when - timedelta(days=7), when), rows)
        store.write_decision(
            run,
            "toy",
            "3",
            when,
            triggered,
            "alert" if triggered else "none",
            "alerted" if triggered else "",
            ["drift: 70% of features"] if triggered else [],
            {"findings": {"rows": 300}, "alert": {"delivered": False, "url": None}},
        )
    store.close()
    return settings


def client_for(settings: Settings, auth: Auth) -> TestClient:
    app = standalone_app(settings, create_ui_app(settings, auth=auth, usecases=[ToyUseCase()]))
    return TestClient(app, raise_server_exceptions=False)


def test_the_reads_show_registry_and_monitoring(toy_home: Settings) -> None:
    with Reader(toy_home) as reader:
        row = reader.row(ToyUseCase())
        detail = reader.detail(ToyUseCase())
    assert row.status == "alert" and row.status_reasons == ["drift: 70% of features"]
    assert row.champion is not None and row.champion.version == "3"
    assert row.challenger is not None and row.challenger.version == "2"
    assert row.live is not None and row.live.value == pytest.approx(0.6) and row.live.n == 250
    assert (row.live.low, row.live.high) == (pytest.approx(0.55), pytest.approx(0.65))
    assert row.oracle is not None and row.oracle.value == pytest.approx(0.9)
    assert row.test is not None and row.test.low is not None and row.test.high is not None
    assert row.baseline is not None and row.last_retrain is not None
    assert row.last_retrain.version == "3" and row.last_retrain.verdict == "promoted"
    assert [v.version for v in detail.history] == ["3", "2", "1"]
    assert detail.history[1].verdict == "rejected" and detail.history[1].reasons
    assert [f["feature"] for f in detail.drift_features] == ["x_signal", "x_noise"]
    assert detail.drift_features[0]["drifted"] is False  # as stored
    assert [p[1] for p in detail.drift_series["share of watched features drifted"]] == [0.1, 0.7]
    assert set(detail.performance_series) == {"live", "at test", "oracle"}
    assert len(detail.alerts) == 1 and detail.alerts[0].triggered
    assert detail.links["3"]["mlflow"].startswith("http://127.0.0.1:5000/#/experiments/")
    assert "prefect" not in detail.links["3"]  # trained by `train_usecase`, not a flow
    # A version a flow trained links to its flow run, on the configured Prefect UI.
    from shopml.lifecycle.tracking import FLOW_RUN_TAG

    run_id = detail.history[2].run_id
    assert run_id is not None
    configure(toy_home).set_tag(run_id, FLOW_RUN_TAG, "0f1e2d")
    settings = toy_home.model_copy(update={"ui_prefect_url": "http://prefect.internal:4200/"})
    with Reader(settings) as reader:
        links = reader.detail(ToyUseCase()).links
    assert links["1"]["prefect"] == "http://prefect.internal:4200/runs/flow-run/0f1e2d"
    assert detail.rollout is not None and detail.rollout.mode == "off"
    assert detail.rollout.source == "default"  # neither recorded nor configured
    assert detail.rollout.judgements == []


def test_the_rollout_shows_its_mode_and_the_arms_judgements(toy_home: Settings) -> None:
    from shopml.runtime import rollout as rollouts

    client = configure(toy_home)
    model = "shopml-toy"
    # Configured only: shown as such.
    configured = toy_home.model_copy(update={"rollout": {"toy": "shadow"}})
    with Reader(configured) as reader:
        state = reader.rollout(ToyUseCase())
    assert state is not None and (state.mode, state.source) == ("shadow", "config")
    # Recorded in the registry (as `shopml rollout` records it): that wins; the arms' judgement
    # is listed with the rollout, not among the monitor's checks.
    rollouts.record(client, model, rollouts.make("canary", 0.2, challenger="2", by="test"))
    store = MonitoringStore(None, toy_home.home)
    when = datetime(2024, 6, 20)
    run = store.write_metrics("toy", "2", when, (when - timedelta(days=30), when), [])
    judged = {
        "difference": {"estimate": 0.02, "low": -0.03, "high": 0.07},
        "labelled": {"champion": 80, "challenger": 20},
    }
    store.write_decision(
        run, "toy", "2", when, False, "rollout", "continue", ["not enough evidence yet"], judged
    )
    store.close()
    try:
        with Reader(configured) as reader:
            detail = reader.detail(ToyUseCase())
            row = reader.row(ToyUseCase())
        assert detail.rollout is not None
        assert (detail.rollout.label, detail.rollout.source) == ("canary 20%", "registry")
        assert [j.outcome for j in detail.rollout.judgements] == ["continue"]
        assert all(c.action != "rollout" for c in detail.checks)
        assert row.status == "alert"  # the monitor's newest check, not the judgement
        client_ = client_for(configured, Auth([SCORE], [], open_=False))
        page = client_.get("/ui/u/toy", headers={"authorization": f"Bearer {SCORE}", **HTML})
        assert page.status_code == 200
        assert "canary 20%" in page.text and 'data-testid="rollout-judgements"' in page.text
        assert "[-0.03, 0.07]" in page.text
    finally:
        rollouts.record(client, model, rollouts.make("off"))


def test_pages_need_a_key_and_actions_an_admin_key(toy_home: Settings) -> None:
    client = client_for(toy_home, Auth([SCORE], [ADMIN], open_=False))
    # No key: a browser is sent to sign in, a script gets the API's 401.
    r = client.get("/ui/", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
    assert client.get("/ui/").status_code == 401
    assert client.get("/ui/", headers={"authorization": "Bearer wrong"}).status_code == 401
    # A scoring key reads every page, sees no action, and cannot act.
    score = {"authorization": f"Bearer {SCORE}", **HTML}
    page = client.get("/ui/u/toy", headers=score)
    assert page.status_code == 200 and 'data-testid="no-actions"' in page.text
    assert "Content-Security-Policy" in page.headers
    for action, form in (("promote", {"version": "1", "confirm": "yes"}), ("rollback", {})):
        r = client.post(f"/ui/u/toy/{action}", headers=score, data={"confirm": "yes", **form})
        assert r.status_code == 403, r.text
    assert client.get("/ui/u/toy/confirm?action=rollback", headers=score).status_code == 403
    champion = registry.alias_version(configure(toy_home), "toy", "champion")
    assert champion is not None and str(champion.version) == "3"
    # Bad requests are one clear 4xx each.
    admin = {"authorization": f"Bearer {ADMIN}"}
    assert client.get("/ui/u/nope", headers=admin).status_code == 404
    r = client.post("/ui/u/toy/promote", headers=admin, data={"version": "9", "confirm": "yes"})
    assert r.status_code == 404 and "no version 9" in r.json()["detail"]
    r = client.post("/ui/u/toy/promote", headers=admin, data={"version": "1"})
    assert r.status_code == 400 and "confirm" in r.json()["detail"]
    r = client.post("/ui/u/toy/promote", headers=admin, data={"version": "x", "confirm": "yes"})
    assert r.status_code == 422
    assert client.get("/ui/u/toy/report/20240601T000000", headers=admin).status_code == 404
    # An admin key promotes, as `shopml promote` does (recorded as a manual override) ...
    r = client.post(
        "/ui/u/toy/promote", headers=admin, data={"version": "1", "confirm": "yes", "reason": "t"}
    )
    assert r.status_code == 200 and r.json() == {
        "usecase": "toy",
        "champion": "1",
        "previous": "3",
        "manual": True,
    }
    client_ = configure(toy_home)
    mv = registry.alias_version(client_, "toy", "champion")
    assert mv is not None and str(mv.version) == "1"
    override = json.loads(mv.tags["shopml.gate.override"])
    assert (
        override["reason"].startswith("manual promotion in the control tower")
        and ": t" in (override["reason"])
    )
    # ... and rolls back, as `shopml rollback` does.
    r = client.post("/ui/u/toy/rollback", headers=admin, data={"confirm": "yes"})
    assert r.json() == {"usecase": "toy", "from": "1", "to": "3"}
    mv = registry.alias_version(client_, "toy", "champion")
    assert mv is not None and str(mv.version) == "3"


def test_a_browser_session_signs_in_and_needs_its_form_token(toy_home: Settings) -> None:
    client = client_for(toy_home, Auth([SCORE], [ADMIN], open_=False))
    r = client.post("/ui/login", data={"key": "wrong", "next": "/ui/u/toy"}, headers=HTML)
    assert r.status_code == 401 and "unknown key" in r.text
    # The target after signing in stays inside the tower (no open redirect).
    r = client.post(
        "/ui/login", data={"key": ADMIN, "next": "https://evil.example/"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    cookie = r.cookies.get("shopml_ui")
    assert cookie and ADMIN not in cookie
    assert "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    confirm = client.get("/ui/u/toy/confirm?action=rollback", headers=HTML)
    assert confirm.status_code == 200
    csrf = confirm.text.split('name="csrf" value="')[1].split('"')[0]
    # Without the form's token (another site's form): refused.
    r = client.post("/ui/u/toy/rollback", data={"confirm": "yes"}, headers=HTML)
    assert r.status_code == 403 and "another site" in r.text
    r = client.post(
        "/ui/u/toy/rollback", data={"confirm": "yes", "csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303 and "rolled+back" in r.headers["location"]
    page = client.get(r.headers["location"], headers=HTML)
    assert "champion rolled back from v3 to v1" in page.text
    registry.promote(configure(toy_home), "toy", "3", "test: back to v3")


def test_retrain_is_refused_while_one_runs(tmp_path: Path) -> None:
    toy_home = Settings(home=tmp_path)
    actions.write_state(
        actions._state_path(toy_home, "toy"),
        {"usecase": "toy", "state": "running", "started_at": "now", "pid": 1},
    )
    with pytest.raises(actions.ActionError, match="already running"):
        actions.start_retrain(toy_home, "toy", "me")
    # A job whose process is gone without a word is shown as lost, not running forever.
    actions.write_state(
        actions._state_path(toy_home, "toy"),
        {"usecase": "toy", "state": "running", "started_at": "now", "pid": 2**22 + 12345},
    )
    job = actions.retrain_job(toy_home, "toy")
    assert job is not None and job.state == "lost"


def test_mounted_in_the_api_with_its_keys() -> None:
    from shopml.api import create_app

    settings = Settings(serve_ui=True, api_keys=[SCORE], admin_keys=[ADMIN])
    app = create_app(settings, usecases=[])
    with TestClient(app) as client:
        assert client.get("/ui", follow_redirects=False).status_code == 307
        assert client.get("/ui/").status_code == 401
        r = client.get("/ui/", headers={"authorization": f"Bearer {SCORE}", **HTML})
        assert r.status_code == 200 and "Every model, now" in r.text
        assert client.get("/ui/static/chart.umd.min.js").status_code == 200
    # Not asked for: not there.
    app = create_app(Settings(api_keys=[SCORE]), usecases=[])
    with TestClient(app) as client:
        assert client.get("/ui/", headers={"authorization": f"Bearer {SCORE}"}).status_code == 404


def test_the_tower_loads_no_training_or_orchestration_library() -> None:
    code = (
        "import sys\n"
        "from shopml.settings import Settings\n"
        "from shopml.api import create_app\n"
        "from fastapi.testclient import TestClient\n"
        "app = create_app(Settings(serve_ui=True, api_keys=['k']))\n"
        "with TestClient(app) as c:\n"
        "    assert c.get('/ui/', headers={'authorization': 'Bearer k'}).status_code == 200\n"
        "bad = ('prefect', 'optuna', 'evidently', 'sklearn', 'implicit', 'pymc', "
        "'pymc_marketing', 'shopml.flows', 'shopml.lifecycle.train', 'shopml.monitoring.monitor')\n"
        "print(','.join(sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') "
        "for b in bad))))\n"
        "print('shopml.ui' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True"], proc.stdout


def test_shopml_ui_refuses_to_serve_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPML_ENV")
    proc = subprocess.run(
        [sys.executable, "-m", "shopml.cli", "ui", "--port", "1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "SHOPML_API_KEYS" in proc.stderr and "shopml ui" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_job_state_without_the_towers_fields_is_read(tmp_path: Path) -> None:
    """A job run by hand (``python -m shopml.ui.retrain``) or an older state file: the page
    shows it rather than failing (it once answered 500 for a state without started_at)."""
    toy_home = Settings(home=tmp_path)
    path = actions._state_path(toy_home, "toy")
    actions.write_state(path, {"pid": 2**22 + 12345, "outcome": {"status": "promoted"}})
    job = actions.retrain_job(toy_home, "toy")
    assert job is not None and job.usecase == "toy" and job.state == "lost"
    assert job.started_at is None and job.outcome == {"status": "promoted"}
    path.write_text("[1, 2]")
    assert actions.retrain_job(toy_home, "toy") is None


def test_the_plots_data_cannot_close_its_script_element(tmp_path: Path) -> None:
    """The plots' data travels as JSON in a <script> element: a feature named like markup
    stays data (no </script> in the page), and reads back the same."""
    settings = Settings(home=tmp_path)
    name = "</script><script>alert(1)</script>&"
    store = MonitoringStore(None, tmp_path)
    when = datetime(2024, 6, 1)
    rows = [MetricRow("drift", "score", 0.4, feature=name, detail={"threshold": 0.1})]
    run = store.write_metrics("toy", "1", when, (when - timedelta(days=7), when), rows)
    store.write_decision(run, "toy", "1", when, False, "none", "", [], {"findings": {"rows": 1}})
    store.close()
    client = client_for(settings, Auth([SCORE], [], open_=False))
    page = client.get("/ui/u/toy", headers={"authorization": f"Bearer {SCORE}", **HTML})
    assert page.status_code == 200
    script = page.text.split('<script type="application/json" id="charts">')[1]
    data = script.split("</script>")[0]
    assert json.loads(data)["drift_features"][0]["feature"] == name
    assert "<script>alert" not in page.text


def test_a_retrain_records_who_asked_on_the_version(toy_home: Settings, tmp_path: Path) -> None:
    from shopml.ui.retrain import _record

    said = _record(toy_home, "toy", "2", {"who": "abc123def456"})
    assert said == "control tower, key abc123def456"
    with Reader(toy_home) as reader:
        history = reader.detail(ToyUseCase()).history
    requested = {v.version: v.requested for v in history}
    assert requested["2"] is not None and requested["2"]["by"] == said
    assert "manual retrain" in requested["2"]["reason"] and requested["3"] is None
    # A registry that cannot take the tag: the retrain stands, the job says what is missing.
    missing = _record(Settings(home=tmp_path), "toy", "9", {"who": None})
    assert missing.startswith("not recorded: ")


def test_a_retrain_asked_for_is_a_decision_the_cooldown_counts(tmp_path: Path) -> None:
    from shopml.monitoring.policy import Findings, Policy, decide
    from shopml.ui.retrain import _decide

    settings = Settings(home=tmp_path)
    outcome = {"status": "promoted", "version": "4"}
    assert _decide(settings, "toy", outcome, "control tower, key abc123") is None
    with MonitoringStore(None, settings.home) as store:
        history = store.decisions("toy")
    assert list(history["action"]) == ["retrain"]
    row = history.iloc[-1]
    assert row["model_version"] == "4" and "manual retrain: promoted v4" in row["outcome"]
    assert "key abc123" in row["reasons"][0]
    # The monitor, finding drift an hour later, waits for the cooldown instead of retraining.
    later = row["ts"].to_pydatetime() + timedelta(hours=1)
    policy = Policy(min_rows=10, min_labelled=10, confirmations=1, drift_needs_impact=False)
    worse = Findings(rows=100, labelled=50, metric="mae", live=5.0, reference=2.0,
                     degradation=1.5, expects_labels=True)  # fmt: skip
    assert decide(policy, worse, history.iloc[0:0], later, True).action == "retrain"
    d = decide(policy, worse, history, later, True)
    assert d.action == "alert" and "retrained recently" in d.outcome


def test_a_retrain_asked_for_leaves_status_and_checks_the_monitors(toy_home: Settings) -> None:
    from shopml.ui.retrain import _decide

    assert _decide(toy_home, "toy", {"status": "rejected", "version": "9"}, "by hand") is None
    try:
        with Reader(toy_home) as reader:
            row = reader.row(ToyUseCase())
            checks = reader.detail(ToyUseCase()).checks
        assert row.status == "alert" and row.status_reasons == ["drift: 70% of features"]
        assert "manual retrain" not in checks[0].outcome  # the checks are the monitor's
    finally:
        with MonitoringStore(None, toy_home.home) as store:
            store.con.execute("DELETE FROM monitor_decisions WHERE run_id LIKE 'manual-%'")
            store.con.commit()
