"""The generic lifecycle on a toy use case: MLflow logging, registration, the gate both ways,
manual promotion and rollback."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import mlflow
import pytest

from shopml.lifecycle import registry
from shopml.lifecycle.tracking import configure, model_name
from shopml.lifecycle.train import TrainConfig, train_usecase
from shopml.runtime.pyfunc import load_scorer
from shopml.runtime.scorers import ConstantScorer
from shopml.settings import get_settings
from shopml.usecases.base import BaselineUnavailable
from tests.support.toy import ToyUseCase, toy_warehouse

CONFIG = TrainConfig(trials=0, timeout_s=5)


@pytest.fixture
def wh(tmp_path: Path):
    w = toy_warehouse(tmp_path / "toy.duckdb")
    yield w
    w.close()


def test_gate_both_ways_promote_and_rollback(wh) -> None:
    settings = get_settings()
    first = train_usecase(ToyUseCase(strength=0.6), wh, settings, CONFIG)
    assert first.status == "promoted", first.reason
    worse = train_usecase(ToyUseCase(strength=0.0), wh, settings, CONFIG)
    assert worse.status == "challenger"
    assert "does not beat champion v1" in worse.reason or "below the floor" in worse.reason
    better = train_usecase(ToyUseCase(strength=1.0), wh, settings, CONFIG)
    assert better.status == "promoted" and "champion v1" in better.reason

    client = configure(settings)
    name = model_name("toy")
    assert str(client.get_model_version_by_alias(name, "champion").version) == better.version
    assert str(client.get_model_version_by_alias(name, "challenger").version) == worse.version
    # The decision and its reasons are on the version.
    tags = client.get_model_version(name, worse.version).tags
    assert tags["shopml.gate.verdict"] == "rejected"
    assert json.loads(tags["shopml.gate.reasons"])

    # Manual override, recorded as such.
    registry.promote(client, "toy", worse.version, "testing an override")
    mv = client.get_model_version_by_alias(name, "champion")
    assert str(mv.version) == worse.version and "shopml.gate.override" in mv.tags
    assert json.loads(mv.tags["shopml.promotion"])["manual"] is True

    # Rollback walks the champion history back.
    assert registry.rollback(client, "toy") == (worse.version, better.version)
    assert registry.rollback(client, "toy") == (better.version, first.version)
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback(client, "toy")

    summary = registry.describe(client, "toy")
    assert summary.champion is not None and summary.champion.version == first.version
    assert summary.champion.metrics["auc"] > 0.6


def test_run_logs_params_metrics_inputs_and_a_loadable_model(wh) -> None:
    settings = get_settings()
    result = train_usecase(ToyUseCase(), wh, settings, CONFIG)
    run = mlflow.get_run(result.run_id)
    assert run.data.params["cutoff.test"].startswith("2024-12")
    assert "test_auc" in run.data.metrics and "baseline_auc" in run.data.metrics
    assert run.data.tags["shopml.dataset_version"] == wh.dataset_version(["customers"])
    assert run.data.tags["shopml.git_commit"]
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"train", "valid", "test"}
    scorer = load_scorer(f"models:/{model_name('toy')}@champion")
    assert scorer.features == ["x_signal", "x_noise"]
    # The embedded default: a SQLite store and local artifacts under the home.
    assert (settings.home / "mlflow.db").exists()
    assert any((settings.home / "mlartifacts").rglob("scorer.pkl"))
    model = mlflow.pyfunc.load_model(f"models:/{model_name('toy')}/{result.version}")
    assert model.metadata.signature is not None
    import pandas as pd

    out = model.predict(pd.DataFrame({"thing_id": ["a"], "x_signal": [1.0], "x_noise": [0.0]}))
    assert 0.5 < float(out["p"].iloc[0]) < 1.0


def test_unknown_version_is_a_clear_error(wh) -> None:
    settings = get_settings()
    train_usecase(ToyUseCase(), wh, settings, CONFIG)
    with pytest.raises(registry.RegistryError, match="has no version 99"):
        registry.promote(configure(settings), "toy", "99")


def test_a_failing_use_case_is_reported_not_raised(wh) -> None:
    class Broken(ToyUseCase):
        def fit(self, *args, **kwargs):
            raise RuntimeError("boom")

    result = train_usecase(Broken(), wh, get_settings(), CONFIG)
    assert result.status == "failed" and "boom" in result.reason


def test_missing_tables_skip_with_a_reason(tmp_path: Path) -> None:
    from shopml.data.warehouse import Warehouse

    class NeedsReturns(ToyUseCase):
        required_tables = ("customers", "returns")

    with toy_warehouse(tmp_path / "w.duckdb") as w:
        result = train_usecase(NeedsReturns(), w, get_settings(), CONFIG)
    assert result.status == "skipped" and "no returns table" in result.reason
    assert isinstance(w, Warehouse)


def test_same_data_and_config_is_not_trained_twice(wh) -> None:
    settings = get_settings()
    first = train_usecase(ToyUseCase(), wh, settings, CONFIG)
    again = train_usecase(ToyUseCase(), wh, settings, CONFIG)
    assert again.status == "unchanged" and again.version == first.version
    assert again.metrics == pytest.approx({k: round(v, 6) for k, v in first.metrics.items()})
    forced = train_usecase(ToyUseCase(), wh, settings, TrainConfig(trials=0, force=True))
    assert forced.status in ("promoted", "challenger") and forced.version == "2"


def test_an_interrupted_training_is_cleaned_up(wh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after registering but before the gate: the next run leaves one version."""
    import shopml.lifecycle.train as train_module

    settings = get_settings()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(train_module, "apply_decision", killed)
    with pytest.raises(KeyboardInterrupt):
        train_usecase(ToyUseCase(), wh, settings, CONFIG)
    monkeypatch.undo()
    result = train_usecase(ToyUseCase(), wh, settings, CONFIG)
    assert result.status == "promoted"
    client = configure(settings)
    versions = client.search_model_versions(f"name = '{model_name('toy')}'")
    assert [str(v.version) for v in versions] == [result.version]


