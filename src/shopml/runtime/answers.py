"""The kinds of answer a use case gives: :class:`Predict`, :class:`Recommend`, :class:`Suggest`.

A use case declares its kind, with its parameters, as data (``answer = Recommend(k=10)``). The
kind owns everything about that answer that is not the model itself:

- the request and response schemas (pydantic, with OpenAPI examples): :meth:`AnswerKind.schemas`;
- how a request is answered from the loaded model (:meth:`AnswerKind.answerer`), including the
  one :class:`~shopml.runtime.predictions.PredictionRecord` it writes per answer;
- how a replay turns a day's arrivals into requests (:meth:`AnswerKind.requests`);
- what the record's output holds (:meth:`AnswerKind.record_outputs`) and whether it is the
  model's own output, which monitoring can join to labels (:attr:`AnswerKind.model_outputs`).

The service builds every route from this (``POST /v1/<usecase>/<verb>``), a replay in batch mode
calls the same answerers without HTTP, and monitoring reads the records back: none of them
names a use case. The module needs only pydantic and numpy (the slim service imports it).

The answerers are on the request path: they are closures built once per route, doing no
I/O but a (cached) feature lookup, and scoring a preallocated row for one instance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Protocol, Union, get_args

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    create_model,
    model_validator,
)

from shopml.online.store import ONLINE_ENTITIES
from shopml.runtime.predictions import PredictionRecord

NAN = float("nan")
EXPLAIN_TOP = 5  # contributions an explanation lists
EXPLAIN = (
    f"Also return the top {EXPLAIN_TOP} feature contributions to the first output (TreeSHAP "
    "from LightGBM's own pred_contrib, or the model's equivalent)."
)
# A request's answer from its validated body and its request id.
Answer = Callable[[Any, str], dict[str, Any]]


# -- errors the service turns into HTTP answers -----------------------------------------------
class AnswerError(Exception):
    """A request that cannot be answered: ``status`` and ``detail`` become the HTTP answer
    (``{"detail": ...}``, as FastAPI writes its own errors)."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status
        self.detail = detail
        self.headers = headers


def invalid(loc: list[Any], msg: str) -> AnswerError:
    """A 422 naming the field, in FastAPI's shape."""
    return AnswerError(422, [{"loc": loc, "msg": msg, "type": "value_error"}])


class MissingEntity(LookupError):
    """An id the online store does not know; answered 404 naming it."""

    def __init__(self, field: str, value: str) -> None:
        super().__init__(f"{field} {value!r} is not in the online feature store")
        self.field = field
        self.value = value


# -- what an answerer needs from its caller ----------------------------------------------------
class ServedModel(Protocol):
    """A loaded model as the service holds it (``serving.models.LoadedModel``)."""

    version: str
    scorer: Any
    features: list[str]
    outputs: list[str]
    index: dict[str, int]
    row: np.ndarray


class FeatureSource(Protocol):
    def resolve(
        self, lookups: tuple[Lookup, ...], ids: dict[str, str]
    ) -> tuple[dict[str, Any], float | None]:
        """Features for the ids an instance names and their oldest as-of (POSIX time)."""
        ...


class AnswerContext(Protocol):
    """What answering needs: the model, online features, the clock and where records go.
    The service's state is one; a replay's batch mode has its own."""

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def stale_after(self) -> float: ...

    @property
    def lookup(self) -> FeatureSource: ...

    def model(self, usecase: str) -> ServedModel:
        """The model serving ``usecase`` (raises :class:`AnswerError` 503 when none)."""
        ...

    def record(self, rec: PredictionRecord) -> None:
        """Keep one prediction-log record (queued: never blocks)."""
        ...

    def observe(self, usecase: str, outputs: list[str], values: np.ndarray) -> None:
        """Note the distribution of numeric outputs (the service's metrics)."""
        ...


@dataclass
class InProcess:
    """Answering in this process, without the service: models from ``models`` (a name to a
    loaded model, or None), every feature in the request, records kept in :attr:`records`.
    A replay's batch mode and the conformance checks answer through it, with the same
    answerers as the service."""

    models: Callable[[str], ServedModel | None]
    clock: Callable[[], float]
    lookup: FeatureSource = field(default_factory=lambda: NoLookup())  # noqa: PLW0108 - defined below
    stale_after: float = math.inf
    records: list[PredictionRecord] = field(default_factory=list)

    def model(self, usecase: str) -> ServedModel:
        model = self.models(usecase)
        if model is None:
            raise AnswerError(503, f"no {usecase} model is loaded")
        return model

    def record(self, rec: PredictionRecord) -> None:
        self.records.append(rec)

    def observe(self, usecase: str, outputs: list[str], values: np.ndarray) -> None:
        """Nothing to note outside the service."""


