"""What the control tower shows, read from the stores through their public functions: the
registry (:mod:`shopml.lifecycle.registry`), the monitoring store and its prediction log
(:mod:`shopml.monitoring.store`), and the service's Prometheus metrics.

Plain functions returning plain dataclasses: the pages render them, the tests read them. Nothing
here imports a training, orchestration or monitoring-check library.
"""

from __future__ import annotations

import logging
import math
import os
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from shopml.lifecycle import registry
from shopml.lifecycle.registry import VersionSummary
from shopml.lifecycle.tracking import FLOW_RUN_TAG, configure, experiment_name, model_name
from shopml.monitoring.reports import drift_report_path
from shopml.monitoring.store import MonitoringStore, MonitoringStoreError, open_store
from shopml.ui.actions import MANUAL_RUN_PREFIX

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from shopml.settings import Settings
    from shopml.usecases.base import UseCase

log = logging.getLogger("shopml.ui")

# How far back the plots go from a use case's newest check.
PLOT_DAYS = 120
# Drift shown per feature: the highest scores first, at most this many.
MAX_FEATURES = 40
# The action a rollout's judgement of its arms is stored under (monitoring.arms).
ROLLOUT_ACTION = "rollout"
STATUSES = ("ok", "pending", "alert", "no traffic", "not checked", "no model")


@dataclass
class Figure:
    """One value of the decisive metric, with its 95% interval where one was recorded."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int | None = None
    when: datetime | None = None


@dataclass
class Latency:
    """Scoring requests of one use case as the service counted them since it started."""

    requests: int
    mean_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    source: str  # where the figures come from (in-process, or the API's /metrics)


@dataclass
class Row:
    """One use case on the overview."""

    usecase: str
    question: str
    status: str  # one of STATUSES
    status_reasons: list[str]
    metric: str
    higher_is_better: bool
    champion: VersionSummary | None
    challenger: VersionSummary | None
    live: Figure | None
    test: Figure | None
    baseline: Figure | None
    oracle: Figure | None
    oracle_source: str | None  # "live" (the truth on the same labelled predictions) or "test"
    traffic_7d: int
    last_prediction: datetime | None
    latency: Latency | None
    gate_latency_ms: float | None
    last_check: datetime | None
    last_retrain: VersionSummary | None
    versions: int


@dataclass
class Check:
    """One stored monitoring decision."""

    when: datetime
    model_version: str | None
    status: str
    triggered: bool
    action: str
    outcome: str
    reasons: list[str]
    warnings: list[str]
    alert: dict[str, Any] | None
    retrain: dict[str, Any] | None
    report: str | None  # the drift report's stamp, when its HTML file is here
    detail: dict[str, Any] = field(default_factory=dict)  # the decision's own record


@dataclass
class RolloutState:
    """A use case's rollout: the mode the registry records (or the configuration gives), and
    the newest judgements of its arms on delayed labels."""

    mode: str  # off | shadow | canary | ab
    label: str  # "canary 10%", "shadow", "off"
    source: str  # registry | config | default (neither recorded nor configured: off)
    challenger: str | None
    set_at: str | None
    by: str | None
    reason: str | None
    judgements: list[Check] = field(default_factory=list)  # newest first


@dataclass
class Detail:
    """Everything the page of one use case shows."""

    row: Row
    drift_features: list[dict[str, Any]]  # the newest check's scores, highest first
    drift_at: datetime | None
    drift_series: dict[str, list[list[Any]]]  # name -> [[iso time, value], ...]
    performance_series: dict[str, list[list[Any]]]
    performance_metric: str | None
    checks: list[Check]  # newest first
    alerts: list[Check]  # the checks that alerted or acted, newest first
    history: list[VersionSummary]  # newest first
    links: dict[str, dict[str, str]]  # version -> {"mlflow": url, "prefect": url}
    experiment_url: str | None
    model_url: str | None
    rollout: RolloutState | None  # None: the registry could not be read for it
    policy: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- links ---------------------------------------------------------------------------------------
def mlflow_url(settings: Settings) -> str:
    """The MLflow UI: configured, else the tracking server itself, else ``mlflow ui``'s."""
    if settings.ui_mlflow_url:
        return settings.ui_mlflow_url.rstrip("/")
    if settings.tracking_uri.startswith(("http://", "https://")):
        return settings.tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def prefect_url(settings: Settings) -> str:
    """The Prefect UI: configured, else Prefect's own UI URL or its API's, else the default
    ``prefect server start`` address."""
    if settings.ui_prefect_url:
        return settings.ui_prefect_url.rstrip("/")
    if os.environ.get("PREFECT_UI_URL"):
        return os.environ["PREFECT_UI_URL"].rstrip("/")
    api = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if api:
        return api.removesuffix("/api")
    return "http://127.0.0.1:4200"


