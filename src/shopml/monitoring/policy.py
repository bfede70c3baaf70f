"""The retrain policy: when a use case's checks cross their thresholds, alert and retrain.

Thresholds come, highest first, from ``monitor_policy`` in the settings for the use case
(``SHOPML_MONITOR_POLICY='{"delivery-time": {"max_degradation": 0.3}}'`` or a
``[monitor_policy.delivery-time]`` table in ``shopml.toml``), then its ``"default"`` entry, then
the use case's own declaration (``MonitorSpec.max_degradation``), then the defaults below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from shopml.usecases.base import UseCase


@dataclass(frozen=True)
class Policy:
    """Thresholds and pacing of one use case's monitoring."""

    # Data drift: a feature drifts when its score reaches ``feature_threshold`` (normed
    # Wasserstein for numbers, Jensen-Shannon for categories); the check fires when at least
    # ``drift_share`` of the features drift.
    drift_share: float = 0.5
    feature_threshold: float = 0.1
    # Prediction drift: the served output's drift score against the training reference.
    prediction_drift: float = 0.2
    # Performance: fires when the live figure is this much worse than the model's test figure
    # (relative: 0.25 = a quarter worse).
    max_degradation: float = 0.25
    # Windows: recent traffic for drift; labelled predictions for performance.
    window_days: float = 7.0
    performance_days: float = 14.0
    min_rows: int = 200
    min_labelled: int = 200
    max_rows: int = 20_000  # drift is computed on a sample of at most this many rows
    # Pacing: consecutive checks that must cross before acting (drift is noisier than
    # performance on final labels, so a drift-only crossing waits for one more check), and the
    # least time between two retrains.
    confirmations: int = 1
    drift_confirmations: int = 2
    cooldown_days: float = 14.0
    # Drift without measured harm does not act: when enough labelled predictions show the
    # model within ``max_degradation``, drift is reported as a warning only (a growing shop
    # drifts all the time; retraining on every drift churns models for nothing).
    drift_needs_impact: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def policy_for(uc: UseCase, overrides: dict[str, dict[str, Any]] | None = None) -> Policy:
    """The policy of a use case: its own declaration, then the configured overrides."""
    base = Policy(max_degradation=uc.monitoring.max_degradation)
    known = {f.name for f in fields(Policy)}
    for key in ("default", uc.name):
        values = (overrides or {}).get(key) or {}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"monitor_policy[{key!r}]: unknown setting(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        # Settings carry numbers as floats: give each field its own type back.
        typed = {k: type(getattr(base, k))(v) for k, v in values.items()}
        base = replace(base, **typed)
    return base


@dataclass
class Findings:
    """What one check found, in the terms the policy judges."""

    rows: int = 0
    drift_share: float | None = None
    drifted: list[str] | None = None
    features: int = 0
    prediction_drift: float | None = None
    labelled: int = 0
    metric: str | None = None
    live: float | None = None
    reference: float | None = None
    degradation: float | None = None
    expects_labels: bool = False  # the use case's labels arrive (performance can be judged)
    degradation_noise: float | None = None  # three standard errors of the live figure, relative
    # The use case's further live checks (MonitorSpec.also), each with its own tolerance.
    also: list[SecondaryCheck] = field(default_factory=list)


@dataclass
class SecondaryCheck:
    metric: str
    live: float
    reference: float
    degradation: float
    noise: float | None
    tolerance: float

    def crossed(self) -> bool:
        """Beyond its tolerance and beyond its noise (a NaN degradation never is)."""
        limit = max(self.tolerance, self.noise or 0.0)
        return self.degradation == self.degradation and self.degradation > limit

    def reason(self, labelled: int) -> str:
        beyond = (
            f", beyond its noise of {self.noise:.0%}"
            if self.noise and self.noise > self.tolerance
            else ""
        )
        return (
            f"performance: {self.metric} {self.live:.4g} on {labelled:,} labelled predictions "
            f"vs {self.reference:.4g} at test ({self.degradation:+.0%}, limit "
            f"{self.tolerance:.0%}{beyond})"
        )


@dataclass
class Decision:
    """What the policy decided, and why."""

    triggered: bool
    reasons: list[str]
    action: str  # none | alert | retrain | wait
    confirmed: bool = True
    cooldown_until: datetime | None = None
    outcome: str = ""
    warnings: list[str] = field(default_factory=list)
    retrain: dict[str, Any] | None = None
    alert: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.cooldown_until is not None:
            out["cooldown_until"] = self.cooldown_until.isoformat()
        return out


def performance_ok(policy: Policy, f: Findings) -> bool:
    """Whether enough labelled predictions show the model within its tolerances."""
    return (
        f.expects_labels
        and f.labelled >= policy.min_labelled
        and f.degradation is not None
        and f.degradation == f.degradation
        and f.degradation <= policy.max_degradation
        and not any(c.crossed() for c in f.also)
    )


def warnings_for(policy: Policy, f: Findings) -> list[str]:
    """Drift that crossed its threshold but does not act, because the labels show no harm."""
    if not (policy.drift_needs_impact and performance_ok(policy, f)):
        return []
    return [
        f"{r} (not acted on: {f.metric} is within {policy.max_degradation:.0%} of its test "
        f"figure on {f.labelled:,} labelled predictions)"
        for r in _crossings(policy, f)
        if r.startswith(("data drift", "prediction drift"))
    ]


