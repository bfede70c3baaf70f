"""The promotion gate: a candidate becomes champion only when it is better, sane and fast."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from shopml.runtime.scorers import Scorer
    from shopml.usecases.base import GatePolicy, LabelledData


@dataclass
class SanityReport:
    rows: int
    missing: int
    out_of_range: int
    latency_ms: float  # median single-row prediction time
    error: str | None = None


@dataclass
class GateDecision:
    """What the gate decided and why; recorded on the model version."""

    promote: bool
    reasons: list[str]
    metric: str
    candidate: dict[str, float]
    champion: dict[str, float] | None = None
    champion_version: str | None = None
    sanity: SanityReport | None = None
    manual: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "promoted" if self.promote else "rejected"

    def summary(self) -> str:
        return f"{self.verdict}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    times = []
    for i in range(min(latency_rows, x.shape[0])):
        row = x[i : i + 1]
        t = time.perf_counter()
        scorer.predict_matrix(row)
        times.append((time.perf_counter() - t) * 1000)
    latency = float(np.median(times)) if times else 0.0
    return SanityReport(len(data), missing, int(bad.sum()), latency)


def _better(candidate: float, champion: float, policy: GatePolicy) -> tuple[bool, float]:
    """Whether the candidate beats the champion by the policy's relative margin."""
    margin = policy.min_improvement * max(abs(champion), 1e-12)
    if policy.higher_is_better:
        return candidate >= champion + margin, candidate - champion
    return candidate <= champion - margin, champion - candidate


def decide(
    policy: GatePolicy,
    candidate: dict[str, float],
    sanity: SanityReport,
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
) -> GateDecision:
    """Apply floors, ceilings, sanity checks and the improvement margin over the champion."""
    reasons: list[str] = []
    ok = True
    m = policy.metric
    value = candidate.get(m)
    if value is None or not math.isfinite(value):
        ok = False
        reasons.append(f"{m} could not be computed")
    for name, floor in policy.floors.items():
        v = candidate.get(name)
        if v is None or not math.isfinite(v) or v < floor:
            ok = False
            reasons.append(f"{name}={_fmt(v)} is below the floor {floor:g}")
    for name, ceiling in policy.ceilings.items():
        v = candidate.get(name)
        if v is None or not math.isfinite(v) or v > ceiling:
            ok = False
            reasons.append(f"{name}={_fmt(v)} is above the ceiling {ceiling:g}")
    if sanity.error:
        ok = False
        reasons.append(f"predicting failed: {sanity.error}")
    if sanity.missing:
        ok = False
        reasons.append(f"{sanity.missing} of {sanity.rows} predictions are missing")
    if sanity.out_of_range:
        ok = False
        reasons.append(f"{sanity.out_of_range} predictions are outside {policy.output_range}")
    if sanity.latency_ms > policy.max_latency_ms:
        ok = False
        reasons.append(
            f"single-row prediction takes {sanity.latency_ms:.2f} ms "
            f"(budget {policy.max_latency_ms:g} ms)"
        )
    if champion is None:
        if ok:
            reasons.append(f"no champion yet; {m}={_fmt(value)} passes floors and checks")
    else:
        champ_value = champion.get(m)
        if champ_value is None or not math.isfinite(champ_value):
            if ok:
                reasons.append(
                    f"champion v{champion_version} could not be scored on this window; "
                    "candidate passes floors and checks"
                )
        elif value is not None and math.isfinite(value):
            better, delta = _better(value, champ_value, policy)
            needed = f"{policy.min_improvement:.1%}" if policy.min_improvement else "any"
            if better:
                reasons.append(
                    f"{m} {_fmt(value)} vs champion v{champion_version} {_fmt(champ_value)} "
                    f"on the same window (improvement {delta:+.4g}, needed {needed})"
                )
            else:
                ok = False
                reasons.append(
                    f"{m} {_fmt(value)} does not beat champion v{champion_version} "
                    f"{_fmt(champ_value)} by the required margin ({needed})"
                )
    if ok and not reasons:
        reasons.append("passes all checks")
    return GateDecision(ok, reasons, m, candidate, champion, champion_version, sanity)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"
