"""Import the Olist "Brazilian E-Commerce Public Dataset": the nine Kaggle CSVs in one folder.

Mapping to the canonical tables:

* customers: the person (``customer_unique_id``), not Olist's per-order ``customer_id``; the
  extra rows of a person who ordered more than once are merged (counted as set aside), keeping
  the address on the first row; ``orders.customer_id`` is mapped through the person. An order
  whose ``customer_id`` is not in the customers file keeps its Olist id, so the contract
  quarantines it as an orphan (and its items, payments and reviews follow);
* zip prefixes are 5-character strings (geolocation's lost their leading zeros: padded back);
  lat/lon of customers and sellers are the mean of the geolocation points of their zip prefix;
  country ``Brazil``, region = the state; ``created_at`` = the person's first order in the file;
* products: category translated to English where the translation exists (else the Portuguese
  name, else ``unknown``); ``size_type`` from the category (:func:`size_type`); ``list_price``
  the median price of the product's order items, when it has any;
* order items: ``order_item_id`` = ``<order_id>-<seq>``, quantity 1 (Olist writes one row per
  unit), ``unit_price`` = price, ``freight`` = freight_value;
* orders: statuses are already canonical; ``shipped_at`` is the hand-over to the carrier;
* payments: ``not_defined`` becomes ``other``; reviews keyed (review_id, order_id).

Olist has no returns, web events, campaigns or price history: those tables are absent.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from shopml.data.dataset import Dataset
from shopml.data.importers._common import (
    ImportFormatError,
    blank_to_none,
    merge_set_aside,
    read_text_csv,
    require_columns,
)

SOURCE = "olist"
COUNTRY = "Brazil"

# File stem -> the columns the importer uses (the Kaggle names).
FILES: dict[str, tuple[str, ...]] = {
    "olist_orders_dataset": (
        "order_id",
        "customer_id",
        "order_status",
        "order_purchase_timestamp",
        "order_approved_at",
        "order_delivered_carrier_date",
        "order_delivered_customer_date",
        "order_estimated_delivery_date",
    ),
    "olist_order_items_dataset": (
        "order_id",
        "order_item_id",
        "product_id",
        "seller_id",
        "price",
        "freight_value",
    ),
    "olist_order_reviews_dataset": (
        "review_id",
        "order_id",
        "review_score",
        "review_comment_title",
        "review_comment_message",
        "review_creation_date",
        "review_answer_timestamp",
    ),
    "olist_order_payments_dataset": (
        "order_id",
        "payment_sequential",
        "payment_type",
        "payment_installments",
        "payment_value",
    ),
    "olist_customers_dataset": (
        "customer_id",
        "customer_unique_id",
        "customer_zip_code_prefix",
        "customer_city",
        "customer_state",
    ),
    "olist_sellers_dataset": ("seller_id", "seller_zip_code_prefix", "seller_city", "seller_state"),
    "olist_products_dataset": (
        "product_id",
        "product_category_name",
        "product_weight_g",
        "product_length_cm",
        "product_height_cm",
        "product_width_cm",
    ),
    "olist_geolocation_dataset": (
        "geolocation_zip_code_prefix",
        "geolocation_lat",
        "geolocation_lng",
    ),
    "product_category_name_translation": (
        "product_category_name",
        "product_category_name_english",
    ),
}

PAYMENT_METHODS = {
    "credit_card": "credit_card",
    "debit_card": "debit_card",
    "boleto": "boleto",
    "voucher": "voucher",
    "not_defined": "other",
}

REASON_SAME_PERSON = (
    "same person: another customer_id row of a customer_unique_id, merged into one customer"
)

# size_type drives the returns use case (fit problems): only categories where size or fit plausibly
# matters get one. Checked in this order on the English category name, first match wins.
_ELECTRONICS = frozenset(
    {
        "electronics",
        "computers",
        "computers_accessories",
        "telephony",
        "fixed_telephony",
        "tablets_printing_image",
        "audio",
        "consoles_games",
        "cine_photo",
        "pc_gamer",
    }
)


def size_type(category: str) -> str:
    """The canonical size_type of an Olist category (English name where translated).

    ``fashion_shoes`` -> shoes; other ``fashion*`` (clothing, underwear, bags, sport; the
    dataset also spells one ``fashio_female_clothing``) -> apparel; anything with ``furniture``
    -> furniture; computers, telephony, audio, consoles, tablets, cameras, electronics ->
    electronics; everything else -> none.
    """
    c = category.lower()
    if "shoes" in c:
        return "shoes"
    if c.startswith(("fashion", "fashio_")):
        return "apparel"
    if "furniture" in c:
        return "furniture"
    if c in _ELECTRONICS:
        return "electronics"
    return "none"


def find_files(folder: Path) -> dict[str, Path]:
    """The nine Olist files in ``folder`` (``.csv`` or ``.csv.gz``).

    Raises :class:`ImportFormatError` naming every missing file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ImportFormatError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ImportFormatError(
            f"{folder} is a file; the Olist importer expects the folder holding the nine CSVs"
        )
    found: dict[str, Path] = {}
    for stem in FILES:
        for suffix in (".csv", ".csv.gz"):
            if (folder / f"{stem}{suffix}").is_file():
                found[stem] = folder / f"{stem}{suffix}"
                break
    missing = [f"{stem}.csv" for stem in FILES if stem not in found]
    if len(missing) == len(FILES):
        raise ImportFormatError(
            f"{folder} holds none of the nine Olist CSVs (olist_orders_dataset.csv, ...)"
        )
    if missing:
        raise ImportFormatError(f"{folder} is missing Olist file(s): {', '.join(missing)}")
    return found


