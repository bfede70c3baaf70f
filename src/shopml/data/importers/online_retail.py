"""Import UCI "Online Retail" / "Online Retail II" invoice lines (CSV, gzip CSV, XLSX, Parquet).

Mapping to the canonical tables:

* each purchase invoice becomes an order (``purchased_at`` = the invoice date, status
  ``delivered``, no delivery dates: the data has none);
* each of its lines becomes an order item (``item_seq`` = position within the invoice among the
  kept lines, ``order_item_id`` = ``<invoice>-<item_seq>``);
* ``Customer ID`` becomes the customer (a string without a spreadsheet's ".0"); the customer's
  country is the one on their latest line, ``created_at`` their first purchase;
* ``StockCode`` (upper-cased: the file writes some codes both ways) becomes the product, named
  by its most frequent description, priced at the median of its positive unit prices, with a
  category from keywords in the description (:data:`CATEGORY_KEYWORDS`) and ``size_type``
  ``none`` (gifts and homeware: size does not drive returns here);
* one seller, ``shop`` (the retailer itself);
* cancellation lines (invoice ``C...``, negative quantity) become returns of the latest earlier
  purchase line of the same customer and product whose quantity covers the returned one; each
  purchase line can absorb returns up to its quantity.

Lines set aside on purpose, each counted by reason (first matching reason wins):
adjustment codes (postage, fees, discounts, manual entries, bad-debt write-offs, tests,
vouchers: not products), lines without a customer (no customer to attach the order to), exact
duplicate lines, cancellations with no negative quantity, and cancellations with no earlier
purchase to return. Zero unit prices are kept (free items given to a customer are real order
lines, and the contract allows a price of 0); negative prices and bad quantities are left to
the contract, which quarantines them with their rule.
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from shopml.data.dataset import Dataset
from shopml.data.importers._common import (
    ImportFormatError,
    count_reasons,
    delimiter_hint,
    id_strings,
    merge_set_aside,
    parse_timestamps,
    read_text_csv,
    sniff,
)

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse

SOURCE = "online-retail"
SELLER_ID = "shop"

# Canonical column -> the accepted spellings (Online Retail II first, the older file second).
COLUMNS: dict[str, tuple[str, ...]] = {
    "invoice": ("Invoice", "InvoiceNo"),
    "stock_code": ("StockCode",),
    "description": ("Description",),
    "quantity": ("Quantity",),
    "invoice_date": ("InvoiceDate",),
    "price": ("Price", "UnitPrice"),
    "customer": ("Customer ID", "CustomerID"),
    "country": ("Country",),
}

# Stock codes that are bookkeeping, not products: postage and carriage (POST, DOT, C2, C3),
# manual entries (M), discounts (D), samples (S), bad debt (B), bank and marketplace fees,
# charity (CRUK), cushion pads sold at 0.001 to balance invoices (PADS).
ADJUSTMENT_CODES = frozenset(
    {
        "POST",
        "DOT",
        "C2",
        "C3",
        "M",
        "D",
        "S",
        "B",
        "CRUK",
        "PADS",
        "BANK CHARGES",
        "AMAZONFEE",
        "GIFT",
    }
)
# Families of such codes: ADJUST, ADJUST2...; TEST001...; gift vouchers gift_0001_30...
ADJUSTMENT_PATTERN = re.compile(r"^(ADJUST\d*|TEST\d*|GIFT_\d+_\d+|C\d+)$")

REASON_ADJUSTMENT = "adjustment code: postage, fee, discount, manual or test line, not a product"
REASON_NO_CUSTOMER = "no customer id: no customer to attach the order to"
REASON_DUPLICATE = "duplicate line: an exact copy of an earlier line"
REASON_CANCEL_QTY = "cancellation without a negative quantity: nothing to return"
REASON_UNMATCHED = "unmatched cancellation: no earlier purchase of this product by this customer"

# Description keywords -> category; the first rule whose keyword appears (as a word) wins, so
# seasonal and specific rules come before broad ones. Lines with no description are "unknown",
# descriptions matching nothing "other".
CATEGORY_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("christmas", ("CHRISTMAS", "XMAS", "ADVENT", "SANTA", "REINDEER", "SNOWMAN", "NATIVITY")),
    (
        "candles_and_lighting",
        (
            "CANDLE",
            "CANDLES",
            "LIGHT",
            "LIGHTS",
            "T-LIGHT",
            "LANTERN",
            "NIGHTLIGHT",
            "LAMP",
            "CANDLEHOLDER",
        ),
    ),
    ("bags", ("BAG", "BAGS", "PURSE", "SHOPPER", "TOTE", "HANDBAG", "RUCKSACK", "BACKPACK")),
    (
        "stationery_and_wrapping",
        (
            "CARD",
            "CARDS",
            "WRAP",
            "PAPER",
            "NOTEBOOK",
            "PENCIL",
            "PENCILS",
            "PEN",
            "PENS",
            "STICKER",
            "STICKERS",
            "ENVELOPE",
            "ENVELOPES",
            "TISSUE",
            "TISSUES",
            "RIBBON",
            "RIBBONS",
            "JOURNAL",
            "NOTEPAD",
            "ERASER",
            "CALENDAR",
        ),
    ),
    (
        "kitchen_and_dining",
        (
            "MUG",
            "MUGS",
            "CUP",
            "CUPS",
            "SAUCER",
            "PLATE",
            "PLATES",
            "BOWL",
            "BOWLS",
            "JAR",
            "JARS",
            "TEAPOT",
            "TEA",
            "CAKE",
            "CAKES",
            "BAKING",
            "LUNCH",
            "TIN",
            "TINS",
            "BOTTLE",
            "SPOON",
            "SPOONS",
            "TRAY",
            "NAPKIN",
            "NAPKINS",
            "COASTER",
            "COASTERS",
            "JUG",
            "CUTLERY",
            "APRON",
            "GLASS",
            "CHOPSTICKS",
            "KITCHEN",
            "MOULD",
            "CAKESTAND",
            "TUMBLER",
        ),
    ),
    (
        "toys_and_games",
        (
            "TOY",
            "TOYS",
            "GAME",
            "GAMES",
            "DOLL",
            "DOLLS",
            "PUZZLE",
            "JIGSAW",
            "DOMINOES",
            "SKIPPING",
            "PLAYHOUSE",
            "SPACEBOY",
            "DOLLY",
            "BLOCKS",
            "CRAYONS",
            "TEDDY",
            "KIDS",
            "CHILDRENS",
            "CHILDREN'S",
        ),
    ),
    (
        "jewellery_and_accessories",
        (
            "NECKLACE",
            "BRACELET",
            "EARRINGS",
            "RING",
            "RINGS",
            "BROOCH",
            "HAIR",
            "HAIRCLIP",
            "CLIP",
            "UMBRELLA",
            "SCARF",
            "HAT",
            "GLOVES",
            "CHARM",
            "BEAD",
            "BEADS",
            "DIAMANTE",
        ),
    ),
    ("party", ("PARTY", "BUNTING", "BALLOON", "BALLOONS", "BIRTHDAY", "CONFETTI", "GARLAND")),
    (
        "home_decor",
        (
            "CUSHION",
            "DOORMAT",
            "CLOCK",
            "FRAME",
            "SIGN",
            "MIRROR",
            "VASE",
            "HOOK",
            "HOOKS",
            "WALL",
            "DOORSTOP",
            "HANGING",
            "ORNAMENT",
            "DECORATION",
            "HEART",
            "WREATH",
            "GARDEN",
            "PLANT",
            "POT",
            "BOX",
            "BOXES",
            "BASKET",
            "DRAWER",
            "CABINET",
            "SHELF",
            "THROW",
            "QUILT",
            "BLANKET",
            "CURTAIN",
            "PICTURE",
            "PLAQUE",
            "STORAGE",
            "HOLDER",
        ),
    ),
)

_CATEGORY_REGEX = [
    (name, re.compile(r"(?<![A-Z0-9])(" + "|".join(map(re.escape, words)) + r")(?![A-Z0-9])"))
    for name, words in CATEGORY_KEYWORDS
]


def categorise(description: str | None) -> str:
    """A product category from keywords in its description (see :data:`CATEGORY_KEYWORDS`)."""
    if description is None or not str(description).strip():
        return "unknown"
    text = str(description).upper()
    for name, regex in _CATEGORY_REGEX:
        if regex.search(text):
            return name
    return "other"


def is_adjustment(stock_code: pd.Series, invoice: pd.Series) -> pd.Series:
    """True for bookkeeping lines: a known adjustment code, or an "A" (adjust bad debt) invoice."""
    codes = stock_code.fillna("").str.upper()
    # A few thousand distinct codes against half a million lines: test each code once.
    distinct = pd.Series(codes.unique())
    flagged = distinct[distinct.isin(ADJUSTMENT_CODES) | distinct.str.match(ADJUSTMENT_PATTERN)]
    return codes.isin(flagged) | invoice.fillna("").str.upper().str.startswith("A")


def read(path: Path) -> Dataset:
    """Read an Online Retail (II) file into a canonical :class:`Dataset` (nothing is written).

    Accepts both column spellings, as CSV, gzip CSV, XLSX (every sheet with the columns) or
    Parquet, detected from the file's content. Raises :class:`ImportFormatError` for a file that
    is not Online Retail data.
    """
    path = Path(path)
    raw = _read_frame(path)
    lines = _normalise(raw, path)
    return build_dataset(lines, path)


def _read_frame(path: Path) -> pd.DataFrame:
    kind = sniff(path)
    if kind in ("text", "gzip"):
        return read_text_csv(path)
    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:
            raise ImportFormatError(f"{path} is not a readable Parquet file ({exc})") from None
    try:
        sheets = pd.read_excel(path, sheet_name=None, engine="openpyxl")
    except Exception as exc:
        raise ImportFormatError(f"{path} is not a readable XLSX workbook ({exc})") from None
    # The UCI workbook keeps one year per sheet: use every sheet that has the columns.
    usable = [df for df in sheets.values() if _resolve(df) is not None]
    if not usable:
        first = next(iter(sheets.values()), pd.DataFrame())
        _check_columns(first, path)
    return pd.concat(usable, ignore_index=True)


def _resolve(df: pd.DataFrame) -> dict[str, str] | None:
    """Canonical name -> the frame's column, or None if some column is missing."""
    present = {str(c).strip(): c for c in df.columns}
    out = {}
    for key, spellings in COLUMNS.items():
        found = next((present[s] for s in spellings if s in present), None)
        if found is None:
            return None
        out[key] = found
    return out


