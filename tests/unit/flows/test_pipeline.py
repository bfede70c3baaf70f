"""The pipeline flow in-process (Prefect's ephemeral mode) on a tiny shop with toy use cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shopml.flows import monitor, pipeline, retrain
from shopml.lifecycle.tracking import configure, model_name
from shopml.online import SQLiteOnlineStore
from shopml.settings import get_settings

from .conftest import CountingToy

pytestmark = pytest.mark.slow


def versions(usecase: str) -> list[str]:
    client = configure(get_settings())
    return sorted(
        str(v.version) for v in client.search_model_versions(f"name = '{model_name(usecase)}'")
    )


def run(**kwargs: Any) -> Any:
    return pipeline(source="warehouse", trials=0, timeout_s=5, **kwargs)


def shopml(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    from shopml import cli

    monkeypatch.setattr("sys.argv", ["shopml", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_failing_use_case_is_reported_while_the_others_finish(
    loaded: Path,
    toy_usecases: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shopml.cli.console.width", 200)
    code, out, _ = shopml(
        ["run", "--source", "warehouse", "--trials", "0", "--timeout", "5"], capsys, monkeypatch
    )
    assert code == 1  # toy-broken failed, and `shopml run` says so with its exit code
    assert "toy-broken: RuntimeError: boom: this use case is broken on purpose" in out
    assert "promoted" in out and "v1" in out
    assert "mlflow ui --backend-store-uri sqlite:" in out
    assert "API: shopml serve" in out

    # The champion was batch-scored into the scores folder, written whole.
    scores = pd.read_parquet(loaded / "scores" / "toy.parquet")
    assert len(scores) == 400
    assert {"thing_id", "p", "model_version", "as_of"} <= set(scores.columns)
    assert not list(loaded.rglob("*.tmp"))
    # Online features for the entities serving looks up.
    store = SQLiteOnlineStore(loaded / "online.sqlite")
    assert set(store.entities()) == {"customers", "products", "sellers"}
    any_customer = pd.read_parquet(loaded / "features" / "customers.parquet")["customer_id"][0]
    got = store.get("customers", any_customer)
    assert got is not None
    # The monitoring report: data quality, scores, and a check per use case (no traffic yet).
    report = json.loads((loaded / "reports" / "monitoring" / "latest.json").read_text())
    assert set(report["score_distributions"]) == {"toy"}
    assert report["not_scored"] == ["toy-broken"]
    assert report["data_quality"]["tables"]
    checks = {c["usecase"]: c for c in report["checks"]}
    assert checks["toy"]["status"] == "no-traffic"
    assert checks["toy-broken"]["status"] == "no-model"

    # Again with nothing changed: the finished use case is not trained again.
    fits = CountingToy.fits
    code, out, _ = shopml(
        ["run", "--source", "warehouse", "--trials", "0", "--timeout", "5", "--json"],
        capsys,
        monkeypatch,
    )
    assert code == 1
    summary = json.loads(out)
    rows = {u["usecase"]: u for u in summary["usecases"]}
    assert rows["toy"]["cached"] is True and rows["toy"]["champion_version"] == "1"
    assert rows["toy"]["champion_metric"] is not None and rows["toy"]["baseline_metric"]
    assert rows["toy-broken"]["status"] == "failed"  # failures are never cached: tried again
    assert CountingToy.fits == fits
    assert versions("toy") == ["1"]
    assert got[1].isoformat() == summary["validation"]["data_end"]


def test_changed_inputs_or_force_redo_the_work(loaded: Path, toy_usecases: dict[str, Any]) -> None:
    first = run(usecases=["toy"])
    fits = CountingToy.fits
    assert fits > 0 and first.usecases[0].cached is False
    assert first.usecases[0].status == "promoted"

    # A new training budget is a new configuration: it trains (and registers) again.
    second = pipeline(source="warehouse", trials=1, timeout_s=5, usecases=["toy"])
    assert second.usecases[0].cached is False and CountingToy.fits > fits
    assert versions("toy") == ["1", "2"]

    # --force redoes the work even with the same inputs.
    fits = CountingToy.fits
    forced = run(usecases=["toy"], force=True)
    assert forced.usecases[0].cached is False and CountingToy.fits > fits


def test_retrain_and_monitor_flows(loaded: Path, toy_usecases: dict[str, Any]) -> None:
    summary = retrain("toy", trials=0, timeout_s=5)
    assert summary.usecases[0].status == "promoted"
    assert summary.usecases[0].scored_rows == 400
    out = monitor()
    report = json.loads(Path(out["path"]).read_text())
    assert report["score_distributions"]["toy"]["outputs"]["p"]["kind"] == "numeric"
    assert report == json.loads(Path(out["latest"]).read_text())


def test_no_data_is_a_clear_error(shopml_home: Path) -> None:
    from shopml.data.warehouse import WarehouseError

    with pytest.raises(WarehouseError, match="no warehouse"):
        run()


def test_shopml_deploy_needs_a_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: None}):
        code, _, err = shopml(["deploy"], capsys, monkeypatch)
    assert code == 2 and "PREFECT_API_URL" in err


def test_a_use_case_whose_tables_are_gone_is_not_scored(shopml_home: Path) -> None:
    """A champion trained on earlier data meets an import without its tables (CDNOW has no
    prices): the pipeline records why it did not score, no task fails."""
    from shopml.data.warehouse import Warehouse
    from shopml.flows.pipeline import _score
    from shopml.flows.summary import UseCaseSummary

    with Warehouse.open(get_settings()) as wh:
        wh.con.execute("CREATE TABLE orders AS SELECT 'o1' AS order_id")
    row = UseCaseSummary(usecase="pricing", status="skipped")
    assert _score("pricing", "v0", {}, row) is None
    assert row.score_error is not None
    assert row.score_error.startswith("not scored: the data has no price_history")