def reasons_for(policy: Policy, f: Findings) -> list[str]:
    """Which thresholds the findings cross and act on (empty: all is well)."""
    out = _crossings(policy, f)
    if policy.drift_needs_impact and performance_ok(policy, f):
        out = [r for r in out if not r.startswith(("data drift", "prediction drift"))]
    return out


def _crossings(policy: Policy, f: Findings) -> list[str]:
    out = []
    if (
        f.drift_share is not None
        and f.rows >= policy.min_rows
        and f.features
        and f.drift_share >= policy.drift_share
    ):
        names = ", ".join((f.drifted or [])[:8])
        out.append(
            f"data drift: {len(f.drifted or [])} of {f.features} features drifted "
            f"({f.drift_share:.0%} >= {policy.drift_share:.0%}: {names})"
        )
    if (
        f.prediction_drift is not None
        and f.rows >= policy.min_rows
        and f.prediction_drift >= policy.prediction_drift
    ):
        out.append(
            f"prediction drift: score {f.prediction_drift:.3f} >= {policy.prediction_drift:.3f}"
        )
    if f.labelled >= policy.min_labelled:
        headline = []
        if f.degradation is not None and f.metric is not None:
            headline = [
                SecondaryCheck(
                    f.metric,
                    float("nan") if f.live is None else f.live,
                    float("nan") if f.reference is None else f.reference,
                    f.degradation,
                    f.degradation_noise,
                    policy.max_degradation,
                )
            ]
        out += [c.reason(f.labelled) for c in [*headline, *f.also] if c.crossed()]
    return out


def judged(policy: Policy, f: Findings) -> bool:
    """Whether the findings rest on enough data: the performance check when the use case
    has labels, otherwise the drift check."""
    if f.expects_labels:
        return f.labelled >= policy.min_labelled
    return f.rows >= policy.min_rows and f.drift_share is not None


def decide(
    policy: Policy,
    findings: Findings,
    history: pd.DataFrame,
    now: datetime,
    can_retrain: bool,
) -> Decision:
    """Act on the findings given the use case's earlier decisions (``history``: the store's
    ``monitor_decisions`` rows of this use case, oldest first).

    - Nothing crossed: ``none`` (an ``alert`` that all is well again when the last check fired).
    - Crossed, but fewer than ``confirmations`` checks in a row: ``none``, waiting to confirm.
    - Crossed and confirmed: ``retrain`` unless one was started within ``cooldown_days``
      (then ``alert`` on the first check of an episode, ``wait`` after), or ``alert`` when
      retraining is off.
    """
    decision = _episode(policy, findings, history, now, can_retrain)
    decision.warnings = warnings_for(policy, findings)
    return decision


def _episode(
    policy: Policy, findings: Findings, history: pd.DataFrame, now: datetime, can_retrain: bool
) -> Decision:
    reasons = reasons_for(policy, findings)
    previous = history.tail(max(policy.confirmations - 1, 0)) if len(history) else history
    was_firing = bool(len(history)) and bool(history["triggered"].iloc[-1])
    if not reasons and was_firing and not judged(policy, findings):
        # Too little traffic or too few labels to tell (a model just swapped in has no
        # labelled predictions yet): the episode goes on until a check can say it is over.
        return Decision(
            True,
            ["waiting for enough traffic and labels to judge the model now served"],
            "wait",
            outcome="not enough data yet",
        )
    if not reasons:
        return Decision(False, [], "alert" if was_firing else "none", outcome="ok")
    confirmed = policy.confirmations <= 1 or (
        len(previous) >= policy.confirmations - 1 and bool(previous["triggered"].all())
    )
    drift_only = not any(r.startswith("performance") for r in reasons)
    if confirmed and drift_only and policy.drift_confirmations > 1:
        need = policy.drift_confirmations - 1
        earlier = history.tail(need) if len(history) else history
        earlier_reasons = list(earlier["reasons"]) if "reasons" in earlier else []
        confirmed = len(earlier_reasons) >= need and all(
            any(str(r).startswith(("data drift", "prediction drift")) for r in (rs or []))
            for rs in earlier_reasons
        )
    if not confirmed:
        # Recorded with its reasons but not yet an episode: the next check confirms it.
        return Decision(
            was_firing, reasons, "none", confirmed=False, outcome="awaiting confirmation"
        )
    last_retrain = None
    if len(history):
        retrains = history[history["action"] == "retrain"]
        if len(retrains):
            last_retrain = retrains["ts"].iloc[-1].to_pydatetime()
    now_utc = now.replace(tzinfo=UTC) if now.tzinfo is None else now
    cooldown_until = None
    if last_retrain is not None:
        cooldown_until = last_retrain + timedelta(days=policy.cooldown_days)
    in_cooldown = cooldown_until is not None and now_utc < cooldown_until
    if can_retrain and not in_cooldown:
        return Decision(True, reasons, "retrain")
    action = "wait" if was_firing else "alert"
    outcome = (
        f"retrained recently; next retrain after {cooldown_until:%Y-%m-%d %H:%M}"
        if in_cooldown and cooldown_until is not None
        else "retraining is off"
    )
    return Decision(True, reasons, action, cooldown_until=cooldown_until, outcome=outcome)
