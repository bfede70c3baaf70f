"""The promotion gate: a candidate becomes champion only when it is better, sane and fast, and
the test window holds enough evidence to say so.

Every metric is judged with its confidence interval (:mod:`shopml.lifecycle.intervals`):

- a floor or ceiling **rejects** only when the whole interval lies beyond it; when the estimate
  is beyond it but the interval reaches back across, the window cannot tell;
- an improvement over the champion counts only when the **paired** interval of the difference
  (challenger minus champion, resampled on the same units) clears the margin; when the whole
  interval falls short of the margin the challenger is rejected, otherwise the window cannot
  tell.

Three verdicts follow: *promoted*; *rejected* (evidence against: a bound crossed, a champion
not beaten, a sanity check failed); *insufficient evidence* (registered, not promoted: the
reason names the units the window had and roughly how many would settle it). A fourth,
*held back*, is not about evidence: a model trained as of a past date never replaces one
trained on later data without an explicit ``shopml promote``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from shopml.lifecycle.intervals import Interval, n_needed

if TYPE_CHECKING:
    from shopml.lifecycle.intervals import Bootstrap
    from shopml.runtime.scorers import Scorer
    from shopml.usecases.base import GatePolicy, LabelledData

PROMOTED = "promoted"
REJECTED = "rejected"
INSUFFICIENT = "insufficient evidence"
HELD_BACK = "held back"
VERDICTS = (PROMOTED, REJECTED, INSUFFICIENT, HELD_BACK)


@dataclass
class SanityReport:
    rows: int
    missing: int
    out_of_range: int
    latency_ms: float  # median single-row prediction time, CPU (what the budget judges)
    error: str | None = None
    wall_ms: float | None = None  # the same, wall clock (grows with the machine's load)


@dataclass
class Evidence:
    """What the gate knows about a candidate on its test window.

    ``candidate`` and ``champion`` hold every metric with its interval; ``difference`` is the
    paired interval of candidate minus champion on the decisive metric, ``baselines`` the same
    against each baseline that could be computed (reported, not judged), ``unavailable`` the
    baselines that could not, with their reasons.
    """

    candidate: dict[str, Interval]
    n: int
    unit: str = "rows"
    champion: dict[str, Interval] | None = None
    difference: Interval | None = None
    baselines: dict[str, Interval] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_bootstrap(
        cls,
        boot: Bootstrap,
        metric: str,
        *,
        model: str = "model",
        champion: str | None = None,
        baselines: Mapping[str, str] | None = None,
        unavailable: Mapping[str, str] | None = None,
        unit: str = "rows",
    ) -> Evidence:
        """Evidence from a bootstrap of the candidate's answers (``model``), the champion's
        and the baselines' (``{display name: bootstrap name}``) on the same rows."""
        has_champion = champion is not None and champion in boot.estimates
        return cls(
            candidate=boot.intervals(model),
            n=boot.n,
            unit=unit,
            champion=boot.intervals(champion) if has_champion and champion else None,
            difference=boot.difference(model, champion, metric)
            if has_champion and champion
            else None,
            baselines={
                shown: boot.difference(model, name, metric)
                for shown, name in (baselines or {}).items()
                if name in boot.estimates
            },
            unavailable=dict(unavailable or {}),
        )

    @classmethod
    def of_points(
        cls,
        candidate: Mapping[str, float],
        champion: Mapping[str, float] | None = None,
        n: int = 0,
    ) -> Evidence:
        """Point estimates taken as exact (no sampling error): the gate then compares values
        as a gate without intervals would."""

        def exact(values: Mapping[str, float]) -> dict[str, Interval]:
            return {k: Interval(float(v), float(v), float(v), n, n) for k, v in values.items()}

        # The difference is left to :func:`decide`, which knows the decisive metric.
        return cls(exact(candidate), n, champion=exact(champion) if champion else None)


@dataclass
class Check:
    """One rule the gate applied: its outcome (``pass``, ``fail`` or ``unsure``) and why."""

    rule: str  # floor | ceiling | champion | metric | sanity | as-of
    outcome: str
    reason: str
    metric: str | None = None
    threshold: float | None = None
    interval: dict[str, Any] | None = None
    n_needed: int | None = None


