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


def test_a_failing_use_case_is_reported_while_the_others_finish(
    loaded: Path, toy_usecases: dict[str, Any]
) -> None:
    summary = run()
    rows = {u.usecase: u for u in summary.usecases}
    assert rows["toy-broken"].status == "failed"
    assert "boom: this use case is broken on purpose" in rows["toy-broken"].reason
    assert [u.usecase for u in summary.failed] == ["toy-broken"]

    toy = rows["toy"]
    assert toy.status == "promoted" and toy.version == "1" and toy.champion_version == "1"
    assert toy.metric == "auc" and toy.champion_metric is not None
    assert toy.baseline_metric is not None
    # The champion was batch-scored into the scores folder, written whole.
    scores = pd.read_parquet(loaded / "scores" / "toy.parquet")
    assert len(scores) == toy.scored_rows == 400
    assert {"thing_id", "p", "model_version", "as_of"} <= set(scores.columns)
    assert not list((loaded / "scores").glob(".*tmp"))
    # Online features for the entities serving looks up.
    store = SQLiteOnlineStore(loaded / "online.sqlite")
    assert set(store.entities()) == {"customers", "products", "sellers"}
    any_customer = pd.read_parquet(loaded / "features" / "customers.parquet")["customer_id"][0]
    got = store.get("customers", any_customer)
    assert got is not None and got[1].isoformat() == summary.validation["data_end"]
    # The monitoring report covers what exists, and says what does not yet.
    report = json.loads(Path(summary.monitoring["latest"]).read_text())
    assert set(report["score_distributions"]) == {"toy"}
    assert report["not_scored"] == ["toy-broken"]
    assert report["data_quality"]["tables"]
    assert "Evidently" in report["not_available_yet"]
    assert summary.next_steps["mlflow_ui"].startswith("mlflow ui --backend-store-uri sqlite:")


def test_a_rerun_with_unchanged_inputs_skips_finished_work(
    loaded: Path, toy_usecases: dict[str, Any]
) -> None:
    first = run(usecases=["toy"])
    fits = CountingToy.fits
    assert fits > 0 and first.usecases[0].cached is False

    second = run(usecases=["toy"])
    assert second.usecases[0].cached is True
    assert second.usecases[0].status == first.usecases[0].status
    assert CountingToy.fits == fits  # nothing was fitted again
    assert versions("toy") == ["1"]
    assert second.usecases[0].champion_version == "1"

    # A new training budget is a new configuration: it trains (and registers) again.
    third = pipeline(source="warehouse", trials=1, timeout_s=5, usecases=["toy"])
    assert third.usecases[0].cached is False and CountingToy.fits > fits
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


def test_shopml_run_prints_the_summary_and_fails_on_a_failed_use_case(
    loaded: Path,
    toy_usecases: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shopml.cli.console.width", 200)
    code, out, _ = shopml(
        ["run", "--source", "warehouse", "--trials", "0", "--timeout", "5"], capsys, monkeypatch
    )
    assert code == 1  # toy-broken failed
    assert "toy-broken: RuntimeError: boom" in out
    assert "promoted" in out and "v1" in out
    assert "mlflow ui --backend-store-uri sqlite:" in out
    assert "shopml serve (coming" in out

    code, out, _ = shopml(
        [
            "run",
            "--source",
            "warehouse",
            "--trials",
            "0",
            "--timeout",
            "5",
            "--usecase",
            "toy",
            "--json",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["usecases"][0]["cached"] is True
    assert summary["usecases"][0]["champion_version"] == "1"


def test_shopml_deploy_needs_a_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: None}):
        code, _, err = shopml(["deploy"], capsys, monkeypatch)
    assert code == 2 and "PREFECT_API_URL" in err
