"""The FastAPI app: one service for every use case, routes generated from the use cases.

``create_app()`` builds it from settings. Every use case gets ``POST /v1/<name>/predict``
except those with their own kind of answer (``recommender`` recommends, ``pricing`` suggests).

The scoring routes are declared to FastAPI (so ``/docs`` and ``/openapi.json`` describe their
bodies, examples and the bearer scheme) but answered by a plain ASGI handler each, which the
metrics middleware calls directly: check the ``Authorization`` header (a digest and a set
lookup), read the raw body and validate it with a precompiled pydantic ``TypeAdapter``
(``validate_json``: no ``json.loads``, no dependency solving), look features up (cached), fill
a preallocated numpy row, call the scorer's ``predict_matrix``, append to the prediction-log
queue, and answer with orjson. Nothing on that path does I/O except a cache-missing lookup or
waits on another thread. Errors keep FastAPI's shapes: ``{"detail": ...}``, and 422s list the
fields as ``["body", ...]`` locations.

(No ``from __future__ import annotations`` here: FastAPI reads the generated routes'
annotations at run time, and they name classes local to the route factories.)
"""

import gc
import hashlib
import itertools
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Union

import numpy as np
import orjson
from fastapi import Body, Depends, FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Discriminator, Tag, TypeAdapter, ValidationError
from starlette.responses import Response

from shopml.serving import metrics
from shopml.serving.features import FeatureLookup, MissingEntity, lookups_for
from shopml.serving.models import LoadedModel, MlflowSource, ModelSource, ModelStore
from shopml.serving.predlog import PredictionLog, open_writer
from shopml.serving.schemas import (
    BatchResponse,
    PredictResponse,
    RecommendRequest,
    RecommendResponse,
    SuggestRequest,
    SuggestResponse,
    batch_model,
    instance_model,
    predict_examples,
)

if TYPE_CHECKING:
    from shopml.online.store import OnlineStore
    from shopml.settings import Settings

log = logging.getLogger("shopml.serving")

# Use cases whose answer is not a prediction per instance get their own route.
SPECIAL_ROUTES = {"recommender": "recommend", "pricing": "suggest"}
NAN = float("nan")
Clock = Callable[[], float]
# A route's handler: plain ASGI, returning the status it answered (for the metrics).
Handler = Callable[[Any, Any, Any], Awaitable[int]]
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
# Tags of the predict body's two shapes (stripped from error locations).
_ONE, _BATCH = "instance", "batch"


class ServingConfigError(RuntimeError):
    """The service refuses to start with this configuration."""


def _jsonable(value: Any) -> Any:
    # What orjson cannot write in an error detail: raw JSON input, exceptions in a context.
    if isinstance(value, bytes | bytearray):
        return bytes(value[:1000]).decode("utf-8", "replace")
    return str(value)


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


