"""One monitoring check of one use case: drift, performance, live checks, then the policy.

:func:`check_usecase` reads the champion's recent traffic from the prediction log, compares
it with the training reference stored with the model (:func:`check_drift`), joins older
predictions to the labels that have arrived (:func:`check_performance`), runs the use case's
own live checks (:func:`check_live`), stores every figure as a time series, writes the HTML
report (and an Evidently workspace snapshot), and lets the policy decide
(:func:`decide_check`): nothing, an alert, or an alert and a retrain through the gate
(:func:`act_on`, with the retrain the caller injects). Every decision is stored with its
reasons.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.monitoring.alerts import build_payload, send_alert
from shopml.monitoring.drift import DriftResult, compute_drift
from shopml.monitoring.performance import (
    LabelCache,
    degradation,
    join_labels,
    live_metrics,
    metric_noise,
)
from shopml.monitoring.policy import (
    Decision,
    Findings,
    Policy,
    SecondaryCheck,
    decide,
    policy_for,
)
from shopml.monitoring.reports import drift_report_path
from shopml.monitoring.store import MetricRow, MonitoringStore
from shopml.runtime.predictions import PredictionWindow
from shopml.usecases._live import LiveContext

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse
    from shopml.settings import Settings
    from shopml.usecases.base import UseCase

log = logging.getLogger("shopml.monitoring")

# (usecase, as_of) -> {"status", "version", "reason", ...}
RetrainFn = Callable[[str, datetime | None], dict[str, Any]]


@dataclass
class Champion:
    """The served model as the registry describes it, with its training reference."""

    version: str
    run_id: str | None
    test_metrics: dict[str, float]
    reference: pd.DataFrame | None
    cutoff: str | None = None


@dataclass
class CheckResult:
    """One check of one use case (what ``shopml monitor --json`` prints per use case)."""

    usecase: str
    now: datetime
    status: str  # ok | alert | no-model | no-traffic
    model_version: str | None = None
    window: tuple[datetime, datetime] | None = None
    predictions: int = 0
    drift: dict[str, Any] | None = None
    performance: dict[str, Any] | None = None
    specifics: dict[str, float] = field(default_factory=dict)
    decision: dict[str, Any] | None = None
    reports: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None
    # The judgement of a live rollout of the challenger (shadow, canary, A/B), when one runs.
    rollout: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        out["now"] = self.now.isoformat()
        if self.window:
            out["window"] = [w.isoformat() for w in self.window]
        return out


NOISE_Z = 3.0


def _direction(name: str) -> bool | None:
    """MonitorSpec's direction word as ``higher_is_better`` (None: both ways are worse)."""
    return {"higher": True, "lower": False, "both": None}[name]


_REFERENCES: dict[tuple[str, str], pd.DataFrame | None] = {}


def load_champion(settings: Settings, usecase: str) -> Champion | None:
    """The champion's version, test figures and reference profile (cached per run)."""
    import json

    from shopml.lifecycle.reference import REFERENCE_ARTIFACT
    from shopml.lifecycle.registry import CHAMPION, alias_version
    from shopml.lifecycle.tracking import configure

    client = configure(settings)
    mv = alias_version(client, usecase, CHAMPION)
    if mv is None:
        return None
    tags = dict(mv.tags or {})
    key = (settings.tracking_uri, str(mv.run_id))
    if key not in _REFERENCES:
        reference = None
        if mv.run_id:
            try:
                import mlflow

                os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
                with tempfile.TemporaryDirectory() as tmp:
                    path = mlflow.artifacts.download_artifacts(
                        run_id=mv.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp
                    )
                    reference = pd.read_parquet(path)
            except Exception as exc:  # no artifact, or unreadable: drift is not checked
                log.warning("%s v%s has no training reference: %s", usecase, mv.version, exc)
        _REFERENCES[key] = reference
    return Champion(
        str(mv.version),
        mv.run_id,
        json.loads(tags.get("shopml.metrics", "{}")),
        _REFERENCES[key],
        tags.get("shopml.cutoff"),
    )