# -- the service's metrics -----------------------------------------------------------------------
def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """A quantile from cumulative histogram buckets (upper bound, count), linear within the
    bucket, as Prometheus' ``histogram_quantile`` does."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bucket: its bound is all we know
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


def latency_from_metrics(text: str, source: str) -> dict[str, Latency]:
    """Per scoring route (``/v1/<usecase>/<verb>``): successful requests and their latency,
    from the service's Prometheus exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "shopml_request_duration_seconds":
            continue
        for s in family.samples:
            route = s.labels.get("route", "")
            parts = route.strip("/").split("/")
            if (
                len(parts) != 3
                or parts[0] != "v1"
                or not s.labels.get("status", "").startswith("2")
            ):
                continue
            usecase = parts[1]
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                per = buckets.setdefault(usecase, {})
                per[le] = per.get(le, 0.0) + s.value
            elif s.name.endswith("_sum"):
                sums[usecase] = sums.get(usecase, 0.0) + s.value
            elif s.name.endswith("_count"):
                counts[usecase] = counts.get(usecase, 0.0) + s.value
    out = {}
    for usecase, n in counts.items():
        cumulative = sorted(buckets.get(usecase, {}).items())
        p50, p99 = _quantile(cumulative, 0.5), _quantile(cumulative, 0.99)
        out[usecase] = Latency(
            int(n),
            sums.get(usecase, 0.0) / n * 1000 if n else None,
            p50 * 1000 if p50 is not None else None,
            p99 * 1000 if p99 is not None else None,
            source,
        )
    return out


def service_latency(settings: Settings, in_process: bool) -> dict[str, Latency]:
    """The service's latency per use case: read in-process when the tower is mounted in the
    API, else from ``ui_api_url``'s ``/metrics``; empty when neither is available."""
    if in_process:
        from shopml.serving import metrics

        body, _ = metrics.render()
        return latency_from_metrics(body.decode(), "this service, since it started")
    if not settings.ui_api_url:
        return {}
    url = settings.ui_api_url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except Exception as exc:  # an API that is down is shown as such, not as an error page
        log.warning("cannot read %s: %s", url, exc)
        return {}
    return latency_from_metrics(text, f"{settings.ui_api_url}, since it started")


# -- reading ---------------------------------------------------------------------------------------
def status_of(decision: pd.Series | None) -> tuple[str, list[str]]:
    """A stored decision as the monitor printed it: ``alert`` (acted), ``pending`` (crossed,
    waiting for confirmation), ``no traffic`` (nothing served in the window) or ``ok``."""
    if decision is None:
        return "not checked", ["no monitoring check yet: `shopml monitor`"]
    reasons = list(decision["reasons"] or [])
    if bool(decision["triggered"]):
        return "alert", reasons
    if reasons:
        return "pending", reasons
    findings = (decision["detail"] or {}).get("findings") or {}
    if not findings.get("rows"):
        return "no traffic", ["no prediction in the last window"]
    return "ok", []


def _last(frame: pd.DataFrame, **equal: Any) -> pd.Series | None:
    for col, value in equal.items():
        frame = frame[frame[col] == value]
    return None if frame.empty else frame.iloc[-1]


def _interval(summary: VersionSummary | None, metric: str) -> Figure | None:
    if summary is None or summary.metrics.get(metric) is None:
        return None
    iv = summary.interval or {}
    return Figure(
        summary.metrics[metric],
        iv.get("low"),
        iv.get("high"),
        summary.n,
    )