def read(folder: Path) -> Dataset:
    """Read the nine Olist CSVs in ``folder`` into a canonical :class:`Dataset`.

    Nothing is written. Raises :class:`ImportFormatError` when a file is missing, empty, or
    lacks a column, before reading the rest.
    """
    paths = find_files(Path(folder))
    raw: dict[str, pd.DataFrame] = {}
    for stem, path in paths.items():
        df = read_text_csv(path)
        df.columns = [str(c).strip() for c in df.columns]
        require_columns(df, FILES[stem], path)
        raw[stem] = df

    geo = _geolocation(raw["olist_geolocation_dataset"])
    customers, person_of, merged = _customers(raw["olist_customers_dataset"], geo)
    orders = _orders(raw["olist_orders_dataset"], person_of)
    first_order = (
        pd.to_datetime(orders["purchased_at"], errors="coerce", format="mixed")
        .groupby(orders["customer_id"])
        .min()
    )
    customers["created_at"] = customers["customer_id"].map(first_order)
    items = _items(raw["olist_order_items_dataset"])
    products = _products(
        raw["olist_products_dataset"], raw["product_category_name_translation"], items
    )
    tables = {
        "customers": customers,
        "sellers": _sellers(raw["olist_sellers_dataset"], geo),
        "products": products,
        "orders": orders,
        "order_items": items,
        "payments": _payments(raw["olist_order_payments_dataset"]),
        "reviews": _reviews(raw["olist_order_reviews_dataset"]),
    }
    stems = {
        "customers": "olist_customers_dataset",
        "sellers": "olist_sellers_dataset",
        "products": "olist_products_dataset",
        "orders": "olist_orders_dataset",
        "order_items": "olist_order_items_dataset",
        "payments": "olist_order_payments_dataset",
        "reviews": "olist_order_reviews_dataset",
    }
    meta = {"folder": str(folder)}
    meta.update({f"rows_read:{t}": str(len(raw[s])) for t, s in stems.items()})
    meta["rows_read:geolocation"] = str(len(raw["olist_geolocation_dataset"]))
    meta["rows_read:category_translation"] = str(len(raw["product_category_name_translation"]))
    return Dataset(
        source=SOURCE,
        tables=tables,
        set_aside=merge_set_aside({"customers": {REASON_SAME_PERSON: merged}}),
        meta=meta,
    )


def _zip(s: pd.Series) -> pd.Series:
    """Zip prefixes as 5-character strings; a spreadsheet re-save drops the leading zeros."""
    z = blank_to_none(s)
    return z.where(z.isna(), z.astype(str).str.replace(r"\.0+$", "", regex=True).str.zfill(5))


def _geolocation(df: pd.DataFrame) -> pd.DataFrame:
    geo = pd.DataFrame(
        {
            "zip_prefix": _zip(df["geolocation_zip_code_prefix"]),
            "lat": pd.to_numeric(df["geolocation_lat"], errors="coerce"),
            "lon": pd.to_numeric(df["geolocation_lng"], errors="coerce"),
        }
    )
    return geo.dropna(subset=["zip_prefix"]).groupby("zip_prefix")[["lat", "lon"]].mean()


def _place(
    zip_prefix: pd.Series, city: pd.Series, state: pd.Series, geo: pd.DataFrame
) -> pd.DataFrame:
    z = _zip(zip_prefix)
    return pd.DataFrame(
        {
            "country": COUNTRY,
            "region": blank_to_none(state),
            "city": blank_to_none(city),
            "zip_prefix": z,
            "lat": z.map(geo["lat"]),
            "lon": z.map(geo["lon"]),
        }
    )


