"""The FastAPI app: one service for every use case, routes generated from the use cases.

``create_app()`` builds it from settings: the service routes (health, readiness, metrics,
models), the admin routes, and one scoring route per use case, ``POST /v1/<name>/<verb>``,
built from the use case's declared answer kind (:mod:`shopml.runtime.answers`: ``predict``,
``recommend``, ``suggest``), which owns the route's schemas, examples, answer and prediction
record. Nothing here names a use case.

The scoring routes are declared to FastAPI (so ``/docs`` and ``/openapi.json`` describe their
bodies, examples and the bearer scheme) but answered by a plain ASGI handler each, which the
metrics middleware calls directly: check the ``Authorization`` header (a digest and a set
lookup), read the raw body and validate it with a precompiled pydantic ``TypeAdapter``
(``validate_json``: no ``json.loads``, no dependency solving), then the kind's answerer (look
features up, cached; fill a preallocated numpy row; call the scorer; append the record to the
prediction-log queue), and answer with orjson. Nothing on that path does I/O except a
cache-missing lookup or waits on another thread. Errors keep FastAPI's shapes:
``{"detail": ...}``, and 422s list the fields as ``["body", ...]`` locations.

(No ``from __future__ import annotations`` here: FastAPI reads the generated routes'
annotations at run time, and they name classes made by the answer kinds.)
"""

import gc
import hashlib
import itertools
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.responses import Response

from shopml.runtime.answers import AnswerError, Schemas
from shopml.runtime.predictions import PredictionRecord
from shopml.serving import metrics
from shopml.serving.features import FeatureLookup
from shopml.serving.models import (
    LoadedModel,
    MlflowSource,
    ModelSource,
    ModelStore,
    ServingCache,
)
from shopml.serving.predlog import PredictionLog, open_writer
from shopml.serving.rollout import Router, rollout_router
from shopml.serving.swap import CatchUp, SwapBoard, Swaps

if TYPE_CHECKING:
    from shopml.online.store import OnlineStore
    from shopml.settings import Settings
    from shopml.usecases.base import UseCase

log = logging.getLogger("shopml.serving")

Clock = Callable[[], float]
# A route's handler: plain ASGI, returning the status it answered (for the metrics).
Handler = Callable[[Any, Any, Any], Awaitable[int]]
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
# Tags of a body's alternative shapes (a predict route's instance or batch), stripped from
# error locations.
_SHAPES = ("instance", "batch")


class ServingConfigError(RuntimeError):
    """The service refuses to start with this configuration."""


# What a 422 shows of the input it refuses: a short excerpt (an error never echoes a request
# back: a 1 MiB string would come back whole, and integers beyond 64 bits cannot be written).
EXCERPT_CHARS = 80
MAX_ERRORS = 20  # fields listed in one 422; the rest are counted