def _oracle_at_test(
    client: MlflowClient, summary: VersionSummary | None, metric: str
) -> float | None:
    if summary is None or not summary.run_id:
        return None
    try:
        value = client.get_run(summary.run_id).data.metrics.get(f"oracle_{metric}")
    except Exception:  # a run deleted by hand: no oracle shown
        return None
    return float(value) if value is not None else None


class Reader:
    """One page's reads: a registry client and the monitoring store, opened once."""

    def __init__(self, settings: Settings, in_process: bool = False) -> None:
        self.settings = settings
        self.in_process = in_process
        self.client = configure(settings)
        self.store: MonitoringStore = open_store(settings)
        self._latency: dict[str, Latency] | None = None

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def latency(self) -> dict[str, Latency]:
        if self._latency is None:
            self._latency = service_latency(self.settings, self.in_process)
        return self._latency

    def _all_decisions(self, usecase: str) -> pd.DataFrame:
        try:
            return self.store.decisions(usecase)
        except MonitoringStoreError:
            raise
        except Exception as exc:  # an empty or older store: nothing checked yet
            log.warning("monitoring decisions of %s unreadable: %s", usecase, exc)
            return pd.DataFrame(columns=["ts", "triggered", "action", "reasons", "detail"])

    def _decisions(self, usecase: str) -> pd.DataFrame:
        """The monitor's checks: the rollout's judgements of its arms are kept apart, and so
        are retrains asked for by hand (recorded for the cooldown; the job's own state shows
        them on the page)."""
        frame = self._all_decisions(usecase)
        if not len(frame):
            return frame
        manual = frame["run_id"].astype(str).str.startswith(MANUAL_RUN_PREFIX)
        return frame[(frame["action"] != ROLLOUT_ACTION) & ~manual]

    def rollout(self, uc: UseCase) -> RolloutState | None:
        """The rollout recorded on the registered model, else the configured one, else off;
        with the arms' judgements, newest first."""
        from shopml.runtime import rollout as rollouts

        try:
            recorded = rollouts.stored(self.client, model_name(uc.name))
        except Exception as exc:  # a registry outage: say so rather than "off"
            log.warning("rollout of %s unreadable: %s", uc.name, exc)
            return None
        configured = self.settings.rollout.get(uc.name)
        state = rollouts.effective(recorded, configured)
        frame = self._all_decisions(uc.name)
        judged = frame[frame["action"] == ROLLOUT_ACTION] if len(frame) else frame
        return RolloutState(
            mode=state.mode,
            label=state.describe(),
            source=state.source if recorded is not None or configured else "default",
            challenger=state.challenger,
            set_at=state.set_at,
            by=state.by,
            reason=state.reason,
            judgements=[self._check(uc.name, d) for _, d in judged.iloc[::-1].iterrows()],
        )

    def row(self, uc: UseCase, history: list[VersionSummary] | None = None) -> Row:
        """The overview row of one use case."""
        summary = registry.describe(self.client, uc.name)
        history = history if history is not None else registry.history(self.client, uc.name, 1)
        metric = uc.gate.metric
        decisions = self._decisions(uc.name)
        latest = None if decisions.empty else decisions.iloc[-1]
        status, reasons = status_of(latest)
        if summary.champion is None:
            status = "no model"
            reasons = ["not trained yet: `shopml train`" if not summary.versions else "no champion"]
        live = oracle = None
        oracle_source = None
        if latest is not None:
            since = latest["ts"] - timedelta(days=PLOT_DAYS)
            perf = self.store.metrics(
                uc.name, kind="performance", metric=metric, since=since, with_detail=True
            )
            last = _last(perf)
            if last is not None:
                iv = last["detail"] if isinstance(last["detail"], dict) else {}
                live = Figure(
                    float(last["value"]),
                    iv.get("low"),
                    iv.get("high"),
                    n=_int(last["n"]),
                    when=last["ts"].to_pydatetime(),
                )
                best = _last(
                    self.store.metrics(uc.name, kind="oracle", metric=metric, since=since),
                    run_id=last["run_id"],
                )
                if best is not None:
                    oracle = Figure(float(best["value"]), n=_int(best["n"]))
                    oracle_source = "live"
        if oracle is None:
            value = _oracle_at_test(self.client, summary.champion, metric)
            if value is not None:
                oracle, oracle_source = Figure(value), "test"
        champ = summary.champion
        baseline = (
            Figure(champ.baseline[metric])
            if champ and champ.baseline.get(metric) is not None
            else None
        )
        last_prediction = self.store.last_prediction_time(uc.name)
        traffic = (
            self.store.count_predictions(uc.name, last_prediction - timedelta(days=7))
            if last_prediction
            else 0
        )
        gate_latency = None
        if champ is not None:
            mv = registry.alias_version(self.client, uc.name, registry.CHAMPION)
            raw = (mv.tags or {}).get("shopml.gate.latency_ms") if mv is not None else None
            gate_latency = float(raw) if raw else None
        return Row(
            usecase=uc.name,
            question=uc.question,
            status=status,
            status_reasons=reasons,
            metric=metric,
            higher_is_better=uc.gate.higher_is_better,
            champion=champ,
            challenger=summary.challenger,
            live=live,
            test=_interval(champ, metric),
            baseline=baseline,
            oracle=oracle,
            oracle_source=oracle_source,
            traffic_7d=traffic,
            last_prediction=last_prediction,
            latency=self.latency().get(uc.name),
            gate_latency_ms=gate_latency,
            last_check=latest["ts"].to_pydatetime() if latest is not None else None,
            last_retrain=history[0] if history else None,
            versions=summary.versions,
        )

    def overview(self, usecases: list[UseCase]) -> list[Row]:
        """One row per use case."""
        return [self.row(uc) for uc in usecases]

    def detail(self, uc: UseCase) -> Detail:
        """The page of one use case."""
        from shopml.monitoring.policy import policy_for

        history = registry.history(self.client, uc.name)
        row = self.row(uc, history)
        decisions = self._decisions(uc.name)
        checks = [self._check(uc.name, d) for _, d in decisions.iloc[::-1].iterrows()]
        series = pd.DataFrame()
        if not decisions.empty:
            since = decisions["ts"].iloc[-1] - timedelta(days=PLOT_DAYS)
            series = self.store.metrics(uc.name, since=since, with_detail=True)
        features, drift_at = _drift_features(series)
        metric, _ = uc.monitored_metric()
        perf_metric = row.metric if _has(series, "performance", row.metric) else metric
        links, experiment = self._links(uc.name, history)
        notes = []
        if not _has(series, "performance", perf_metric):
            notes.append(
                f"no live performance yet: labels arrive {uc.monitoring.label_delay_days} days "
                "after a prediction"
                if uc.monitoring.label is not None
                else "its answers have no delayed label: see the use case's own checks"
            )
        try:
            policy = policy_for(uc, self.settings.monitor_policy).to_dict()
        except ValueError as exc:
            policy, notes = {}, [*notes, str(exc)]
        return Detail(
            row=row,
            drift_features=features,
            drift_at=drift_at,
            drift_series=_drift_series(series),
            performance_series=_performance_series(series, perf_metric),
            performance_metric=perf_metric,
            checks=checks,
            alerts=[c for c in checks if c.triggered or c.action in ("alert", "retrain")],
            history=history,
            links=links,
            experiment_url=experiment,
            model_url=f"{mlflow_url(self.settings)}/#/models/{model_name(uc.name)}",
            rollout=self.rollout(uc),
            policy=policy,
            notes=notes,
        )

    def _check(self, usecase: str, d: pd.Series) -> Check:
        status, _ = status_of(d)
        detail = d["detail"] or {}
        when = d["ts"].to_pydatetime()
        stamp = f"{when:%Y%m%dT%H%M%S}"
        report = drift_report_path(self.settings.reports_dir, usecase, when)
        return Check(
            when=when,
            model_version=d["model_version"],
            status=status,
            triggered=bool(d["triggered"]),
            action=str(d["action"] or ""),
            outcome=str(d["outcome"] or ""),
            reasons=list(d["reasons"] or []),
            warnings=list(detail.get("warnings") or []),
            alert=detail.get("alert"),
            retrain=detail.get("retrain"),
            report=stamp if report.exists() else None,
            detail=detail if isinstance(detail, dict) else {},
        )

    def _links(
        self, usecase: str, history: list[VersionSummary]
    ) -> tuple[dict[str, dict[str, str]], str | None]:
        """The MLflow run and the Prefect flow run behind each version."""
        base = mlflow_url(self.settings)
        experiment = self.client.get_experiment_by_name(experiment_name(usecase))
        exp_id = experiment.experiment_id if experiment is not None else None
        out: dict[str, dict[str, str]] = {}
        for v in history:
            links: dict[str, str] = {}
            if v.run_id and exp_id is not None:
                links["mlflow"] = f"{base}/#/experiments/{exp_id}/runs/{v.run_id}"
                try:
                    flow_run = self.client.get_run(v.run_id).data.tags.get(FLOW_RUN_TAG)
                except Exception:  # a run deleted by hand
                    flow_run = None
                if flow_run:
                    links["prefect"] = f"{prefect_url(self.settings)}/runs/flow-run/{flow_run}"
            links["model"] = f"{base}/#/models/{model_name(usecase)}/versions/{v.version}"
            out[v.version] = links
        return out, (f"{base}/#/experiments/{exp_id}" if exp_id is not None else None)


