"""Rollout modes: how much of a use case's traffic its challenger sees, and which entities.

A use case's rollout is one of:

- ``off``: the champion answers everything (the default);
- ``shadow``: the champion answers; the challenger scores the same requests after the answer is
  sent, and its answers are logged (arm ``shadow``), never returned;
- ``canary`` (a small ``share``, 0.1 by default) and ``ab`` (0.5 by default): that share of
  *entities* is answered by the challenger (arm ``challenger``), the rest by the champion.

Assignment is sticky by entity id, not drawn per request: an entity's bucket is a hash of the use
case and its id (:func:`bucket`), identical in every worker and across restarts, and it is in
the challenger's arm when its bucket is below the share. Raising a canary's share keeps every
entity that already had the challenger. An instance that names no id (features only) is the
champion's: it has nothing to stay stuck to.

The mode lives in the registry, as a tag of the use case's registered model
(:data:`TAG`), so every worker of every service sees the same one (they poll the registry
already) and the monitor that judges the arms reads it from the same place. The configuration
(``SHOPML_ROLLOUT``) gives the mode of a use case whose model has no such tag. Only the standard
library here: the slim service, the CLI and monitoring all use it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

OFF, SHADOW, CANARY, AB = "off", "shadow", "canary", "ab"
MODES = (OFF, SHADOW, CANARY, AB)
DEFAULT_SHARE = {CANARY: 0.1, AB: 0.5}
TAG = "shopml.rollout"


class RolloutError(ValueError):
    """A rollout that cannot be set (an unknown mode, a share out of range)."""


@dataclass(frozen=True)
class Rollout:
    """A use case's rollout mode, as set and recorded.

    ``share``: the share of entities the challenger answers (canary and A/B; 0 otherwise).
    ``challenger``: the challenger version it was set for (informational: the challenger alias
    decides what is served). ``source``: ``registry`` or ``config``.
    """

    mode: str = OFF
    share: float = 0.0
    challenger: str | None = None
    set_at: str | None = None
    by: str | None = None
    reason: str | None = None
    source: str = "config"

    @property
    def routes(self) -> bool:
        """Whether some entities are answered by the challenger."""
        return self.mode in (CANARY, AB) and self.share > 0

    @property
    def active(self) -> bool:
        """Whether the challenger is needed at all."""
        return self.mode == SHADOW or self.routes

    def describe(self) -> str:
        if self.mode in (CANARY, AB):
            return f"{self.mode} {self.share:.0%}"
        return self.mode

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_source(self, source: str) -> Rollout:
        return replace(self, source=source)

    def to_tag(self) -> str:
        out = {k: v for k, v in self.to_dict().items() if v is not None and k != "source"}
        return json.dumps(out, sort_keys=True)


def make(mode: str, share: float | None = None, **extra: Any) -> Rollout:
    """A checked rollout: ``mode`` one of :data:`MODES`; ``share`` only for canary and A/B
    (default 0.1 and 0.5), strictly between 0 and 1."""
    mode = str(mode).strip().lower()
    if mode not in MODES:
        raise RolloutError(f"rollout mode {mode!r} is not one of {', '.join(MODES)}")
    if mode not in DEFAULT_SHARE:
        if share is not None:
            raise RolloutError(f"--share applies to canary and ab, not {mode}")
        return Rollout(mode, 0.0, **extra)
    value = DEFAULT_SHARE[mode] if share is None else share
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value < 1):
        raise RolloutError(f"share {share!r} must be a number between 0 and 1 (exclusive)")
    return Rollout(mode, float(value), **extra)


def parse(text: str) -> Rollout:
    """``off``, ``shadow``, ``canary``, ``canary:0.1``, ``ab:0.5`` (the configuration's form)."""
    mode, _, share = str(text).partition(":")
    if not share.strip():
        return make(mode)
    try:
        value = float(share)
    except ValueError:
        raise RolloutError(f"share {share!r} in {text!r} is not a number") from None
    return make(mode, value)


def from_tag(text: str | None) -> Rollout | None:
    """The rollout a registry tag records (None when there is none or it is unreadable)."""
    if not text:
        return None
    try:
        raw = json.loads(text)
        extra = {k: raw.get(k) for k in ("challenger", "set_at", "by", "reason")}
        share = raw.get("share")
        return make(
            raw["mode"], share if raw.get("mode") in DEFAULT_SHARE else None, **extra
        ).with_source("registry")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def bucket(usecase: str, entity_id: str) -> float:
    """The entity's place in [0, 1): the same in every process (a hash, not Python's salted
    ``hash``), independent between use cases."""
    digest = hashlib.blake2b(f"{usecase}\x00{entity_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def challenger_answers(rollout: Rollout, usecase: str, entity_id: str | None) -> bool:
    """Whether the challenger answers this entity under ``rollout``."""
    if not rollout.routes or entity_id is None:
        return False
    return bucket(usecase, entity_id) < rollout.share


# -- where it is kept -------------------------------------------------------------------------
class RegistryClient(Protocol):
    """What is needed of ``mlflow.MlflowClient``."""

    def get_registered_model(self, name: str) -> Any: ...

    def set_registered_model_tag(self, name: str, key: str, value: str) -> Any: ...


def stored(client: RegistryClient, model: str) -> Rollout | None:
    """The rollout recorded on the registered model (None: none recorded, or no such model)."""
    try:
        registered = client.get_registered_model(model)
    except Exception as exc:  # a missing model is "none"; an outage propagates
        if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return None
        raise
    return from_tag(dict(registered.tags or {}).get(TAG))


def effective(recorded: Rollout | None, configured: str | None) -> Rollout:
    """The recorded rollout, else the configured one, else off."""
    if recorded is not None:
        return recorded
    if configured:
        return parse(configured).with_source("config")
    return Rollout()


def record(client: RegistryClient, model: str, rollout: Rollout) -> Rollout:
    """Record ``rollout`` on the registered model (stamped now); returns what was recorded."""
    stamped = replace(
        rollout, set_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), source="registry"
    )
    client.set_registered_model_tag(model, TAG, stamped.to_tag())
    return stamped