class NoLookup:
    """A feature source that knows nothing: every feature comes in the request."""

    def resolve(
        self, lookups: tuple[Lookup, ...], ids: dict[str, str]
    ) -> tuple[dict[str, Any], float | None]:
        return {}, None


# -- which ids an instance may name --------------------------------------------------------------
@dataclass(frozen=True)
class Lookup:
    """One id an instance may carry: the request field, the online entity, the column prefix
    under which its columns feed the model ('' for the use case's own entity)."""

    field: str
    entity: str
    prefix: str
    # Whether the pipeline materialises this entity online. An order or an order line is new
    # when it is scored: its id names the instance (and the prediction-log row) and its own
    # features come in the request, while its customer, product and seller are looked up.
    online: bool = True


# Related entities per use-case entity: an order line knows its customer, product and seller.
_RELATED: dict[str, tuple[str, ...]] = {
    "order_item": ("customer", "product", "seller"),
    "order": ("customer",),
}


def lookups_for(entity: str, key: str) -> tuple[Lookup, ...]:
    """The ids an instance of a use case on ``entity`` (keyed by ``key``) may name."""
    own = Lookup(key, f"{entity}s", "", online=f"{entity}s" in ONLINE_ENTITIES)
    related = tuple(Lookup(f"{e}_id", f"{e}s", f"{e}_") for e in _RELATED.get(entity, ()))
    return (own, *related)


# -- shared schema pieces -----------------------------------------------------------------------
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w.:\-]+$")]
Number = Annotated[float, Field(allow_inf_nan=False)]


def _integral(value: Any) -> Any:
    # JSON Schema's integer is a number without a fraction: 5.0 is one, "5" and true are not
    # (the strict validation after this refuses those).
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
FeatureValues = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=128)], Number | None],
    Field(max_length=2000, description="Feature values by name; they override looked-up ones."),
]
EXAMPLE_IDS = {
    "customer_id": "C0000001",
    "product_id": "P000001",
    "seller_id": "S00001",
    "order_id": "O00000001",
    "order_item_id": "O00000001-1",
}


def example_id(field: str) -> str:
    return EXAMPLE_IDS.get(field, "ID-1")


def camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace("_", "-").split("-"))


# Requests are validated strictly: JSON's types as the schema states them (no "5" for 5, no 0
# for false), so the OpenAPI document describes exactly what is accepted.
REQUEST_CONFIG = ConfigDict(extra="forbid", strict=True)


def schema_model(
    name: str,
    fields: dict[str, Any],
    doc: str | None = None,
    validators: dict[str, Any] | None = None,
    json_schema: dict[str, Any] | None = None,
) -> type[BaseModel]:
    """A pydantic model made from field definitions; a request (``doc`` given) refuses unknown
    fields and loosely typed values. ``validators``: pydantic validators by name;
    ``json_schema``: what the model's JSON schema adds (the rule those validators enforce)."""
    if doc is None:
        return create_model(name, **fields)
    config = ConfigDict(**REQUEST_CONFIG)
    if json_schema:
        config["json_schema_extra"] = json_schema
    return create_model(name, __config__=config, __doc__=doc, __validators__=validators, **fields)