@dataclass
class GateDecision:
    """What the gate decided and why; recorded on the model version and its run."""

    verdict: str
    reasons: list[str]
    metric: str
    candidate: dict[str, float]
    champion: dict[str, float] | None = None
    champion_version: str | None = None
    sanity: SanityReport | None = None
    manual: bool = False
    n: int | None = None
    unit: str = "rows"
    # Every metric of the candidate with its interval; the paired difference to the champion
    # and to each baseline on the decisive metric (candidate minus other).
    intervals: dict[str, dict[str, Any]] = field(default_factory=dict)
    difference: dict[str, Any] | None = None
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    n_needed: int | None = None
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def promote(self) -> bool:
        return self.verdict == PROMOTED

    @property
    def interval(self) -> dict[str, Any] | None:
        """The decisive metric's estimate and interval."""
        return self.intervals.get(self.metric)

    def summary(self) -> str:
        return f"{self.verdict}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["promote"] = self.promote
        return out


def sanity_checks(
    scorer: Scorer, data: LabelledData, policy: GatePolicy, latency_rows: int = 30
) -> SanityReport:
    """No missing or out-of-range predictions on the test rows; single-row latency."""
    try:
        x = scorer.to_matrix(data.frame)
        out = np.asarray(scorer.predict_matrix(x), dtype="float64")
    except Exception as exc:  # a broken model must be rejected, not crash the pipeline
        return SanityReport(len(data), len(data), 0, math.inf, f"{type(exc).__name__}: {exc}")
    missing = int(
        (~np.isfinite(out)).any(axis=1).sum() if out.ndim > 1 else (~np.isfinite(out)).sum()
    )
    lo, hi = policy.output_range
    bad = np.zeros(out.shape[0], dtype=bool)
    if lo is not None:
        bad |= (out < lo - 1e-9).any(axis=1) if out.ndim > 1 else out < lo - 1e-9
    if hi is not None:
        bad |= (out > hi + 1e-9).any(axis=1) if out.ndim > 1 else out > hi + 1e-9
    # The budget judges the model's own cost: the CPU time of the thread that predicts. Wall
    # time also counts the time other processes hold the CPU, so on a busy machine (a training
    # box running several jobs, a CI runner) it rejected models that are fast when served.
    cpu, wall = [], []
    for i in range(min(latency_rows, x.shape[0])):
        row = x[i : i + 1]
        c, t = time.thread_time(), time.perf_counter()
        scorer.predict_matrix(row)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.thread_time() - c) * 1000)
    latency = float(np.median(cpu)) if cpu else 0.0
    wall_ms = float(np.median(wall)) if wall else 0.0
    return SanityReport(len(data), missing, int(bad.sum()), latency, wall_ms=wall_ms)