def _int(value: Any) -> int | None:
    try:
        return None if value is None or pd.isna(value) else int(value)
    except (TypeError, ValueError):
        return None


def _has(series: pd.DataFrame, kind: str, metric: str | None) -> bool:
    if series.empty or metric is None:
        return False
    return bool(((series["kind"] == kind) & (series["metric"] == metric)).any())


def _points(frame: pd.DataFrame) -> list[list[Any]]:
    return [
        [ts.isoformat(), float(v)]
        for ts, v in zip(frame["ts"], frame["value"], strict=True)
        if v is not None and not pd.isna(v)
    ]


def _drift_features(series: pd.DataFrame) -> tuple[list[dict[str, Any]], datetime | None]:
    """Each feature's drift score at the newest check that measured drift, highest first."""
    if series.empty:
        return [], None
    drift = series[(series["kind"] == "drift") & (series["metric"] == "score")]
    if drift.empty:
        return [], None
    last_run = drift["run_id"].iloc[-1]
    rows = drift[drift["run_id"] == last_run]
    out = []
    for r in rows.itertuples():
        detail = r.detail if isinstance(r.detail, dict) else {}
        threshold = detail.get("threshold")
        noise = detail.get("noise")
        out.append(
            {
                "feature": r.feature,
                "score": None if pd.isna(r.value) else float(r.value),
                "threshold": max(x for x in (threshold, noise, 0.0) if x is not None),
                "method": detail.get("method"),
                "drifted": bool(detail.get("drifted")),
            }
        )
    out.sort(key=lambda f: -(f["score"] or 0.0))
    return out[:MAX_FEATURES], rows["ts"].iloc[0].to_pydatetime()


