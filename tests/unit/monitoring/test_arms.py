"""Judging a rollout's arms on delayed labels, on small hand-made worlds: answers logged by arm,
labels known per day, a real registry. A better challenger in shadow is promoted (paired), a
worse canary is rolled back, and an A/B test between two equally good models takes no action
over many looks; every judgement is recorded with its intervals and the look's alpha."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shopml.monitoring.arms import ALPHA, judge_arms, spent
from shopml.monitoring.performance import LabelCache
from shopml.runtime import rollout as modes
from shopml.runtime.predictions import PredictionRecord

USECASE = "high-value"
START = datetime(2024, 3, 1)


def test_the_looks_spend_at_most_alpha_however_many_there_are() -> None:
    assert spent(1) == pytest.approx(ALPHA * 6 / np.pi**2)
    assert sum(spent(k) for k in range(1, 100_000)) < ALPHA
    assert spent(2) < spent(1)


@dataclass
class World:
    settings: Any
    client: Any
    uc: Any
    cache: LabelCache
    store: Any
    champion: str
    challenger: str

    def traffic(
        self, days: range, n: int, skill: tuple[float, float], mode: str, seed: int
    ) -> None:
        """``n`` customers a day for ``days`` (offsets from START), each answered as ``mode``
        routes it; ``skill``: how well the champion's and the challenger's scores separate
        the customers who place a large order."""
        from shopml.usecases.base import LabelledData

        rng = np.random.default_rng(seed)
        rollout = modes.make(mode)
        records = []
        for d in days:
            day = START + timedelta(days=d)
            ids = [f"C{d:03d}{i:04d}" for i in range(n)]
            y = (rng.random(n) < 0.3).astype(int)
            frame = pd.DataFrame({"customer_id": ids, "large_order": y})
            self.cache.put(self.uc, day, LabelledData(frame, ["customer_id"], [], ["large_order"]))
            noise = rng.normal(size=(2, n))
            p = 1 / (1 + np.exp(-(np.array(skill)[:, None] * (2 * y - 1) + noise)))
            ts = (day + timedelta(hours=12)).timestamp()
            for i, cid in enumerate(ids):
                rid = f"r{d}-{i}"
                routed = modes.challenger_answers(rollout, USECASE, cid)
                version, arm, j = (
                    (self.challenger, "challenger", 1) if routed else (self.champion, "champion", 0)
                )
                out = {"p_large_order": float(p[j, i])}
                records.append(
                    PredictionRecord(rid, ts, USECASE, version, "customer_id", cid, out, arm=arm)
                )
                if mode == "shadow":
                    shadow = {"p_large_order": float(p[1, i])}
                    again = (rid, ts, USECASE, self.challenger, "customer_id", cid, shadow)
                    records.append(PredictionRecord(*again, arm="shadow"))
        self.store.log_predictions(records)

    def judge(self, day: int, **kw: Any) -> Any:
        return judge_arms(
            self.uc, None, self.settings, self.store,  # type: ignore[arg-type]
            now=START + timedelta(days=day), cache=self.cache, draws=200, **kw,
        )  # fmt: skip


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One MLflow registry for the module (creating its database is the slow part)."""
    from shopml.lifecycle.tracking import configure
    from shopml.settings import Settings

    settings = Settings(home=tmp_path_factory.mktemp("arms") / "home")
    return settings, configure(settings)


@pytest.fixture
def world(registry: Any, tmp_path: Path) -> Any:
    """``world(mode)``: a fresh model with champion v1 and challenger v2 in ``mode``, and a
    fresh monitoring store."""
    from mlflow.exceptions import MlflowException

    from shopml.lifecycle.rollout import set_mode
    from shopml.monitoring.store import MonitoringStore
    from shopml.usecases import get_usecase

    settings, client = registry
    name = f"shopml-{USECASE}"
    with contextlib.suppress(MlflowException):
        client.delete_registered_model(name)
    client.create_registered_model(name)
    versions = [client.create_model_version(name, str(tmp_path / f"m{i}")) for i in (1, 2)]
    client.set_registered_model_alias(name, "champion", versions[0].version)
    client.set_registered_model_alias(name, "challenger", versions[1].version)
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitoring.sqlite'}", tmp_path)

    def make(mode: str) -> World:
        share = None if mode == "shadow" else 0.5 if mode == "ab" else 0.1
        set_mode(client, USECASE, mode, share, reason="test")
        return World(
            settings, client, get_usecase(USECASE), LabelCache(), store,
            str(versions[0].version), str(versions[1].version),
        )  # fmt: skip

    yield make
    store.close()


