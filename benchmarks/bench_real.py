"""shopml on the real public samples: honest backtests under the standard protocols, every
baseline in the same run, every figure with its 95% bootstrap interval and the model's paired
difference to each baseline. ``python -m benchmarks real [--quick]``.

Each sample in the shared data folder (``../shared/data`` beside the project, or
``SHOPML_SHARED_DATA_DIR``) is imported as a user imports it (the same importer as ``shopml
ingest``) into a temporary warehouse, and every protocol on it runs
:func:`shopml.lifecycle.backtest.backtest`, the code behind ``shopml backtest``: trained strictly
before the cutoff (tuning included), answered at it, judged over the horizon after it. A sample
that is absent is reported as such; nothing is skipped silently.

The protocols (:data:`PROTOCOLS`):

- CLV on CDNOW: 39 weeks calibration / 39 weeks holdout (Fader, Hardie and Lee), cutoff
  1997-10-01, horizon 273 days; on Online Retail II: the 92-day spend from 2010-09-01 (the
  data's last full quarter). MAE (point model), RMSE and normalized Gini (expected-spend model),
  predicted total / actual total, against ``bgnbd`` (BG/NBD x Gamma-Gamma) and ``historical-rate``.
- Recommender on Online Retail II: November 2010 (the last full month) as test, the month before
  as validation (its model trained only on what precedes it): NDCG@10 with repeats allowed
  against buy-again and popularity, and NDCG@10 on products new to the customer.
- Returns on Online Retail II (cancellations as returns): lines ordered in September 2010, PR-AUC
  and AUC against a logistic regression and the category's return rate.
- High-value and segments on both samples: the last full month as test.
- Delivery time on the Olist sample (:mod:`benchmarks.real_olist`): the model against Olist's
  own promise and a constant median / P90.

Each goal of issue 12 (:data:`GOALS`) is judged by its paired interval: **met** when the whole
interval is on the model's side, **missed** when it is on the baseline's, **not shown** when it
straddles zero (the test window cannot tell).

The results go to ``benchmarks/results/real.{json,md}`` and the README between
``<!-- bench:real -->`` markers.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Result

NAME = "real"
TITLE = "shopml on the real public samples"

Say = Callable[[str], None]


@dataclass(frozen=True)
class Sample:
    """A public sample in the shared data folder and the importer that reads it."""

    key: str
    label: str
    importer: str  # a key of shopml.data.importers.IMPORTERS (the `shopml ingest` kind)
    path: str  # relative to the shared data folder


@dataclass(frozen=True)
class Shown:
    """A metric a protocol's table shows: its label, and which way is better (None: neither,
    e.g. a ratio whose target is 1)."""

    metric: str
    label: str
    higher_is_better: bool | None
    digits: int = 3


@dataclass(frozen=True)
class Goal:
    """A goal of issue 12: the model beats ``baseline`` on ``metric`` (judged on the paired
    interval of the difference)."""

    metric: str
    baseline: str
    text: str


@dataclass(frozen=True)
class Protocol:
    """One backtest on one sample: the use case, the cutoff and the horizon, what to show."""

    sample: str
    usecase: str
    cutoff: datetime
    horizon_days: int | None
    title: str
    design: str
    shown: tuple[Shown, ...]
    goals: tuple[Goal, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.usecase}@{self.sample}"


SAMPLES: dict[str, Sample] = {
    s.key: s
    for s in (
        Sample("cdnow", "CDNOW sample", "cdnow", "cdnow/CDNOW_sample.txt"),
        Sample(
            "online-retail",
            "Online Retail II (2009-2010)",
            "online-retail",
            "online_retail_ii/online_retail_II_2009_2010.csv.gz",
        ),
    )
}
OLIST = "olist"

CLV_SHOWN = (
    Shown("mae", "MAE (point model)", False, 2),
    Shown("rmse", "RMSE (expected spend)", False, 1),
    Shown("gini", "normalized Gini", True),
    Shown("total_ratio", "predicted / actual total", None),
)
BINARY_SHOWN = (
    Shown("pr_auc", "PR-AUC", True),
    Shown("auc", "AUC", True),
    Shown("normalized_log_loss", "log loss / base rate's", False),
    Shown("calibration_ratio", "observed / expected positives", None),
)


def _clv_goals(label: str) -> tuple[Goal, ...]:
    return (
        Goal("rmse", "bgnbd", f"CLV expected spend beats BG/NBD x Gamma-Gamma on RMSE ({label})"),
        Goal(
            "gini",
            "bgnbd",
            f"CLV expected spend beats BG/NBD x Gamma-Gamma on normalized Gini ({label})",
        ),
        Goal("mae", "bgnbd", f"CLV point model beats BG/NBD x Gamma-Gamma on MAE ({label})"),
    )


PROTOCOLS: tuple[Protocol, ...] = (
    Protocol(
        "cdnow",
        "clv",
        datetime(1997, 10, 1),
        273,
        "CLV on CDNOW: 39 weeks calibration, 39 weeks holdout",
        "the Fader-Hardie-Lee protocol: every customer's spend in the 39 weeks after 1997-10-01, "
        "from the 39 weeks before it",
        CLV_SHOWN,
        _clv_goals("CDNOW"),
    ),
    Protocol(
        "online-retail",
        "clv",
        datetime(2010, 9, 1),
        92,
        "CLV on Online Retail II: 92-day spend",
        "each customer's spend in the 92 days after 2010-09-01 (the data's last full quarter)",
        CLV_SHOWN,
        _clv_goals("Online Retail II"),
    ),
    Protocol(
        "online-retail",
        "recommender",
        datetime(2010, 11, 1),
        30,
        "Recommender on Online Retail II: next month's purchases",
        "November 2010 (the last full month) is the test, the 30 days before it the validation, "
        "judged by a model trained only on what precedes them; the buyers of the test month",
        (
            Shown("ndcg_at_10", "NDCG@10 (repeats allowed)", True),
            Shown("ndcg_at_10_new", "NDCG@10, products new to the customer", True),
            Shown("recall_at_10", "recall@10", True),
            Shown("precision_at_10", "precision@10", True),
        ),
        (
            Goal("ndcg_at_10", "buy-again", "Recommender NDCG@10 above buy-again"),
            Goal("ndcg_at_10", "popularity", "Recommender NDCG@10 above popularity"),
            Goal(
                "ndcg_at_10_new",
                "popularity",
                "Recommender NDCG@10 on products not bought before above popularity",
            ),
        ),
    ),
    Protocol(
        "online-retail",
        "returns",
        datetime(2010, 9, 1),
        None,
        "Returns on Online Retail II: cancellations as returns",
        "the lines ordered in the 4 weeks after 2010-09-01, returned (cancelled) within 30 days "
        "or not, features as of each line's own purchase",
        BINARY_SHOWN,
        (
            Goal("pr_auc", "logistic", "Returns PR-AUC above the logistic regression"),
            Goal("pr_auc", "category-rate", "Returns PR-AUC above the category rate"),
            Goal("auc", "logistic", "Returns AUC above the logistic regression"),
            Goal("auc", "category-rate", "Returns AUC above the category rate"),
        ),
    ),
    *(
        Protocol(
            key,
            "high-value",
            cutoff,
            None,
            f"High-value on {SAMPLES[key].label}",
            f"a large order (above the threshold learned before the cutoff) in the 30 days "
            f"after {cutoff:%Y-%m-%d}, the data's last full month",
            (Shown("auc", "AUC", True), *BINARY_SHOWN[:1], *BINARY_SHOWN[2:]),
            (Goal("auc", "baseline", f"High-value AUC above the RFM logistic score ({label})"),),
        )
        for key, cutoff, label in (
            ("cdnow", datetime(1998, 6, 1), "CDNOW"),
            ("online-retail", datetime(2010, 11, 1), "Online Retail II"),
        )
    ),
    *(
        Protocol(
            key,
            "segments",
            cutoff,
            None,
            f"Segments on {SAMPLES[key].label}",
            f"segments of the customers as of {cutoff:%Y-%m-%d}, fitted on the months before",
            (
                Shown("silhouette", "silhouette", True),
                Shown("davies_bouldin", "Davies-Bouldin", False),
                Shown("min_segment_share", "smallest segment's share", None),
                Shown("n_segments", "segments", None, 0),
            ),
            (Goal("silhouette", "baseline", f"Segments silhouette above RFM tertiles ({label})"),),
        )
        for key, cutoff, label in (
            ("cdnow", datetime(1998, 6, 1), "CDNOW"),
            ("online-retail", datetime(2010, 11, 1), "Online Retail II"),
        )
    ),
)


# -- running --------------------------------------------------------------------------------
def shared_folder() -> Path:
    """The shared public samples: ``SHOPML_SHARED_DATA_DIR``, else ``../shared/data``."""
    configured = os.environ.get("SHOPML_SHARED_DATA_DIR")
    return Path(configured) if configured else ROOT.parent / "shared" / "data"


@dataclass
class Outcome:
    """One protocol's result: the backtest origin as a dict (``Origin.to_dict``), or why not."""

    protocol: Protocol
    status: str  # ok | skipped | failed | absent
    reason: str = ""
    origin: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        p = self.protocol
        return {
            "protocol": p.key,
            "sample": p.sample,
            "usecase": p.usecase,
            "cutoff": p.cutoff.isoformat(),
            "horizon_days": p.horizon_days,
            "status": self.status,
            "reason": self.reason,
            "origin": self.origin,
            "seconds": round(self.seconds, 1),
        }