def _drift_series(series: pd.DataFrame) -> dict[str, list[list[Any]]]:
    """Share of drifted features and the output's drift score, per check."""
    if series.empty:
        return {}
    out = {}
    share = series[(series["kind"] == "drift") & (series["metric"] == "share")]
    if not share.empty:
        out["share of watched features drifted"] = _points(share)
    pred = series[(series["kind"] == "prediction_drift") & (series["metric"] == "score")]
    if not pred.empty:
        out["prediction drift score"] = _points(pred)
    return out


def _performance_series(series: pd.DataFrame, metric: str | None) -> dict[str, list[list[Any]]]:
    """The decisive metric per check: live, at test (the served version's), the oracle's."""
    if series.empty or metric is None:
        return {}
    out = {}
    for kind, name in (("performance", "live"), ("reference", "at test"), ("oracle", "oracle")):
        rows = series[(series["kind"] == kind) & (series["metric"] == metric)]
        if not rows.empty:
            out[name] = _points(rows)
    return out


def report_file(settings: Settings, usecase: str, stamp: str) -> Path | None:
    """The drift report of one check by its stamp (``YYYYmmddTHHMMSS``), if it is here."""
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%S")
    except ValueError:
        return None
    path = drift_report_path(settings.reports_dir, usecase, when)
    return path if path.is_file() else None