def _customers(df: pd.DataFrame, geo: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, int]:
    """Customers keyed by person, the customer_id -> person map, and how many rows merged."""
    person = blank_to_none(df["customer_unique_id"])
    # A row with no person id keeps its own customer_id, so it is neither lost nor merged.
    person = person.where(person.notna(), blank_to_none(df["customer_id"]))
    person_of = pd.Series(person.to_numpy(), index=blank_to_none(df["customer_id"]).to_numpy())
    person_of = person_of[~person_of.index.duplicated(keep="first")]
    place = _place(df["customer_zip_code_prefix"], df["customer_city"], df["customer_state"], geo)
    out = pd.concat([pd.DataFrame({"customer_id": person}), place], axis=1)
    first = ~out["customer_id"].duplicated(keep="first") | out["customer_id"].isna()
    merged = int((~first).sum())
    out = out.loc[first].reset_index(drop=True)
    out.insert(1, "created_at", None)
    return out, person_of, merged


def _orders(df: pd.DataFrame, person_of: pd.Series) -> pd.DataFrame:
    olist_customer = blank_to_none(df["customer_id"])
    # Unknown customer_ids stay as they are: the contract quarantines them as orphans.
    mapped = olist_customer.map(person_of)
    return pd.DataFrame(
        {
            "order_id": blank_to_none(df["order_id"]),
            "customer_id": mapped.where(mapped.notna(), olist_customer),
            "status": blank_to_none(df["order_status"]).str.lower(),
            "purchased_at": blank_to_none(df["order_purchase_timestamp"]),
            "approved_at": blank_to_none(df["order_approved_at"]),
            "shipped_at": blank_to_none(df["order_delivered_carrier_date"]),
            "delivered_at": blank_to_none(df["order_delivered_customer_date"]),
            "estimated_delivery_at": blank_to_none(df["order_estimated_delivery_date"]),
            "carrier": None,
        }
    )


def _items(df: pd.DataFrame) -> pd.DataFrame:
    order_id = blank_to_none(df["order_id"])
    seq = blank_to_none(df["order_item_id"])
    return pd.DataFrame(
        {
            "order_item_id": order_id.astype(str) + "-" + seq.astype(str),
            "order_id": order_id,
            "item_seq": seq,
            "product_id": blank_to_none(df["product_id"]),
            "seller_id": blank_to_none(df["seller_id"]),
            "quantity": 1,
            "unit_price": blank_to_none(df["price"]),
            "freight": blank_to_none(df["freight_value"]),
        }
    )


def _products(df: pd.DataFrame, translation: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    names = dict(
        zip(
            blank_to_none(translation["product_category_name"]),
            blank_to_none(translation["product_category_name_english"]),
            strict=True,
        )
    )
    pt = blank_to_none(df["product_category_name"])
    category = pt.map(lambda c: "unknown" if c is None else (names.get(c) or c))
    prices = pd.to_numeric(items["unit_price"], errors="coerce")
    median = prices.groupby(items["product_id"]).median()
    product_id = blank_to_none(df["product_id"])
    return pd.DataFrame(
        {
            "product_id": product_id,
            "category": category,
            "name": None,
            "size_type": category.map(size_type),
            "list_price": product_id.map(median),
            "unit_cost": None,
            "weight_g": blank_to_none(df["product_weight_g"]),
            "length_cm": blank_to_none(df["product_length_cm"]),
            "height_cm": blank_to_none(df["product_height_cm"]),
            "width_cm": blank_to_none(df["product_width_cm"]),
        }
    )


def _sellers(df: pd.DataFrame, geo: pd.DataFrame) -> pd.DataFrame:
    place = _place(df["seller_zip_code_prefix"], df["seller_city"], df["seller_state"], geo)
    return pd.concat([pd.DataFrame({"seller_id": blank_to_none(df["seller_id"])}), place], axis=1)


def _payments(df: pd.DataFrame) -> pd.DataFrame:
    kind = blank_to_none(df["payment_type"]).str.lower()
    # An unknown payment type passes through as written, so the contract names it.
    method = kind.map(lambda k: PAYMENT_METHODS.get(k, k) if isinstance(k, str) else k)
    return pd.DataFrame(
        {
            "order_id": blank_to_none(df["order_id"]),
            "payment_seq": blank_to_none(df["payment_sequential"]),
            "method": method,
            "installments": blank_to_none(df["payment_installments"]),
            "amount": blank_to_none(df["payment_value"]),
        }
    )


def _reviews(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "review_id": blank_to_none(df["review_id"]),
            "order_id": blank_to_none(df["order_id"]),
            "score": blank_to_none(df["review_score"]),
            "created_at": blank_to_none(df["review_creation_date"]),
            "answered_at": blank_to_none(df["review_answer_timestamp"]),
            "title": blank_to_none(df["review_comment_title"]),
            "comment": blank_to_none(df["review_comment_message"]),
        }
    )