def _cut(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _tokens(value: Any) -> Iterator[str]:
    """JSON text of a parsed input, piece by piece (a consumer stops when it has enough)."""
    if isinstance(value, dict):
        yield "{"
        for i, (k, item) in enumerate(value.items()):
            yield ("," if i else "") + orjson.dumps(_cut(str(k))).decode() + ":"
            yield from _tokens(item)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _tokens(item)
        yield "]"
    elif isinstance(value, int | float) and not isinstance(value, bool):
        shown = excerpt(value)
        yield shown if isinstance(shown, str) else orjson.dumps(shown).decode()
    else:
        yield orjson.dumps(excerpt(value)).decode()


def _json_text(value: Any, budget: int) -> str:
    """Compact JSON text of a parsed input, written only up to ``budget`` characters (a huge
    list costs no more than a short one)."""
    parts: list[str] = []
    size = 0
    for token in _tokens(value):
        parts.append(token)
        size += len(token)
        if size >= budget:
            break
    return "".join(parts)


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> Any:
    """A short, JSON-writable stand-in for a piece of request input: numbers, booleans and
    null as they are (an integer beyond 64 bits, NaN and infinities as text), strings and raw
    bytes cut to ``limit`` characters, objects and arrays as cut JSON text."""
    if isinstance(value, bool) or value is None:
        shown: Any = value
    elif isinstance(value, int):
        shown = value if -(2**63) <= value < 2**64 else _cut(str(value), limit)
    elif isinstance(value, float):
        shown = value if math.isfinite(value) else str(value)
    elif isinstance(value, bytes | bytearray):
        shown = _cut(bytes(value[: limit * 4]).decode("utf-8", "replace"), limit)
    elif isinstance(value, dict | list | tuple):
        shown = _cut(_json_text(value, limit), limit)
    else:
        shown = _cut(str(value), limit)
    return shown


def _jsonable(value: Any) -> Any:
    # What orjson cannot write in an answer (an exception in an error's context, say).
    return excerpt(value)


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # orjson writes NaN as null and numpy scalars natively; no jsonable_encoder pass.
    return Response(
        orjson.dumps(payload, option=_JSON_OPTS),
        status,
        headers=headers,
        media_type="application/json",
    )


class RequestIds:
    """Request ids: a random per-process prefix and a counter (32 hex digits, like a UUID4's,
    unique across workers and restarts without a system call per request). A caller's own
    ``x-request-id`` (printable, at most 64 characters) is kept."""

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(1)

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"

    def of(self, given: bytes | None) -> str:
        if given:
            text = given.decode("latin-1")
            if len(text) <= 64 and text.isprintable():
                return text
        return self.new()


def _validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as FastAPI reports them (locations under ``body``), each input shown
    as a short excerpt; at most :data:`MAX_ERRORS`, then one entry counting the rest."""
    errors = exc.errors(include_url=False)
    out = []
    for e in errors[:MAX_ERRORS]:
        loc = [p if isinstance(p, int) else _cut(str(p)) for p in e["loc"]]
        if loc and loc[0] in _SHAPES:
            loc = loc[1:]
        item: dict[str, Any] = {
            "type": e["type"],
            "loc": ["body", *loc],
            "msg": _cut(e["msg"], 300),
        }
        item["input"] = excerpt(e.get("input"))
        if "ctx" in e:
            item["ctx"] = {str(k): excerpt(v) for k, v in e["ctx"].items()}
        out.append(item)
    if len(errors) > MAX_ERRORS:
        more = len(errors) - MAX_ERRORS
        out.append({"type": "too_many_errors", "loc": ["body"], "msg": f"and {more} more errors"})
    return out


class BodyTooLarge(Exception):
    """A request body over the service's cap (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.status_code = 413
        self.detail = (
            f"request body over {limit} bytes (the service's limit, SHOPML_SERVE_MAX_BODY_BYTES)"
        )
        self.headers: dict[str, str] | None = None


def declared_length(headers: Any) -> int | None:
    """The ``Content-Length`` a request head declares (None: not given, chunked)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


async def _read_body(receive: Any, limit: int) -> bytes:
    """The request body, refused (:class:`BodyTooLarge`) as soon as more than ``limit`` bytes
    have arrived: never more than the cap and one chunk in memory, chunked bodies included."""
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    size = len(body)
    if size > limit:
        raise BodyTooLarge(limit)
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyLimit:
    """ASGI middleware: the body cap for every route the service does not answer on its fast
    path (those read their body with :func:`_read_body`). A declared length over the cap is
    answered 413 at once, before any byte of the body is read; a body that grows over it while
    it streams in (chunked, or a lying length) is cut off there and answered 413."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        length = declared_length(scope["headers"])
        if length is not None and length > limit:
            await _send_json(send, 413, {"detail": BodyTooLarge(limit).detail}, "")
            return
        received = 0
        started = False

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:
            if started:
                raise
            await _send_json(send, 413, {"detail": exc.detail}, "")


async def _send_json(
    send: Any, status: int, payload: Any, rid: str, headers: Mapping[str, str] | None = None
) -> None:
    body = orjson.dumps(payload, option=_JSON_OPTS, default=_jsonable)
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if rid:
        raw.append((b"x-request-id", rid.encode("latin-1")))
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# -- documented error answers --------------------------------------------------------------------
class ErrorAnswer(BaseModel):
    """An error: what went wrong (a sentence, or an object naming the id at fault)."""

    detail: str | dict[str, Any]


class FieldError(BaseModel):
    """One refused field: where (``["body", ...]``), why, and a short excerpt of the input."""

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class InvalidRequest(BaseModel):
    """A malformed request: the fields at fault (at most 20, then a count of the rest)."""

    detail: list[FieldError]


def error_responses(*codes: int, **why: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for these statuses (``why``: ``s404="..."`` overrides a default
    description). 431 comes from the HTTP layer, as plain text."""
    default = {
        400: "A body that cannot be read (not UTF-8 JSON)",
        401: "No API key, or an unknown one",
        403: "An API key without admin scope",
        404: "Not found",
        409: "In conflict with the current state",
        413: "Request body over the service's limit (SHOPML_SERVE_MAX_BODY_BYTES, 1 MiB)",
        422: "Malformed request: the fields at fault",
        431: "Request head (request line and headers) over 16 KiB",
        503: "Not available now",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        text = why.get(f"s{code}", default[code])
        if code == 431:
            out[code] = {
                "description": text,
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        else:
            out[code] = {
                "description": text,
                "model": InvalidRequest if code == 422 else ErrorAnswer,
            }
    return out


# -- auth --------------------------------------------------------------------------------------
class Auth:
    """Bearer API keys in two scopes; keys are kept as SHA-256 digests and never logged."""

    def __init__(self, api_keys: list[str], admin_keys: list[str], open_: bool) -> None:
        self.score = {self.digest(k) for k in api_keys}
        self.admin = {self.digest(k) for k in admin_keys}
        self.open = open_  # development with no keys configured: no auth
        # Declares the scheme in the OpenAPI document (and parses the header on the routes
        # FastAPI answers itself); the scoring routes read the header directly.
        self.bearer = HTTPBearer(
            auto_error=False,
            description="An API key from SHOPML_API_KEYS (scoring) or SHOPML_ADMIN_KEYS (admin).",
        )

    @staticmethod
    def digest(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    @staticmethod
    def bearer_key(header: bytes | None) -> str | None:
        """The key of an ``Authorization: Bearer <key>`` header (None for anything else),
        parsed as FastAPI's ``HTTPBearer`` does."""
        if not header:
            return None
        scheme, _, key = header.decode("latin-1").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        return key

    def check(self, key: str | None, admin: bool) -> None:
        """401 without a known key, 403 for a scoring key on an admin route."""
        if self.open:
            return
        if not key:
            raise HTTPException(
                401,
                "missing API key: send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        d = self.digest(key)
        if d in self.admin:
            return
        if d in self.score:
            if admin:
                raise HTTPException(403, "this API key has no admin scope")
            return
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})

    def scoring_dep(self) -> Callable[..., Awaitable[None]]:
        """A dependency for routes FastAPI answers (async: no thread hop per request)."""
        bearer = self.bearer

        async def scoring(
            creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> None:
            self.check(creds.credentials if creds else None, admin=False)

        return scoring

    def admin_dep(self) -> Callable[..., Awaitable[None]]:
        bearer = self.bearer

        async def admin(
            creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> None:
            self.check(creds.credentials if creds else None, admin=True)

        return admin


def json_handler(
    auth: Auth,
    ids: RequestIds,
    adapter: TypeAdapter[Any],
    answer: Callable[[Any, str], Any],
    max_body: int,
    after: Callable[[], None] | None = None,
) -> Handler:
    """A POST route as plain ASGI: auth header, the raw body (at most ``max_body`` bytes, else
    413) through ``adapter.validate_json``, ``answer(body, request_id)``, orjson out, then
    ``after()`` (work that waits until the response is sent: a rollout's shadow answers).
    ``HTTPException`` and the answer kinds' ``AnswerError`` become their status with FastAPI's
    ``{"detail": ...}`` body; anything else propagates (the server answers 500)."""
    check = auth.check
    bearer_key = auth.bearer_key
    validate = adapter.validate_json

    async def handle(scope: Any, receive: Any, send: Any) -> int:
        authorization = given_id = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"x-request-id":
                given_id = value
            elif name == b"content-length":
                length = value
        rid = ids.of(given_id)
        headers = None
        try:
            check(bearer_key(authorization), False)
            if length is not None and length.isdigit() and int(length) > max_body:
                raise BodyTooLarge(max_body)  # refused before a byte of it is read
            try:
                raw = await _read_body(receive, max_body)
            except ClientGone:
                return 499  # nobody to answer
            try:
                body = validate(raw)
            except ValidationError as exc:
                raise HTTPException(422, _validation_errors(exc)) from None
            status, payload = 200, answer(body, rid)
        except (HTTPException, AnswerError, BodyTooLarge) as exc:
            status, payload, headers = exc.status_code, {"detail": exc.detail}, exc.headers
        await _send_json(send, status, payload, rid, headers)
        if after is not None:
            after()
        return status

    return handle


def _mount(
    app: FastAPI,
    fast: dict[str, Handler],
    auth: Auth,
    path: str,
    documented: Callable[..., Any],
    handler: Handler,
    **route: Any,
) -> None:
    """Declare ``path`` to FastAPI with ``documented``'s signature (the OpenAPI body schema,
    examples, bearer scheme) and answer it with ``handler``: the route's ASGI app is replaced
    (requests FastAPI routes itself still reach it), and the metrics middleware calls it
    directly for an exact path match."""
    app.add_api_route(
        path, documented, methods=["POST"], dependencies=[Depends(auth.bearer)], **route
    )
    added = app.router.routes[-1]
    assert isinstance(added, APIRoute) and added.path == path
    added.app = handler  # type: ignore[assignment]
    fast[path] = handler


# -- state -------------------------------------------------------------------------------------
class ServiceState:
    """Everything the routes share: models, online features, prediction log, settings, the
    clock that stamps predictions and ages features."""

    def __init__(
        self,
        settings: "Settings",
        store: ModelStore,
        lookup_factory: Callable[[], FeatureLookup],
        log_factory: Callable[[], PredictionLog],
        clock: Clock = time.time,
        rollout: Router | None = None,
    ) -> None:
        self.settings = settings
        self.models = store
        self.rollout = rollout  # challengers in shadow, canary or A/B (serving.rollout)
        self._lookup_factory = lookup_factory
        self._log_factory = log_factory
        self.clock = clock
        self.lookup = FeatureLookup(None)
        self.log = PredictionLog(self._no_writer)
        self.stale_after = settings.feature_max_age_hours * 3600.0
        self.ids = RequestIds()
        self._pred_children: dict[tuple[str, str], Any] = {}
        self.dropped_reported = 0

    @staticmethod
    def _no_writer() -> Any:
        raise RuntimeError("the service has not started")

    def start(self) -> None:
        self.log = self._log_factory()
        self.log.start()
        try:
            self.lookup = self._lookup_factory()
        except Exception as exc:
            log.warning("online store unavailable: %s", exc)
            self.lookup = FeatureLookup(None)
            self.lookup.error = f"{type(exc).__name__}: {str(exc)[:200]}"
        self.models.start()
        if self.rollout is not None:
            self.rollout.start()
        metrics.REGISTRY_UP.set(1 if self.models.registry_ok else 0)

    def stop(self) -> None:
        self.models.stop()
        if self.rollout is not None:
            self.rollout.stop()
        self.log.close()
        if self.lookup.store is not None:
            self.lookup.store.close()

    def model(self, usecase: str) -> LoadedModel:
        """The model serving ``usecase``, or a 503 naming why there is none."""
        model = self.models.get(usecase)
        if model is None:
            reason = self.models.errors.get(usecase, "not loaded yet")
            raise AnswerError(503, f"no {usecase} model is being served ({reason})")
        return model

    def record(self, rec: PredictionRecord) -> None:
        """Queue one prediction-log record."""
        self.log.append(rec)

    def observe(self, usecase: str, outputs: list[str], values: np.ndarray) -> None:
        """Prediction distributions (bound histogram children cached per output)."""
        for j, name in enumerate(outputs):
            child = self._pred_children.get((usecase, name))
            if child is None:
                child = metrics.PREDICTIONS.labels(usecase, name)
                self._pred_children[(usecase, name)] = child
            col = values[:, j] if values.ndim == 2 else values
            for v in col.tolist():
                if v == v:  # noqa: PLR0124 - the NaN test without a call (per prediction)
                    child.observe(v)


# -- routes ------------------------------------------------------------------------------------
def _documented(request: Any, examples: dict[str, Any]) -> Callable[..., Awaitable[Response]]:
    """A stand-in endpoint whose signature documents the body (schema and examples)."""

    async def documented(
        body: Annotated[request, Body(openapi_examples=examples)],
    ) -> Response:
        raise NotImplementedError  # documents the route; json_handler answers it

    return documented


def add_answer_route(
    app: FastAPI,
    fast: dict[str, Handler],
    auth: Auth,
    state: ServiceState,
    usecase: "UseCase",
    max_batch: int,
) -> Schemas:
    """The scoring route of one use case, built from its answer kind; returns its schemas."""
    kind = usecase.answer
    schemas = kind.schemas(usecase, max_batch)
    answer = kind.answerer(usecase, state, schemas)
    rollout = state.rollout
    if rollout is not None:
        answer = rollout.wrap(usecase, kind, schemas, answer, state)
    responses: dict[int | str, dict[str, Any]] = {200: {"model": schemas.response}}
    responses.update(error_responses(401, 413, 422, 431, 503))
    responses.update(
        {code: {"description": why, "model": ErrorAnswer} for code, why in schemas.errors.items()}
    )
    _mount(
        app,
        fast,
        auth,
        kind.path(usecase),
        _documented(schemas.request, schemas.examples),
        json_handler(
            auth,
            state.ids,
            schemas.adapter,
            answer,
            state.settings.serve_max_body_bytes,
            rollout.after if rollout else None,
        ),
        tags=[usecase.name],
        summary=schemas.summary,
        description=schemas.description,
        responses=responses,
        name=f"{kind.verb}_{usecase.name}",
    )
    return schemas


# -- the app -----------------------------------------------------------------------------------
def no_key_message(settings: "Settings") -> str:
    """Why the service will not start without a key, and exactly what to set."""
    if settings.env == "production":
        return (
            "no API key configured and SHOPML_ENV=production: set SHOPML_API_KEYS=<key>[,<key>] "
            "(and SHOPML_ADMIN_KEYS=<key> for /v1/admin/*); refusing to serve without auth"
        )
    return (
        "no API key configured: set SHOPML_API_KEYS=<key>[,<key>] (and SHOPML_ADMIN_KEYS=<key> "
        "for /v1/admin/*), or, on your own machine, opt into open mode with `shopml serve "
        "--insecure-dev` (or SHOPML_ENV=development), which binds to 127.0.0.1 only; "
        "refusing to serve without auth"
    )


def auth_from_settings(settings: "Settings", in_process: bool = False) -> Auth:
    """The API keys of the settings, or ``ServingConfigError`` when none is configured and
    open mode was not opted into (``in_process``: an app never bound to a socket)."""
    api_keys = [k.get_secret_value() for k in settings.api_keys]
    admin_keys = [k.get_secret_value() for k in settings.admin_keys]
    if not in_process and (
        (settings.env == "production" and not api_keys)
        or not (api_keys or admin_keys or settings.open_mode_allowed)
    ):
        raise ServingConfigError(no_key_message(settings))
    if not api_keys and not admin_keys:
        log.warning("no API keys configured: serving without authentication (open mode)")
    return Auth(api_keys, admin_keys, open_=not api_keys and not admin_keys)


def _usecases(selected: "Sequence[str | UseCase] | None") -> "list[UseCase]":
    """The use cases to serve: names of registered ones, or use-case objects themselves (a
    use case defined elsewhere, a test's); default every registered one."""
    from shopml.usecases import get_usecases, select_usecases

    registered = get_usecases()
    if selected is None:
        return list(registered.values())
    select_usecases([u for u in selected if isinstance(u, str)])  # names the unknown ones
    return [registered[u] if isinstance(u, str) else u for u in selected]


def service_router(state: ServiceState, names: list[str], scoring: Any) -> APIRouter:
    """Health, readiness, metrics and what is served."""
    router = APIRouter()
    model_store = state.models

    @router.get(
        "/health", tags=["service"], summary="Liveness (no auth)", responses=error_responses(431)
    )
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/ready",
        tags=["service"],
        summary="Models loaded and stores reachable",
        responses={503: {"description": "No model loaded at all"}, **error_responses(431)},
    )
    async def ready() -> Response:
        loaded = {uc: (m.version if (m := model_store.get(uc)) else None) for uc in names}
        problems = []
        if not model_store.registry_ok:
            problems.append(f"registry unreachable: {model_store.registry_error}")
        if not state.lookup.ok:
            problems.append(f"online store: {state.lookup.error}")
        if state.log.error:
            problems.append(f"prediction log: {state.log.error}")
        missing = [uc for uc, v in loaded.items() if v is None]
        if missing:
            problems.append(f"no model for {', '.join(missing)}")
        any_loaded = any(v is not None for v in loaded.values())
        status = "unavailable" if not any_loaded else ("degraded" if problems else "ready")
        metrics.REGISTRY_UP.set(1 if model_store.registry_ok else 0)
        return _json(
            {
                "status": status,
                "problems": problems,
                "models": loaded,
                "registry": {
                    "ok": model_store.registry_ok,
                    "error": model_store.registry_error,
                    "last_poll": model_store.last_poll,
                    "poll_seconds": model_store.poll_seconds,
                },
                "online_store": {"ok": state.lookup.ok, "error": state.lookup.error},
                "prediction_log": {
                    "pending": state.log.pending,
                    "written": state.log.written,
                    "dropped": state.log.dropped,
                    "error": state.log.error,
                },
            },
            200 if any_loaded else 503,
        )

    @router.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics (no auth)",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **error_responses(431),
        },
    )
    async def metrics_page() -> Response:
        metrics.LOG_QUEUE.set(state.log.pending)
        dropped = state.log.dropped - state.dropped_reported
        if dropped > 0:
            metrics.LOG_DROPPED.inc(dropped)
            state.dropped_reported = state.log.dropped
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    @router.get(
        "/v1/models",
        tags=["service"],
        summary="What each use case is serving",
        dependencies=[Depends(scoring)],
        responses=error_responses(401, 431),
    )
    async def models() -> Response:
        out = []
        for uc in names:
            m = model_store.get(uc)
            out.append(
                m.describe()
                if m
                else {"usecase": uc, "version": None, "error": model_store.errors.get(uc)}
            )
        return _json({"models": out})

    return router