def decide(
    policy: GatePolicy,
    evidence: Evidence,
    sanity: SanityReport,
    *,
    champion_version: str | None = None,
    held_back: str | None = None,
) -> GateDecision:
    """Apply floors, ceilings, sanity checks and the improvement margin over the champion,
    each with its interval, and return the verdict with its reasons.

    ``held_back`` (why this candidate may not replace the champion whatever its figures, e.g.
    it was trained on older data) turns a would-be promotion into *held back*.
    """
    m = policy.metric
    checks: list[Check] = []
    value = evidence.candidate.get(m)
    if value is None or not math.isfinite(value.estimate):
        checks.append(Check("metric", "fail", f"{m} could not be computed", m))
    for name, floor in policy.floors.items():
        checks.append(_bound(policy, evidence, name, floor, floor=True))
    for name, ceiling in policy.ceilings.items():
        checks.append(_bound(policy, evidence, name, ceiling, floor=False))
    checks.extend(_sanity(policy, sanity))
    failed = [c for c in checks if c.outcome == "fail"]
    if evidence.champion is None:
        if not failed:
            checks.append(
                Check(
                    "champion",
                    "pass",
                    f"no champion yet; {m}={_show(value, evidence)} passes floors and checks",
                    m,
                )
            )
    else:
        checks.append(_versus_champion(policy, evidence, champion_version, bool(failed)))
    if held_back:
        checks.append(Check("as-of", "held", held_back))

    outcomes = {c.outcome for c in checks}
    if "fail" in outcomes:
        verdict = REJECTED
        shown = [c for c in checks if c.outcome in ("fail", "unsure")]
    elif "unsure" in outcomes:
        verdict = INSUFFICIENT
        shown = [c for c in checks if c.outcome == "unsure"]
    elif "held" in outcomes:
        verdict = HELD_BACK
        shown = [c for c in checks if c.outcome == "held"] + _passes(checks)
    else:
        verdict = PROMOTED
        shown = _passes(checks)
    reasons = [c.reason for c in shown] or ["passes all checks"]
    notes = [
        f"baseline {name} unavailable ({why}); judged on what is available"
        for name, why in evidence.unavailable.items()
    ]
    reasons += notes if verdict != REJECTED else []
    needed = [c.n_needed for c in checks if c.outcome == "unsure" and c.n_needed is not None]
    champion = evidence.champion
    return GateDecision(
        verdict=verdict,
        reasons=reasons,
        metric=m,
        candidate={k: v.estimate for k, v in evidence.candidate.items()},
        champion={k: v.estimate for k, v in champion.items()} if champion is not None else None,
        champion_version=champion_version,
        sanity=sanity,
        n=evidence.n,
        unit=evidence.unit,
        intervals={k: v.to_dict() for k, v in evidence.candidate.items()},
        difference=evidence.difference.to_dict() if evidence.difference is not None else None,
        baselines={k: v.to_dict() for k, v in evidence.baselines.items()},
        unavailable=dict(evidence.unavailable),
        n_needed=max(needed) if needed else None,
        checks=checks,
        notes=notes,
    )


def _passes(checks: list[Check]) -> list[Check]:
    """Passed checks, the comparison with the champion first (it is what promotes); a bound
    on the decisive metric is left out, the comparison already shows its value."""
    first = [c for c in checks if c.outcome == "pass" and c.rule == "champion"]
    decisive = {c.metric for c in first}
    return first + [
        c
        for c in checks
        if c.outcome == "pass" and c.rule != "champion" and c.metric not in decisive
    ]


def _bound(
    policy: GatePolicy, evidence: Evidence, name: str, bound: float, *, floor: bool
) -> Check:
    """A floor (``metric >= bound``) or ceiling (``metric <= bound``) judged on the interval."""
    rule = "floor" if floor else "ceiling"
    where = "below the floor" if floor else "above the ceiling"
    iv = evidence.candidate.get(name)
    if iv is None or not math.isfinite(iv.estimate):
        return Check(rule, "fail", f"{name}=n/a is {where} {bound:g}", name, bound)
    beyond = iv.estimate < bound if floor else iv.estimate > bound
    text = f"{name}={_show(iv, evidence)}"
    if not beyond:
        return Check(
            rule, "pass", f"{text} is within the {rule} {bound:g}", name, bound, iv.to_dict()
        )
    wholly = iv.below(bound) if floor else iv.above(bound)
    if name in policy.exact or wholly:
        return Check(rule, "fail", f"{text} is {where} {bound:g}", name, bound, iv.to_dict())
    if not iv.defined:
        return Check(
            rule,
            "unsure",
            f"{name}={_fmt(iv.estimate)} is {where} {bound:g}, but {evidence.n:,} "
            f"{evidence.unit} are too few to estimate it reliably",
            name,
            bound,
            iv.to_dict(),
        )
    needed = n_needed(iv.n, iv.half_width, abs(iv.estimate - bound))
    return Check(
        rule,
        "unsure",
        f"{text} straddles the {rule} {bound:g}: {_too_few(evidence, needed)}",
        name,
        bound,
        iv.to_dict(),
        needed,
    )


