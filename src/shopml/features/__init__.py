"""Point-in-time feature builders shared by the use cases.

Each builder takes an Ibis backend (``Warehouse.ibis()``) and a cutoff and returns an Ibis
table built only from what was known strictly before the cutoff, so the same expressions can
run on DuckDB or Spark. :data:`FEATURE_SETS` lists them with their columns.
"""

from shopml.features.customers import customer_features
from shopml.features.interactions import interactions
from shopml.features.orders import order_features, order_item_features
from shopml.features.products import product_features
from shopml.features.registry import (
    FEATURE_SETS,
    FeatureSet,
    build_features,
    get_feature_set,
    to_frame,
)
from shopml.features.sellers import seller_features

__all__ = [
    "FEATURE_SETS",
    "FeatureSet",
    "build_features",
    "customer_features",
    "get_feature_set",
    "interactions",
    "order_features",
    "order_item_features",
    "product_features",
    "seller_features",
    "to_frame",
]
