"""`shopml replay`, `shopml monitor` and the monitor flow on a small shop: batch and API
traffic land in the prediction log on the simulated clock, checks are stored, reports written,
the gauges page updated; bad input is one clear line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shopml.monitoring.store import MonitoringStore

pytestmark = [pytest.mark.slow]

AS_OF = datetime(2024, 3, 1)


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shop with a delivery-time champion trained as of :data:`AS_OF`."""
    from shopml.data.simulator import SimConfig, simulate
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.registry import promote
    from shopml.lifecycle.tracking import configure
    from shopml.lifecycle.train import TrainConfig, train_usecase
    from shopml.settings import Settings
    from shopml.usecases import get_usecase

    home = tmp_path_factory.mktemp("monitored")
    settings = Settings(home=home)
    wh = Warehouse(settings.warehouse)
    simulate(SimConfig(customers=1500, days=500, seed=5)).load(wh)
    result = train_usecase(
        get_usecase("delivery-time"), wh, settings, TrainConfig(trials=0, as_of=AS_OF)
    )
    wh.close()
    assert result.version is not None, result.reason
    if result.status != "promoted":  # a small shop may miss the gate's coverage ceiling
        promote(configure(settings), "delivery-time", result.version, reason="test start")
    return home


@pytest.fixture
def home(trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from shopml.settings import reset_settings

    copy = tmp_path / "home"
    shutil.copytree(trained_home, copy)
    # The registry records artifact locations by absolute path: keep them pointing at the
    # module's home (read only here), and write everything else in the copy.
    monkeypatch.setenv("SHOPML_HOME", str(copy))
    monkeypatch.setenv("SHOPML_MLFLOW_TRACKING_URI", f"sqlite:///{trained_home / 'mlflow.db'}")
    reset_settings()
    yield copy
    reset_settings()


def shopml(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from shopml.cli import main

    try:
        import sys

        sys.argv = ["shopml", *args]
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_replay_in_batch_then_monitor_on_demand(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPML_MONITOR_KEEP_REPORTS", "1")
    code, out, err = shopml(
        [
            "replay",
            "--start",
            "2024-03-01",
            "--days",
            "14",
            "-u",
            "delivery-time",
            "--mode",
            "batch",
            "--monitor-every",
            "7",
            "--dry-run",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    sent = result["requests"]["delivery-time"]
    assert sent > 50 and result["errors"]["delivery-time"] == 0
    assert [c["now"][:10] for c in result["checks"]] == ["2024-03-08", "2024-03-15"]
    check = result["checks"][-1]
    assert check["model_version"] == "1" and check["predictions"] > 0
    assert check["drift"]["sample_note"].startswith("all ")
    assert check["decision"]["action"] == "none"  # dry run: nothing acted on

    store = MonitoringStore(None, home)
    window = store.predictions("delivery-time", datetime(2024, 3, 1), datetime(2024, 3, 15))
    assert len(window) == sent
    assert window.frame["ts"].min().hour == 12  # stamped with the simulated day, not now
    assert {"days_p50", "days_p90"} <= set(window.outputs.columns)
    assert len(store.decisions("delivery-time")) == 2
    store.close()
    # Two checks, the newest report and Evidently snapshot kept (SHOPML_MONITOR_KEEP_REPORTS).
    reports = list((home / "reports" / "monitoring" / "delivery-time").glob("drift-*.html"))
    assert [r.name for r in reports] == ["drift-20240315T000000.html"]
    assert reports[0].stat().st_size > 10_000
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(home / "evidently"))
    project = ws.search_project("shopml-delivery-time")[0]
    assert len(ws.list_runs(project.id)) == 1
    prom = (home / "reports" / "monitoring" / "metrics.prom").read_text()
    assert 'shopml_monitor_predictions{usecase="delivery-time"}' in prom

    # On demand, as of a day in the replayed period: the same check, printed.
    code, out, err = shopml(["monitor", "delivery-time", "--at", "2024-03-15", "--dry-run"], capsys)
    assert code == 0, err
    assert "delivery-time" in out and "v1" in out
    code, out, err = shopml(["monitor", "--at", "2024-03-15", "--dry-run", "--json"], capsys)
    checks = {c["usecase"]: c for c in json.loads(out)}
    assert checks["delivery-time"]["status"] in ("ok", "pending", "alert")
    assert checks["returns"]["status"] == "no-model"
    # Now (2026): the replay's traffic is far in the past, so there is none to judge.
    code, out, err = shopml(["monitor", "delivery-time", "--dry-run", "--json"], capsys)
    assert json.loads(out)[0]["status"] == "no-traffic"
    # Six weeks on, the replayed orders have arrived: live performance, each figure stored
    # with its 95% interval (from the bootstrap's standard error).
    code, out, err = shopml(
        ["monitor", "delivery-time", "--at", "2024-04-26", "--dry-run", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)[0]["performance"]["labelled"] > 0
    store = MonitoringStore(None, home)
    perf = store.metrics("delivery-time", kind="performance", with_detail=True)
    store.close()
    with_interval = [r for r in perf.itertuples() if r.detail and "low" in r.detail]
    assert with_interval, perf
    assert all(r.detail["low"] < r.value < r.detail["high"] for r in with_interval)
    from shopml.usecases import get_usecase

    assert get_usecase("delivery-time").gate.metric in {r.metric for r in with_interval}


def test_replay_through_the_api(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = shopml(
        [
            "replay",
            "--start",
            "2024-03-01",
            "--days",
            "3",
            "-u",
            "delivery-time",
            "--json",
            "--monitor-every",
            "3",
            "--dry-run",
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["mode"] == "api" and result["requests"]["delivery-time"] > 0
    assert result["errors"]["delivery-time"] == 0
    store = MonitoringStore(None, home)
    window = store.predictions("delivery-time", datetime(2024, 3, 1), datetime(2024, 3, 4))
    assert len(window) == result["requests"]["delivery-time"]
    assert window.frame["entity_key"].unique().tolist() == ["order_id"]  # names the order
    store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--start", "2031-01-01", "--days", "3"], "outside the data"),
        (["replay", "--start", "2024-03-01", "--days", "0"], "--days"),
        (["replay", "--start", "2024-03-01", "-u", "nope"], "unknown use case"),
        (["replay", "--start", "2024-03-01", "-u", "returns"], "no champion for returns"),
        (["replay", "--start", "01/03/2024"], "--start expects a date"),
        (["replay", "--start", "2024-03-01", "--mode", "carrier-pigeon"], "mode must be"),
        (["monitor", "nope"], "unknown use case"),
        (["monitor", "--at", "yesterday"], "--at expects a date"),
    ],
)
def test_bad_input_is_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = shopml(args, capsys)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err


def test_monitor_flow_checks_with_the_report(home: Path, monkeypatch: Any) -> None:
    from shopml.flows.pipeline import monitor

    out = monitor(usecases=["delivery-time", "returns"], act=False)
    assert out["checked"] == {"delivery-time": "no-traffic", "returns": "no-model"}
    report = json.loads(Path(out["latest"]).read_text())
    assert {c["usecase"] for c in report["checks"]} == {"delivery-time", "returns"}


@pytest.fixture(scope="module")
def other_kinds_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shop with a champion for every use case (the recommender, pricing and segments
    answer differently from the five that predict)."""
    from shopml.data.simulator import SimConfig, simulate
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.registry import promote
    from shopml.lifecycle.tracking import configure
    from shopml.lifecycle.train import TrainConfig, train_usecase
    from shopml.settings import Settings
    from shopml.usecases import get_usecase, get_usecases

    home = tmp_path_factory.mktemp("kinds")
    settings = Settings(home=home)
    wh = Warehouse(settings.warehouse)
    simulate(SimConfig(customers=1500, days=500, seed=5)).load(wh)
    for name in get_usecases():
        result = train_usecase(get_usecase(name), wh, settings, TrainConfig(trials=0, as_of=AS_OF))
        assert result.version is not None, (name, result.reason)
        if result.status != "promoted":
            promote(configure(settings), name, result.version, reason="test start")
    wh.close()
    return home


def test_specifics_of_recommender_pricing_and_segments(
    other_kinds_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopml.monitoring.replay import replay
    from shopml.settings import Settings, reset_settings

    monkeypatch.setenv("SHOPML_HOME", str(other_kinds_home))
    reset_settings()
    settings = Settings(home=other_kinds_home)
    result = replay(
        AS_OF,
        21,
        usecases=["recommender", "pricing", "segments"],
        mode="api",
        monitor_every=21,
        max_per_day=40,
        act=False,
        settings=settings,
    )
    assert set(result.requests) == {"recommender", "pricing", "segments"}
    assert all(result.requests[n] > 0 for n in result.requests), result.requests
    assert result.errors["recommender"] == 0 and result.errors["segments"] == 0
    checks = {c["usecase"]: c for c in result.checks}
    rec = checks["recommender"]["specifics"]
    assert 0 < rec["coverage"] <= 1 and rec["novelty"] > 0
    price = checks["pricing"]["specifics"]
    assert price["guardrail_violations"] == 0  # the model keeps its own guardrails
    assert price["revenue_realised_vs_expected"] > 0  # suggestions a week old are judged
    seg = checks["segments"]["specifics"]
    shares = [v for k, v in seg.items() if k.startswith("segment_share[")]
    assert shares and sum(shares) == pytest.approx(1.0)
    assert "segment_share_max_change" in seg
    assert checks["segments"]["drift"] is not None  # segments have no label: drift judges
    # Asked by id only: no model inputs in the log, so no drift figure rather than a 0%.
    assert checks["recommender"]["drift"] is None
    assert any("no model inputs" in n for n in checks["recommender"]["notes"])


def _stored(
    uri: str, home: Path, name: str, days: int, start: datetime = AS_OF
) -> list[tuple[str, str, str, Any]]:
    """What the prediction log holds for ``name``: (time, entity, output as JSON, inputs),
    sorted (request ids differ between modes; nothing else may)."""
    store = MonitoringStore(uri, home)
    try:
        window = store.predictions(name, start, start + timedelta(days=days))
    finally:
        store.close()
    outputs = [json.dumps(r, sort_keys=True) for r in window.outputs.to_dict("records")]
    inputs = window.features.to_dict("records") if len(window.features.columns) else [{}]
    return sorted(
        zip(
            window.frame["ts"].astype(str),
            window.frame["entity_id"],
            outputs,
            inputs * (len(window) if not len(window.features.columns) else 1),
            strict=True,
        ),
        key=lambda r: r[:3],
    )


def _close(a: Any, b: Any) -> bool:
    """Equal JSON values, numbers within 1e-9 (relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return bool(a == pytest.approx(b, rel=1e-9, abs=1e-12))
    return bool(a == b)


def test_batch_and_api_replays_store_the_same_answers(
    other_kinds_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every use case: both modes answer through the same answer kinds and write the same
    records (the recommendations and the prices themselves, not the requests' parameters)."""
    from shopml.data.warehouse import Warehouse
    from shopml.monitoring.replay import replay
    from shopml.settings import Settings, reset_settings
    from shopml.usecases import get_usecases

    monkeypatch.setenv("SHOPML_HOME", str(other_kinds_home))
    reset_settings()
    names = list(get_usecases())
    # Two days from the first campaign send on or after AS_OF (campaign requests arrive only
    # on send days).
    wh = Warehouse(other_kinds_home / "warehouse.duckdb", read_only=True)
    try:
        sent = wh.con.execute(
            "SELECT min(sent_at) FROM campaigns WHERE sent_at >= ?", [AS_OF]
        ).fetchone()
    finally:
        wh.close()
    assert sent is not None and sent[0] is not None, "the shop sends no campaign after AS_OF"
    start = datetime.combine(sent[0].date(), datetime.min.time())
    stored: dict[str, dict[str, Any]] = {}
    for mode in ("batch", "api"):
        uri = f"sqlite:///{tmp_path / mode}.sqlite"
        settings = Settings(home=other_kinds_home, monitoring_store_uri=uri)
        result = replay(
            start, 2, mode=mode, monitor_every=7, max_per_day=15, act=False, settings=settings
        )
        assert all(result.requests.get(n, 0) > 0 for n in names), (mode, str(dict(result.requests)))
        assert not any(result.errors.values()), (mode, result.errors)
        stored[mode] = {n: _stored(uri, tmp_path, n, 2, start) for n in names}
        stored[mode]["requests"] = result.requests
    assert stored["batch"]["requests"] == stored["api"]["requests"]
    for name in names:
        batch, api = stored["batch"][name], stored["api"][name]
        assert [r[:2] for r in batch] == [r[:2] for r in api], name
        # The outputs: the same names and values (a single row and a batch may differ in the
        # last bits of a float: the service answers one row through the booster's own path).
        for b, a in zip(batch, api, strict=True):
            assert _close(json.loads(b[2]), json.loads(a[2])), (name, b[2], a[2])
        # Inputs too (each replay builds its features again: DuckDB may sum in another order).
        for b, a in zip(batch, api, strict=True):
            assert b[3].keys() == a[3].keys(), name
            for k, v in b[3].items():
                assert v == pytest.approx(a[3][k], rel=1e-12, nan_ok=True), (name, k)
    recommended = [json.loads(r[2]) for r in stored["batch"]["recommender"]]
    assert all(set(r) == {"products"} and len(r["products"]) == 10 for r in recommended)
    priced = [json.loads(r[2]) for r in stored["batch"]["pricing"]]
    assert all(r["suggested_price"] > 0 and "guardrails" in r for r in priced)
    segments = [json.loads(r[2]) for r in stored["batch"]["segments"]]
    assert all(isinstance(r["segment_name"], str) for r in segments)