def _versus_champion(
    policy: GatePolicy, evidence: Evidence, version: str | None, failed: bool
) -> Check:
    """The improvement over the champion on the decisive metric, paired on the same rows."""
    m = policy.metric
    assert evidence.champion is not None
    cand = evidence.candidate.get(m)
    champ = evidence.champion.get(m)
    if champ is None or not math.isfinite(champ.estimate):
        return Check(
            "champion",
            "pass" if not failed else "info",
            f"champion v{version} could not be scored on this window; candidate passes floors "
            "and checks",
            m,
        )
    if cand is None or not math.isfinite(cand.estimate):
        return Check("champion", "info", f"{m} could not be compared with champion v{version}", m)
    diff = evidence.difference
    if diff is None:  # point estimates: the difference is exact
        d = cand.estimate - champ.estimate
        diff = Interval(d, d, d, cand.n, cand.rows)
    # Oriented so that positive is better, whichever way the metric points.
    gain = diff if policy.higher_is_better else _negate(diff)
    margin = policy.min_improvement * max(abs(champ.estimate), 1e-12)
    needed = f"{margin:+.4g}" if policy.min_improvement else "any improvement"
    head = (
        f"{m} {_show(cand, evidence)} vs champion v{version} {_fmt(champ.estimate)} on the same "
        f"{evidence.n or cand.rows} {evidence.unit}: improvement {_signed(gain)}"
    )
    if gain.defined and gain.low > margin:
        return Check("champion", "pass", f"{head}, needed {needed}", m, margin, gain.to_dict())
    if gain.defined and gain.high < margin:
        return Check(
            "champion",
            "fail",
            f"{head} does not beat the champion by the required margin ({needed})",
            m,
            margin,
            gain.to_dict(),
        )
    if not gain.defined:
        return Check(
            "champion",
            "unsure",
            f"{head}: the difference cannot be estimated reliably on {evidence.n} {evidence.unit}",
            m,
            margin,
            gain.to_dict(),
        )
    count = n_needed(gain.n, gain.half_width, abs(gain.estimate - margin))
    return Check(
        "champion",
        "unsure",
        f"{head}, needed {needed}: the paired interval straddles it; {_too_few(evidence, count)}",
        m,
        margin,
        gain.to_dict(),
        count,
    )


def _sanity(policy: GatePolicy, sanity: SanityReport) -> list[Check]:
    out = []
    if sanity.error:
        out.append(Check("sanity", "fail", f"predicting failed: {sanity.error}"))
    if sanity.missing:
        out.append(
            Check("sanity", "fail", f"{sanity.missing} of {sanity.rows} predictions are missing")
        )
    if sanity.out_of_range:
        out.append(
            Check(
                "sanity",
                "fail",
                f"{sanity.out_of_range} predictions are outside {policy.output_range}",
            )
        )
    if sanity.latency_ms > policy.max_latency_ms:
        out.append(
            Check(
                "sanity",
                "fail",
                f"single-row prediction takes {sanity.latency_ms:.2f} ms of CPU "
                f"(budget {policy.max_latency_ms:g} ms"
                + (f"; {sanity.wall_ms:.2f} ms wall" if sanity.wall_ms is not None else "")
                + ")",
            )
        )
    return out


def _negate(iv: Interval) -> Interval:
    return Interval(-iv.estimate, -iv.high, -iv.low, iv.n, iv.rows, iv.level, iv.draws)


def _too_few(evidence: Evidence, needed: int | None) -> str:
    have = f"{evidence.n:,} {evidence.unit} cannot tell"
    if needed is None:
        return f"{have} (the estimate sits on the threshold)"
    return f"{have}; roughly {_round(needed):,} would"


def _round(n: int) -> int:
    """Two significant figures: the estimate is rough, and reads as such."""
    if n < 100:
        return n
    digits = len(str(n)) - 2
    return int(round(n / 10**digits) * 10**digits)


def _show(iv: Interval | None, evidence: Evidence) -> str:
    if iv is None:
        return "n/a"
    if not iv.defined or iv.low == iv.high:
        return _fmt(iv.estimate)
    return f"{_fmt(iv.estimate)} [{_fmt(iv.low)}, {_fmt(iv.high)}]"


def _signed(iv: Interval) -> str:
    # Adding 0.0 turns a negative zero into a positive one: "+0", never "-0".
    est, low, high = iv.estimate + 0.0, iv.low + 0.0, iv.high + 0.0
    if not iv.defined:
        return f"{est:+.4g} (no interval)"
    if low == high:
        return f"{est:+.4g}"
    return f"{est:+.4g} [{low:+.4g}, {high:+.4g}]"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.4g}"
