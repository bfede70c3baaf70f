"""A rollout replayed on the simulator: does the monitor promote a better challenger, roll back a
worse one, and leave an unchanged world alone?

One simulated shop per seed; the use case's model (``good``: the lifecycle's own, trained as of
the replay's start) and a weak one (``weak``: its main baseline fitted on the same training rows,
cut down to one input when it is linear, a real gap behind the good one: :data:`WEAK_GAP`) are
both registered.
Each *world* puts one of them as champion and one as challenger, sets a rollout
mode, and replays the period day by day through the service in-process (the rollout's routing,
shadow answers and arms logged as in production), the monitor judging the arms every
``monitor_every`` days (:mod:`shopml.monitoring.arms`):

- ``better``: champion ``weak``, challenger ``good``, in shadow (paired): expected *promoted*;
- ``worse``: champion ``good``, challenger ``weak``, as a canary: expected *rolled back*;
- ``unchanged``: champion ``good``, challenger another version of ``good``, in A/B (each arm
  sees different customers, so the arms' figures differ by chance only): expected *no
  action* (anything else is a false promotion or rollback);
- ``close``: champion ``close`` (the main baseline on all its inputs, a few percent behind),
  challenger ``good``, in shadow: the rule's power on a small gap; *promoted* if the labels
  suffice in time, else *no action*, and a rollback would be wrong.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

WORLDS: dict[str, tuple[str, str, str, float | None, str]] = {
    # world: (champion, challenger, mode, share, expected)
    "better": ("weak", "good", "shadow", None, "promoted"),
    "worse": ("good", "weak", "canary", 0.25, "rolled back"),
    "unchanged": ("good", "twin", "ab", 0.5, "no action"),
    "close": ("close", "good", "shadow", None, "promoted or no action"),
}


@dataclass
class WorldOutcome:
    """What the monitor did in one world of one seed."""

    seed: int
    world: str
    mode: str
    expected: str
    outcome: str  # promoted | rolled back | no action
    day: int | None  # days into the replay when it acted
    looks: int  # judgements made
    labelled: dict[str, int] = field(default_factory=dict)  # at the decisive (or last) look
    difference: dict[str, Any] | None = None  # challenger - champion, 95%, at that look
    intervals: dict[str, Any] = field(default_factory=dict)
    metric: str | None = None
    requests: int = 0
    errors: int = 0
    # The peer: a fixed 95% interval at every look (no sequential rule): what it would have
    # done first, and when.
    naive: str = "no action"
    naive_day: int | None = None
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # The deciding (or last) look's sequential interval of the gain: z * se is the smallest
    # gap that look could have decided, the experiment's power in the metric's units.
    sequential: dict[str, float] | None = None

    @property
    def correct(self) -> bool:
        return right(self.outcome, self.expected)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "correct": self.correct}


# How much worse the weak model is made on the test window, relative to the good model's
# decisive metric: the effect the experiment is sized to detect (a challenger a few percent
# worse needs a bigger shop or a longer rollout: see the benchmark's power note).
WEAK_GAP = 0.12


def right(outcome: str, expected: str) -> bool:
    """Whether ``outcome`` is one of ``expected`` ("promoted or no action": either)."""
    return outcome in expected.split(" or ")


def _one_input(baseline: Any, i: int) -> Any:
    """The linear baseline cut down to its input ``i``."""
    from shopml.runtime.scorers import LinearScorer

    return LinearScorer(
        features=[baseline.features[i]],
        outputs=list(baseline.outputs),
        meta={"name": f"{baseline.meta.get('name', 'baseline')} on {baseline.features[i]} only"},
        coef=[baseline.coef[i]],
        intercept=baseline.intercept,
        mean=[baseline.mean[i]],
        scale=[baseline.scale[i]],
        fill=[baseline.fill[i]],
        link=baseline.link,
        clip=baseline.clip,
    )


def _weakened(uc: Any, baseline: Any, test: Any, good: float, gap: float = WEAK_GAP) -> Any:
    """A careless challenger with a real gap: the linear baseline cut down to one input, the
    best such one-input model whose test metric is at least ``gap`` (relative) worse than the
    good model's ``good``; the worst of them when none is that far behind. A baseline that is
    not linear is taken as it is."""
    from shopml.runtime.scorers import LinearScorer

    if not isinstance(baseline, LinearScorer) or len(baseline.coef) < 2:
        return baseline
    metric, up = uc.gate.metric, uc.gate.higher_is_better
    sign = 1.0 if up else -1.0
    target = sign * good - gap * abs(good)  # in "higher is better" units
    scored = []
    for i in range(len(baseline.coef)):
        if not baseline.coef[i]:
            continue
        one = _one_input(baseline, i)
        value = uc.evaluate(one, test).get(metric, float("nan"))
        if math.isfinite(value):
            scored.append((sign * value, i, one))
    if not scored:
        return baseline
    far = [s for s in scored if s[0] <= target]
    return max(far, key=lambda s: s[0])[2] if far else min(scored, key=lambda s: s[0])[2]


def prepare(
    home: Path, usecase: str, seed: int, start: date, customers: int, sim_days: int
) -> tuple[Any, dict[str, str], dict[str, float]]:
    """Simulate the shop, train the model as of ``start`` and register it with its main
    baseline and a twin; returns the settings, the versions by role and their test figures."""
    from shopml.data.simulator import SimConfig, simulate
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.tracking import configure, model_name, register_scorer
    from shopml.lifecycle.train import TrainConfig, build_splits, train_usecase
    from shopml.settings import Settings
    from shopml.usecases import get_usecase

    settings = Settings(home=home, monitor_reports=False, seed=seed)
    uc = get_usecase(usecase)
    as_of = datetime(start.year, start.month, start.day)
    with Warehouse(settings.warehouse) as wh:
        simulate(
            SimConfig(customers=customers, start=date(2023, 1, 1), days=sim_days, seed=seed)
        ).load(wh)
        trained = train_usecase(uc, wh, settings, TrainConfig(trials=0, seed=seed, as_of=as_of))
        if trained.version is None:
            raise RuntimeError(f"the {usecase} model was not trained: {trained.reason}")
        plan = uc.split(wh, end=as_of)
        splits = build_splits(uc, wh, plan)
        reached = trained.metrics.get(uc.gate.metric, float("nan"))
        baseline = uc.baseline(wh, splits.train, plan.test_cutoff)
        weak = _weakened(uc, baseline, splits.test, reached)
        close = baseline  # all its inputs: a small gap, which the replay may not decide
        figures = {
            "good": reached,
            "weak": uc.evaluate(weak, splits.test).get(uc.gate.metric, float("nan")),
            "close": uc.evaluate(close, splits.test).get(uc.gate.metric, float("nan")),
        }
        examples = {
            "weak": splits.test.frame[weak.features].head(3),
            "close": splits.test.frame[close.features].head(3),
        }
    client = configure(settings)
    good = str(trained.version)
    source = client.get_model_version(model_name(usecase), good)
    twin = client.create_model_version(
        model_name(usecase), str(source.source), run_id=source.run_id
    )
    versions = {
        "good": good,
        "weak": register_scorer(settings, usecase, weak, examples["weak"]),
        "close": register_scorer(settings, usecase, close, examples["close"]),
        "twin": str(twin.version),
    }
    return settings, versions, figures


def play_world(
    settings: Any,
    usecase: str,
    world: str,
    versions: dict[str, str],
    start: date,
    days: int,
    seed: int,
    *,
    monitor_every: int = 7,
    max_per_day: int = 400,
) -> WorldOutcome:
    """Set the world's champion, challenger and mode, replay, and report what the monitor did."""
    from shopml.lifecycle.rollout import set_mode
    from shopml.lifecycle.tracking import configure, model_name
    from shopml.monitoring.replay import replay

    champion, challenger, mode, share, expected = WORLDS[world]
    began = time.perf_counter()
    home = Path(settings.home)
    own = settings.model_copy(
        update={"monitoring_store_uri": f"sqlite:///{home / f'monitoring-{world}.sqlite'}"}
    )
    client = configure(own)
    name = model_name(usecase)
    client.set_registered_model_alias(name, "champion", versions[champion])
    client.set_registered_model_alias(name, "challenger", versions[challenger])
    set_mode(client, usecase, mode, share, reason=f"rollout experiment: {world}")
    result = replay(
        datetime(start.year, start.month, start.day),
        days,
        usecases=[usecase],
        monitor_every=monitor_every,
        max_per_day=max_per_day,
        feature_refresh_days=7,
        act=True,
        settings=own,
        seed=seed,
    )
    looks = [c.get("rollout") or {} for c in result.checks]
    judged = [r for r in looks if r.get("sequential") is not None]
    acted = next((r for r in looks if r.get("status") in ("promoted", "rolled back")), None)
    last = acted or (judged[-1] if judged else (looks[-1] if looks else {}))
    began_at = datetime(start.year, start.month, start.day)
    day = None
    if acted is not None:
        day = (datetime.fromisoformat(acted["now"]) - began_at).days
    naive, naive_day = "no action", None
    # The naive rule looks at every check (weekly), as a team reading the dashboard would.
    for look in looks:
        d = look.get("difference") or {}
        if d.get("low") is None or d.get("high") is None:
            continue
        sign = 1.0 if look.get("higher_is_better", True) else -1.0
        low, high = sorted((sign * d["low"], sign * d["high"]))
        if low > 0 or high < 0:
            naive = "promoted" if low > 0 else "rolled back"
            naive_day = (datetime.fromisoformat(look["now"]) - began_at).days
            break
    set_mode(client, usecase, "off", reason="rollout experiment over")
    return WorldOutcome(
        seed,
        world,
        mode if share is None else f"{mode} {share:.0%}",
        expected,
        acted["status"] if acted else "no action",
        day,
        len(judged),
        dict(last.get("labelled") or {}),
        last.get("difference"),
        dict(last.get("intervals") or {}),
        last.get("metric"),
        sum(result.requests.values()),
        sum(result.errors.values()),
        naive,
        naive_day,
        list(last.get("reasons") or []),
        time.perf_counter() - began,
        last.get("sequential"),
    )


