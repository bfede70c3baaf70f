"""Request and response schemas, generated per use case from its entity and key.

Kept flat and simple on purpose: pydantic-core validates them in microseconds, and the OpenAPI
document (with one worked example per route) comes from the same classes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from shopml.serving.features import Lookup

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w.:\-]+$")]
Number = Annotated[float, Field(allow_inf_nan=False)]
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


def instance_model(usecase: str, lookups: tuple[Lookup, ...]) -> type[BaseModel]:
    """One instance: the ids it may name (all optional) and explicit features."""
    fields: dict[str, Any] = {
        lk.field: (
            Id | None,
            Field(
                default=None,
                description=(
                    f"Look up the {lk.entity} features of this id in the online store"
                    + ("" if not lk.prefix else f" (they feed the model's `{lk.prefix}*` features)")
                ),
            ),
        )
        for lk in lookups
    }
    fields["features"] = (FeatureValues | None, None)
    return create_model(
        f"{_camel(usecase)}Instance",
        __config__=ConfigDict(extra="forbid"),
        __doc__=(
            f"One {usecase} instance: name its `{lookups[0].field}` to use the online "
            "features, give `features` explicitly, or both (explicit values win)."
        ),
        **fields,
    )


def batch_model(usecase: str, instance: type[BaseModel], max_batch: int) -> type[BaseModel]:
    """Several instances in one request (at most ``max_batch``)."""
    return create_model(
        f"{_camel(usecase)}Batch",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Up to {max_batch} {usecase} instances scored in one call.",
        instances=(list[instance], Field(min_length=1, max_length=max_batch)),  # type: ignore[valid-type]
    )


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace("_", "-").split("-"))


def predict_examples(lookups: tuple[Lookup, ...], features: list[str]) -> dict[str, Any]:
    """Worked examples for a predict route's docs: looked up, explicit, both, a batch."""
    key = lookups[0].field
    own = {key: EXAMPLE_IDS.get(key, "ID-1")}
    if len(lookups) > 1:  # order-level use cases: the related ids carry most features
        own = {lk.field: EXAMPLE_IDS.get(lk.field, "ID-1") for lk in lookups[1:]}
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


class Prediction(BaseModel):
    """One scored instance."""

    entity: dict[str, str] = Field(description="The ids the instance named.")
    prediction: dict[str, Any] = Field(description="Output name -> value.")
    feature_age_seconds: float | None = Field(
        None, description="Age of the oldest looked-up features (None: none looked up)."
    )
    stale: bool = Field(False, description="Looked-up features older than the configured age.")


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


class RecommendRequest(BaseModel):
    """Products to show a customer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"customer_id": "C0000001", "k": 5, "exclude": ["P000001"]}]
        },
    )

    customer_id: Id
    k: int = Field(10, ge=1, le=100, description="How many products.")
    exclude: list[Id] = Field(
        default_factory=list,
        max_length=1000,
        description="Products never to recommend (in the basket, say).",
    )
    exclude_seen: bool | None = Field(
        None, description="Leave out products the customer bought (default: the model's)."
    )


class Recommendation(BaseModel):
    product_id: str
    score: float


class RecommendResponse(BaseModel):
    request_id: str
    model_version: str
    customer_id: str
    known_customer: bool = Field(description="False: the model never saw this customer.")
    strategy: str = Field(description="personalised, or popular for an unknown customer.")
    recommendations: list[Recommendation]


Price = Annotated[float, Field(gt=0, le=1e7, allow_inf_nan=False)]


class Guardrails(BaseModel):
    """Limits on the suggested price; unset ones take the product's defaults."""

    model_config = ConfigDict(extra="forbid")

    min_price: Price | None = None
    max_price: Price | None = None
    max_change: float | None = Field(
        None,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Largest change as a fraction of the price.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Guardrails:
        if (
            self.min_price is not None
            and self.max_price is not None
            and self.min_price > self.max_price
        ):
            raise ValueError("min_price must not exceed max_price")
        return self


class SuggestRequest(BaseModel):
    """A price suggestion for one product."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "product_id": "P000001",
                    "current_price": 24.9,
                    "guardrails": {"min_price": 20.0, "max_price": 30.0, "max_change": 0.1},
                }
            ]
        },
    )

    product_id: Id
    current_price: Price | None = Field(None, description="Default: the product's price.")
    guardrails: Guardrails | None = None


class SuggestResponse(BaseModel):
    request_id: str
    model_version: str
    product_id: str
    current_price: float
    suggested_price: float
    elasticity: float
    expected_units_current: float
    expected_units_suggested: float
    expected_revenue_change: float
    expected_margin_change: float | None = None
    guardrails: dict[str, Any]
