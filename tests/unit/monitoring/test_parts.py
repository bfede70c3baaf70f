"""The monitoring parts on their own: the store, drift, the policy, alerts and the gauges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shopml.monitoring.alerts import LocalWebhook, build_payload, send_alert
from shopml.monitoring.drift import compute_drift
from shopml.monitoring.policy import Findings, Policy, decide, policy_for, reasons_for
from shopml.monitoring.store import MetricRow, MonitoringStore
from shopml.runtime.predictions import PredictionRecord

T0 = datetime(2024, 3, 1)


def _log_rows(n: int, start: datetime, version: str = "3") -> list[PredictionRecord]:
    rng = np.random.default_rng(0)
    return [
        PredictionRecord(
            f"r{i}",
            (start + timedelta(minutes=i)).replace(tzinfo=UTC).timestamp(),
            "delivery-time",
            version,
            "order_id",
            f"o{i}",
            {"days_p50": float(rng.normal(5, 1)), "days_p90": 9.0},
            {"distance_km": float(rng.normal(500, 100)), "carrier_code": int(i % 3)},
        )
        for i in range(n)
    ]


def test_store_round_trip_window_sample_and_versions(tmp_path: Path) -> None:
    store = MonitoringStore(None, tmp_path)
    store.log_predictions(_log_rows(300, T0))
    store.log_predictions(_log_rows(50, T0 + timedelta(days=1), version="4"))
    assert store.count_predictions("delivery-time") == 350
    assert store.count_predictions("delivery-time", model_version="4") == 50
    window = store.predictions("delivery-time", T0, T0 + timedelta(hours=2))
    assert len(window) == 120
    assert list(window.features.columns) == ["distance_km", "carrier_code"]
    assert list(window.outputs.columns) == ["days_p50", "days_p90"]
    assert window.frame["entity_id"].iloc[0] == "o0"
    sampled = store.predictions("delivery-time", T0, T0 + timedelta(days=2), sample=40, seed=1)
    assert len(sampled) == 40 and len(set(sampled.frame["request_id"])) == 40
    again = store.predictions("delivery-time", T0, T0 + timedelta(days=2), sample=40, seed=1)
    assert list(again.frame["request_id"]) == list(sampled.frame["request_id"])
    no_feats = store.predictions("delivery-time", T0, T0 + timedelta(days=2), with_features=False)
    assert no_feats.features.empty and len(no_feats.outputs) == 350

    run = store.write_metrics(
        "delivery-time",
        "3",
        T0,
        (T0 - timedelta(days=7), T0),
        [MetricRow("drift", "share", 0.25), MetricRow("performance", "mae", float("nan"))],
    )
    store.write_decision(run, "delivery-time", "3", T0, True, "alert", "sent", ["why"], {"a": 1})
    metrics = store.metrics("delivery-time")
    assert set(metrics["metric"]) == {"share", "mae"}
    assert metrics.loc[metrics["metric"] == "mae", "value"].isna().all()  # NaN stored as NULL
    decisions = store.decisions("delivery-time")
    assert decisions["triggered"].tolist() == [True] and decisions["reasons"][0] == ["why"]
    store.close()


def test_drift_flags_shifted_features_and_states_the_sample() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    ref = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "code": rng.integers(0, 3, n)}
    )
    cur = pd.DataFrame(
        {
            "a": rng.normal(loc=0.8, size=n),  # shifted
            "b": rng.normal(size=n),
            "code": rng.choice([0, 1, 2], n, p=[0.1, 0.1, 0.8]),  # mix changed
        }
    )
    ref["output.p"] = rng.normal(size=n)
    cur["output.p"] = rng.normal(size=n)
    result = compute_drift(ref, cur, ["a", "b", "code"], ["output.p"], max_rows=1000)
    by = {c.column: c for c in result.features}
    assert by["a"].drifted and not by["b"].drifted and by["code"].drifted
    assert by["code"].kind == "categorical" and by["a"].method == "wasserstein"
    assert result.share == pytest.approx(2 / 3)
    assert not result.outputs[0].drifted
    assert result.current_rows == 1000 and result.sampled_from == n
    assert "1,000" in result.sample_note and "3,000" in result.sample_note
    # The share counts the watched features only, when the use case names them.
    watched = compute_drift(ref, cur, ["a", "b", "code"], watched=("b",))
    assert watched.share == 0.0 and watched.share_all == pytest.approx(2 / 3)


def test_categories_match_however_they_are_stored() -> None:
    ref = pd.DataFrame({"code": [1, 2, 3] * 400})  # integers in the reference parquet
    cur = pd.DataFrame({"code": [1.0, 2.0, 3.0] * 400})  # floats from the prediction log
    result = compute_drift(ref, cur, ["code"])
    assert result.features[0].score == pytest.approx(0.0, abs=1e-9)


def _history(*rows: tuple[Any, ...]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": pd.to_datetime([r[0] for r in rows], utc=True),
            "triggered": [r[1] for r in rows],
            "action": [r[2] for r in rows],
            "reasons": [r[3] if len(r) > 3 else [] for r in rows],
        }
    )


def test_policy_thresholds_confirmation_and_cooldown() -> None:
    policy = Policy(drift_share=0.5, max_degradation=0.2, min_rows=10, min_labelled=10)
    quiet = Findings(
        rows=100,
        drift_share=0.25,
        drifted=["a"],
        features=4,
        labelled=50,
        metric="mae",
        live=2.1,
        reference=2.0,
        degradation=0.05,
    )
    assert reasons_for(policy, quiet) == []
    bad = Findings(
        rows=100,
        drift_share=0.75,
        drifted=["a", "b", "c"],
        features=4,
        labelled=50,
        metric="mae",
        live=5.0,
        reference=2.0,
        degradation=1.5,
    )
    reasons = reasons_for(policy, bad)
    assert len(reasons) == 2 and "3 of 4 features" in reasons[0] and "+150%" in reasons[1]
    too_few = Findings(rows=5, drift_share=1.0, drifted=["a"], features=1)
    assert reasons_for(policy, too_few) == []

    # A degradation within two standard errors of the live figure is chance, not a reason.
    def labelled(metric: str, live: float, degradation: float, noise: float, **kw: Any) -> Findings:
        """50 labelled predictions of 100; the reference is 0.25 unless given."""
        return Findings(rows=100, labelled=50, metric=metric, live=live,
                        reference=kw.pop("reference", 0.25), degradation=degradation,
                        degradation_noise=noise, expects_labels=True, **kw)  # fmt: skip

    noisy = labelled("log_loss", 0.3, 0.2, 0.3)
    assert reasons_for(policy, noisy) == []
    clear = labelled("log_loss", 0.45, 0.8, 0.3)
    assert "beyond its noise of 30%" in reasons_for(policy, clear)[0]
    # A further check (MonitorSpec.also): calibration moved although the headline did not.
    from shopml.monitoring.policy import SecondaryCheck, performance_ok

    moved = labelled(
        "normalized_log_loss", 0.9, 0.0, 0.05, reference=0.9,
        also=[SecondaryCheck("calibration_ratio", 1.5, 1.0, 0.5, 0.2, 0.25)],
    )  # fmt: skip
    assert reasons_for(policy, moved)[0].startswith("performance: calibration_ratio 1.5")
    assert not performance_ok(policy, moved)
    moved.also[0].noise = 0.6  # within its own noise: not a reason
    assert reasons_for(policy, moved) == [] and performance_ok(policy, moved)

    empty = _history()
    assert decide(policy, bad, empty, T0, can_retrain=True).action == "retrain"
    assert decide(policy, bad, empty, T0, can_retrain=False).action == "alert"
    assert decide(policy, quiet, empty, T0, can_retrain=True).action == "none"
    # Within the cooldown after a retrain: wait (the episode's alert went out already).
    recent = _history((T0 - timedelta(days=3), True, "retrain"))
    waiting = decide(policy, bad, recent, T0, can_retrain=True)
    assert waiting.action == "wait" and waiting.cooldown_until is not None
    later = decide(policy, bad, recent, T0 + timedelta(days=15), can_retrain=True)
    assert later.action == "retrain"
    # Back within thresholds after an alert: one "resolved" alert.
    assert decide(policy, quiet, recent, T0, can_retrain=True).action == "alert"
    # Two confirmations: the first crossing waits for the second.
    two = Policy(confirmations=2, min_rows=10, min_labelled=10)
    first = decide(two, bad, empty, T0, can_retrain=True)
    assert first.action == "none" and not first.confirmed
    assert decide(two, bad, _history((T0, True, "none")), T0, can_retrain=True).action == "retrain"
    # Drift alone is noisier than performance: it acts on its second crossing in a row.
    drift = Findings(rows=100, drift_share=0.75, drifted=["a", "b", "c"], features=4)
    once = decide(policy, drift, empty, T0, can_retrain=True)
    assert once.action == "none" and not once.confirmed and once.reasons
    seen = _history((T0 - timedelta(days=7), False, "none", once.reasons))
    assert decide(policy, drift, seen, T0, can_retrain=True).action == "retrain"
    unrelated = _history((T0 - timedelta(days=7), False, "none", []))
    assert decide(policy, drift, unrelated, T0, can_retrain=True).action == "none"
    # Drift while enough labels show the model within tolerance: a warning, not an episode.
    harmless = Findings(
        rows=100,
        drift_share=0.75,
        drifted=["a", "b", "c"],
        features=4,
        labelled=50,
        metric="mae",
        live=2.1,
        reference=2.0,
        degradation=0.05,
        expects_labels=True,
    )
    calm = decide(policy, harmless, seen, T0, can_retrain=True)
    assert calm.action == "none" and not calm.triggered and not calm.reasons
    assert calm.warnings and "not acted on: mae is within 20%" in calm.warnings[0]
    eager = Policy(max_degradation=0.2, min_rows=10, min_labelled=10, drift_needs_impact=False)
    assert decide(eager, harmless, seen, T0, can_retrain=True).action == "retrain"


def test_policy_overrides_come_from_settings() -> None:
    from shopml.usecases import get_usecase

    uc = get_usecase("delivery-time")
    assert policy_for(uc).max_degradation == uc.monitoring.max_degradation
    p = policy_for(uc, {"default": {"drift_share": 0.3}, "delivery-time": {"min_rows": 50}})
    assert p.drift_share == 0.3 and p.min_rows == 50 and isinstance(p.min_rows, int)
    with pytest.raises(ValueError, match="unknown setting"):
        policy_for(uc, {"delivery-time": {"drift_shar": 0.3}})


def test_alert_is_slack_shaped_and_failures_are_reported() -> None:
    with LocalWebhook() as hook:
        _alert_round_trip(hook)


def _alert_round_trip(hook: LocalWebhook) -> None:
    url = hook.url
    payload = build_payload("returns", "warning", "drift", ["a reason"], {"model_version": "2"})
    result = send_alert(payload, url)
    assert result.sent and result.status == 200
    got = hook.received[0]
    assert got["text"].startswith(":warning: shopml returns: drift") and "a reason" in got["text"]
    assert got["blocks"][0]["type"] == "header" and got["shopml"]["model_version"] == "2"
    hook.status = 400
    failed = send_alert(payload, url, retries=0)
    assert not failed.sent and failed.error == "HTTP 400"
    nowhere = send_alert(payload, "http://127.0.0.1:9/none", retries=0, timeout=1)
    assert not nowhere.sent and nowhere.error
    assert not send_alert(payload, None).sent  # logged only


def test_gauges_show_the_newest_check(tmp_path: Path) -> None:
    from shopml.gauges import metric_names, render_text

    # No store yet: a page without samples, not an error.
    assert [ln for ln in render_text(None, tmp_path).decode().splitlines() if ln[:1] != "#"] == []
    store = MonitoringStore(None, tmp_path)
    old = store.write_metrics("returns", "1", T0, None, [MetricRow("drift", "share", 0.9)])
    store.write_decision(old, "returns", "1", T0, True, "alert", "", [], {})
    rows = [
        MetricRow("drift", "share", 0.25),
        MetricRow("drift", "score", 0.3, feature="unit_price"),
        MetricRow("prediction_drift", "score", 0.05, feature="output.p_return"),
        MetricRow("performance", "auc", 0.71),
        MetricRow("reference", "auc", 0.73),
        MetricRow("degradation", "auc", 0.03),
        MetricRow("volume", "predictions", 1200.0),
        MetricRow("volume", "labelled", 800.0),
        MetricRow("specific", "segment_share", 0.4, feature="2"),
    ]
    run = store.write_metrics("returns", "2", T0 + timedelta(days=1), None, rows)
    store.write_decision(run, "returns", "2", T0 + timedelta(days=1), False, "none", "ok", [], {})
    store.close()
    page = render_text(None, tmp_path).decode()
    assert 'shopml_monitor_drift_share{usecase="returns"} 0.25' in page  # the newest, not 0.9
    assert 'shopml_monitor_feature_drift{feature="unit_price",usecase="returns"} 0.3' in page
    assert 'shopml_monitor_performance{metric="auc",usecase="returns"} 0.71' in page
    assert 'shopml_monitor_usecase_value{item="2",metric="segment_share",usecase="returns"}' in page
    assert 'shopml_monitor_alert_active{usecase="returns"} 0.0' in page
    assert 'shopml_monitor_model_version{usecase="returns",version="2"} 1.0' in page
    for name in metric_names():
        assert f"# TYPE {name} gauge" in page