def run_protocols(
    shared: Path,
    protocols: Sequence[Protocol] = PROTOCOLS,
    *,
    samples: dict[str, Sample] | None = None,
    config: Any = None,
    say: Say = print,
) -> list[Outcome]:
    """Import each sample the protocols need into a temporary warehouse (once per sample) and
    backtest every protocol on it with :func:`shopml.lifecycle.backtest.backtest`."""
    from shopml.data.importers import IMPORTERS
    from shopml.data.warehouse import Warehouse
    from shopml.lifecycle.backtest import backtest
    from shopml.lifecycle.train import TrainConfig
    from shopml.usecases import get_usecase

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    samples = samples or SAMPLES
    config = config or TrainConfig(register=False)
    outcomes: list[Outcome] = []
    for key in dict.fromkeys(p.sample for p in protocols):
        mine = [p for p in protocols if p.sample == key]
        sample = samples[key]
        path = shared / sample.path
        if not path.exists():
            reason = f"{path} is absent (set SHOPML_SHARED_DATA_DIR to the shared data folder)"
            say(f"{sample.label}: {reason}")
            outcomes += [Outcome(p, "absent", reason) for p in mine]
            continue
        with (
            tempfile.TemporaryDirectory(prefix=f"shopml-real-{key}-") as tmp,
            Warehouse(Path(tmp) / "warehouse.duckdb") as wh,
        ):
            say(f"{sample.label}: importing {path}")
            IMPORTERS[sample.importer](path).load(wh)
            for p in mine:
                say(f"{sample.label}: backtesting {p.usecase} at {p.cutoff:%Y-%m-%d}")
                started = time.perf_counter()
                result = backtest(
                    get_usecase(p.usecase),
                    wh,
                    [p.cutoff],
                    horizon_days=p.horizon_days,
                    config=config,
                    track=False,
                    progress=lambda msg: say(f"  {msg}"),
                )
                (origin,) = result.origins
                outcomes.append(
                    Outcome(
                        p,
                        origin.status,
                        origin.reason,
                        origin.to_dict(),
                        time.perf_counter() - started,
                    )
                )
    return outcomes