def _drift_rows(drift: DriftResult) -> list[MetricRow]:
    n = drift.current_rows
    rows = [
        MetricRow(
            "drift",
            "share",
            drift.share,
            n=n,
            detail={
                "sample": drift.sample_note,
                "reference_rows": drift.reference_rows,
                "watched": list(drift.watched),
            },
        ),
        MetricRow("drift", "drifted", float(len(drift.drifted)), n=n),
        MetricRow("drift", "share_all", drift.share_all, n=n),
    ]
    for kind, columns in (("drift", drift.features), ("prediction_drift", drift.outputs)):
        rows += [
            MetricRow(
                kind,
                "score",
                c.score,
                feature=c.column,
                n=n,
                detail={
                    "method": c.method,
                    "threshold": c.threshold,
                    "noise": c.noise,
                    "drifted": c.drifted,
                },
            )
            for c in columns
        ]
    return rows


def _save_reports(
    settings: Settings, usecase: str, now: datetime, drift: DriftResult | None
) -> dict[str, str]:
    """The drift report as HTML, and as a snapshot in the Evidently workspace (its UI shows
    them: ``evidently ui --workspace <home>/evidently``)."""
    out: dict[str, str] = {}
    if drift is None or drift.snapshot is None or not settings.monitor_reports:
        return out
    html = drift_report_path(settings.reports_dir, usecase, now)
    folder = html.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = html.with_name(f".{html.name}.tmp")
    drift.snapshot.save_html(str(tmp))
    tmp.replace(html)
    out["html"] = str(html)
    # Each report embeds Evidently's viewer (a few MB): keep the newest few per use case.
    for old in sorted(folder.glob("drift-*.html"))[: -settings.monitor_keep_reports]:
        old.unlink(missing_ok=True)
    try:
        ws = _workspace(settings.evidently_workspace)
        name = f"shopml-{usecase}"
        found = ws.search_project(name)
        project = found[0] if found else ws.create_project(name)
        ws.add_run(project.id, drift.snapshot, include_data=False)
        # Snapshots (ids ordered by creation) are kept like the HTML reports.
        snapshot_ids = sorted(str(r) for r in ws.list_runs(project.id))
        for stale in snapshot_ids[: -settings.monitor_keep_reports]:
            ws.delete_run(project.id, stale)
        out["evidently_project"] = name
        out["evidently_workspace"] = str(settings.evidently_workspace)
    except Exception as exc:  # the HTML report stands on its own; the failure is logged
        log.warning("Evidently workspace snapshot failed: %s", exc)
    return out


_WORKSPACES: dict[str, Any] = {}


def _workspace(path: Any) -> Any:
    """The Evidently workspace, opened once per process: opening it loads every snapshot it
    holds, which grows with the history."""
    from evidently.ui.workspace import Workspace

    key = str(path.resolve())
    if key not in _WORKSPACES:
        _WORKSPACES[key] = Workspace.create(key)
    return _WORKSPACES[key]


def _alert_lines(result: CheckResult, decision: Decision) -> list[str]:
    lines = list(decision.reasons)
    if decision.retrain:
        r = decision.retrain
        if r.get("status") == "promoted":
            lines.append(
                f"retrained: v{r.get('version')} passed the gate and is now champion "
                f"({r.get('reason', '')})"
            )
        elif r.get("status") in ("challenger", "unchanged"):
            lines.append(
                f"retrained: v{r.get('version')} did NOT pass the gate; "
                f"v{result.model_version} stays champion ({r.get('reason', '')})"
            )
        else:
            lines.append(f"retrain {r.get('status')}: {r.get('reason', '')}")
    elif decision.outcome and decision.triggered:
        lines.append(decision.outcome)
    return lines


@dataclass
class _Traffic:
    """The served version's recent answers: how many, and the (sampled) window."""

    start: datetime
    total: int
    window: PredictionWindow


def judges_labels(uc: UseCase) -> bool:
    """Whether the generic delayed-label check judges this use case: it has a label and its
    records hold the model's own outputs (a ranked list or a price is judged by the use
    case's live checks instead)."""
    return uc.monitoring.label is not None and uc.answer.model_outputs


def read_traffic(
    uc: UseCase, store: MonitoringStore, champ: Champion, now: datetime, policy: Policy, seed: int
) -> _Traffic:
    start = now - timedelta(days=policy.window_days)
    total = store.count_predictions(uc.name, start, now, model_version=champ.version)
    window = store.predictions(
        uc.name, start, now, model_version=champ.version, sample=policy.max_rows, seed=seed
    )
    return _Traffic(start, total, window)