def one_of_given(fields: list[str], message: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request rule, as a validator and as JSON schema: at least one of ``fields`` is given
    and not null (the schema's ``anyOf``, so generated clients and fuzzers know it)."""

    def check(model: BaseModel) -> BaseModel:
        if all(getattr(model, f) is None for f in fields):
            raise ValueError(message)
        return model

    schema = {
        "anyOf": [{"required": [f], "properties": {f: {"not": {"type": "null"}}}} for f in fields]
    }
    return {"one_of_given": model_validator(mode="after")(check)}, schema


def finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True)
class Schemas:
    """A route's contract: the body's annotation for the docs, the adapter that validates
    raw JSON (the same type), the response model, examples (OpenAPI's ``openapi_examples``
    shape) and the error statuses the route may answer besides auth's."""

    request: Any
    adapter: TypeAdapter[Any]
    response: Any
    examples: dict[str, dict[str, Any]]
    errors: dict[int, str]
    summary: str
    description: str


class UseCaseLike(Protocol):
    """What a kind reads of a use case (``shopml.usecases.base.UseCase``)."""

    @property
    def name(self) -> str: ...

    @property
    def question(self) -> str: ...

    @property
    def entity(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def monitoring(self) -> Any: ...


# -- the kinds ----------------------------------------------------------------------------------
class AnswerKind:
    """Base of the kinds of answer. Subclasses are frozen dataclasses of their parameters."""

    verb: ClassVar[str]
    # Whether a record's output is the model's own output (joinable to labels by the generic
    # delayed-label performance check) or an answer built on it (a ranked list, a price).
    model_outputs: ClassVar[bool] = False
    # Whether a replay sends each arrival with its features (the use case's dataset rows) or
    # only its id.
    needs_rows: ClassVar[bool] = False

    def path(self, uc: UseCaseLike) -> str:
        return f"/v1/{uc.name}/{self.verb}"

    def schemas(self, uc: UseCaseLike, max_batch: int) -> Schemas:
        raise NotImplementedError

    def document(
        self, uc: UseCaseLike, model: ServedModel | None, components: dict[str, Any]
    ) -> None:
        """Add what the served ``model`` settles about the route's requests to the OpenAPI
        document's schema ``components`` (in place); nothing by default."""

    def answerer(self, uc: UseCaseLike, ctx: AnswerContext, schemas: Schemas) -> Answer:
        """The route's answer function: validated body and request id in, JSON-able answer
        out, one record per answered instance through ``ctx.record``."""
        raise NotImplementedError

    def requests(
        self,
        uc: UseCaseLike,
        frame: pd.DataFrame,
        max_batch: int,
        model: ServedModel | None = None,
    ) -> list[tuple[dict[str, Any], int]]:
        """A replay's requests for these arrivals (``frame``: the key column, plus feature
        columns when :attr:`needs_rows`), each with the number of instances it carries.
        ``model``: the model that will answer (its inputs are what a request may give)."""
        return [({uc.key: str(v)}, 1) for v in frame[uc.key]]

    def record_outputs(self, uc: UseCaseLike, model: ServedModel) -> tuple[str, ...]:
        """The keys every record's ``output`` has for this model."""
        raise NotImplementedError


def _tagged(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "instances" in value else "instance"


class Prediction(BaseModel):
    """One scored instance."""

    entity: dict[str, str] = Field(description="The ids the instance named.")
    prediction: dict[str, Any] = Field(description="Output name -> value.")
    feature_age_seconds: float | None = Field(
        None, description="Age of the oldest looked-up features (None: none looked up)."
    )
    stale: bool = Field(False, description="Looked-up features older than the configured age.")
    model_version: str | None = Field(
        None,
        description="The version that answered this instance: set in a batch while a canary or "
        "A/B test routes some entities to the challenger.",
    )
    explanation: dict[str, Any] | None = Field(
        None,
        description="With `explain`: the top feature contributions to the first output "
        "(`output`, `units`, `base`, `total` = base + all contributions, `top`: feature, "
        "value, contribution), or `available: false` and the reason for a model with none.",
    )


class PredictResponse(Prediction):
    """A single-instance answer."""

    request_id: str
    usecase: str
    model_version: str


class BatchResponse(BaseModel):
    """A batch answer: one prediction per instance, in order."""

    request_id: str
    usecase: str
    model_version: str
    predictions: list[Prediction]


@dataclass(frozen=True)
class Predict(AnswerKind):
    """The model's outputs for one instance or a batch: ids to look features up by, explicit
    features, or both (explicit values win)."""

    verb: ClassVar[str] = "predict"
    model_outputs: ClassVar[bool] = True
    needs_rows: ClassVar[bool] = True

    def schemas(self, uc: UseCaseLike, max_batch: int) -> Schemas:
        lookups = lookups_for(uc.entity, uc.key)
        fields: dict[str, Any] = {
            lk.field: (
                Id | None,
                Field(
                    default=None,
                    description=(
                        f"Look up the {lk.entity} features of this id in the online store"
                        + (
                            ""
                            if not lk.prefix
                            else f" (they feed the model's `{lk.prefix}*` features)"
                        )
                    ),
                ),
            )
            for lk in lookups
        }
        fields["features"] = (FeatureValues | None, None)
        fields["explain"] = (bool, Field(False, description=EXPLAIN))
        names = [lk.field for lk in lookups]
        validators, rule = one_of_given(
            [*names, "features"], f"name the instance ({' or '.join(names)}) or give `features`"
        )
        instance = schema_model(
            f"{camel(uc.name)}Instance",
            fields,
            f"One {uc.name} instance: name its `{lookups[0].field}` to use the online "
            "features, give `features` explicitly, or both (explicit values win).",
            validators,
            rule,
        )
        batch = schema_model(
            f"{camel(uc.name)}Batch",
            {
                "instances": (list[instance], Field(min_length=1, max_length=max_batch)),  # type: ignore[valid-type]
                "explain": (bool, Field(False, description=EXPLAIN)),
            },
            f"Up to {max_batch} {uc.name} instances scored in one call.",
        )
        # One shape or the other, chosen by the body's keys (one validation pass, and errors
        # that name the fields of the shape the caller meant).
        shapes: Any = Annotated[
            Union[Annotated[instance, Tag("instance")], Annotated[batch, Tag("batch")]],  # noqa: UP007
            Discriminator(_tagged),
        ]
        return Schemas(
            request=instance | batch,
            adapter=TypeAdapter(shapes),
            response=PredictResponse | BatchResponse,
            examples=self.examples(lookups, list(uc.monitoring.features)),
            errors={
                404: "An id not in the online store",
                503: "No model loaded for this use case, or the online store is unavailable",
            },
            summary=uc.question,
            description=(
                f"Score one {uc.entity} or a batch (up to {max_batch}). Name the `{uc.key}` to "
                "look its features up in the online store, give `features` explicitly, or both "
                "(explicit values override). 404 names an id the online store does not know."
            ),
        )

    def document(
        self, uc: UseCaseLike, model: ServedModel | None, components: dict[str, Any]
    ) -> None:
        """The feature names the served version takes, as the only names `features` may have
        (the service answers 422 for any other)."""
        instance = components.get(f"{camel(uc.name)}Instance", {})
        features = instance.get("properties", {}).get("features", {})
        if model is None:
            return
        for option in features.get("anyOf", [features]):
            if option.get("type") == "object":
                option["propertyNames"] = {"enum": list(model.features)}
                option["description"] = (
                    f"Feature values by name (those v{model.version} takes); they override "
                    "looked-up ones."
                )

    @staticmethod
    def examples(lookups: tuple[Lookup, ...], features: list[str]) -> dict[str, Any]:
        """Worked examples: looked up, explicit, both, a batch."""
        key = lookups[0].field
        own = {key: example_id(key)}
        if len(lookups) > 1:  # order-level use cases: the related ids carry most features
            own = {lk.field: example_id(lk.field) for lk in lookups[1:]}
        explicit = {f: 1.0 for f in features[:3]} or {"some_feature": 1.0}
        return {
            "lookup": {"summary": "Features looked up in the online store", "value": own},
            "explicit": {"summary": "Features given explicitly", "value": {"features": explicit}},
            "both": {
                "summary": "Looked up, some overridden",
                "value": {**own, "features": dict(list(explicit.items())[:1])},
            },
            "batch": {
                "summary": "Several instances",
                "value": {"instances": [own, {"features": explicit}]},
            },
        }

    def record_outputs(self, uc: UseCaseLike, model: ServedModel) -> tuple[str, ...]:
        return (*model.outputs, *model.scorer.described_outputs)

    def requests(
        self,
        uc: UseCaseLike,
        frame: pd.DataFrame,
        max_batch: int,
        model: ServedModel | None = None,
    ) -> list[tuple[dict[str, Any], int]]:
        # The model's own inputs only: a dataset may carry columns a model does not take.
        taken = set(model.features) if model is not None else None
        features = [c for c in frame.columns if c != uc.key and (taken is None or c in taken)]
        records = frame.to_dict("records")
        out = []
        for i in range(0, len(records), max_batch):
            chunk = records[i : i + max_batch]
            instances = [
                {uc.key: str(r[uc.key]), "features": {f: _number(r[f]) for f in features}}
                for r in chunk
            ]
            out.append(({"instances": instances}, len(chunk)))
        return out

    def answerer(self, uc: UseCaseLike, ctx: AnswerContext, schemas: Schemas) -> Answer:
        name, key = uc.name, uc.key
        lookups = lookups_for(uc.entity, key)
        fields = [lk.field for lk in lookups]
        batch_shape = get_args(schemas.request)[1]
        stale_after = ctx.stale_after
        clock = ctx.clock

        def fill(
            model: ServedModel, x: np.ndarray, r: int, inst: Any, loc: list[Any]
        ) -> tuple[dict[str, str], float | None]:
            # The request's schema guarantees an id or `features` (one_of_given).
            ids = {f: val for f in fields if (val := getattr(inst, f)) is not None}
            explicit: dict[str, float | None] | None = inst.features
            index = model.index
            as_of = None
            if ids:
                try:
                    merged, as_of = ctx.lookup.resolve(lookups, ids)
                except MissingEntity as exc:
                    raise AnswerError(404, {"message": str(exc), exc.field: exc.value}) from None
                except Exception as exc:  # the store is down: say so, as a 503
                    raise AnswerError(503, f"online feature store unavailable ({exc})") from None
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
                        raise invalid(
                            [*loc, "features", k], f"{name} v{model.version} has no feature {k!r}"
                        )
                    x[r, i] = NAN if value is None else value
            return ids, as_of

        def outputs_of(model: ServedModel, out: np.ndarray, r: int) -> dict[str, Any]:
            vals = out[r].tolist() if out.ndim == 2 else (float(out[r]),)
            pred: dict[str, Any] = {
                o: (None if math.isnan(v) else v) for o, v in zip(model.outputs, vals, strict=False)
            }
            if model.scorer.described_outputs:  # a segment's name beside its id, say
                pred.update(model.scorer.describe(pred))
            return pred

        def answer(body: Any, rid: str) -> dict[str, Any]:
            model = ctx.model(name)
            now = clock()
            n = len(model.features)
            batch = type(body) is batch_shape
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
            ctx.observe(name, model.outputs, out)
            wanted = [bool(body.explain)] * len(meta)
            if batch:
                wanted = [bool(body.explain or inst.explain) for inst in instances]
            explained = explain(model, x, wanted) if any(wanted) else None
            results = []
            record = ctx.record
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
                if explained is not None and wanted[r]:
                    results[-1]["explanation"] = explained(r)
                entity_key, entity_id = next(iter(ids.items()), (key, None))
                # A copy of the row as an array: no per-feature objects, nothing for the
                # garbage collector to trace while it waits in the queue.
                record(
                    PredictionRecord(
                        rid,
                        now,
                        name,
                        model.version,
                        entity_key,
                        entity_id,
                        pred,
                        x[r].copy(),
                        model.features,
                    )
                )
            if batch:
                return {
                    "request_id": rid,
                    "usecase": name,
                    "model_version": model.version,
                    "predictions": results,
                }
            return {
                "request_id": rid,
                "usecase": name,
                "model_version": model.version,
                **results[0],
            }

        return answer


def explain(
    model: ServedModel, x: np.ndarray, wanted: list[bool]
) -> Callable[[int], dict[str, Any]]:
    """Row ``r``'s explanation by the model (rows not ``wanted`` are still computed in one
    call; a model without contributions says why)."""
    scorer = model.scorer
    try:
        found = scorer.explain(x)
    except Exception as exc:  # an explanation is extra: never fail the answer for it
        found, why = None, f"the explanation failed: {type(exc).__name__}: {exc}"
    else:
        why = getattr(scorer, "unexplained", "no per-feature contributions")
    if found is None:
        missing = {"available": False, "reason": why}
        return lambda r: missing
    return lambda r: {"available": True, **found.answer(r, EXPLAIN_TOP)}


def _number(value: Any) -> float | None:
    """A feature value as the service takes it: a finite number, else null."""
    if value is None or isinstance(value, str):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# -- recommend ----------------------------------------------------------------------------------
class Ranker(Protocol):
    """What a model that recommends answers (``runtime.scorers.RecommenderScorer``)."""

    meta: dict[str, Any]

    def knows(self, entity_id: str) -> bool: ...

    def recommend(
        self, entity_id: str, k: int = 10, exclude: Sequence[str] = (), exclude_seen: bool = False
    ) -> list[tuple[str, float]]: ...


@dataclass(frozen=True)
class Recommend(AnswerKind):
    """The top ``k`` items for an entity, leaving out ``exclude`` (and, with ``exclude_seen``,
    what it already has); an entity the model has never seen gets the popular items.

    Parameters are the use case's defaults: ``k`` (at most ``max_k``), ``exclude_seen`` (None:
    the model's own choice, made at training), the item id field, and the record's output key.
    """

    verb: ClassVar[str] = "recommend"
    k: int = 10
    max_k: int = 100
    exclude_seen: bool | None = None
    item: str = "product_id"
    output: str = "products"

    def _request(self, uc: UseCaseLike) -> type[BaseModel]:
        return schema_model(
            f"{camel(uc.name)}RecommendRequest",
            {
                uc.key: (Id, ...),
                "k": (Integer, Field(self.k, ge=1, le=self.max_k, description="How many.")),
                "exclude": (
                    list[Id],
                    Field(
                        default_factory=list,
                        max_length=1000,
                        description=f"{self.item} values never to recommend (in the basket).",
                    ),
                ),
                "exclude_seen": (
                    bool | None,
                    Field(
                        self.exclude_seen,
                        description=f"Leave out what the {uc.entity} already bought "
                        "(null: the model's choice).",
                    ),
                ),
            },
            f"{self.item.removesuffix('_id').capitalize()}s to show a {uc.entity}.",
        )

    def schemas(self, uc: UseCaseLike, max_batch: int) -> Schemas:
        request = self._request(uc)
        item = schema_model(
            f"{camel(uc.name)}Recommendation", {self.item: (str, ...), "score": (float, ...)}
        )
        response = schema_model(
            f"{camel(uc.name)}RecommendResponse",
            {
                "request_id": (str, ...),
                "model_version": (str, ...),
                uc.key: (str, ...),
                f"known_{uc.entity}": (
                    bool,
                    Field(description=f"False: the model never saw this {uc.entity}."),
                ),
                "strategy": (str, Field(description="personalised, or popular for a stranger.")),
                "recommendations": (list[item], ...),  # type: ignore[valid-type]
            },
        )
        one = example_id(uc.key)
        return Schemas(
            request=request,
            adapter=TypeAdapter(request),
            response=response,
            examples={
                "top-k": {"summary": f"The top {self.k}", "value": {uc.key: one}},
                "basket": {
                    "summary": "Five, leaving out what is in the basket",
                    "value": {uc.key: one, "k": 5, "exclude": [example_id(self.item)]},
                },
            },
            errors={503: "No model loaded for this use case"},
            summary=uc.question,
            description=(
                f"The top-k {self.item.removesuffix('_id')}s for a {uc.entity}, leaving out "
                f"`exclude`; a {uc.entity} the model has never seen gets the most popular "
                "(`strategy: popular`)."
            ),
        )

    def record_outputs(self, uc: UseCaseLike, model: ServedModel) -> tuple[str, ...]:
        return (self.output,)

    def answerer(self, uc: UseCaseLike, ctx: AnswerContext, schemas: Schemas) -> Answer:
        name, key, item, output = uc.name, uc.key, self.item, self.output
        known_field = f"known_{uc.entity}"

        def answer(body: Any, rid: str) -> dict[str, Any]:
            model = ctx.model(name)
            scorer: Ranker = model.scorer
            entity = getattr(body, key)
            seen = (
                bool(scorer.meta.get("exclude_seen", False))
                if body.exclude_seen is None
                else body.exclude_seen
            )
            known = bool(scorer.knows(entity))
            recs = scorer.recommend(entity, body.k, exclude=body.exclude, exclude_seen=seen)
            ctx.record(
                PredictionRecord(
                    rid,
                    ctx.clock(),
                    name,
                    model.version,
                    key,
                    entity,
                    {output: [p for p, _ in recs]},
                    {"k": body.k, "exclude": body.exclude, "exclude_seen": seen},
                )
            )
            return {
                "request_id": rid,
                "model_version": model.version,
                key: entity,
                known_field: known,
                "strategy": "personalised" if known else "popular",
                "recommendations": [{item: p, "score": finite_or_none(s)} for p, s in recs],
            }

        return answer


# -- suggest ------------------------------------------------------------------------------------
# A price is at least one cent: below it rounding to cents answers 0, and demand at 0 is
# infinite.
Price = Annotated[float, Field(ge=0.01, le=1e7, allow_inf_nan=False)]


class Guardrails(BaseModel):
    """Limits on the suggested price; unset ones take the product's defaults. Limits that
    cannot all hold (a floor above the ceiling, or either out of one step's reach) are applied
    in order: the step first, then the floor, then the ceiling; the answer's
    `guardrails.conflict` says so."""

    model_config = REQUEST_CONFIG

    min_price: Price | None = Field(None, description="Floor.")
    max_price: Price | None = Field(None, description="Ceiling.")
    max_change: float | None = Field(
        None,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Largest change as a fraction of the price.",
    )


class Suggester(Protocol):
    """What a model that suggests prices answers (``runtime.scorers.PricingScorer``)."""

    def suggest(
        self,
        product_id: str,
        min_price: float | None = None,
        max_price: float | None = None,
        max_change: float | None = None,
        current_price: float | None = None,
    ) -> dict[str, Any]: ...


SUGGESTION = (
    "current_price",
    "suggested_price",
    "elasticity",
    "expected_units_current",
    "expected_units_suggested",
    "expected_revenue_change",
    "guardrails",
)


@dataclass(frozen=True)
class Suggest(AnswerKind):
    """A price for one item within guardrails, and its expected effect on units, revenue and
    margin per day; an item the model does not know is a 404 naming it."""

    verb: ClassVar[str] = "suggest"

    def schemas(self, uc: UseCaseLike, max_batch: int) -> Schemas:
        request = schema_model(
            f"{camel(uc.name)}SuggestRequest",
            {
                uc.key: (Id, ...),
                "current_price": (
                    Price | None,
                    Field(None, description=f"Default: the {uc.entity}'s price."),
                ),
                "guardrails": (Guardrails | None, None),
            },
            f"A price suggestion for one {uc.entity}.",
        )
        number = (float, ...)
        response = schema_model(
            f"{camel(uc.name)}SuggestResponse",
            {
                "request_id": (str, ...),
                "model_version": (str, ...),
                uc.key: (str, ...),
                **dict.fromkeys(
                    (
                        "current_price",
                        "suggested_price",
                        "elasticity",
                        "expected_units_current",
                        "expected_units_suggested",
                        "expected_revenue_change",
                    ),
                    number,
                ),
                "expected_margin_change": (float | None, None),
                "guardrails": (dict[str, Any], ...),
            },
        )
        one = example_id(uc.key)
        return Schemas(
            request=request,
            adapter=TypeAdapter(request),
            response=response,
            examples={
                "defaults": {"summary": "The product's own guardrails", "value": {uc.key: one}},
                "guardrails": {
                    "summary": "At most 10% either way, between 20 and 30",
                    "value": {
                        uc.key: one,
                        "current_price": 24.9,
                        "guardrails": {"min_price": 20.0, "max_price": 30.0, "max_change": 0.1},
                    },
                },
            },
            errors={404: f"A {uc.entity} the model does not know", 503: "No model loaded"},
            summary=uc.question,
            description=(
                "The suggested price, its expected effect on units, revenue and margin per day, "
                f"and the guardrails applied (unset ones take the {uc.entity}'s defaults)."
            ),
        )

    def record_outputs(self, uc: UseCaseLike, model: ServedModel) -> tuple[str, ...]:
        return (uc.key, *SUGGESTION)

    def answerer(self, uc: UseCaseLike, ctx: AnswerContext, schemas: Schemas) -> Answer:
        name, key = uc.name, uc.key

        def answer(body: Any, rid: str) -> dict[str, Any]:
            model = ctx.model(name)
            scorer: Suggester = model.scorer
            g = body.guardrails
            item = getattr(body, key)
            try:
                out = scorer.suggest(
                    item,
                    min_price=g.min_price if g else None,
                    max_price=g.max_price if g else None,
                    max_change=g.max_change if g else None,
                    current_price=body.current_price,
                )
            except KeyError:
                raise AnswerError(
                    404,
                    {"message": f"{key} {item!r} is not known to the {name} model", key: item},
                ) from None
            out = {k: finite_or_none(v) for k, v in out.items()}
            ctx.record(
                PredictionRecord(
                    rid,
                    ctx.clock(),
                    name,
                    model.version,
                    key,
                    item,
                    out,
                    body.model_dump(exclude_none=True, exclude={key}),
                )
            )
            return {"request_id": rid, "model_version": model.version, **out}

        return answer


KINDS: dict[str, type[AnswerKind]] = {k.verb: k for k in (Predict, Recommend, Suggest)}
