"""Registry operations over aliases (``champion``, ``challenger``), never the deprecated stages.

Every move of the champion alias is recorded: on the model version (who or what moved it, when,
why) and in the registered model's champion history, which is what ``rollback`` walks back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shopml.lifecycle.tracking import model_name

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from shopml.lifecycle.gate import GateDecision

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "shopml.champion_history"


class RegistryError(ValueError):
    """A registry request that cannot be honoured (unknown version, nothing to roll back to)."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def alias_version(client: MlflowClient, usecase: str, alias: str) -> ModelVersion | None:
    """The version an alias points to, or None (no model or no alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name(usecase), alias)
    except MlflowException:
        return None


def _history(client: MlflowClient, usecase: str) -> list[str]:
    model = client.get_registered_model(model_name(usecase))
    raw = model.tags.get(HISTORY_TAG)
    return list(json.loads(raw)) if raw else []


def _set_history(client: MlflowClient, usecase: str, history: list[str]) -> None:
    # Keep the tag short: the last 50 champions are plenty to roll back through.
    client.set_registered_model_tag(model_name(usecase), HISTORY_TAG, json.dumps(history[-50:]))


def record_decision(
    client: MlflowClient, usecase: str, version: str, decision: GateDecision
) -> None:
    """Write the gate's decision and reasons on the model version (tags and description)."""
    name = model_name(usecase)
    tags = {
        "shopml.gate.verdict": decision.verdict,
        "shopml.gate.metric": decision.metric,
        "shopml.gate.reasons": json.dumps(decision.reasons)[:4900],
        "shopml.gate.champion_version": decision.champion_version or "",
        "shopml.gate.decided_at": _now(),
        "shopml.gate.manual": str(decision.manual).lower(),
    }
    if decision.sanity is not None:
        tags["shopml.gate.latency_ms"] = f"{decision.sanity.latency_ms:.3f}"
    if decision.n is not None:
        tags["shopml.gate.n"] = str(decision.n)
        tags["shopml.gate.unit"] = decision.unit
    if decision.interval is not None:
        tags["shopml.gate.interval"] = json.dumps(decision.interval)
    if decision.difference is not None:
        tags["shopml.gate.difference"] = json.dumps(decision.difference)
    if decision.intervals:
        tags["shopml.gate.intervals"] = _compact(decision.intervals)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=decision.summary()[:4900])


def _compact(intervals: dict[str, dict[str, Any]]) -> str:
    """Every metric's estimate and bounds, short enough for a tag (5,000 characters)."""
    short = {k: [v.get("estimate"), v.get("low"), v.get("high")] for k, v in intervals.items()}
    text = json.dumps(short)
    return text if len(text) <= 4900 else json.dumps(dict(list(short.items())[:40]))[:4900]