def check_drift(
    uc: UseCase,
    champ: Champion,
    traffic: _Traffic,
    policy: Policy,
    now: datetime,
    seed: int,
    result: CheckResult,
    findings: Findings,
) -> tuple[DriftResult | None, list[MetricRow]]:
    """Recent traffic against the training reference: the drift rows, and the findings."""
    window = traffic.window
    if traffic.total == 0:
        result.status = "no-traffic"
        result.notes.append(
            f"no {uc.name} predictions by v{champ.version} since {traffic.start:%Y-%m-%d}"
        )
        return None, []
    if champ.reference is None:
        result.notes.append(f"v{champ.version} has no training reference: drift not checked")
        return None, []
    features = [c for c in window.features.columns if c in champ.reference.columns]
    if not features:
        # An answer asked for by id only (a recommendation, a price): no model inputs to compare.
        result.notes.append("its route logs no model inputs: drift not checked")
        return None, []
    outputs = window.outputs.rename(columns=lambda c: f"output.{c}")
    current = pd.concat([window.features, outputs], axis=1)
    drift = compute_drift(
        champ.reference,
        current,
        features,
        [f"output.{uc.monitoring.prediction}"],
        max_rows=policy.max_rows,
        threshold=policy.feature_threshold,
        prediction_threshold=policy.prediction_drift,
        seed=seed,
        sampled_from=traffic.total if traffic.total > len(window) else None,
        watched=uc.monitoring.features,
        timestamp=now,
        tags=[uc.name, f"v{champ.version}"],
        metadata={"usecase": uc.name, "model_version": champ.version},
    )
    result.drift = drift.to_dict()
    findings.drift_share = drift.share
    findings.drifted = drift.drifted
    findings.features = len(drift.counted)
    if drift.outputs:
        findings.prediction_drift = drift.outputs[0].score
    return drift, _drift_rows(drift)


def check_performance(
    uc: UseCase,
    wh: Warehouse,
    store: MonitoringStore,
    champ: Champion,
    now: datetime,
    policy: Policy,
    cache: LabelCache | None,
    seed: int,
    result: CheckResult,
    findings: Findings,
) -> list[MetricRow]:
    """Older predictions whose labels are final by now, scored by the use case's own metrics
    against the served version's test figures (each only beyond its noise)."""
    spec = uc.monitoring
    delay = timedelta(days=spec.label_delay_days)
    p_end = now - delay
    p_start = p_end - timedelta(days=policy.performance_days)
    labelled_window = store.predictions(
        uc.name, p_start, p_end, model_version=champ.version, with_features=False
    )
    joined = join_labels(uc, wh, labelled_window, now, cache)
    if joined is None or not len(joined):
        result.notes.append(
            f"no labelled predictions yet: labels arrive {spec.label_delay_days} days after "
            "a prediction"
        )
        return [MetricRow("volume", "labelled", 0.0, n=0)]
    metric, higher_is_better = uc.monitored_metric()
    live = live_metrics(uc, joined)
    ref = champ.test_metrics.get(metric, float("nan"))
    worse = degradation(metric, live.get(metric, float("nan")), ref, higher_is_better)
    findings.labelled = len(joined)
    findings.metric, findings.live, findings.reference = metric, live.get(metric), ref
    findings.degradation = worse
    # Three standard errors of the live figure, relative to what it is judged against: a
    # smaller distance is chance on this many labels. Three, not two: a use case is checked
    # again and again, and two would cry wolf every few dozen checks.
    # The gate's decisive metric too: the control tower shows it live with its interval.
    judged = dict.fromkeys([metric, *(a[0] for a in spec.also), uc.gate.metric])
    noise = metric_noise(uc, joined, list(judged), seed=seed)

    def relative(name: str, reference: float) -> float | None:
        se = noise.get(name)
        if se is None or not reference or not np.isfinite(reference):
            return None
        return NOISE_Z * se / abs(reference)

    findings.degradation_noise = relative(metric, ref)
    for name, tolerance, direction, *target in spec.also:
        # Judged against its ideal when it has one (a calibration ratio of 1), not the test
        # window's own noisy figure; otherwise against the test figure.
        reference = float(target[0]) if target else champ.test_metrics.get(name, float("nan"))
        value = live.get(name, float("nan"))
        findings.also.append(
            SecondaryCheck(
                name,
                value,
                reference,
                degradation(name, value, reference, _direction(direction)),
                relative(name, reference),
                tolerance,
            )
        )
    # On simulated data, the truth scored on the same predictions: the best possible.
    try:
        best = uc.oracle_metrics(wh, joined.data)
    except Exception as exc:  # the oracle is a bonus, never a reason to fail a check
        log.warning("%s: the oracle's figures failed: %s", uc.name, exc)
        best = None
    result.performance = {
        "window": [p_start.isoformat(), p_end.isoformat()],
        "labelled": len(joined),
        "unmatched": joined.unmatched,
        "metric": metric,
        "live": live,
        "test": champ.test_metrics,
        "degradation": worse,
        "degradation_noise": findings.degradation_noise,
        "also": [c.__dict__ for c in findings.also],
        "oracle": best,
    }
    n = len(joined)
    rows = [MetricRow("oracle", k, float(v), n=n) for k, v in (best or {}).items() if v is not None]
    # Each live figure with its 95% interval (normal, from the bootstrap's standard error) where
    # the error was measured: a figure on a hundred labels is read with its uncertainty.
    rows += [
        MetricRow("performance", k, v, n=n, detail=_normal_interval(v, noise.get(k)))
        for k, v in live.items()
    ]
    rows += [MetricRow("reference", k, float(v)) for k, v in champ.test_metrics.items()]
    rows.append(MetricRow("degradation", metric, worse, n=n))
    rows += [MetricRow("degradation", c.metric, c.degradation, n=n) for c in findings.also]
    rows.append(MetricRow("volume", "labelled", float(n), n=n))
    return rows


