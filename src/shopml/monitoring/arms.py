"""Judging a rollout's arms on delayed labels: promote a better challenger, roll back a worse one.

While a use case is in shadow, canary or A/B (:mod:`shopml.runtime.rollout`), every check
(:func:`judge_arms`) reads the answers both arms gave since the challenger first answered,
keeps those whose labels are final, and scores each arm with the use case's own metrics on
the answers that were logged (not a re-scoring):

- *shadow*: both models answered the same requests, so the comparison is **paired** (the
  same rows, resampled together: :func:`shopml.lifecycle.intervals.bootstrap`);
- *canary* / *A/B*: each entity saw one arm; the arms are resampled independently and the
  difference's distribution is that of the two independent bootstrap estimates.

**The sequential rule.** The monitor looks again and again as labels arrive, and a 95%
interval checked at every look would promote a challenger that is no better far more often
than 5% of the time. Each look ``k`` (counted per challenger version in the decision record)
spends ``alpha * 6 / (pi^2 k^2)`` of a total error budget ``alpha`` (these sum to ``alpha``
over any number of looks, so by the union bound the chance that *any* look wrongly promotes,
or wrongly rolls back, is at most ``alpha`` each): the difference's interval at look ``k`` is
``estimate +- z(1 - alpha_k) * se`` (``se``: the bootstrap standard error), one-sided. It
is conservative; it asks for no planned sample size and stays valid however long a rollout
runs. Because every look costs alpha, looks are spaced by information, not by the calendar:
a check is a new look only once the labelled units (customers, orders) have doubled
(:data:`GROWTH`) since the last one; the checks in between record their figures and say when
the next look comes. Over a rollout whose labels grow from ``n`` to ``N`` units that is about
``log2(N / n)`` looks instead of one per check.

- the whole sequential interval of the gain is above the gate's margin, and the gate
  (:func:`shopml.lifecycle.gate.decide`, fed the live evidence) promotes: the challenger
  becomes champion, recorded with the reasons;
- the whole interval is below zero (worse), or the challenger breaks a floor or a sanity
  check of the gate: the rollout is **rolled back** (mode off, challenger alias removed, the
  version tagged with why);
- otherwise: keep collecting (the reason says how far the interval is from deciding).

Each judgement is stored as a decision (action ``rollout``) with its figures, alerts are sent
when something is promoted or rolled back, and ``shopml models`` shows the outcome.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.lifecycle.intervals import DRAWS, Interval, bootstrap
from shopml.monitoring.alerts import build_payload, send_alert
from shopml.monitoring.performance import LabelCache, LoggedScorer, join_labels, numeric_outputs
from shopml.monitoring.store import MetricRow, MonitoringStore
from shopml.runtime.predictions import CHALLENGER, CHAMPION, SHADOW, PredictionWindow
from shopml.runtime.rollout import SHADOW as SHADOW_MODE

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse
    from shopml.settings import Settings
    from shopml.usecases.base import LabelledData, Predictions, UseCase

log = logging.getLogger("shopml.monitoring")

ALPHA = 0.05  # the error budget of a whole rollout, for each of promotion and rollback
# A new look (one that spends alpha) is taken once the labelled units have grown this much
# since the last one; checks in between report the figures and wait.
GROWTH = 2.0
ACTION = "rollout"
LOOKBACK_DAYS = 365  # how far back a rollout's answers are read
PROMOTED, ROLLED_BACK, CONTINUE = "promoted", "rolled back", "continue"


def spent(look: int, alpha: float = ALPHA) -> float:
    """The share of ``alpha`` look ``look`` (1, 2, ...) may spend: ``alpha * 6 / (pi^2 k^2)``."""
    return alpha * 6.0 / (math.pi**2 * max(look, 1) ** 2)


@dataclass
class ArmsResult:
    """One judgement of a use case's rollout."""

    usecase: str
    now: datetime
    status: str  # no-rollout | no-labels | continue | promoted | rolled back | dry run
    mode: str | None = None
    champion: str | None = None
    challenger: str | None = None
    paired: bool = False
    metric: str | None = None
    higher_is_better: bool = True
    labelled: dict[str, int] = field(default_factory=dict)
    intervals: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> 95% interval
    difference: dict[str, Any] | None = None  # challenger - champion, 95%
    look: int = 0
    alpha_spent: float | None = None
    sequential: dict[str, float] | None = None  # the gain's interval at this look
    gate: dict[str, Any] | None = None
    reasons: list[str] = field(default_factory=list)
    alert: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["now"] = self.now.isoformat()
        return out