def set_champion(
    client: MlflowClient, usecase: str, version: str, *, reason: str, manual: bool
) -> str | None:
    """Move the champion alias to ``version``; returns the previous champion's version."""
    name = model_name(usecase)
    previous = alias_version(client, usecase, CHAMPION)
    prev_version = str(previous.version) if previous is not None else None
    if prev_version == str(version):
        return prev_version
    client.set_registered_model_alias(name, CHAMPION, str(version))
    history = _history(client, usecase)
    if not history and prev_version is not None:
        history.append(str(prev_version))
    history.append(str(version))
    _set_history(client, usecase, history)
    client.set_model_version_tag(
        name,
        str(version),
        "shopml.promotion",
        json.dumps(
            {"at": _now(), "manual": manual, "previous": prev_version, "reason": reason[:500]}
        ),
    )
    challenger = alias_version(client, usecase, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    return prev_version


def set_challenger(client: MlflowClient, usecase: str, version: str) -> None:
    client.set_registered_model_alias(model_name(usecase), CHALLENGER, str(version))


def promote(client: MlflowClient, usecase: str, version: str, reason: str = "") -> str | None:
    """Manual override: make ``version`` champion whatever the gate said, recorded as such."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(model_name(usecase), str(version))
    except MlflowException:
        raise RegistryError(
            f"{model_name(usecase)} has no version {version}; see `shopml models`"
        ) from None
    why = reason or "manual promotion with `shopml promote`"
    previous = set_champion(client, usecase, str(version), reason=why, manual=True)
    client.set_model_version_tag(
        model_name(usecase),
        str(version),
        "shopml.gate.override",
        json.dumps({"at": _now(), "reason": why}),
    )
    return previous


def rollback(client: MlflowClient, usecase: str) -> tuple[str, str]:
    """Move the champion back to the previous champion; returns (from, to)."""
    current = alias_version(client, usecase, CHAMPION)
    if current is None:
        raise RegistryError(f"{model_name(usecase)} has no champion to roll back from")
    current_version = str(current.version)
    history = _history(client, usecase)
    # Drop the current champion (and any trailing duplicates of it) from the end of the history.
    while history and history[-1] == current_version:
        history.pop()
    if not history:
        raise RegistryError(
            f"{model_name(usecase)} v{current_version} is the only champion there has been; "
            "nothing to roll back to"
        )
    target = history[-1]
    name = model_name(usecase)
    client.set_registered_model_alias(name, CHAMPION, target)
    _set_history(client, usecase, history)
    client.set_model_version_tag(
        name,
        target,
        "shopml.rollback",
        json.dumps({"at": _now(), "from": current_version}),
    )
    client.set_model_version_tag(name, current_version, "shopml.rolled_back_at", _now())
    return current_version, target


# The trainings that registered a new version (not an unchanged, skipped or failed one).
REGISTERED = ("promoted", "challenger", "registered")
REQUEST_TAG = "shopml.requested"


def record_request(
    client: MlflowClient, usecase: str, version: str, by: str, reason: str = ""
) -> None:
    """Record on a version who asked for the training that made it (a retrain started by a
    person rather than a schedule or the monitor): when, by whom, why."""
    client.set_model_version_tag(
        model_name(usecase),
        str(version),
        REQUEST_TAG,
        json.dumps({"at": _now(), "by": by[:200], "reason": reason[:500]}),
    )


@dataclass
class VersionSummary:
    version: str
    run_id: str | None
    created_at: str
    metrics: dict[str, float]
    cutoff: str | None
    dataset_version: str | None
    verdict: str | None
    reasons: list[str] = field(default_factory=list)
    # The gate's evidence: units on the test window, the decisive metric's estimate and
    # interval, and the paired difference to the champion it was judged against.
    n: int | None = None
    unit: str | None = None
    interval: dict[str, Any] | None = None
    difference: dict[str, Any] | None = None
    # The main baseline's test figures, when the gate decided, and the champion moves recorded
    # on the version (a manual override, a promotion, a rollback to it).
    baseline: dict[str, float] = field(default_factory=dict)
    decided_at: str | None = None
    override: dict[str, Any] | None = None
    promotion: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None
    # How a live rollout of this version ended (promoted / rolled back, and why).
    rollout_outcome: dict[str, Any] | None = None
    # Who asked for the training that made this version, when one was asked for by hand.
    requested: dict[str, Any] | None = None


@dataclass
class ModelSummary:
    usecase: str
    model: str
    champion: VersionSummary | None
    challenger: VersionSummary | None
    versions: int
    # The rollout mode recorded on the model (shadow, canary, ab, off), with who set it and why.
    rollout: dict[str, Any] | None = None


def _summary(client: MlflowClient, mv: ModelVersion | None) -> VersionSummary | None:
    if mv is None:
        return None
    tags: dict[str, Any] = dict(mv.tags or {})
    metrics = json.loads(tags.get("shopml.metrics", "{}"))
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    return VersionSummary(
        version=str(mv.version),
        run_id=mv.run_id,
        created_at=created,
        metrics=metrics,
        cutoff=tags.get("shopml.cutoff"),
        dataset_version=tags.get("shopml.dataset_version"),
        verdict=tags.get("shopml.gate.verdict"),
        reasons=json.loads(tags.get("shopml.gate.reasons", "[]")),
        n=int(tags["shopml.gate.n"]) if tags.get("shopml.gate.n", "").isdigit() else None,
        unit=tags.get("shopml.gate.unit"),
        interval=_json_or_none(tags.get("shopml.gate.interval")),
        difference=_json_or_none(tags.get("shopml.gate.difference")),
        baseline=json.loads(tags.get("shopml.baseline_metrics", "{}")),
        decided_at=tags.get("shopml.gate.decided_at"),
        override=_json_or_none(tags.get("shopml.gate.override")),
        promotion=_json_or_none(tags.get("shopml.promotion")),
        rollback=_json_or_none(tags.get("shopml.rollback")),
        rollout_outcome=_json_or_none(tags.get("shopml.rollout.outcome")),
        requested=_json_or_none(tags.get(REQUEST_TAG)),
    )


def _json_or_none(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def describe(client: MlflowClient, usecase: str) -> ModelSummary:
    """Champion and challenger of one use case, with their metrics and data."""
    from mlflow.exceptions import MlflowException

    name = model_name(usecase)
    try:
        versions: list[ModelVersion] = list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        versions = []
    from shopml.runtime.rollout import stored

    try:
        rollout = stored(client, name) if versions else None
    except MlflowException:
        rollout = None
    return ModelSummary(
        usecase,
        name,
        _summary(client, alias_version(client, usecase, CHAMPION) if versions else None),
        _summary(client, alias_version(client, usecase, CHALLENGER) if versions else None),
        len(versions),
        rollout.to_dict() if rollout is not None else None,
    )


def history(client: MlflowClient, usecase: str, limit: int = 50) -> list[VersionSummary]:
    """Every registered version of a use case, newest first (at most ``limit``): the gate's
    verdict and reasons on each, and the champion moves recorded on it."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{model_name(usecase)}'")
    except MlflowException:
        return []
    newest = sorted(found, key=lambda mv: int(mv.version), reverse=True)[:limit]
    return [s for mv in newest if (s := _summary(client, mv)) is not None]