# -- a baseline that fails never costs the model -----------------------------------------------
class BrokenBaseline(ToyUseCase):
    """The classical baseline crashes on this data, as BG/NBD did on real histories."""

    def baseline(self, wh, train, cutoff):
        raise ZeroDivisionError("float division by zero")


class UnavailableBaseline(ToyUseCase):
    def baseline(self, wh, train, cutoff):
        raise BaselineUnavailable("no repeat purchases of positive value: Gamma-Gamma has no data")


@pytest.mark.parametrize(
    ("uc", "said"),
    [
        (BrokenBaseline(), "failed: ZeroDivisionError: float division by zero"),
        (UnavailableBaseline(), "no repeat purchases of positive value"),
    ],
)
def test_a_failing_baseline_is_recorded_and_the_model_kept(wh, uc, said: str) -> None:
    settings = get_settings()
    result = train_usecase(uc, wh, settings, CONFIG)
    assert result.status == "promoted" and result.version == "1", result.reason
    assert said in result.unavailable["baseline"] and result.baseline == {}
    assert "baseline baseline unavailable" in result.reason
    assert "judged on what is available" in result.reason
    client = configure(settings)
    tags = client.get_model_version(model_name("toy"), "1").tags
    assert said in json.loads(tags["shopml.baselines_unavailable"])["baseline"]
    run = mlflow.get_run(result.run_id)
    assert said in run.data.tags["shopml.baseline_unavailable.baseline"]
    assert "test_auc" in run.data.metrics and "baseline_auc" not in run.data.metrics


def test_a_baseline_that_fails_to_answer_is_recorded_too(wh) -> None:
    class Refusing(ConstantScorer):
        def predict_matrix(self, x):
            raise ValueError("no history for these customers")

    class Unanswering(ToyUseCase):
        def baseline(self, wh, train, cutoff):
            return Refusing(features=[], outputs=["p"], values=[0.5])

    result = train_usecase(Unanswering(), wh, get_settings(), CONFIG)
    assert result.status == "promoted"
    assert result.unavailable["baseline"].startswith("failed to answer:")


# -- trainings as of a past date ----------------------------------------------------------------
def test_an_as_of_training_never_displaces_models_trained_on_later_data(wh) -> None:
    settings = get_settings()
    client = configure(settings)
    name = model_name("toy")
    latest = train_usecase(ToyUseCase(strength=0.3), wh, settings, CONFIG)
    assert latest.status == "promoted"
    past = TrainConfig(trials=0, timeout_s=5, as_of=datetime(2024, 11, 1))
    # Far better on its own window, but trained on older data: held back, with the reason.
    older = train_usecase(ToyUseCase(strength=1.0), wh, settings, past)
    assert older.verdict == "held back" and older.status == "challenger", older.reason
    assert "before the data champion v1 was trained on (to 2024-12-31)" in older.reason
    assert "shopml promote toy VERSION" in older.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == latest.version
    # A newer full-data challenger is not replaced by another as-of training either.
    newer = train_usecase(ToyUseCase(strength=0.0), wh, settings, CONFIG)
    assert newer.status == "challenger" and newer.verdict == "rejected"
    again = train_usecase(
        ToyUseCase(strength=1.0),
        wh,
        settings,
        TrainConfig(trials=0, as_of=datetime(2024, 11, 1), force=True),
    )
    assert again.status == "registered" and again.verdict == "held back"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == newer.version
    assert str(client.get_model_version_by_alias(name, "champion").version) == latest.version
    # An explicit promotion still works.
    registry.promote(client, "toy", older.version, "replaying the past on purpose")
    assert str(client.get_model_version_by_alias(name, "champion").version) == older.version


def test_models_show_the_verdict_n_and_interval(wh) -> None:
    settings = get_settings()
    train_usecase(ToyUseCase(strength=0.6), wh, settings, CONFIG)
    summary = registry.describe(configure(settings), "toy")
    champion = summary.champion
    assert champion is not None and champion.verdict == "promoted"
    assert champion.n == 400 and champion.unit == "rows"
    assert champion.interval is not None
    assert champion.interval["low"] < champion.interval["estimate"] < champion.interval["high"]
    run = mlflow.get_run(champion.run_id)
    assert run.data.tags["shopml.gate.verdict"] == "promoted" and run.data.metrics["gate_n"] == 400
    assert "test_auc_low" in run.data.metrics