@dataclass
class _Arm:
    data: LabelledData
    predictions: Predictions


def judge_arms(
    uc: UseCase,
    wh: Warehouse,
    settings: Settings,
    store: MonitoringStore,
    *,
    now: datetime,
    act: bool = True,
    cache: LabelCache | None = None,
    draws: int = DRAWS,
) -> ArmsResult:
    """Judge ``uc``'s rollout at ``now`` and act on it (with ``act``); see the module."""
    from shopml.lifecycle.registry import CHALLENGER as CHALLENGER_ALIAS
    from shopml.lifecycle.registry import CHAMPION as CHAMPION_ALIAS
    from shopml.lifecycle.registry import alias_version
    from shopml.lifecycle.rollout import current
    from shopml.lifecycle.tracking import configure

    client = configure(settings)
    rollout = current(client, uc.name, settings)
    result = ArmsResult(uc.name, now, "no-rollout", mode=rollout.mode)
    if not rollout.active:
        return result
    champ = alias_version(client, uc.name, CHAMPION_ALIAS)
    chall = alias_version(client, uc.name, CHALLENGER_ALIAS)
    if champ is None or chall is None:
        result.reasons = [f"{rollout.describe()} is set but there is no challenger to judge"]
        return result
    result.champion, result.challenger = str(champ.version), str(chall.version)
    if uc.monitoring.label is None or not uc.answer.model_outputs:
        result.reasons = [f"{uc.name}'s answers are not judged on labels; judge it yourself"]
        return result
    # Judged as the gate judges a candidate: on its decisive metric, with its floors.
    result.metric, result.higher_is_better = uc.gate.metric, uc.gate.higher_is_better
    result.paired = rollout.mode == SHADOW_MODE
    arms = _labelled(uc, wh, store, now, result, cache or LabelCache())
    if arms is None:
        result.status = "no-labels"
        result.reasons = [
            f"no labelled answers of both arms yet: labels arrive "
            f"{uc.monitoring.label_delay_days} days after a prediction"
        ]
        _record(store, result, [])
        return result
    comparison = _compare(uc, arms, result, draws, settings.seed)
    looked, last_units = _earlier_looks(store, uc.name, result.challenger)
    units = comparison.difference.n
    if looked and units < GROWTH * last_units:
        # Not a look: alpha is spent per look, so looks are spaced by information (the
        # labelled units doubling), not by the calendar.
        result.look = looked
        result.status = CONTINUE
        result.reasons = [
            f"waiting for labels: {units:,} labelled units against {last_units:,} at look "
            f"{looked}; the next look at {math.ceil(GROWTH * last_units):,} "
            f"(difference so far {_fmt(comparison.difference)})"
        ]
        _record(store, result, _rows(result))
        return result
    result.look = 1 + looked
    verdict, reasons = _verdict(uc, arms, result, comparison)
    result.reasons = reasons
    result.status = verdict if act or verdict == CONTINUE else "dry run"
    if act and verdict in (PROMOTED, ROLLED_BACK):
        _apply(client, uc.name, result, verdict)
        result.alert = _alert(settings, result)
    _record(store, result, _rows(result))
    return result