def _normal_interval(value: float, se: float | None) -> dict[str, float]:
    """``{"se", "low", "high"}`` of a 95% normal interval, or empty without a usable error."""
    if se is None or not np.isfinite(se) or value is None or not np.isfinite(value):
        return {}
    return {"se": float(se), "low": float(value - 1.96 * se), "high": float(value + 1.96 * se)}


def check_live(
    uc: UseCase,
    wh: Warehouse,
    store: MonitoringStore,
    champ: Champion,
    now: datetime,
    traffic: _Traffic,
    result: CheckResult,
) -> list[MetricRow]:
    """The use case's own live checks (``UseCase.live_checks``), wrapped as metric rows."""
    if not traffic.total:
        return []

    def history(since: datetime) -> PredictionWindow:
        return store.predictions(
            uc.name, since, now, model_version=champ.version, with_features=False
        )

    figures = uc.live_checks(LiveContext(wh, now, traffic.window, history, champ.reference))
    rows = [
        MetricRow(
            "performance" if f.performance else "specific",
            f.metric,
            f.value,
            feature=f.feature,
            n=f.n,
            detail=dict(f.detail),
        )
        for f in figures
    ]
    result.specifics = {
        f"{r.metric}{'[' + r.feature + ']' if r.feature else ''}": r.value for r in rows
    }
    performance = [r for r in rows if r.kind == "performance"]
    if performance and uc.monitoring.performance_metric is None:
        result.performance = {r.metric: r.value for r in performance}
    return rows


def decide_check(
    uc: UseCase,
    settings: Settings,
    store: MonitoringStore,
    policy: Policy,
    findings: Findings,
    now: datetime,
    act: bool,
    retrain: RetrainFn | None,
    result: CheckResult,
) -> Decision:
    """The policy's decision on these findings, given the use case's decision history."""
    history = store.decisions(uc.name)
    if len(history):  # a rollout's judgements are another record (monitoring.arms)
        history = history[history["action"] != "rollout"].reset_index(drop=True)
    decision = decide(
        policy,
        findings,
        history,
        now,
        can_retrain=act and retrain is not None and settings.monitor_retrain != "off",
    )
    if not act:
        decision.action = "none" if decision.action != "none" else decision.action
        decision.outcome = decision.outcome or "dry run"
    if decision.triggered:
        result.status = "alert"
    elif decision.reasons:
        result.status = "pending"  # crossed once; the next check confirms or clears it
    return decision