def _check_columns(df: pd.DataFrame, path: Path) -> dict[str, str]:
    mapping = _resolve(df)
    if mapping is not None:
        return mapping
    present = {str(c).strip() for c in df.columns}
    missing = [" or ".join(s) for s in COLUMNS.values() if not any(x in present for x in s)]
    hint = delimiter_hint(df)
    if hint:
        raise ImportFormatError(
            f"{path} {hint}; expected the Online Retail columns "
            f"{', '.join(s[0] for s in COLUMNS.values())}"
        )
    raise ImportFormatError(
        f"{path} is not Online Retail data: missing column(s) {', '.join(missing)}"
    )


def _normalise(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The lines with canonical column names and types, in file order."""
    cols = _check_columns(raw, path)
    if raw.empty:
        raise ImportFormatError(f"{path} has the Online Retail columns but no lines")
    df = pd.DataFrame(index=raw.index)
    df["invoice"] = id_strings(raw[cols["invoice"]]).fillna("")
    df["stock_code"] = id_strings(raw[cols["stock_code"]]).fillna("").str.upper()
    desc = raw[cols["description"]].astype(object)
    df["description"] = desc.where(desc.notna(), "").astype(str).str.strip()
    df["quantity"] = pd.to_numeric(raw[cols["quantity"]], errors="coerce")
    df["invoice_date"] = parse_timestamps(raw[cols["invoice_date"]])
    df["price"] = pd.to_numeric(raw[cols["price"]], errors="coerce")
    df["customer"] = id_strings(raw[cols["customer"]])
    country = raw[cols["country"]].astype(object)
    df["country"] = country.where(country.notna() & (country.astype(str).str.strip() != ""), None)
    # The raw line as written decides exact duplicates (before any normalisation).
    df["_dup"] = raw.astype(str).duplicated(keep="first").to_numpy()
    return df.reset_index(drop=True)


def build_dataset(lines: pd.DataFrame, path: Path | str = "") -> Dataset:
    """Turn normalised lines (see :func:`_normalise`) into the canonical tables."""
    n = len(lines)
    cancel = lines["invoice"].str.upper().str.startswith("C").to_numpy()
    reason = pd.Series([None] * n, dtype=object)

    def set_aside(mask: np.ndarray | pd.Series, why: str) -> None:
        m = np.asarray(mask, dtype=bool) & reason.isna().to_numpy()
        reason[m] = why

    set_aside(is_adjustment(lines["stock_code"], lines["invoice"]), REASON_ADJUSTMENT)
    set_aside(lines["customer"].isna(), REASON_NO_CUSTOMER)
    set_aside(lines["_dup"], REASON_DUPLICATE)
    # A cancellation must take something back; a zero or positive (or unreadable) quantity on a
    # C invoice has nothing to return.
    set_aside(cancel & ~(lines["quantity"] < 0).to_numpy(), REASON_CANCEL_QTY)

    kept = reason.isna().to_numpy()
    buys = lines.loc[kept & ~cancel].copy()
    buys["item_seq"] = buys.groupby("invoice", sort=False).cumcount() + 1
    buys["order_item_id"] = buys["invoice"] + "-" + buys["item_seq"].astype(str)

    cancels = lines.loc[kept & cancel]
    returns, unmatched = _match_returns(buys, cancels)
    reason[unmatched] = REASON_UNMATCHED

    tables = _tables(buys, returns)
    counts = merge_set_aside(
        {
            "order_items": count_reasons(reason[~cancel]),
            "returns": count_reasons(reason[cancel]),
        }
    )
    meta = {
        "file": str(path),
        "rows_read:lines": str(n),
        "rows_read:order_items": str(int((~cancel).sum())),
        "rows_read:returns": str(int(cancel.sum())),
    }
    ds = Dataset(source=SOURCE, tables=tables, set_aside=counts, meta=meta)

    def match_stored(wh: Warehouse) -> None:
        """On an append, match the cancellations again, against the stored purchase lines too:
        a return usually comes in a later file than its purchase."""
        returns, unmatched = _match_returns(_with_stored_lines(wh, buys, cancels), cancels)
        again = reason.copy()
        again[again == REASON_UNMATCHED] = None
        again[unmatched] = REASON_UNMATCHED
        ds.tables["returns"] = returns
        ds.set_aside = merge_set_aside(
            {
                "order_items": count_reasons(again[~cancel]),
                "returns": count_reasons(again[cancel]),
            }
        )

    if len(cancels):
        ds.prepare_append = match_stored
    return ds


def _with_stored_lines(wh: Warehouse, buys: pd.DataFrame, cancels: pd.DataFrame) -> pd.DataFrame:
    """The file's purchase lines plus the warehouse's lines of the same (customer, product)
    pairs as the cancellations, each with the quantity not yet returned. Lines and returns that
    this file itself brings (a file appended twice) count once, as the file has them."""
    if not (wh.exists("order_items") and wh.exists("orders")):
        return buys
    pairs = cancels[["customer", "stock_code"]].drop_duplicates()
    wh.con.register("_cancel_pairs", pairs)
    try:
        returned = (
            "SELECT order_item_id, sum(quantity) AS q FROM returns "
            "WHERE NOT list_contains(?, return_id) GROUP BY order_item_id"
            if wh.exists("returns")
            else "SELECT NULL::VARCHAR AS order_item_id, 0 AS q WHERE false"
        )
        own_returns = _return_ids(cancels)
        stored = wh.con.execute(
            f"""SELECT i.order_item_id, o.customer_id AS customer, i.product_id AS stock_code,
                       i.quantity - coalesce(r.q, 0) AS quantity, o.purchased_at AS invoice_date
                FROM order_items i JOIN orders o USING (order_id)
                JOIN _cancel_pairs p ON p.customer = o.customer_id AND p.stock_code = i.product_id
                LEFT JOIN ({returned}) r USING (order_item_id)""",
            [own_returns] if wh.exists("returns") else [],
        ).df()
    finally:
        wh.con.unregister("_cancel_pairs")
    stored = stored.loc[~stored["order_item_id"].isin(buys["order_item_id"])]
    if stored.empty:
        return buys
    cols = ["order_item_id", "customer", "stock_code", "quantity", "invoice_date"]
    if buys.empty:  # a file of cancellations only
        return stored[cols].reset_index(drop=True)
    return pd.concat([stored[cols], buys[cols]], ignore_index=True)


def _return_ids(cancels: pd.DataFrame) -> list[str]:
    """The return ids this file's cancellations can get (``<invoice>-<n>``)."""
    seq = cancels.groupby("invoice", sort=False).cumcount() + 1
    return (cancels["invoice"] + "-" + seq.astype(str)).tolist()


def _match_returns(buys: pd.DataFrame, cancels: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    """Link each cancellation line to the purchase line it returns.

    Rule: among the same customer's purchase lines of the same product dated no later than the
    cancellation, take the latest whose quantity not yet returned covers the cancelled quantity
    (cancellations are processed in date order, so earlier returns use up lines first).
    Returns the canonical returns frame and the index labels of the unmatched cancellations.
    """
    remaining = buys["quantity"].to_numpy(dtype=float).copy()
    dates = buys["invoice_date"].to_numpy()
    item_ids = buys["order_item_id"].to_numpy()
    candidates: dict[tuple[str, str], list[int]] = {}
    # Only purchase lines of a (customer, product) that has a cancellation can be returned.
    pair = buys["customer"] + "\x1f" + buys["stock_code"]
    relevant = pair.isin(cancels["customer"] + "\x1f" + cancels["stock_code"]).to_numpy()
    # Positions sorted by date within each (customer, product): bisect finds "no later than".
    order = np.lexsort((np.arange(len(buys)), dates))
    order = order[relevant[order]]
    cust, code = buys["customer"].to_numpy(), buys["stock_code"].to_numpy()
    for pos in order:
        candidates.setdefault((cust[pos], code[pos]), []).append(int(pos))
    key_dates = {k: [dates[p] for p in v] for k, v in candidates.items()}

    rows: list[dict[str, object]] = []
    unmatched: list[int] = []
    ordered = cancels.assign(_pos=np.arange(len(cancels))).sort_values(
        ["invoice_date", "_pos"], kind="stable", na_position="last"
    )
    seq = (ordered.groupby("invoice", sort=False).cumcount() + 1).to_numpy()
    for (label, invoice, customer, code, quantity, when, price), line_no in zip(
        ordered[
            ["invoice", "customer", "stock_code", "quantity", "invoice_date", "price"]
        ].itertuples(index=True, name=None),
        seq,
        strict=True,
    ):
        qty = -float(quantity)
        key = (customer, code)
        match = None
        if key in candidates and pd.notna(when):
            upto = bisect.bisect_right(key_dates[key], np.datetime64(when))
            for pos in reversed(candidates[key][:upto]):
                if remaining[pos] >= qty:
                    match = pos
                    break
        if match is None:
            unmatched.append(int(label))
            continue
        remaining[match] -= qty
        rows.append(
            {
                "return_id": f"{invoice}-{line_no}",
                "order_item_id": item_ids[match],
                "returned_at": when,
                "quantity": qty,
                # The cancellation's own price is what was refunded; a negative one is left for
                # the contract to reject.
                "refund_amount": qty * price if pd.notna(price) else None,
                "reason": None,
            }
        )
    cols = ["return_id", "order_item_id", "returned_at", "quantity", "refund_amount", "reason"]
    returns = pd.DataFrame(rows, columns=cols)
    if not returns.empty:
        returns = returns.sort_values("return_id", kind="stable").reset_index(drop=True)
    return returns, unmatched


def _tables(buys: pd.DataFrame, returns: pd.DataFrame) -> dict[str, pd.DataFrame]:
    items = pd.DataFrame(
        {
            "order_item_id": buys["order_item_id"],
            "order_id": buys["invoice"],
            "item_seq": buys["item_seq"],
            "product_id": buys["stock_code"],
            "seller_id": SELLER_ID,
            "quantity": buys["quantity"],
            "unit_price": buys["price"],
            "freight": None,
        }
    ).reset_index(drop=True)

    by_invoice = buys.groupby("invoice", sort=False)
    orders = pd.DataFrame(
        {
            "order_id": list(by_invoice.groups),
            "customer_id": by_invoice["customer"].first().to_numpy(),
            "status": "delivered",
            "purchased_at": by_invoice["invoice_date"].min().to_numpy(),
        }
    )
    for col in ("approved_at", "shipped_at", "delivered_at", "estimated_delivery_at", "carrier"):
        orders[col] = None

    latest = buys.sort_values("invoice_date", kind="stable").groupby("customer", sort=True)
    customers = pd.DataFrame(
        {
            "customer_id": latest["customer"].first().index,
            "created_at": latest["invoice_date"].min().to_numpy(),
            "country": latest["country"].last().to_numpy(),
        }
    )
    for col in ("region", "city", "zip_prefix", "lat", "lon"):
        customers[col] = None

    products = _products(buys)
    sellers = pd.DataFrame(
        [
            {
                "seller_id": SELLER_ID,
                "country": "United Kingdom",
                "region": None,
                "city": None,
                "zip_prefix": None,
                "lat": None,
                "lon": None,
            }
        ]
    )
    return {
        "customers": customers,
        "sellers": sellers,
        "products": products,
        "orders": orders,
        "order_items": items,
        "returns": returns,
    }


def _products(buys: pd.DataFrame) -> pd.DataFrame:
    codes = sorted(buys["stock_code"].unique())
    named = buys.loc[buys["description"] != "", ["stock_code", "description"]]
    # The most frequent description; ties go to the alphabetically first, for determinism.
    freq = named.value_counts().reset_index(name="n")
    freq = freq.sort_values(["stock_code", "n", "description"], ascending=[True, False, True])
    names = freq.drop_duplicates("stock_code").set_index("stock_code")["description"]
    positive = buys.loc[buys["price"] > 0]
    list_price = positive.groupby("stock_code")["price"].median()
    name = pd.Series(codes, dtype=object).map(names)
    return pd.DataFrame(
        {
            "product_id": codes,
            "category": [categorise(v if isinstance(v, str) else None) for v in name],
            "name": name.where(name.notna(), None).to_numpy(),
            "size_type": "none",
            "list_price": pd.Series(codes).map(list_price).to_numpy(),
            "unit_cost": None,
            "weight_g": None,
            "length_cm": None,
            "height_cm": None,
            "width_cm": None,
        }
    )
