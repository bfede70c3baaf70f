"""`shopml backtest` as a user meets it: a table or JSON with intervals, one-line errors, and
`shopml models` unchanged afterwards."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_cli import shopml


@pytest.fixture
def shop(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["simulate", "--customers", "300", "--days", "150", "--json"]
    code, _, err = shopml(args, capsys, monkeypatch)
    assert code == 0, err


@pytest.mark.slow
def test_backtest_prints_intervals_and_leaves_the_models_unchanged(
    shop: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = shopml(["train", "high-value", "--trials", "0", "--json"], capsys, monkeypatch)
    assert code == 0, err
    code, before, _ = shopml(["models", "--json"], capsys, monkeypatch)
    assert code == 0

    args = ["backtest", "high-value", "--cutoff", "2023-05-01", "--trials", "0", "--draws", "50"]
    code, out, err = shopml([*args, "--json"], capsys, monkeypatch)
    assert code == 0, err
    result = json.loads(out)
    (origin,) = result["origins"]
    assert origin["status"] == "ok" and origin["cutoff"].startswith("2023-05-01")
    auc = origin["model"]["auc"]
    assert auc["low"] <= auc["estimate"] <= auc["high"] and origin["draws"] == 50
    assert "baseline" in origin["differences"]
    assert result["experiment"] == "shopml-high-value-backtest"

    code, after, _ = shopml(["models", "--json"], capsys, monkeypatch)
    assert code == 0 and json.loads(after) == json.loads(before)

    code, out, _ = shopml(args, capsys, monkeypatch)
    assert code == 0 and "auc (decides)" in out and "model - baseline on auc" in out


def test_a_cutoff_the_data_cannot_hold_is_one_line_exit_2(
    shop: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["backtest", "clv", "--cutoff", "2023-03-01", "--horizon", "273", "--json"]
    code, _, err = shopml(args, capsys, monkeypatch)
    text = " ".join(err.split())
    assert code == 2 and "Traceback" not in err
    assert "no cutoff could be backtested" in text and "273 days after the cutoff" in text
    code, _, err = shopml(["backtest", "clv", "--cutoff", "soon"], capsys, monkeypatch)
    assert code == 2 and "--cutoff expects a date" in err
