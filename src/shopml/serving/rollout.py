"""Serving a use case's challenger beside its champion: shadow, canary and A/B.

:class:`Router` holds each use case's rollout mode (:mod:`shopml.runtime.rollout`: recorded in
the registry, else configured) and the challengers of the use cases whose mode needs one,
loaded by a second :class:`~shopml.serving.models.ModelStore` that follows the ``challenger``
alias. Both are refreshed from the registry in a background thread, as the champions are, so
every worker follows a mode set by another worker, ``shopml rollout`` or the admin route.

:meth:`Router.wrap` wraps a route's answer function (built by the answer kind, so nothing here
names a use case):

- *canary* and *A/B*: each instance goes to the arm its entity's hash picks
  (:func:`~shopml.runtime.rollout.challenger_answers`); a batch whose instances fall in both
  arms is split, answered by each model, and put back in order, each prediction naming the
  version that answered it;
- *shadow*: the champion answers; the request is queued and the challenger answers it after
  the response has been sent (:meth:`Router.after`, scheduled on the event loop behind the
  response), its record logged with arm ``shadow`` and the same request id. A failing or slow
  challenger can neither fail nor slow the champion's answer; when the queue is full the
  shadow answer is dropped and counted.

The challenger's answers go through the same answerers, with a context
(:class:`ArmContext`) that serves the challenger and stamps the arm on every record.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from shopml.runtime import rollout as modes
from shopml.runtime.answers import Answer, AnswerError, lookups_for
from shopml.runtime.predictions import CHALLENGER, CHAMPION, SHADOW, PredictionRecord
from shopml.serving import metrics
from shopml.serving.models import LoadedModel, ModelSource, ModelStore, model_name

if TYPE_CHECKING:
    import numpy as np

    from shopml.runtime.answers import (
        AnswerContext,
        AnswerKind,
        FeatureSource,
        Schemas,
        UseCaseLike,
    )

log = logging.getLogger("shopml.serving")

SHADOW_QUEUE = 10_000  # requests waiting for the challenger's shadow answer, at most
SHADOW_SLICE = 64  # shadow answers per turn of the event loop (other requests go between)


@dataclass
class ArmCounts:
    """What the challenger did in this worker since it started."""

    answered: int = 0  # returned to callers (canary, A/B)
    shadowed: int = 0  # shadow answers logged
    failed: int = 0  # shadow answers that raised (the champion's answer was already sent)
    dropped: int = 0  # shadow answers not attempted: the queue was full
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ArmContext:
    """The service's answer context, answering with the challenger: its model, the service's
    features and clock, every record stamped with ``arm`` (``challenger`` or ``shadow``)."""

    def __init__(self, state: AnswerContext, router: Router, arm: str) -> None:
        self.state = state
        self.router = router
        self.arm = arm

    @property
    def clock(self) -> Callable[[], float]:
        return self.state.clock

    @property
    def stale_after(self) -> float:
        return self.state.stale_after

    @property
    def lookup(self) -> FeatureSource:
        return self.state.lookup

    def model(self, usecase: str) -> LoadedModel:
        model = self.router.challengers.get(usecase)
        if model is None:
            raise AnswerError(503, f"no {usecase} challenger is loaded")
        return model

    def record(self, rec: PredictionRecord) -> None:
        rec.arm = self.arm
        self.state.record(rec)

    def observe(self, usecase: str, outputs: list[str], values: np.ndarray) -> None:
        # The served distribution includes the challenger's returned answers, not its shadow.
        if self.arm != SHADOW:
            self.state.observe(usecase, outputs, values)


@dataclass
class _Route:
    name: str
    champion: Answer
    challenger: Answer
    shadow: Answer
    fields: tuple[str, ...]  # the ids an instance may name, the entity's own first
    champion_model: Callable[[], Any]  # the loaded champion (None when none)
    counts: ArmCounts = field(default_factory=ArmCounts)


class Router:
    """Rollout modes and challengers of the served use cases."""

    def __init__(
        self,
        names: Sequence[str],
        source_factory: Callable[[], ModelSource],
        configured: dict[str, str] | None = None,
        poll_seconds: float = 30.0,
    ) -> None:
        self.names = list(names)
        self.configured = dict(configured or {})
        self._source_factory = source_factory
        self.source: ModelSource | None = None
        self.poll_seconds = poll_seconds
        self.modes: dict[str, modes.Rollout] = {
            uc: modes.effective(None, self.configured.get(uc)) for uc in self.names
        }
        self.challengers = ModelStore([], self._source, poll_seconds, alias=CHALLENGER)
        self.error: str | None = None
        self.routes: dict[str, _Route] = {}
        self._pending: collections.deque[tuple[_Route, Any, str]] = collections.deque()
        self._scheduled = False
        # (this arm's version, the other's) -> features only the other takes
        self._foreign: dict[tuple[str, str], frozenset[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state ------------------------------------------------------------------------------
    def _source(self) -> ModelSource:
        if self.source is None:
            self.source = self._source_factory()
        return self.source

    def _client(self) -> Any:
        """The registry client of the model source (None for a source without one)."""
        return getattr(self._source(), "client", None)

    def refresh(self) -> dict[str, str]:
        """Read every use case's recorded mode, then load or drop challengers to match."""
        with self._lock:
            try:
                client = self._client()
                recorded = {
                    uc: (modes.stored(client, model_name(uc)) if client is not None else None)
                    for uc in self.names
                }
            except Exception as exc:  # an outage: keep the modes we have
                self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.warning("rollout modes not refreshed (registry unreachable): %s", self.error)
                return {}
            self.error = None
            self.modes = {
                uc: modes.effective(recorded[uc], self.configured.get(uc)) for uc in recorded
            }
            self.challengers.usecases = [uc for uc, m in self.modes.items() if m.active]
            for uc in list(self.challengers.models):
                if uc not in self.challengers.usecases:  # the rollout ended: free the model
                    del self.challengers.models[uc]
            return self.challengers.refresh() if self.challengers.usecases else {}

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="shopml-rollout-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._drain(None)  # what was queued is answered and logged before the log closes

    def serving(self, usecase: str) -> modes.Rollout:
        """The mode in effect: ``off`` when it needs a challenger that is not loaded (none in
        the registry, or the same version as the champion's)."""
        mode = self.modes.get(usecase, modes.Rollout())
        if mode.active and self.challengers.get(usecase) is None:
            return modes.Rollout(source=mode.source)
        return mode

    def describe(self, usecase: str, champion: str | None) -> dict[str, Any]:
        challenger = self.challengers.get(usecase)
        recorded = self.modes.get(usecase, modes.Rollout())
        route = self.routes.get(usecase)
        return {
            "usecase": usecase,
            "mode": self.serving(usecase).mode,
            "share": self.serving(usecase).share,
            "recorded": recorded.to_dict(),
            "champion": champion,
            "challenger": challenger.version if challenger else None,
            "problem": (
                f"{recorded.describe()} is set but no challenger is loaded "
                f"({self.challengers.errors.get(usecase, 'none in the registry')})"
                if recorded.active and challenger is None
                else None
            ),
            "worker": route.counts.to_dict() if route else None,
        }

    def record(self, usecase: str, rollout: modes.Rollout) -> modes.Rollout:
        """Record ``rollout`` in the registry (every worker follows within a poll) and apply it
        here now."""
        client = self._client()
        if client is None:
            raise AnswerError(503, "this service's model source has no registry to record into")
        saved = modes.record(client, model_name(usecase), rollout)
        self.refresh()
        return saved

    # -- answering --------------------------------------------------------------------------
    def wrap(
        self,
        uc: UseCaseLike,
        kind: AnswerKind,
        schemas: Schemas,
        champion: Answer,
        state: AnswerContext,
    ) -> Answer:
        """The route's answer function, following the use case's rollout mode."""
        route = _Route(
            uc.name,
            champion,
            kind.answerer(uc, ArmContext(state, self, CHALLENGER), schemas),
            kind.answerer(uc, ArmContext(state, self, SHADOW), schemas),
            tuple(lk.field for lk in lookups_for(uc.entity, uc.key)),
            lambda: _loaded(state, uc.name),
        )
        self.routes[uc.name] = route
        name = uc.name

        def answer(body: Any, rid: str) -> dict[str, Any]:
            mode = self.modes.get(name)
            if mode is None or not mode.active or self.challengers.get(name) is None:
                return champion(body, rid)
            if mode.mode == modes.SHADOW:
                out = champion(self._for(route, body, CHAMPION), rid)
                self._queue(route, body, rid)
                return out
            return self._routed(route, mode, body, rid)

        return answer

    def _entity(self, route: _Route, instance: Any) -> str | None:
        for name in route.fields:
            value = getattr(instance, name, None)
            if value is not None:
                return str(value)
        return None

    def _routed(self, route: _Route, mode: modes.Rollout, body: Any, rid: str) -> dict[str, Any]:
        name = route.name
        instances = getattr(body, "instances", None)
        if instances is None:
            if modes.challenger_answers(mode, name, self._entity(route, body)):
                out = route.challenger(self._for(route, body, CHALLENGER), rid)
                self._count(route, CHALLENGER, "ok", n=1)
                return out
            return route.champion(self._for(route, body, CHAMPION), rid)
        picks = [modes.challenger_answers(mode, name, self._entity(route, i)) for i in instances]
        if not any(picks):
            return _versioned(route.champion(self._for(route, body, CHAMPION), rid))
        if all(picks):
            out = _versioned(route.challenger(self._for(route, body, CHALLENGER), rid))
            self._count(route, CHALLENGER, "ok", n=len(picks))
            return out
        # Both arms in one batch: each answers its own instances, put back in order.
        mine = [i for i, p in zip(instances, picks, strict=True) if p]
        theirs = [i for i, p in zip(instances, picks, strict=True) if not p]
        mine_body = self._for(route, body.model_copy(update={"instances": mine}), CHALLENGER)
        theirs_body = self._for(route, body.model_copy(update={"instances": theirs}), CHAMPION)
        by_challenger = _versioned(route.challenger(mine_body, rid))
        by_champion = _versioned(route.champion(theirs_body, rid))
        self._count(route, CHALLENGER, "ok", n=len(mine))
        a, b = iter(by_challenger["predictions"]), iter(by_champion["predictions"])
        by_champion["predictions"] = [next(a) if p else next(b) for p in picks]
        return by_champion

    def _for(self, route: _Route, body: Any, arm: str) -> Any:
        """``body`` for one arm: explicit features that only the *other* arm's model takes are
        left out (a caller sends what either model may need; a name neither takes is still
        refused by the answer)."""
        champion, challenger = route.champion_model(), self.challengers.get(route.name)
        if champion is None or challenger is None:
            return body
        mine, other = (challenger, champion) if arm != CHAMPION else (champion, challenger)
        key = (mine.version, other.version)
        foreign = self._foreign.get(key)
        if foreign is None:
            foreign = frozenset(other.index) - frozenset(mine.index)
            self._foreign[key] = foreign
        if not foreign:
            return body
        instances = getattr(body, "instances", None)
        if instances is None:
            return _without(body, foreign)
        return body.model_copy(update={"instances": [_without(i, foreign) for i in instances]})

    def _count(self, route: _Route, arm: str, outcome: str, n: int = 1) -> None:
        if outcome == "ok":
            if arm == SHADOW:
                route.counts.shadowed += n
            else:
                route.counts.answered += n
        elif outcome == "failed":
            route.counts.failed += n
        else:
            route.counts.dropped += n
        metrics.ROLLOUT_ANSWERS.labels(route.name, arm, outcome).inc(n)

    # -- shadow answers, after the response -------------------------------------------------
    def _queue(self, route: _Route, body: Any, rid: str) -> None:
        if len(self._pending) >= SHADOW_QUEUE:
            self._count(route, SHADOW, "dropped")
            return
        self._pending.append((route, body, rid))

    def after(self) -> None:
        """Called by a route once its response is sent: schedule the queued shadow answers on
        the event loop, behind that response (nothing to do when none is queued)."""
        if not self._pending or self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (a direct call): answer them now
            self._drain(None)
            return
        self._scheduled = True
        loop.call_soon(self._turn, loop)

    def _turn(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        self._drain(SHADOW_SLICE)
        if self._pending:  # more: let the requests that arrived meanwhile go first
            self._scheduled = True
            loop.call_soon(self._turn, loop)

    def _drain(self, limit: int | None) -> None:
        n = len(self._pending) if limit is None else min(limit, len(self._pending))
        for _ in range(n):
            route, body, rid = self._pending.popleft()
            try:
                route.shadow(self._for(route, body, CHALLENGER), rid)
            except Exception as exc:  # the champion's answer is sent: count it, never raise
                route.counts.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                self._count(route, SHADOW, "failed")
                continue
            self._count(route, SHADOW, "ok")


def _without(instance: Any, foreign: frozenset[str]) -> Any:
    features = getattr(instance, "features", None)
    if not features or foreign.isdisjoint(features):
        return instance
    kept = {k: v for k, v in features.items() if k not in foreign}
    return instance.model_copy(update={"features": kept})


def _loaded(state: AnswerContext, usecase: str) -> Any:
    try:
        return state.model(usecase)
    except AnswerError:
        return None


def _versioned(answer: dict[str, Any]) -> dict[str, Any]:
    """A batch answer whose predictions each name the version that answered them (a canary can
    split a batch between two versions)."""
    version = answer.get("model_version")
    for p in answer.get("predictions", ()):
        p.setdefault("model_version", version)
    return answer


# -- admin routes -----------------------------------------------------------------------------
class _RolloutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500, description="Why, kept with the mode.")