def admin_router(
    state: ServiceState, names: list[str], admin: Any, swaps: Swaps | None = None
) -> APIRouter:
    """Routes for operators (admin scope). ``swaps``: the board a reload is published on for
    the service's other workers (None: this is the only one)."""
    router = APIRouter()
    model_store = state.models

    @router.post(
        "/v1/admin/reload",
        tags=["admin"],
        dependencies=[Depends(admin)],
        summary="Check the registry now and swap in moved champions (admin scope)",
        description=(
            "Under `shopml serve --workers N` the answer says `workers: all`: every worker "
            "answers with the versions this reload swapped in from its next request on."
        ),
        responses=error_responses(401, 403, 413, 431),
    )
    async def reload() -> Response:
        changes = await run_in_threadpool(model_store.refresh)
        generation = None
        if swaps is not None:
            # Every worker adopts these versions before its next answer (serving.swap).
            generation = await run_in_threadpool(swaps.publish)
        return _json(
            {
                "changes": changes,
                "workers": "all" if swaps is not None else "this one",
                "generation": generation,
                "registry_ok": model_store.registry_ok,
                "registry_error": model_store.registry_error,
                "models": {uc: (m.version if (m := model_store.get(uc)) else None) for uc in names},
            }
        )

    return router


def create_app(
    settings: "Settings | None" = None,
    *,
    source_factory: Callable[[], ModelSource] | None = None,
    online_store_factory: "Callable[[], OnlineStore] | None" = None,
    usecases: "Sequence[str | UseCase] | None" = None,
    clock: Clock | None = None,
    in_process: bool = False,
) -> FastAPI:
    """The service. Refuses (``ServingConfigError``) to run without an API key unless the
    caller opted into open mode (:attr:`Settings.open_mode_allowed`), or the app is only driven
    in this process (``in_process``: a replay's test client, never bound to a socket).

    ``usecases`` are names of registered use cases or use-case objects (default: every
    registered one); each gets the route its answer kind declares. ``clock`` (default
    ``time.time``) gives the POSIX time that stamps every prediction-log record and that
    feature ages are measured against: a replay can drive the service through simulated days
    in-process.
    """
    from shopml.settings import get_settings

    settings = settings or get_settings()
    auth = auth_from_settings(settings, in_process)
    served = _usecases(usecases)
    names = [uc.name for uc in served]
    state = _service_state(settings, names, source_factory, online_store_factory, clock)
    if in_process:  # a replay drives it: it waits for the registry as long as it takes
        state.models.start_seconds = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.home.mkdir(parents=True, exist_ok=True)
        await run_in_threadpool(state.start)
        # What exists now (libraries, models) lives as long as the service: freeze it out of
        # the collector's sight, or each full collection walks it all again (100-200 ms
        # pauses under load, measured). Unfrozen at shutdown so it can be freed.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await run_in_threadpool(state.stop)
            gc.unfreeze()

    app = FastAPI(
        title="shopml",
        version="1",
        summary="Every shopml use case behind one API: predictions, recommendations, prices.",
        description=(
            "Send `Authorization: Bearer <key>` (a key from `SHOPML_API_KEYS`; admin routes "
            "want one from `SHOPML_ADMIN_KEYS`). Every answer carries the model version and a "
            "request id (also in the `x-request-id` header)."
        ),
        lifespan=lifespan,
    )
    app.state.shopml = state
    fast: dict[str, Handler] = {}  # filled as the scoring routes are added below
    # Inner first: the body cap for the routes FastAPI answers (the fast scoring handlers,
    # which the metrics middleware calls directly, apply it as they read), then the metrics.
    app.add_middleware(BodyLimit, limit=settings.serve_max_body_bytes)
    app.add_middleware(metrics.MetricsMiddleware, fast=fast)
    swaps = None
    if settings.serve_shared_dir is not None:
        # Workers of one service: a reload reaches them all (outermost: before anything).
        swaps = Swaps(SwapBoard(settings.serve_shared_dir / "reload.board"), state.models)
        app.add_middleware(CatchUp, swaps=swaps)
    app.include_router(service_router(state, names, auth.scoring_dep()))
    app.include_router(admin_router(state, names, auth.admin_dep(), swaps))
    if state.rollout is not None:
        app.include_router(
            rollout_router(
                state.rollout,
                names,
                lambda uc: m.version if (m := state.models.get(uc)) else None,
                auth.admin_dep(),
            )
        )
    for uc in served:
        add_answer_route(app, fast, auth, state, uc, settings.serve_max_batch)
    app.openapi = served_openapi(app, state, served)  # type: ignore[method-assign]
    return app