def act_on(
    uc: UseCase,
    settings: Settings,
    champ: Champion,
    decision: Decision,
    findings: Findings,
    now: datetime,
    retrain: RetrainFn | None,
    result: CheckResult,
) -> None:
    """Retrain (through the injected ``retrain``) and alert, as the decision says."""
    if decision.action == "retrain" and retrain is not None:
        log.warning("%s: retraining (%s)", uc.name, "; ".join(decision.reasons))
        try:
            decision.retrain = retrain(uc.name, now)
        except Exception as exc:  # a failed retrain is an outcome to report, not a crash
            log.exception("%s: the retrain failed", uc.name)
            decision.retrain = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        status = decision.retrain.get("status")
        decision.outcome = (
            f"v{decision.retrain.get('version')} promoted"
            if status == "promoted"
            else f"candidate not promoted ({status}): {decision.retrain.get('reason', '')}"
        )
    if decision.action not in ("alert", "retrain"):
        return
    if not decision.triggered:
        severity, title = "resolved", "back within thresholds"
    else:
        failed = decision.retrain and decision.retrain.get("status") != "promoted"
        severity = "critical" if failed else "warning"
        title = "drift or degradation: retrained" if decision.retrain else "drift or degradation"
    payload = build_payload(
        uc.name,
        severity,
        title,
        _alert_lines(result, decision) or ["all checks within thresholds"],
        {
            "model_version": champ.version,
            "checked_at": now.isoformat(),
            "reasons": decision.reasons,
            "action": decision.action,
            "outcome": decision.outcome,
            "retrain": decision.retrain,
            "drift_share": findings.drift_share,
            "prediction_drift": findings.prediction_drift,
            "performance": result.performance,
        },
    )
    decision.alert = send_alert(payload, settings.alert_webhook_url).to_dict()


def check_usecase(
    uc: UseCase,
    wh: Warehouse,
    settings: Settings,
    store: MonitoringStore,
    *,
    now: datetime | None = None,
    act: bool = True,
    retrain: RetrainFn | None = None,
    cache: LabelCache | None = None,
    policy: Policy | None = None,
) -> CheckResult:
    """Check one use case at ``now`` (default: the wall clock, naive UTC): drift, performance,
    its live checks, the policy's decision; with ``act``, alert and retrain (``retrain``, the
    caller's way to retrain: monitoring does not orchestrate) as the policy says. Every figure
    and the decision are stored."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    policy = policy or policy_for(uc, settings.monitor_policy)
    champ = load_champion(settings, uc.name)
    if champ is None:
        return CheckResult(uc.name, now, "no-model", notes=["no champion to monitor"])
    result = CheckResult(uc.name, now, "ok", model_version=champ.version)
    traffic = read_traffic(uc, store, champ, now, policy, settings.seed)
    result.window = (traffic.start, now)
    result.predictions = traffic.total
    findings = Findings(rows=traffic.total, expects_labels=judges_labels(uc))
    rows = [MetricRow("volume", "predictions", float(traffic.total), n=traffic.total)]
    drift, drift_rows = check_drift(
        uc, champ, traffic, policy, now, settings.seed, result, findings
    )
    rows += drift_rows
    if judges_labels(uc):
        rows += check_performance(
            uc, wh, store, champ, now, policy, cache, settings.seed, result, findings
        )
    rows += check_live(uc, wh, store, champ, now, traffic, result)
    decision = decide_check(uc, settings, store, policy, findings, now, act, retrain, result)
    if act:
        act_on(uc, settings, champ, decision, findings, now, retrain, result)
    result.decision = decision.to_dict()
    run_id = store.write_metrics(uc.name, champ.version, now, result.window, rows)
    result.run_id = run_id
    store.write_decision(
        run_id,
        uc.name,
        champ.version,
        now,
        decision.triggered,
        decision.action,
        decision.outcome,
        decision.reasons,
        {
            "findings": findings.__dict__,
            "policy": policy.to_dict(),
            "retrain": decision.retrain,
            "alert": decision.alert,
            "warnings": decision.warnings,
        },
    )
    result.reports = _save_reports(settings, uc.name, now, drift)
    return result