def test_a_better_shadow_challenger_is_promoted_on_paired_answers(world: Any) -> None:
    from shopml.lifecycle.registry import describe

    w = world("shadow")
    w.traffic(range(0, 20), 60, (0.5, 1.5), "shadow", seed=1)
    early = w.judge(10)  # labels take 30 days: nothing to judge yet
    assert early.status == "no-labels" and "30 days" in early.reasons[0]
    result = w.judge(51)
    assert result.paired and result.labelled == {"champion": 1200, "challenger": 1200}
    assert result.status == "promoted", result.reasons
    assert result.look == 1 and result.alpha_spent == pytest.approx(spent(1))
    seq = result.sequential
    assert seq["low"] > 0 and result.difference["low"] > 0
    assert "better than the champion" in result.reasons[0]
    summary = describe(w.client, USECASE)
    assert summary.champion.version == w.challenger and summary.challenger is None
    assert summary.rollout["mode"] == "off" and "promoted" in summary.rollout["reason"]
    assert summary.champion.promotion["reason"].startswith("rollout: live auc")
    decisions = w.store.decisions(USECASE)
    rollout = decisions[decisions["action"] == "rollout"]
    assert list(rollout["outcome"]) == ["no-labels", "promoted"]
    # The rollout is over: the next check has nothing to judge.
    assert w.judge(52).status == "no-rollout"


def test_a_worse_canary_is_rolled_back(world: Any) -> None:
    from shopml.lifecycle.registry import describe

    w = world("canary")
    w.traffic(range(0, 30), 200, (1.5, 0.2), "canary", seed=2)
    result = w.judge(61)
    assert not result.paired and result.status == "rolled back", result.reasons
    assert result.sequential["high"] < 0 and "worse than the champion" in result.reasons[0]
    assert 0.05 < result.labelled["challenger"] / sum(result.labelled.values()) < 0.15
    summary = describe(w.client, USECASE)
    assert summary.champion.version == w.champion and summary.challenger is None
    assert summary.rollout["mode"] == "off" and "rolled back" in summary.rollout["reason"]
    outcome = w.client.get_model_version(f"shopml-{USECASE}", w.challenger).tags
    assert json.loads(outcome["shopml.rollout.outcome"])["outcome"] == "rolled back"


def test_two_equal_models_in_ab_take_no_action_look_after_look(world: Any) -> None:
    w = world("ab")
    checks = []
    for week in range(6):
        w.traffic(range(7 * week, 7 * week + 7), 80, (1.0, 1.0), "ab", seed=10 + week)
        checks.append(w.judge(7 * week + 38))
    assert [r.status for r in checks] == ["continue"] * 6, [r.reasons for r in checks]
    # A check is a look (spending alpha) only once the labelled units have doubled since the
    # last look: 560 units, 1,120, then 2,240 (1,680 waited); 2,800 and 3,360 wait for 4,480.
    units = [r.difference["n"] for r in checks]
    assert units == [560, 1120, 1680, 2240, 2800, 3360]
    assert [r.look for r in checks] == [1, 2, 2, 3, 3, 3]
    looked = [r for r in checks if r.sequential is not None]
    assert len(looked) == 3 and all(r.sequential["low"] < 0 < r.sequential["high"] for r in looked)
    assert "not yet decided" in looked[-1].reasons[0]
    assert looked[2].sequential["z"] > looked[1].sequential["z"] > looked[0].sequential["z"]
    waiting = checks[-1]
    assert waiting.sequential is None and waiting.alpha_spent is None
    assert "the next look at 4,480" in waiting.reasons[0], waiting.reasons
    # Waiting checks are recorded (with their figures) but do not count as looks.
    decisions = w.store.decisions(USECASE)
    assert list(decisions[decisions["action"] == "rollout"]["outcome"]) == ["continue"] * 6