def served_openapi(
    app: FastAPI, state: ServiceState, served: "Sequence[UseCase]"
) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: FastAPI's document, completed by each answer kind with what the models
    being served settle (a predict route's feature names), rebuilt when a version changes."""
    built: dict[tuple[Any, ...], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        models = [state.models.get(uc.name) for uc in served]
        key = tuple(m.version if m else None for m in models)
        if key not in built:
            app.openapi_schema = None
            doc = FastAPI.openapi(app)
            components = doc.get("components", {}).get("schemas", {})
            for uc, model in zip(served, models, strict=True):
                uc.answer.document(uc, model, components)
            built.clear()
            built[key] = doc
        return built[key]

    return openapi


def _service_state(
    settings: "Settings",
    names: list[str],
    source_factory: Callable[[], ModelSource] | None,
    online_store_factory: "Callable[[], OnlineStore] | None",
    clock: Clock | None,
) -> ServiceState:
    """Models, online features and the prediction log, as the settings name them."""

    def default_source() -> ModelSource:
        return MlflowSource(settings)

    def default_store() -> "OnlineStore":
        from shopml.online import open_store

        return open_store(settings)

    store_factory = online_store_factory or default_store
    model_store = ModelStore(
        names,
        source_factory or default_source,
        settings.registry_poll_seconds,
        on_swap=metrics.model_swapped,
        cache=ServingCache(settings.home / "serving-cache"),
        start_seconds=settings.registry_start_seconds,
    )
    home = settings.home
    metrics.watch_monitoring(settings.monitoring_store_uri, home)
    rollout = Router(
        names, source_factory or default_source, settings.rollout, settings.registry_poll_seconds
    )
    return ServiceState(
        settings,
        model_store,
        lambda: FeatureLookup(store_factory(), ttl=settings.feature_cache_seconds),
        lambda: PredictionLog(
            lambda: open_writer(settings.monitoring_store_uri, home),
            settings.prediction_log_batch,
            settings.prediction_log_flush_seconds,
            settings.prediction_log_max_queue,
        ),
        clock or time.time,
        rollout,
    )