# -- judging and laying out ------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """A goal judged on its paired interval."""

    goal: Goal
    protocol: Protocol
    verdict: str  # met | missed | not shown | not measured
    difference: dict[str, Any] | None
    why: str = ""


def judge(goal: Goal, outcome: Outcome) -> Verdict:
    """``met`` when the paired interval of model minus baseline lies wholly on the model's
    side, ``missed`` when wholly on the baseline's, ``not shown`` when it straddles zero."""
    p = outcome.protocol
    if outcome.status != "ok":
        return Verdict(goal, p, "not measured", None, f"{outcome.status}: {outcome.reason}")
    shown = {s.metric: s for s in p.shown}
    higher = shown[goal.metric].higher_is_better if goal.metric in shown else None
    diff = outcome.origin.get("paired", {}).get(goal.baseline, {}).get(goal.metric)
    if diff is None:
        why = outcome.origin.get("unavailable", {}).get(goal.baseline, "no such baseline")
        return Verdict(goal, p, "not measured", None, f"{goal.baseline}: {why}")
    low, high = diff.get("low"), diff.get("high")
    if low is None or high is None or higher is None:
        return Verdict(goal, p, "not shown", diff, "no interval on this window")
    better = low > 0 if higher else high < 0
    worse = high < 0 if higher else low > 0
    if better:
        return Verdict(goal, p, "met", diff)
    if worse:
        return Verdict(goal, p, "missed", diff, f"{goal.baseline} is better on this window")
    n = outcome.origin.get("n", 0)
    unit = outcome.origin.get("unit", "rows")
    why = f"the interval straddles 0: {n:,} {unit} cannot tell"
    return Verdict(goal, p, "not shown", diff, why)


def verdicts(outcomes: Sequence[Outcome]) -> list[Verdict]:
    return [judge(g, o) for o in outcomes for g in o.protocol.goals]