def run_rollout_experiment(
    workdir: Path,
    usecase: str,
    seeds: list[int],
    *,
    worlds: list[str] | None = None,
    start: date = date(2024, 4, 17),
    days: int = 91,
    customers: int = 2000,
    sim_days: int = 600,
    monitor_every: int = 7,
    max_per_day: int = 400,
    progress: Any = None,
) -> tuple[list[WorldOutcome], dict[int, dict[str, float]]]:
    """Every world of every seed; returns the outcomes and each seed's test figures (the good
    model's and the weak one's decisive metric on the training's test window)."""
    say = progress or (lambda msg: None)
    outcomes: list[WorldOutcome] = []
    figures: dict[int, dict[str, float]] = {}
    for seed in seeds:
        say(f"seed {seed}: simulating and training")
        settings, versions, figures[seed] = prepare(
            workdir / f"seed-{seed}", usecase, seed, start, customers, sim_days
        )
        for world in worlds or list(WORLDS):
            say(f"seed {seed}: {world}")
            outcomes.append(
                play_world(
                    settings,
                    usecase,
                    world,
                    versions,
                    start,
                    days,
                    seed,
                    monitor_every=monitor_every,
                    max_per_day=max_per_day,
                )
            )
    return outcomes, figures


__all__ = ["WORLDS", "WorldOutcome", "play_world", "prepare", "right", "run_rollout_experiment"]
