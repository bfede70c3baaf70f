"""Rollouts judged on delayed labels, replayed on the simulator over several seeds: a better
challenger in shadow is promoted, a worse canary is rolled back, and an A/B test of two equal
models takes no action (:mod:`shopml.monitoring.rollout_replay`).

Each seed is its own 1,500-customer shop (the seeds run in parallel processes);
``high-value`` (labels 30 days after a prediction) is trained as of 2024-04-17 and the period
after it replayed day by day through the service in-process (up to 300 customers a day,
features rebuilt weekly), the monitor judging the arms every 7 days with the sequential rule
(alpha 5% for each of promotion and rollback over any number of looks) on the per-row Brier
score, clustered by customer; a world ends when its rollout does. The peer is the rule a team
would use without one: a fixed 95% interval of the same gain at every look ("naive"), read
off the same looks. Beside each outcome: the true gap between the two models on the
training's test window (every customer scored by both).
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Result

USECASE = "high-value"
SEEDS = [1, 2, 3]


def _fmt(d: dict[str, Any] | None, digits: int = 3) -> str:
    if not d or d.get("estimate") is None:
        return "—"
    if d.get("low") is None:
        return f"{d['estimate']:+.{digits}f}"
    return f"{d['estimate']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


def _gain(g: dict[str, Any] | None) -> str:
    if not g or g.get("estimate") is None:
        return "—"
    return _fmt({"estimate": g["estimate"], "low": g.get("low95"), "high": g.get("high95")}, 4)


def _one_seed(seed: int, days: int, workdir: str) -> tuple[list[Any], dict[int, Any]]:
    from shopml.monitoring.rollout_replay import run_rollout_experiment

    return run_rollout_experiment(
        Path(workdir),
        USECASE,
        [seed],
        days=days,
        customers=1500,
        max_per_day=300,
        progress=lambda msg: print(msg, flush=True),
    )


def run(quick: bool = False) -> Result:
    from concurrent.futures import ProcessPoolExecutor

    seeds = SEEDS[:1] if quick else SEEDS
    days = 49 if quick else 77
    outcomes: list[Any] = []
    figures: dict[int, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp,
        ProcessPoolExecutor(len(seeds)) as pool,
    ):
        for found, figs in pool.map(_one_seed, seeds, [days] * len(seeds), [tmp] * len(seeds)):
            outcomes += found
            figures.update(figs)
    rows = [
        "| seed | world | mode | expected | outcome | day | looks | labelled (champion / "
        "challenger) | Brier gain, 95% | sequential interval (z) | live AUC difference, 95% | "
        "test-window gap: Brier, AUC | requests (failed) | naive 95% rule (day) |",
        "| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    for o in outcomes:
        lab = o.labelled
        f = figures.get(o.seed, {})
        # The true gap, challenger minus champion oriented so that > 0 is better, on the
        # training's test window (every customer scored by both models).
        sign = -1.0 if o.expected == "rolled back" else 1.0
        if o.world == "unchanged":
            gap = "0 (the same model)"
        else:
            gap = (
                f"{sign * (f.get('weak_loss', math.nan) - f.get('good_loss', math.nan)):+.4f}, "
                f"{sign * (f.get('good', math.nan) - f.get('weak', math.nan)):+.3f}"
            )
        seq = o.sequential or {}
        interval = {"estimate": seq.get("gain"), "low": seq.get("low"), "high": seq.get("high")}
        z = f" ({seq['z']:.2f})" if seq.get("z") else ""
        rows.append(
            f"| {o.seed} | {o.world} | {o.mode} | {o.expected} | "
            f"{'**' + o.outcome + '**' if o.correct else o.outcome + ' (wrong)'} | "
            f"{o.day if o.day is not None else '—'} | {o.looks} | "
            f"{lab.get('champion', 0):,} / {lab.get('challenger', 0):,} | "
            f"{_gain(o.gain)} | {_fmt(interval, 4)}{z} | "
            f"{_fmt(o.difference)} | {gap} | {o.requests:,} ({o.errors:,}) | {o.naive}"
            f"{f' ({o.naive_day})' if o.naive_day is not None else ''} |"
        )
    correct = sum(o.correct for o in outcomes)
    naive_right = sum(o.naive == o.expected for o in outcomes)
    tests = [
        f"| seed {s} | {f['good']:.3f} | {f['weak']:.3f} | {f.get('good_loss', math.nan):.4f} | "
        f"{f.get('weak_loss', math.nan):.4f} |"
        for s, f in sorted(figures.items())
    ]
    markdown = "\n".join(
        [
            f"{len(seeds)} seeds x 3 worlds, {days} days replayed each, `{USECASE}`; "
            f"{correct} of {len(outcomes)} outcomes as expected with the sequential rule, "
            f"{naive_right} of {len(outcomes)} with the naive one. The verdict is taken on "
            "the per-row Brier score (paired per customer in shadow, two clustered means in "
            "canary/A-B); *Brier gain*: champion's mean minus challenger's (> 0: the "
            "challenger is better), 95%, clustered by customer; *sequential interval*: the "
            "same gain at the deciding (or last) look with that look's share of alpha; "
            "*test-window gap*: the true gap (challenger better: > 0) on the training's "
            "test window. *day*: days into the replay when the monitor acted; *looks*: "
            "judgements made (each spends its share of alpha).",
            "",
            *rows,
            "",
            "| test window | AUC good model | AUC weak model | Brier good | Brier weak |",
            "| --- | ---: | ---: | ---: | ---: |",
            *tests,
        ]
    )
    return Result(
        "rollout",
        "Rollouts: promoted, rolled back or left alone, over several seeds",
        markdown,
        {
            "outcomes": [o.to_dict() for o in outcomes],
            "test_figures": figures,
            "days": days,
            "seeds": seeds,
        },
    )


if __name__ == "__main__":  # pragma: no cover
    print(run(quick="--quick" in sys.argv).markdown)