def _num(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    f = float(v)
    if digits == 0:
        return f"{f:,.0f}"
    if abs(f) >= 1000:
        return f"{f:,.0f}"
    return f"{f:.{digits}f}"


def interval_text(d: dict[str, Any] | None, digits: int = 3) -> str:
    """``estimate [low, high]`` (or ``estimate (no interval)``)."""
    if not d:
        return "n/a"
    est, low, high = d.get("estimate"), d.get("low"), d.get("high")
    if low is None or high is None:
        return f"{_num(est, digits)} (no interval)"
    if low == high == est:
        return _num(est, digits)
    return f"{_num(est, digits)} [{_num(low, digits)}, {_num(high, digits)}]"


def protocol_markdown(outcome: Outcome) -> str:
    """One protocol: what was run, every answer's metrics with intervals, and the model's
    paired differences to each baseline."""
    p = outcome.protocol
    head = f"**{p.title}** (`{p.usecase}`): {p.design}."
    if outcome.status != "ok":
        return f"{head}\n\n{outcome.status}: {outcome.reason}"
    o = outcome.origin
    horizon = f"{o['horizon_days']} days"
    if o.get("train_horizon_days") and o["train_horizon_days"] != o["horizon_days"]:
        horizon += f" (learned on {o['train_horizon_days']}-day labels and extrapolated)"
    rows = o.get("rows", {})
    lines = [
        head,
        "",
        f"Cutoff {p.cutoff:%Y-%m-%d}, horizon {horizon}; {o['n']:,} {o['unit']} on test "
        f"({rows.get('test', 0):,} rows; {rows.get('train', 0):,} training and "
        f"{rows.get('valid', 0):,} validation rows before the cutoff); 95% intervals from "
        f"{o['draws']} resamples of whole {o['unit']}; {outcome.seconds:.0f} s.",
        "",
        "| answer | " + " | ".join(s.label for s in p.shown) + " |",
        "| --- | " + " | ".join("---:" for _ in p.shown) + " |",
    ]
    answers = [("shopml model", o["model"])] + [
        (f"baseline `{name}`", metrics) for name, metrics in o["baselines"].items()
    ]
    for label, metrics in answers:
        cells = [interval_text(metrics.get(s.metric), s.digits) for s in p.shown]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, paired in o.get("paired", {}).items():
        cells = [
            interval_text(paired.get(s.metric), s.digits) if s.higher_is_better is not None else ""
            for s in p.shown
        ]
        lines.append(f"| model minus `{name}` (paired) | " + " | ".join(cells) + " |")
    for name, why in o.get("unavailable", {}).items():
        lines.append(f"\nBaseline `{name}` unavailable: {why}.")
    return "\n".join(lines)


def goals_markdown(judged: Sequence[Verdict]) -> str:
    """The goals of issue 12, each with its paired interval and verdict."""
    lines = [
        "| goal | model minus baseline (paired, 95%) | verdict |",
        "| --- | ---: | --- |",
    ]
    for v in judged:
        digits = next((s.digits for s in v.protocol.shown if s.metric == v.goal.metric), 3)
        verdict = f"**{v.verdict}**" + (f": {v.why}" if v.why else "")
        lines.append(f"| {v.goal.text} | {interval_text(v.difference, digits)} | {verdict} |")
    return "\n".join(lines)


def markdown(
    outcomes: Sequence[Outcome],
    olist: dict[str, Any] | None,
    olist_text: str = "",
    budget: str = "8 trials or 45 s per cutoff, `shopml backtest`'s default",
) -> str:
    """The README block: the goals with their verdicts, then one table per protocol, then
    delivery time on Olist."""
    judged = verdicts(outcomes)
    olist_judged = olist_verdicts(olist)
    parts = [
        f"Backtests on the public samples with `shopml backtest`'s code (tuning: {budget}). "
        "Every figure carries its 95% bootstrap interval; *model minus baseline* rows are "
        "paired (the same resampled customers for both), so they show whether the model beats "
        "the baseline on this window.",
        "",
        "#### The goals",
        "",
        goals_markdown([*judged, *olist_judged]),
    ]
    for outcome in outcomes:
        parts += ["", protocol_markdown(outcome)]
    if olist_text:
        parts += ["", "**Delivery time on the Olist sample** (`delivery-time`):", "", olist_text]
    if olist is not None:
        parts += ["", olist_sentence(olist, olist_judged)]
    return "\n".join(parts)


def olist_sentence(result: dict[str, Any], judged: Sequence[Verdict]) -> str:
    """What so few joined orders can and cannot show, from the counts and the verdicts."""
    c = result.get("counts", {})
    shown = [v.goal.text.removeprefix("Delivery-time ") for v in judged if v.verdict == "met"]
    against = [v.goal.text.removeprefix("Delivery-time ") for v in judged if v.verdict == "missed"]
    unclear = [v.goal.text.removeprefix("Delivery-time ") for v in judged if v.verdict != "met"]
    unclear = [t for t in unclear if t not in against]
    text = (
        f"**What {c.get('test', 0)} test orders can and cannot show.** Of the "
        f"{c.get('orders_in_files', 0):,} orders in the files, {c.get('orders_kept', 0):,} join "
        f"their customer; of the test orders {c.get('test_with_seller', 0)} have their seller "
        f"and {c.get('test_with_distance', 0)} a customer-seller distance, so the model runs on "
        "ZIP prefixes, regions, the calendar and history as of purchase. "
    )
    if shown:
        text += "The paired intervals exclude zero for: " + "; ".join(shown) + ". "
    if against:
        text += "They show the baseline better for: " + "; ".join(against) + ". "
    if unclear:
        text += (
            "They cannot tell, either way, for: " + "; ".join(unclear) + " (nor anything about "
            "sellers, routes or distance, absent from these rows)."
        )
    return text.strip()


# -- delivery time on Olist --------------------------------------------------------------------
OLIST_GOALS = (
    ("mae", "promise", "Delivery-time MAE below Olist's promise"),
    ("mae", "constant", "Delivery-time MAE below a constant median"),
    ("pinball_p90", "promise", "Delivery-time P90 pinball loss below Olist's promise"),
    ("pinball_p90", "constant", "Delivery-time P90 pinball loss below a constant P90"),
)


def olist_verdicts(result: dict[str, Any] | None) -> list[Verdict]:
    """The Olist comparison's goals, judged like the others (lower error is better)."""
    if result is None:
        return []
    proto = Protocol(
        OLIST,
        "delivery-time",
        datetime.fromisoformat(result["cutoff"]) if result.get("cutoff") else datetime.min,
        None,
        "Delivery time on the Olist sample",
        "",
        (
            Shown("mae", "MAE", False, 2),
            Shown("pinball_p90", "pinball p90", False, 2),
        ),
    )
    by = {(r["answer"], r["metric"]): r for r in result.get("rows", [])}
    out = []
    for metric, base, text in OLIST_GOALS:
        goal = Goal(metric, base, text)
        diff = by.get(("model", metric), {}).get(f"vs_{base}")
        origin = {
            "paired": {base: {metric: diff}} if diff else {},
            "n": result.get("counts", {}).get("test", 0),
            "unit": "orders",
        }
        out.append(judge(goal, Outcome(proto, "ok", origin=origin)))
    return out


def run_olist(shared: Path, draws: int, say: Say = print) -> tuple[dict[str, Any] | None, str]:
    """:func:`benchmarks.real_olist.evaluate` on the shared Olist folder and its table, or
    (None, why) when the folder is absent."""
    from benchmarks import real_olist

    folder = shared / "olist"
    if not folder.is_dir():
        return None, f"{folder} is absent: delivery time on Olist not measured."
    say(f"Olist: importing {folder} and evaluating delivery time")
    result = real_olist.evaluate(folder, draws=draws)
    return result, real_olist.markdown(result)


def run(quick: bool = False) -> Result:
    """Every protocol on the shared samples (``quick``: CDNOW only, no tuning, 50 resamples:
    a smoke run)."""
    from shopml.lifecycle.train import TrainConfig

    shared = shared_folder()
    started = time.perf_counter()
    if quick:
        config = TrainConfig(register=False, trials=0, draws=50)
        protocols: Sequence[Protocol] = [p for p in PROTOCOLS if p.sample == "cdnow"]
    else:
        config = TrainConfig(register=False)
        protocols = PROTOCOLS
    outcomes = run_protocols(shared, protocols, config=config)
    olist, olist_text = run_olist(shared, draws=100 if quick else 400)
    budget = (
        "none, defaults (--quick)"
        if quick
        else f"{config.trials} trials or {config.timeout_s:.0f} s per cutoff, as by default"
    )
    text = markdown(outcomes, olist, olist_text, budget)
    seconds = time.perf_counter() - started
    text += f"\n\nAll of it ran in {seconds / 60:.1f} minutes."
    figures = {
        "seconds": round(seconds, 1),
        "protocols": [o.to_dict() for o in outcomes],
        "goals": [
            {
                "goal": v.goal.text,
                "usecase": v.protocol.usecase,
                "sample": v.protocol.sample,
                "metric": v.goal.metric,
                "baseline": v.goal.baseline,
                "verdict": v.verdict,
                "why": v.why,
                "difference": v.difference,
            }
            for v in [*verdicts(outcomes), *olist_verdicts(olist)]
        ],
        "olist": olist,
    }
    return Result(NAME, TITLE, text, figures)
