"""Model cards: made at registration for every trained use case of the session's served home,
read back by `shopml card`, with intervals, calibration, slices, the gate and known limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.serving.conftest import SERVED, registry_client, serving_settings


@pytest.fixture
def home(served_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from shopml.settings import reset_settings

    monkeypatch.setenv("SHOPML_HOME", str(served_home))
    from tests.unit.test_cli import wide

    wide(monkeypatch, 200)
    reset_settings()
    return served_home


def _champion(home: Path, usecase: str) -> str:

    mlc = registry_client(home)
    return str(mlc.get_model_version_by_alias(f"shopml-{usecase}", "champion").version)


@pytest.mark.parametrize("usecase", SERVED)
def test_every_trained_version_has_a_card(
    home: Path, usecase: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopml.usecases import get_usecase
    from tests.unit.test_cli import shopml

    uc = get_usecase(usecase)
    version = _champion(home, usecase)
    code, out, err = shopml(["card", usecase, f"v{version}", "--json"], capsys, monkeypatch)
    assert code == 0, err
    card = json.loads(out)
    assert card["usecase"] == usecase and card["version"] == version
    assert card["question"] == uc.question and card["metric"] == uc.gate.metric
    data = card["data"]
    assert data["source"] == "simulator" and data["dataset_version"]
    assert data["training_cutoffs"][0] <= data["validation_cutoff"] <= data["test_cutoff"]
    assert data["test_cutoff"] <= data["data_end"] and data["rows"]["test"] > 0
    decisive = card["metrics"][uc.gate.metric]
    assert decisive["low"] <= decisive["estimate"] <= decisive["high"]
    for name, diff in card["differences"].items():  # paired against every baseline
        base = card["baselines"][name]
        assert diff["estimate"] == pytest.approx(decisive["estimate"] - base["estimate"])
    assert card["gate"]["verdict"] == "promoted" and card["gate"]["reasons"]
    assert any("trained on data up to" in x for x in card["limits"])
    assert any("simulated data" in x for x in card["limits"])
    by_slice: dict[str, int] = {}
    for s in card["slices"]:
        by_slice[s["slice"]] = by_slice.get(s["slice"], 0) + s["rows"]
        if s["value"] is not None:
            assert s["rows"] >= 30 and s["value"]["estimate"] is not None
        else:
            assert s["rows"] < 30 or s["value"] is None
    # Every slice column splits all the test rows.
    assert all(n == data["rows"]["test"] for n in by_slice.values())
    if uc.kind == "binary":
        cal = card["calibration"]
        assert cal["output"] == card["outputs"][0] and 0 <= cal["ece"] <= 1
        assert sum(b["rows"] for b in cal["bins"]) == data["rows"]["test"]
    if uc.kind in ("clustering", "ranking"):
        assert card["calibration"] is None
    code, text, _ = shopml(["card", usecase, version], capsys, monkeypatch)
    assert code == 0 and text.startswith(f"# Model card: shopml-{usecase} v{version}")
    assert "## Known limits" in text and "## Gate" in text


def test_customer_slices_and_the_truth_where_the_data_has_them(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_cli import shopml

    code, out, err = shopml(["card", "clv", _champion(home, "clv"), "--json"], capsys, monkeypatch)
    assert code == 0, err
    card = json.loads(out)
    levels = {s["level"] for s in card["slices"] if s["slice"] == "customers"}
    assert levels <= {"new", "returning"} and levels
    assert card["oracle"] and card["metric"] in card["oracle"]


def test_the_card_is_an_mlflow_artifact_and_errors_are_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from tests.unit.test_cli import shopml

    settings = serving_settings(home)
    mlc = registry_client(settings.home)
    mv = mlc.get_model_version_by_alias("shopml-returns", "champion")
    mlflow.set_tracking_uri(settings.tracking_uri)
    names = {a.path for a in mlc.list_artifacts(mv.run_id)}
    assert {"model_card.md", "model_card.json"} <= names
    code, _, err = shopml(["card", "returns", "999"], capsys, monkeypatch)
    assert code == 2 and "shopml-returns has no version 999" in err and "Traceback" not in err
    code, _, err = shopml(["card", "nope", "1"], capsys, monkeypatch)
    assert code == 2
