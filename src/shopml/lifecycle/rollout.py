"""Setting a use case's rollout mode from the command line and the monitor, and ending it.

The mode is recorded on the registered model (:mod:`shopml.runtime.rollout`); the service
follows it within one registry poll. A mode that needs the challenger is refused when the use
case has none (there would be nothing to show it to). :func:`end` closes a rollout with its
outcome (the challenger promoted, or rolled back: its alias removed and the version tagged
with why), recording the decision on the version, so ``shopml models`` and the version's page in
MLflow say what happened.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shopml.lifecycle.registry import CHALLENGER, CHAMPION, RegistryError, alias_version
from shopml.lifecycle.tracking import model_name
from shopml.runtime import rollout as modes

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from shopml.settings import Settings

OUTCOME_TAG = "shopml.rollout.outcome"


def current(client: MlflowClient, usecase: str, settings: Settings | None = None) -> modes.Rollout:
    """The mode in effect: recorded in the registry, else configured, else off."""
    try:
        recorded = modes.stored(client, model_name(usecase))
    except Exception as exc:  # no registered model yet is "off"; anything else is an outage
        raise RegistryError(f"cannot read {model_name(usecase)}'s rollout: {exc}") from exc
    configured = settings.rollout.get(usecase) if settings is not None else None
    return modes.effective(recorded, configured)


def set_mode(
    client: MlflowClient,
    usecase: str,
    mode: str,
    share: float | None = None,
    *,
    reason: str = "",
    by: str = "cli",
) -> modes.Rollout:
    """Record ``mode`` for ``usecase`` (``RegistryError`` naming the problem: an unknown mode,
    a share out of range, no challenger to roll out)."""
    try:
        wanted = modes.make(mode, share, reason=reason or None, by=by)
    except modes.RolloutError as exc:
        raise RegistryError(str(exc)) from None
    challenger = alias_version(client, usecase, CHALLENGER)
    if wanted.active:
        if challenger is None:
            raise RegistryError(
                f"{model_name(usecase)} has no challenger to put in {wanted.mode}: train one "
                "(`shopml train " + usecase + "`) first; `shopml models` shows the aliases"
            )
        champion = alias_version(client, usecase, CHAMPION)
        if champion is not None and str(champion.version) == str(challenger.version):
            raise RegistryError(f"{model_name(usecase)}'s challenger is its champion")
        wanted = modes.make(
            wanted.mode,
            share,
            reason=wanted.reason,
            by=by,
            challenger=str(challenger.version),
        )
    try:
        return modes.record(client, model_name(usecase), wanted)
    except Exception as exc:
        raise RegistryError(f"cannot record {model_name(usecase)}'s rollout: {exc}") from exc


def end(client: MlflowClient, usecase: str, version: str, outcome: str, reasons: list[str]) -> None:
    """Close a rollout: mode off, the outcome (``promoted``, ``rolled back``) and its reasons
    recorded on the challenger's version; a rolled-back challenger loses its alias."""
    name = model_name(usecase)
    client.set_model_version_tag(
        name,
        str(version),
        OUTCOME_TAG,
        json.dumps(
            {
                "outcome": outcome,
                "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "reasons": reasons,
            }
        )[:4900],
    )
    if outcome != "promoted":
        challenger = alias_version(client, usecase, CHALLENGER)
        if challenger is not None and str(challenger.version) == str(version):
            client.delete_registered_model_alias(name, CHALLENGER)
    modes.record(client, name, modes.make(modes.OFF, reason=f"v{version} {outcome}", by="monitor"))


def outcome_of(client: MlflowClient, usecase: str, version: str) -> dict[str, Any] | None:
    """The rollout outcome recorded on a version, if any."""
    try:
        mv = client.get_model_version(model_name(usecase), str(version))
    except Exception:
        return None
    raw = dict(mv.tags or {}).get(OUTCOME_TAG)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
