"""Backtests: trained strictly before each cutoff, judged after it against every baseline with
intervals; logged to their own experiment; the registry untouched."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shopml.lifecycle import registry
from shopml.lifecycle.backtest import backtest
from shopml.lifecycle.tracking import configure, model_name
from shopml.lifecycle.train import TrainConfig, train_usecase
from shopml.runtime.scorers import ConstantScorer, Scorer
from shopml.settings import get_settings
from shopml.usecases.base import BaselineUnavailable, LabelledData
from tests.support.toy import END, ToyUseCase, toy_warehouse

CONFIG = TrainConfig(trials=0, timeout_s=5, register=False, draws=200)
CUTOFFS = [datetime(2024, 10, 1), datetime(2024, 11, 15)]


@pytest.fixture
def wh(tmp_path: Path):
    w = toy_warehouse(tmp_path / "toy.duckdb")
    yield w
    w.close()


class TwoBaselines(ToyUseCase):
    """A constant baseline that fits, and a classical one that cannot on this data."""

    def baselines(
        self, wh: Any, train: LabelledData, cutoff: datetime
    ) -> Mapping[str, Scorer | BaselineUnavailable]:
        return {
            "constant": ConstantScorer(features=[], outputs=["p"], values=[0.5]),
            "bgnbd": BaselineUnavailable("every customer bought once: nothing to fit"),
        }


def test_rolling_origin_with_intervals_and_paired_differences(wh) -> None:
    result = backtest(TwoBaselines(), wh, CUTOFFS, config=CONFIG)
    assert [o.status for o in result.origins] == ["ok", "ok"], result.origins[0].reason
    first = result.origins[0]
    assert first.cutoff == CUTOFFS[0] and first.horizon_days == 30
    assert first.valid_cutoff == CUTOFFS[0] - timedelta(days=30)
    assert max(first.train_cutoffs) == CUTOFFS[0] - timedelta(days=60)
    auc = first.model["auc"]
    assert auc.defined and auc.low < auc.estimate < auc.high and first.n == 400
    assert set(first.baselines) == {"constant"}
    assert first.unavailable == {"bgnbd": "every customer bought once: nothing to fit"}
    assert first.differences["constant"].above(0.2)  # paired: model AUC minus 0.5
    assert first.verdict("constant", higher_is_better=True) == "better"
    # Every metric is paired too, the decisive one being ``differences``.
    assert set(first.paired["constant"]) == set(first.model)
    assert first.paired["constant"]["auc"] == first.differences["constant"]
    assert first.paired["constant"]["log_loss"].below(0.0)  # the model's log loss is lower
    (comparison,) = result.comparisons()
    assert (comparison.baseline, comparison.origins, comparison.better) == ("constant", 2, 2)
    payload = result.to_dict()
    assert payload["summary"]["completed"] == 2
    assert payload["origins"][0]["differences"]["constant"]["low"] > 0
    assert payload["origins"][0]["paired"]["constant"]["log_loss"]["high"] < 0


def test_a_backtest_logs_to_its_own_experiment_and_leaves_the_registry_alone(wh) -> None:
    settings = get_settings()
    trained = train_usecase(ToyUseCase(), wh, settings, TrainConfig(trials=0, timeout_s=5))
    assert trained.status == "promoted"
    client = configure(settings)
    before = registry.describe(client, "toy")
    versions = client.search_model_versions(f"name = '{model_name('toy')}'")

    result = backtest(ToyUseCase(strength=0.9), wh, CUTOFFS, config=CONFIG, settings=settings)

    assert result.experiment == "shopml-toy-backtest"
    after = registry.describe(client, "toy")
    assert after == before
    assert len(client.search_model_versions(f"name = '{model_name('toy')}'")) == len(versions)
    exp = client.get_experiment_by_name("shopml-toy-backtest")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    child = next(r for r in runs if r.info.run_id == result.origins[0].run_id)
    assert child.data.params["cutoff.test"] == CUTOFFS[0].isoformat()
    assert {"test_auc", "test_auc_low", "test_auc_high", "diff.baseline_auc"} <= set(
        child.data.metrics
    )
    assert not client.list_artifacts(child.info.run_id, "model")


def test_a_cutoff_the_data_cannot_hold_is_skipped_with_the_reason(wh) -> None:
    late = END - timedelta(days=10)
    result = backtest(ToyUseCase(), wh, [late, CUTOFFS[0]], config=CONFIG, track=False)
    assert [o.status for o in result.origins] == ["skipped", "ok"]
    assert "labels over 30 days after the cutoff" in result.origins[0].reason


def test_a_model_that_fails_fails_its_origin_only(wh) -> None:
    class Flaky(ToyUseCase):
        def fit(self, wh: Any, train: LabelledData, *args: Any, **kwargs: Any) -> Scorer:
            if max(train.cutoffs) > datetime(2024, 9, 1):
                raise RuntimeError("diverged")
            return super().fit(wh, train, *args, **kwargs)

    result = backtest(Flaky(), wh, CUTOFFS, config=CONFIG, track=False)
    assert [o.status for o in result.origins] == ["ok", "failed"]
    assert "RuntimeError: diverged" in result.origins[1].reason
    assert result.mean("model") == result.origins[0].model["auc"].estimate


class LongHorizon(ToyUseCase):
    """A use case on 200 days of history that extrapolates from short training labels,
    recording which horizon each dataset was built with and what its fit was told."""

    name = "toy-long"
    extrapolates_horizon = True
    seen: list[tuple[int, datetime]]
    told: list[tuple[int, int | None]]

    def __init__(self) -> None:
        super().__init__()
        self.seen, self.told = [], []

    def data_start(self, wh: Any) -> datetime | None:
        return END - timedelta(days=200)

    def dataset(self, wh: Any, cutoff: datetime) -> LabelledData:
        self.seen.append((self.horizon_days, cutoff))
        return super().dataset(wh, cutoff)

    def final_fit(self, wh: Any, train: Any, valid: Any, params: Any, seed: int = 0, **kw: Any):
        self.told.append((self.horizon_days, kw.pop("label_horizon_days", None)))
        kw.pop("as_of")
        return self.fit(wh, train, valid, params, seed)


def test_a_long_horizon_on_a_short_history_trains_on_shorter_labels(wh) -> None:
    uc = LongHorizon()
    cutoff = END - timedelta(days=100)  # 100 days of history, 100 days of labels after
    result = backtest(uc, wh, [cutoff], horizon_days=100, config=CONFIG, track=False)
    (origin,) = result.origins
    assert origin.status == "ok", origin.reason
    assert origin.horizon_days == 100 and origin.train_horizon_days == (100 - 30) // 2
    train_h = origin.train_horizon_days
    assert (100, cutoff) in uc.seen  # test rows: the full horizon
    assert all(h == train_h for h, c in uc.seen if c < cutoff)  # training and validation
    assert uc.told == [(100, train_h)]  # the fit knows both horizons

    class Fixed(LongHorizon):
        extrapolates_horizon = False

    refused = backtest(Fixed(), wh, [cutoff], horizon_days=100, config=CONFIG, track=False)
    assert refused.origins[0].status == "skipped"
    assert "100-day horizon needs 230 days of history" in refused.origins[0].reason
    assert "cannot extrapolate" in refused.origins[0].reason