# -- reading the arms -------------------------------------------------------------------------
def _labelled(
    uc: UseCase,
    wh: Warehouse,
    store: MonitoringStore,
    now: datetime,
    result: ArmsResult,
    cache: LabelCache,
) -> tuple[_Arm, _Arm] | None:
    """Each arm's labelled answers: (champion, challenger), row-aligned when paired."""
    other = SHADOW if result.paired else CHALLENGER
    start = now - timedelta(days=LOOKBACK_DAYS)
    theirs = store.predictions(
        uc.name, start, now, model_version=result.challenger, arms=[other], with_features=False
    )
    if not len(theirs):
        return None
    # The rollout began when the challenger first answered: the champion's answers before
    # that are another experiment.
    began = theirs.frame["ts"].min().to_pydatetime().replace(tzinfo=None)
    ours = store.predictions(
        uc.name, began, now, model_version=result.champion, arms=[CHAMPION], with_features=False
    )
    if not len(ours):
        return None
    if result.paired:
        ours, theirs = _pairs(ours, theirs)
        if not len(ours):
            return None
    out = []
    for window in (ours, theirs):
        joined = join_labels(uc, wh, window, now, cache)
        if joined is None or not len(joined):
            return None
        scorer = LoggedScorer(list(joined.data.features), joined.outputs, values=joined.values)
        out.append(_Arm(joined.data, uc.predict(scorer, joined.data)))
    champion, challenger = out
    if result.paired and len(champion.data) != len(challenger.data):  # pragma: no cover
        raise RuntimeError("paired arms matched different rows to labels")
    result.labelled = {CHAMPION: len(champion.data), CHALLENGER: len(challenger.data)}
    return champion, challenger


def _pairs(
    ours: PredictionWindow, theirs: PredictionWindow
) -> tuple[PredictionWindow, PredictionWindow]:
    """The champion's and the shadow's answers to the same requests, in the same order."""
    key = ["request_id", "entity_id"]
    a = ours.frame[key].reset_index(drop=True).assign(_a=np.arange(len(ours)))
    b = theirs.frame[key].reset_index(drop=True).assign(_b=np.arange(len(theirs)))
    both = a.merge(b, on=key, how="inner").drop_duplicates(key)
    ia, ib = both["_a"].to_numpy(), both["_b"].to_numpy()

    def take(w: PredictionWindow, rows: np.ndarray) -> PredictionWindow:
        frame = w.frame.iloc[rows].reset_index(drop=True)
        outputs = w.outputs.iloc[rows].reset_index(drop=True)
        empty = pd.DataFrame(index=range(len(rows)))
        return PredictionWindow(w.usecase, w.start, w.end, frame, empty, outputs)

    # One frame for both (the champion's rows): the label join then matches the same rows.
    champion = take(ours, ia)
    shadow = take(theirs, ib)
    shadow.frame = champion.frame.copy()
    outs = [c for c in numeric_outputs(champion.outputs) if c in shadow.outputs.columns]
    champion.outputs, shadow.outputs = champion.outputs[outs], shadow.outputs[outs]
    return champion, shadow


# -- comparing ----------------------------------------------------------------------------------
@dataclass
class _Comparison:
    champion: dict[str, Interval]  # every metric, 95%
    challenger: dict[str, Interval]
    difference: Interval  # challenger minus champion, 95%
    draws: np.ndarray  # the difference's bootstrap draws


def _compare(
    uc: UseCase, arms: tuple[_Arm, _Arm], result: ArmsResult, draws: int, seed: int
) -> _Comparison:
    """95% intervals of each arm and of the difference, with the difference's draws."""
    metric = result.metric
    assert metric is not None
    champion, challenger = arms
    if result.paired:
        boot = bootstrap(
            uc,
            champion.data,
            {CHAMPION: champion.predictions, CHALLENGER: challenger.predictions},
            draws=draws,
            seed=seed,
        )
        out = _Comparison(
            boot.intervals(CHAMPION),
            boot.intervals(CHALLENGER),
            boot.difference(CHALLENGER, CHAMPION, metric),
            boot.replicates[CHALLENGER][metric].to_numpy(dtype="float64")
            - boot.replicates[CHAMPION][metric].to_numpy(dtype="float64"),
        )
    else:
        out = _independent(uc, arms, metric, draws, seed)
    nan = Interval(math.nan, math.nan, math.nan, 0, 0)
    result.intervals = {
        CHAMPION: out.champion.get(metric, nan).to_dict(),
        CHALLENGER: out.challenger.get(metric, nan).to_dict(),
    }
    result.difference = out.difference.to_dict()
    return out


