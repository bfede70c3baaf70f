"""Online feature lookup for requests: a small cache over the online store.

Which ids an instance may name is the predict answer kind's
(:func:`shopml.runtime.answers.lookups_for`): an instance names its own entity (``customer_id``
for a customer use case, ``order_item_id`` for returns) and, for order-level use cases, the
related customer, product and seller. The
entity's own features fill model features of the same name; a related entity's fill the
model's features named ``<entity>_<column>`` (``product_return_rate`` from the product's
``return_rate``), which is how the offline feature builders name them. Explicit features in the
request override both.
"""

from __future__ import annotations

import time
from datetime import UTC
from typing import TYPE_CHECKING, Any

from shopml.runtime.answers import Lookup, MissingEntity

if TYPE_CHECKING:
    from shopml.online.store import OnlineStore


class FeatureLookup:
    """Cached reads from an online store (per worker; ``ttl`` 0 turns the cache off).

    A cache miss costs one store read; hits cost a dict lookup. The cache is cleared whole when
    it grows past ``max_entries``: simpler than an LRU and as good for a hot working set.
    """

    def __init__(
        self, store: OnlineStore | None, ttl: float = 5.0, max_entries: int = 100_000
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[tuple[str, str], tuple[float, dict[str, Any] | None, float | None]] = {}
        self.ok = store is not None
        self.error: str | None = None if store is not None else "no online store"

    def get(self, entity: str, value: str) -> tuple[dict[str, Any], float | None] | None:
        """(features, as-of as a POSIX time) for one id, or None when unknown."""
        now = time.monotonic()
        key = (entity, value)
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return None if hit[1] is None else (hit[1], hit[2])
        if self.store is None:
            return None
        try:
            found = self.store.get(entity, value)
        except Exception as exc:
            self.ok, self.error = False, f"{type(exc).__name__}: {str(exc)[:200]}"
            raise
        self.ok, self.error = True, None
        if found is None:
            features, as_of = None, None
        else:
            features, when = found
            if when.tzinfo is None:  # feature cutoffs are stored as naive UTC
                when = when.replace(tzinfo=UTC)
            as_of = when.timestamp()
        if self.ttl > 0:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[key] = (now, features, as_of)
        return None if features is None else (features, as_of)

    def clear(self) -> None:
        """Forget cached reads (the store was just rewritten)."""
        self._cache.clear()

    def resolve(
        self, lookups: tuple[Lookup, ...], ids: dict[str, str]
    ) -> tuple[dict[str, Any], float | None]:
        """Merged features for the ids an instance names, and the oldest as-of among them.

        Raises :class:`MissingEntity` for an id the store does not know.
        """
        merged: dict[str, Any] = {}
        oldest: float | None = None
        # Related entities first, the instance's own entity last: its columns win.
        for lk in reversed(lookups):
            value = ids.get(lk.field)
            if value is None or not lk.online:
                continue
            found = self.get(lk.entity, value)
            if found is None:
                raise MissingEntity(lk.field, value)
            features, as_of = found
            if lk.prefix:
                merged.update({lk.prefix + k: v for k, v in features.items()})
            else:
                merged.update(features)
            if as_of is not None and (oldest is None or as_of < oldest):
                oldest = as_of
        return merged, oldest

    def ping(self) -> bool:
        """Whether the store answers (a cheap read)."""
        if self.store is None:
            return False
        try:
            self.store.get("customers", "__shopml_ping__")
        except Exception as exc:
            self.ok, self.error = False, f"{type(exc).__name__}: {str(exc)[:200]}"
            return False
        self.ok, self.error = True, None
        return True
