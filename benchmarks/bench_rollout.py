"""Rollouts judged on delayed labels, replayed on the simulator over several seeds: a better
challenger in shadow is promoted, a worse canary is rolled back, and an A/B test of two equal
models takes no action (:mod:`shopml.monitoring.rollout_replay`).

Each seed is its own 4,000-customer shop (the seeds run in parallel processes);
``high-value`` (labels 30 days after a prediction) is trained as of 2024-04-17 and the period
after it replayed day by day through the service in-process (up to 300 customers a day,
features rebuilt weekly), the monitor checking the arms every 7 days with the sequential rule
(alpha 5% for each of promotion and rollback over any number of looks; a check is a look once
the labelled customers have doubled). The weak model is a one-input baseline at least 12%
(relative) worse than the good one on the test window: the effect the experiment is sized for;
a fourth world (``close``) shadows the good model against the full baseline, a few percent
behind, to show what a small gap needs. The peer is the rule a team would use without one: a
fixed 95% interval of the difference at every weekly check ("naive").
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Result
from shopml.monitoring.rollout_replay import right

USECASE = "high-value"
SEEDS = [1, 2, 3]
CUSTOMERS = 4000


def _fmt(d: dict[str, Any] | None) -> str:
    if not d or d.get("estimate") is None:
        return "—"
    if d.get("low") is None:
        return f"{d['estimate']:+.3f}"
    return f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _gap(seq: dict[str, Any] | None) -> str:
    """The smallest gain the look could have decided: z(1 - alpha_k) times the bootstrap se."""
    if not seq or seq.get("z") is None or seq.get("se") is None:
        return "—"
    return f"{seq['z'] * seq['se']:.3f}"


def _one_seed(seed: int, days: int, workdir: str) -> tuple[list[Any], dict[int, Any]]:
    from shopml.monitoring.rollout_replay import run_rollout_experiment

    return run_rollout_experiment(
        Path(workdir),
        USECASE,
        [seed],
        days=days,
        customers=CUSTOMERS,
        max_per_day=300,
        progress=lambda msg: print(msg, flush=True),
    )


def run(quick: bool = False) -> Result:
    from concurrent.futures import ProcessPoolExecutor

    seeds = SEEDS[:1] if quick else SEEDS
    days = 49 if quick else 77
    outcomes: list[dict[str, Any]] = []
    figures: dict[int, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp,
        ProcessPoolExecutor(len(seeds)) as pool,
    ):
        for found, figs in pool.map(_one_seed, seeds, [days] * len(seeds), [tmp] * len(seeds)):
            outcomes += [o.to_dict() for o in found]
            figures.update(figs)
    data = {"outcomes": outcomes, "test_figures": figures, "days": days, "seeds": seeds}
    return render({**data, "customers": CUSTOMERS})


def render(data: dict[str, Any], measured_at: str | None = None) -> Result:
    """The tables (the full one and the README's summary) from the figures a run saved, so
    ``python -m benchmarks.bench_rollout --render`` redraws them from the results file."""
    outcomes = data["outcomes"]
    figures = {int(k): v for k, v in data["test_figures"].items()}
    days, seeds = data["days"], data["seeds"]
    rows = [
        "| seed | world | mode | expected | outcome | day | looks | labelled (champion / "
        "challenger) | live AUC champion | live AUC challenger | difference, 95% | decidable gap "
        "| requests (failed) | naive 95% rule (day) |",
        "| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    for o in outcomes:
        lab = o["labelled"]
        ok = right(o["outcome"], o["expected"])
        naive_day = f" ({o['naive_day']})" if o["naive_day"] is not None else ""
        rows.append(
            f"| {o['seed']} | {o['world']} | {o['mode']} | {o['expected']} | "
            f"{'**' + o['outcome'] + '**' if ok else o['outcome'] + ' (wrong)'} | "
            f"{o['day'] if o['day'] is not None else '—'} | {o['looks']} | "
            f"{lab.get('champion', 0):,} / {lab.get('challenger', 0):,} | "
            f"{_fmt(o['intervals'].get('champion'))} | {_fmt(o['intervals'].get('challenger'))} | "
            f"{_fmt(o['difference'])} | {_gap(o.get('sequential'))} | "
            f"{o['requests']:,} ({o['errors']:,}) | {o['naive']}{naive_day} |"
        )
    correct = sum(right(o["outcome"], o["expected"]) for o in outcomes)
    naive_right = sum(right(o["naive"], o["expected"]) for o in outcomes)
    tests = [
        f"| seed {s} | {f['good']:.3f} | {f['weak']:.3f} | {_num(f.get('close'))} |"
        for s, f in sorted(figures.items())
    ]
    markdown = "\n".join(
        [
            f"{len(seeds)} seeds x {len({o['world'] for o in outcomes})} worlds, {days} days "
            f"replayed each, `{USECASE}`; "
            f"{correct} of {len(outcomes)} outcomes as expected with the sequential rule, "
            f"{naive_right} of {len(outcomes)} with the naive one. *day*: days into the replay "
            "when the monitor acted; *looks*: judgements made (each spends its share of "
            "alpha; a weekly check is a look once the labelled customers have doubled); "
            "intervals are of the last look (or the deciding one); *decidable gap*: the "
            "smallest difference that look could have decided (z times the bootstrap se).",
            "",
            *rows,
            "",
            "| test window AUC | good model | weak model | close model |",
            "| --- | ---: | ---: | ---: |",
            *tests,
        ]
    )
    result = Result(
        "rollout",
        "Rollouts: promoted, rolled back or left alone, over several seeds",
        markdown,
        data,
        summary=summary(outcomes, figures, days, data.get("customers", CUSTOMERS)),
    )
    if measured_at:
        result.measured_at = measured_at
    return result


def _said(found: list[dict[str, Any]], kind: str, day: str) -> str:
    """How many of ``found`` (one world's seeds) the rule ``kind`` got right, and each outcome
    with its day."""
    good = sum(right(o[kind], o["expected"]) for o in found)
    each = ", ".join(o[kind] + (f" ({o[day]})" if o[day] is not None else "") for o in found)
    return f"{good} of {len(found)}: {each}"


def summary(
    outcomes: list[dict[str, Any]], figures: dict[int, Any], days: int, customers: int
) -> str:
    """The README's table: per world, what the sequential rule and the naive one did."""

    def span(role: str) -> str:
        values = sorted(f[role] for f in figures.values() if role in f)
        return f"{values[0]:.2f}-{values[-1]:.2f}" if values else "?"

    worlds: dict[str, list[dict[str, Any]]] = {}
    for o in outcomes:
        worlds.setdefault(o["world"], []).append(o)
    lines = [
        f"`{USECASE}` on {customers:,}-customer simulated shops, {days} days replayed per "
        "seed, the monitor checking weekly; labels arrive 30 days after a prediction. Test-window "
        f"AUC of the trained model {span('good')}, of the weak one {span('weak')}"
        + (
            f", of the close one {span('close')}"
            if any("close" in f for f in figures.values())
            else ""
        )
        + ".",
        "",
        "| world | rollout | expected | sequential rule (day acted, per seed) | naive 95% "
        "interval at every check |",
        "| --- | --- | --- | --- | --- |",
    ]
    for world, found in worlds.items():
        lines.append(
            f"| {world} | {found[0]['mode']} | {found[0]['expected']} | "
            f"{_said(found, 'outcome', 'day')} | {_said(found, 'naive', 'naive_day')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    if "--render" in sys.argv:  # redraw from benchmarks/results/rollout.json
        import json

        from benchmarks.common import RESULTS, save

        saved = json.loads((RESULTS / "rollout.json").read_text())
        save(render(saved["figures"], saved["measured_at"]))
    else:
        print(run(quick="--quick" in sys.argv).markdown)