def _independent(
    uc: UseCase, arms: tuple[_Arm, _Arm], metric: str, draws: int, seed: int
) -> _Comparison:
    """Arms seen by different entities: each resampled on its own; the difference's draws
    are those of two independent estimates."""
    champion, challenger = arms
    one = bootstrap(uc, champion.data, {CHAMPION: champion.predictions}, draws=draws, seed=seed)
    two = bootstrap(
        uc, challenger.data, {CHALLENGER: challenger.predictions}, draws=draws, seed=seed + 1
    )
    a, b = one.interval(CHAMPION, metric), two.interval(CHALLENGER, metric)
    every = (one.intervals(CHAMPION), two.intervals(CHALLENGER))
    diff = _draws(two.replicates[CHALLENGER], metric) - _draws(one.replicates[CHAMPION], metric)
    ok = diff[np.isfinite(diff)]
    est = b.estimate - a.estimate
    if len(ok) >= max(10, len(diff) // 2) and math.isfinite(est):
        low, high = np.percentile(ok, [2.5, 97.5])
        iv = Interval(est, float(low), float(high), a.n + b.n, a.rows + b.rows, draws=len(ok))
    else:
        iv = Interval(est, math.nan, math.nan, a.n + b.n, a.rows + b.rows)
    return _Comparison(*every, iv, diff)


def _draws(frame: pd.DataFrame, metric: str) -> np.ndarray:
    if metric not in frame.columns:
        return np.full(len(frame), np.nan)
    return frame[metric].to_numpy(dtype="float64")


def _earlier_looks(store: MonitoringStore, usecase: str, challenger: str | None) -> tuple[int, int]:
    """Looks at this challenger already taken (each spent its alpha), and the labelled units
    the last one had."""
    history = store.decisions(usecase)
    if not len(history):
        return 0, 0
    mine = history[(history["action"] == ACTION) & (history["model_version"] == challenger)]
    looks = [d for d in (_detail(x) for x in mine["detail"]) if d.get("sequential") is not None]
    if not looks:
        return 0, 0
    last = looks[-1].get("difference") or {}
    return len(looks), int(last.get("n") or 0)


def _detail(detail: Any) -> dict[str, Any]:
    import json

    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            return {}
    return detail if isinstance(detail, dict) else {}


def _verdict(
    uc: UseCase, arms: tuple[_Arm, _Arm], result: ArmsResult, comparison: _Comparison
) -> tuple[str, list[str]]:
    """The sequential interval of the gain, the gate on the live evidence, the verdict."""
    from shopml.lifecycle.gate import PROMOTED as GATE_PROMOTED
    from shopml.lifecycle.gate import Evidence, SanityReport, decide

    metric = result.metric
    assert metric is not None
    sign = 1.0 if result.higher_is_better else -1.0
    ok = comparison.draws[np.isfinite(comparison.draws)]
    estimate = comparison.difference.estimate
    alpha_k = spent(result.look)
    result.alpha_spent = alpha_k
    n = result.labelled[CHALLENGER] if result.paired else sum(result.labelled.values())
    if len(ok) < 10 or estimate is None or not math.isfinite(estimate):
        result.sequential = None
        return CONTINUE, [
            f"{metric} cannot be compared on {n} labelled answers yet (too few of each outcome)"
        ]
    se = float(np.std(ok, ddof=1))
    z = NormalDist().inv_cdf(1 - alpha_k)
    gain = sign * float(estimate)
    low, high = gain - z * se, gain + z * se
    result.sequential = {"gain": gain, "low": low, "high": high, "z": z, "se": se}
    nan = Interval(math.nan, math.nan, math.nan, 0, 0)
    champion_iv = comparison.champion.get(metric, nan)
    challenger_iv = comparison.challenger.get(metric, nan)
    policy = uc.gate
    margin = policy.min_improvement * max(abs(champion_iv.estimate), 1e-12)
    # The gate, fed the live evidence: its floors and sanity checks on the challenger's
    # answers, its margin judged on the sequential interval (not the 95% one).
    diff_iv = Interval(
        float(estimate),
        float(estimate) - z * se,
        float(estimate) + z * se,
        comparison.difference.n,
        comparison.difference.rows,
        level=1 - 2 * alpha_k,
    )
    values = arms[1].predictions.values.select_dtypes("number").to_numpy(dtype="float64")
    lo, hi = policy.output_range
    outside = np.zeros(len(values), dtype=bool)
    if lo is not None:
        outside |= (values < lo - 1e-9).any(axis=1)
    if hi is not None:
        outside |= (values > hi + 1e-9).any(axis=1)
    sanity = SanityReport(
        len(values), int((~np.isfinite(values)).any(axis=1).sum()), int(outside.sum()), 0.0
    )
    evidence = Evidence(
        comparison.challenger,
        result.labelled.get(CHALLENGER, 0),
        "labelled answers",
        champion=comparison.champion,
        difference=diff_iv,
    )
    gate = decide(policy, evidence, sanity, champion_version=result.champion)
    result.gate = {"verdict": gate.verdict, "reasons": gate.reasons}
    head = (
        f"live {metric}: challenger v{result.challenger} {_fmt(challenger_iv)} vs champion "
        f"v{result.champion} {_fmt(champion_iv)} on {n:,} labelled answers "
        f"({'paired, shadow' if result.paired else 'independent arms'}); gain "
        f"{gain:+.4g}, look {result.look}'s interval [{low:+.4g}, {high:+.4g}] "
        f"(alpha {alpha_k:.2g} of {ALPHA:g})"
    )
    broken = [c.reason for c in gate.checks if c.outcome == "fail" and c.rule != "champion"]
    if broken:
        return ROLLED_BACK, [head, *broken]
    if high < 0:
        return ROLLED_BACK, [f"{head}: worse than the champion"]
    if gate.verdict == GATE_PROMOTED and low > margin:
        return PROMOTED, [f"{head}: better than the champion, needed {margin:+.4g}"]
    need = "any improvement" if not margin else f"{margin:+.4g}"
    return CONTINUE, [f"{head}: not yet decided (better needs low > {need}, worse high < 0)"]


def _fmt(iv: Interval) -> str:
    if not iv.defined:
        return f"{iv.estimate:.4g}"
    return f"{iv.estimate:.4g} [{iv.low:.4g}, {iv.high:.4g}]"


# -- acting and recording -----------------------------------------------------------------------
def _apply(client: Any, usecase: str, result: ArmsResult, verdict: str) -> None:
    from shopml.lifecycle.registry import set_champion
    from shopml.lifecycle.rollout import end

    assert result.challenger is not None
    if verdict == PROMOTED:
        set_champion(
            client,
            usecase,
            result.challenger,
            reason=f"rollout: {result.reasons[0]}"[:500],
            manual=False,
        )
    end(client, usecase, result.challenger, verdict, result.reasons)
    log.warning("%s: rollout of v%s %s (%s)", usecase, result.challenger, verdict, result.reasons)


def _alert(settings: Settings, result: ArmsResult) -> dict[str, Any]:
    severity = "warning" if result.status == ROLLED_BACK else "resolved"
    payload = build_payload(
        result.usecase,
        severity,
        f"challenger v{result.challenger} {result.status} after {result.mode}",
        result.reasons,
        {
            "rollout": result.mode,
            "champion": result.champion,
            "challenger": result.challenger,
            "outcome": result.status,
            "difference": result.difference,
            "sequential": result.sequential,
        },
    )
    return send_alert(payload, settings.alert_webhook_url).to_dict()


def _rows(result: ArmsResult) -> list[MetricRow]:
    rows = []
    for arm, iv in result.intervals.items():
        rows.append(
            MetricRow("rollout", f"{result.metric}.{arm}", iv["estimate"], n=iv["n"], detail=iv)
        )
    if result.difference is not None:
        d = result.difference
        rows.append(MetricRow("rollout", f"{result.metric}.difference", d["estimate"], detail=d))
    for arm, n in result.labelled.items():
        rows.append(MetricRow("rollout", f"labelled.{arm}", float(n), n=n))
    return [r for r in rows if r.value is not None]


def _record(store: MonitoringStore, result: ArmsResult, rows: list[MetricRow]) -> None:
    window = (result.now - timedelta(days=LOOKBACK_DAYS), result.now)
    run_id = store.write_metrics(result.usecase, result.challenger, result.now, window, rows)
    store.write_decision(
        run_id,
        result.usecase,
        result.challenger,
        result.now,
        result.status in (PROMOTED, ROLLED_BACK),
        ACTION,
        result.status,
        result.reasons,
        {
            k: v
            for k, v in result.to_dict().items()
            if k in ("mode", "champion", "paired", "labelled", "intervals", "difference")
            or k in ("look", "alpha_spent", "sequential", "gate", "alert")
        },
    )