def _invalid(loc: list[Any], msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": loc, "msg": msg, "type": "value_error"}])


def _validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as FastAPI reports them: locations under ``body``."""
    out = []
    for e in exc.errors(include_url=False):
        loc = list(e["loc"])
        if loc and loc[0] in (_ONE, _BATCH):
            loc = loc[1:]
        item: dict[str, Any] = {"type": e["type"], "loc": ["body", *loc], "msg": e["msg"]}
        item["input"] = e.get("input")
        if "ctx" in e:
            item["ctx"] = e["ctx"]
        out.append(item)
    return out


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


async def _read_body(receive: Any) -> bytes:
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_json(
    send: Any, status: int, payload: Any, rid: str, headers: Mapping[str, str] | None = None
) -> None:
    body = orjson.dumps(payload, option=_JSON_OPTS, default=_jsonable)
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode("latin-1")),
    ]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


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
    auth: Auth, ids: RequestIds, adapter: TypeAdapter[Any], answer: Callable[[Any, str], Any]
) -> Handler:
    """A POST route as plain ASGI: auth header, raw body through ``adapter.validate_json``,
    ``answer(body, request_id)``, orjson out. ``HTTPException`` becomes its status with FastAPI's
    ``{"detail": ...}`` body; anything else propagates (the server answers 500)."""
    check = auth.check
    bearer_key = auth.bearer_key
    validate = adapter.validate_json

    async def handle(scope: Any, receive: Any, send: Any) -> int:
        authorization = given_id = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"x-request-id":
                given_id = value
        rid = ids.of(given_id)
        headers = None
        try:
            check(bearer_key(authorization), False)
            try:
                raw = await _read_body(receive)
            except ClientGone:
                return 499  # nobody to answer
            try:
                body = validate(raw)
            except ValidationError as exc:
                raise HTTPException(422, _validation_errors(exc)) from None
            status, payload = 200, answer(body, rid)
        except HTTPException as exc:
            status, payload, headers = exc.status_code, {"detail": exc.detail}, exc.headers
        await _send_json(send, status, payload, rid, headers)
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
    ) -> None:
        self.settings = settings
        self.models = store
        self._lookup_factory = lookup_factory
        self._log_factory = log_factory
        self.clock = clock
        self.lookup = FeatureLookup(None)
        self.log = PredictionLog(lambda: None)
        self.stale_after = settings.feature_max_age_hours * 3600.0
        self.ids = RequestIds()
        self._pred_children: dict[tuple[str, str], Any] = {}
        self.dropped_reported = 0

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
        metrics.REGISTRY_UP.set(1 if self.models.registry_ok else 0)

    def stop(self) -> None:
        self.models.stop()
        self.log.close()
        if self.lookup.store is not None:
            self.lookup.store.close()

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


def _model(state: ServiceState, usecase: str) -> LoadedModel:
    model = state.models.get(usecase)
    if model is None:
        reason = state.models.errors.get(usecase, "not loaded yet")
        raise HTTPException(503, f"no {usecase} model is being served ({reason})")
    return model


# -- routes ------------------------------------------------------------------------------------
def _add_predict_route(
    app: FastAPI,
    fast: dict[str, Handler],
    auth: Auth,
    state: ServiceState,
    usecase: Any,
    max_batch: int,
) -> None:
    name: str = usecase.name
    lookups = lookups_for(usecase.entity, usecase.key)
    Instance = instance_model(name, lookups)
    Batch = batch_model(name, Instance, max_batch)
    fields = [lk.field for lk in lookups]
    examples = predict_examples(lookups, list(usecase.monitoring.features))
    stale_after = state.stale_after
    clock = state.clock

    def kind(value: Any) -> str:
        return _BATCH if isinstance(value, dict) and "instances" in value else _ONE

    # One shape or the other, chosen by the body's keys (one validation pass, and errors that
    # name the fields of the shape the caller meant).
    shapes: Any = Annotated[
        Union[Annotated[Instance, Tag(_ONE)], Annotated[Batch, Tag(_BATCH)]],  # noqa: UP007
        Discriminator(kind),
    ]
    adapter: TypeAdapter[Any] = TypeAdapter(shapes)

    def fill(
        model: LoadedModel, x: np.ndarray, r: int, inst: Any, loc: list[Any]
    ) -> tuple[dict[str, str], float | None]:
        ids = {f: val for f in fields if (val := getattr(inst, f)) is not None}
        explicit: dict[str, float | None] | None = inst.features
        if not ids and explicit is None:
            raise _invalid(loc, f"name the instance ({' or '.join(fields)}) or give `features`")
        index = model.index
        as_of = None
        if ids:
            try:
                merged, as_of = state.lookup.resolve(lookups, ids)
            except MissingEntity as exc:
                raise HTTPException(404, {"message": str(exc), exc.field: exc.value}) from None
            except Exception as exc:
                raise HTTPException(503, f"online feature store unavailable ({exc})") from None
            for k, v in merged.items():
                i = index.get(k)
                if i is not None and v is not None:
                    # A non-numeric column (a category name) is encoded elsewhere: skip it.
                    # try/except, not contextlib.suppress: this runs per feature per request.
                    try:  # noqa: SIM105
                        x[r, i] = float(v)
                    except (TypeError, ValueError):
                        pass
        if explicit:
            for k, value in explicit.items():
                i = index.get(k)
                if i is None:
                    raise _invalid(
                        [*loc, "features", k], f"{name} v{model.version} has no feature {k!r}"
                    )
                x[r, i] = NAN if value is None else value
        return ids, as_of

    def outputs_of(model: LoadedModel, out: np.ndarray, r: int) -> dict[str, Any]:
        vals = out[r].tolist() if out.ndim == 2 else (float(out[r]),)
        pred: dict[str, Any] = {
            o: (None if math.isnan(v) else v) for o, v in zip(model.outputs, vals, strict=False)
        }
        if model.name_of is not None and model.outputs:
            first = pred[model.outputs[0]]
            try:
                pred["segment_name"] = model.name_of(int(first)) if first is not None else None
            except (ValueError, IndexError):
                pred["segment_name"] = None
        return pred

    def answer(body: Any, rid: str) -> dict[str, Any]:
        model = _model(state, name)
        now = clock()
        n = len(model.features)
        batch = isinstance(body, Batch)
        if batch:
            instances = body.instances
            x = np.full((len(instances), n), NAN)
            meta = [
                fill(model, x, r, inst, ["body", "instances", r])
                for r, inst in enumerate(instances)
            ]
        else:
            # The single-instance fast path reuses the model's preallocated row.
            x = model.row
            x.fill(NAN)
            meta = [fill(model, x, 0, body, ["body"])]
        out = np.asarray(model.scorer.predict_matrix(x))
        state.observe(name, model.outputs, out)
        results = []
        append = state.log.append
        for r, (ids, as_of) in enumerate(meta):
            pred = outputs_of(model, out, r)
            if as_of is None:
                age, stale = None, False
            else:
                age = round(now - as_of, 1)
                stale = age > stale_after
            results.append(
                {"entity": ids, "prediction": pred, "feature_age_seconds": age, "stale": stale}
            )
            key, entity_id = next(iter(ids.items()), (fields[0], None))
            # A copy of the row as an array: no per-feature objects, nothing for the garbage
            # collector to trace while it waits in the queue.
            append(
                (rid, now, name, model.version, key, entity_id, model.features, x[r].copy(), pred)
            )
        if batch:
            return {
                "request_id": rid,
                "usecase": name,
                "model_version": model.version,
                "predictions": results,
            }
        return {"request_id": rid, "usecase": name, "model_version": model.version, **results[0]}

    async def predict(
        body: Annotated[Instance | Batch, Body(openapi_examples=examples)],  # type: ignore[valid-type]
    ) -> Response:
        raise NotImplementedError  # documents the route; json_handler answers it

    _mount(
        app,
        fast,
        auth,
        f"/v1/{name}/predict",
        predict,
        json_handler(auth, state.ids, adapter, answer),
        tags=[name],
        summary=f"{usecase.question}",
        description=(
            f"Score one {usecase.entity} or a batch (up to {max_batch}). Name the "
            f"`{usecase.key}` to look its features up in the online store, give "
            "`features` explicitly, or both (explicit values override). 404 names "
            "an id the online store does not know."
        ),
        responses={
            200: {"model": PredictResponse | BatchResponse},
            401: {"description": "No or unknown API key"},
            404: {"description": "An id not in the online store"},
            422: {"description": "Malformed request (the field is named)"},
            503: {"description": "No model loaded for this use case"},
        },
        name=f"predict_{name}",
    )


def _add_recommend_route(
    app: FastAPI, fast: dict[str, Handler], auth: Auth, state: ServiceState
) -> None:
    def answer(body: RecommendRequest, rid: str) -> dict[str, Any]:
        model = _model(state, "recommender")
        scorer: Any = model.scorer
        seen = (
            bool(scorer.meta.get("exclude_seen", False))
            if body.exclude_seen is None
            else body.exclude_seen
        )
        known = bool(scorer.knows(body.customer_id))
        recs = scorer.recommend(body.customer_id, body.k, exclude=body.exclude, exclude_seen=seen)
        items = [{"product_id": p, "score": s if math.isfinite(s) else None} for p, s in recs]
        state.log.append(
            (
                rid,
                state.clock(),
                "recommender",
                model.version,
                "customer_id",
                body.customer_id,
                None,
                {"k": body.k, "exclude": body.exclude},
                {"products": [p for p, _ in recs]},
            )
        )
        return {
            "request_id": rid,
            "model_version": model.version,
            "customer_id": body.customer_id,
            "known_customer": known,
            "strategy": "personalised" if known else "popular",
            "recommendations": items,
        }

    async def recommend(body: RecommendRequest) -> Response:
        raise NotImplementedError  # documents the route; json_handler answers it

    _mount(
        app,
        fast,
        auth,
        "/v1/recommender/recommend",
        recommend,
        json_handler(auth, state.ids, TypeAdapter(RecommendRequest), answer),
        tags=["recommender"],
        summary="Which products should this customer see next?",
        description="Top-k products for a customer, leaving out `exclude`; a customer the model "
        "has never seen gets the most popular products (`strategy: popular`).",
        responses={
            200: {"model": RecommendResponse},
            401: {"description": "No or unknown key"},
            422: {"description": "Malformed request (the field is named)"},
            503: {"description": "No recommender model loaded"},
        },
    )


def _add_suggest_route(
    app: FastAPI, fast: dict[str, Handler], auth: Auth, state: ServiceState
) -> None:
    def answer(body: SuggestRequest, rid: str) -> dict[str, Any]:
        model = _model(state, "pricing")
        scorer: Any = model.scorer
        g = body.guardrails
        try:
            out = scorer.suggest(
                body.product_id,
                min_price=g.min_price if g else None,
                max_price=g.max_price if g else None,
                max_change=g.max_change if g else None,
                current_price=body.current_price,
            )
        except KeyError:
            raise HTTPException(
                404,
                {
                    "message": f"product_id {body.product_id!r} is not known to the pricing model",
                    "product_id": body.product_id,
                },
            ) from None
        out = {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in out.items()
        }
        state.log.append(
            (
                rid,
                state.clock(),
                "pricing",
                model.version,
                "product_id",
                body.product_id,
                None,
                body.model_dump(exclude_none=True),
                out,
            )
        )
        return {"request_id": rid, "model_version": model.version, **out}

    async def suggest(body: SuggestRequest) -> Response:
        raise NotImplementedError  # documents the route; json_handler answers it

    _mount(
        app,
        fast,
        auth,
        "/v1/pricing/suggest",
        suggest,
        json_handler(auth, state.ids, TypeAdapter(SuggestRequest), answer),
        tags=["pricing"],
        summary="What price should this product have, within guardrails?",
        description="The suggested price, its expected effect on units, revenue and margin per "
        "day, and the guardrails applied (unset ones take the product's defaults).",
        responses={
            200: {"model": SuggestResponse},
            401: {"description": "No or unknown key"},
            404: {"description": "A product the model does not know"},
            422: {"description": "Malformed request (the field is named)"},
            503: {"description": "No pricing model loaded"},
        },
    )


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


def create_app(
    settings: "Settings | None" = None,
    *,
    source_factory: Callable[[], ModelSource] | None = None,
    online_store_factory: "Callable[[], OnlineStore] | None" = None,
    usecases: list[str] | None = None,
    clock: Clock | None = None,
    in_process: bool = False,
) -> FastAPI:
    """The service. Refuses (``ServingConfigError``) to run without an API key unless the
    caller opted into open mode (:attr:`Settings.open_mode_allowed`), or the app is only driven
    in this process (``in_process``: a replay's test client, never bound to a socket).

    ``clock`` (default ``time.time``) gives the POSIX time that stamps every prediction-log
    row and that feature ages are measured against: a replay can drive the service through
    simulated days in-process.
    """
    from shopml.settings import get_settings
    from shopml.usecases import get_usecases

    settings = settings or get_settings()
    api_keys = [k.get_secret_value() for k in settings.api_keys]
    admin_keys = [k.get_secret_value() for k in settings.admin_keys]
    if not in_process and (
        (settings.env == "production" and not api_keys)
        or not (api_keys or admin_keys or settings.open_mode_allowed)
    ):
        raise ServingConfigError(no_key_message(settings))
    if not api_keys and not admin_keys:
        log.warning("no API keys configured: serving without authentication (open mode)")
    auth = Auth(api_keys, admin_keys, open_=not api_keys and not admin_keys)
    scoring, admin = auth.scoring_dep(), auth.admin_dep()

    all_usecases = get_usecases()
    names = [n for n in all_usecases if usecases is None or n in usecases]

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
    )
    home = settings.home
    metrics.watch_monitoring(settings.monitoring_store_uri, home)
    state = ServiceState(
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
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        home.mkdir(parents=True, exist_ok=True)
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
    app.add_middleware(metrics.MetricsMiddleware, fast=fast)

    @app.get("/health", tags=["service"], summary="Liveness (no auth)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["service"],
        summary="Models loaded and stores reachable",
        responses={503: {"description": "No model loaded at all"}},
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

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics (no auth)",
        response_class=Response,
    )
    async def metrics_page() -> Response:
        metrics.LOG_QUEUE.set(state.log.pending)
        dropped = state.log.dropped - state.dropped_reported
        if dropped > 0:
            metrics.LOG_DROPPED.inc(dropped)
            state.dropped_reported = state.log.dropped
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    @app.get(
        "/v1/models",
        tags=["service"],
        summary="What each use case is serving",
        dependencies=[Depends(scoring)],
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

    @app.post(
        "/v1/admin/reload",
        tags=["admin"],
        dependencies=[Depends(admin)],
        summary="Check the registry now and swap in moved champions (admin scope)",
        responses={
            401: {"description": "No or unknown key"},
            403: {"description": "A key without admin scope"},
        },
    )
    async def reload() -> Response:
        changes = await run_in_threadpool(model_store.refresh)
        return _json(
            {
                "changes": changes,
                "registry_ok": model_store.registry_ok,
                "registry_error": model_store.registry_error,
                "models": {uc: (m.version if (m := model_store.get(uc)) else None) for uc in names},
            }
        )

    for name in names:
        uc = all_usecases[name]
        special = SPECIAL_ROUTES.get(name)
        if special == "recommend":
            _add_recommend_route(app, fast, auth, state)
        elif special == "suggest":
            _add_suggest_route(app, fast, auth, state)
        else:
            _add_predict_route(app, fast, auth, state, uc, settings.serve_max_batch)
    return app