class RolloutStill(_RolloutBody):
    """``off`` (the champion answers everything) or ``shadow`` (the challenger also answers,
    unseen): no share."""

    mode: Literal["off", "shadow"] = Field(examples=["shadow"])


class RolloutSplit(_RolloutBody):
    """``canary`` or ``ab``: the challenger answers a share of entities."""

    mode: Literal["canary", "ab"] = Field(examples=["canary"])
    share: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Share of entities the challenger answers (canary: default 0.1, ab: 0.5).",
        examples=[0.1],
    )


# One of the two, told apart by ``mode`` (the document says exactly which bodies are valid).
RolloutRequest = Annotated[RolloutStill | RolloutSplit, Field(discriminator="mode")]


def rollout_router(
    router: Router, names: list[str], champion: Callable[[str], str | None], admin: Any
) -> APIRouter:
    """``GET /v1/admin/rollout`` (every use case) and ``PUT /v1/admin/rollout/{usecase}``."""
    from shopml.serving.app import error_responses  # (app builds this router: loaded by now)

    api = APIRouter()
    guard = error_responses(401, 403, 431)

    @api.get(
        "/v1/admin/rollout",
        tags=["admin"],
        dependencies=[Depends(admin)],
        summary="Rollout mode, challenger and this worker's challenger counts per use case",
        responses=guard,
    )
    async def show() -> dict[str, Any]:
        return {"rollout": [router.describe(uc, champion(uc)) for uc in names]}

    @api.put(
        "/v1/admin/rollout/{usecase}",
        tags=["admin"],
        dependencies=[Depends(admin)],
        summary="Set a use case's rollout mode (recorded in the registry: every worker follows)",
        responses={
            **error_responses(
                400,
                401,
                403,
                404,
                409,
                413,
                422,
                431,
                503,
                s404="A use case this service does not serve",
                s409="No challenger to roll out",
                s422="An unknown mode or a share out of range",
                s503="The registry could not record the mode",
            ),
        },
    )
    async def set_mode(
        usecase: str,
        body: Annotated[
            RolloutRequest,
            Body(openapi_examples={"canary": {"value": {"mode": "canary", "share": 0.1}}}),
        ],
    ) -> dict[str, Any]:
        if usecase not in names:
            raise HTTPException(404, f"this service does not serve {usecase!r}")
        try:
            share = body.share if isinstance(body, RolloutSplit) else None
            wanted = modes.make(body.mode, share, reason=body.reason, by="admin route")
        except modes.RolloutError as exc:
            raise HTTPException(422, str(exc)) from None

        def apply() -> dict[str, Any]:
            source = router._source()
            if wanted.active and source.alias_version(usecase, CHALLENGER) is None:
                raise HTTPException(
                    409,
                    f"{model_name(usecase)} has no challenger to put in {wanted.mode}: "
                    "train one (`shopml train`) first",
                )
            router.record(usecase, wanted)
            return router.describe(usecase, champion(usecase))

        try:
            return await run_in_threadpool(apply)
        except AnswerError as exc:
            raise HTTPException(exc.status_code, exc.detail) from None
        except HTTPException:
            raise
        except Exception as exc:  # the registry is down or refused the write
            raise HTTPException(
                503, f"the registry could not record the rollout: {type(exc).__name__}: {exc}"
            ) from None

    return api
