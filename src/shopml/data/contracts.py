"""The canonical commerce data model and the contract every table write is checked against.

A contract names a table's columns (type, nullability, allowed values, ranges), its primary key,
its references to other tables and row-level rules across columns. :func:`validate` splits a
frame into the rows that keep the contract (coerced to the canonical types) and the rows that
break it, each with the rules it broke, so that nothing is dropped silently.

Problems are of two kinds. A row whose key, entity, reference, amount or other required field is
unusable is *row-fatal*: the row is quarantined whole. A row whose only problem is one optional
field that contradicts the rest of the row (a carrier hand-over before the purchase, a promised
date before the purchase, an answer before the review) or is out of its plausible range (a
coordinate off the globe, a negative weight) is *repaired*: it is kept, that field is set to null,
and the repair is recorded with its rule and the value it replaced. Nothing downstream can then
derive anything from the dropped value (no shipping-time label from a nulled carrier date), and
everything else in the row keeps its use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

DType = Literal["string", "int", "float", "bool", "timestamp"]

DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP",
}


# Entity ids the warehouse keeps a 64-bit integer key beside, in a column named ``<id>__key``:
# feature queries join and group on the keys instead of the strings. A key is a pure function
# of the id (the low 64 bits of its MD5), so every table computes the same key for the same id
# on its own, whenever it was written. See :class:`shopml.data.warehouse.Warehouse`.
KEYED_IDS: tuple[str, ...] = ("customer_id", "order_id", "order_item_id", "product_id", "seller_id")
KEY_SUFFIX = "__key"
KEY_SQL = "md5_number_lower({})"


def key_column(column: str) -> str:
    """The name of the integer key column stored beside the id ``column``."""
    return column + KEY_SUFFIX


class ContractError(ValueError):
    """A whole input is unusable (for example a required column is missing)."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: DType
    nullable: bool = False
    allowed: frozenset[str] | None = None
    min: float | None = None
    max: float | None = None
    description: str = ""
    # An optional descriptive field (never a key, reference or amount): a value that fails its
    # type or range is nulled and recorded as a repair instead of quarantining the row.
    repairable: bool = False
    # An upsert keeps the earlier of the stored and the new value (a customer's first-seen time
    # must not move forward because a day of their orders was loaded on its own).
    keep_earliest: bool = False


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    table: str
    ref_columns: tuple[str, ...]

    @property
    def rule(self) -> str:
        return f"orphan:{','.join(self.columns)}->{self.table}"


@dataclass(frozen=True)
class RowCheck:
    """A rule across columns. ``ok`` returns True for rows that keep it (nulls should pass).

    ``repair`` names the (nullable) column to set to null when a row breaks the rule; without it
    the rule is row-fatal and the row is quarantined.
    """

    name: str
    ok: Callable[[pd.DataFrame], pd.Series]
    description: str = ""
    repair: str | None = None


@dataclass(frozen=True)
class Contract:
    table: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    checks: tuple[RowCheck, ...] = ()
    description: str = ""
    oracle: bool = False  # simulator truth, not part of a shop's own data

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.table} has no column {name!r}")

    def empty_frame(self) -> pd.DataFrame:
        return coerce_types(pd.DataFrame({c: [] for c in self.column_names}), self)[0]

    @property
    def keyed_columns(self) -> list[str]:
        """The id columns that get an integer key column beside them in the warehouse."""
        return [c for c in self.column_names if c in KEYED_IDS]

    def ddl(self) -> str:
        cols = [f'"{c.name}" {DUCKDB_TYPES[c.dtype]}' for c in self.columns]
        cols += [f'"{key_column(c)}" UBIGINT' for c in self.keyed_columns]
        return f'CREATE TABLE "{self.table}" ({", ".join(cols)})'


def _s(name: str, **kw: object) -> Column:
    return Column(name, "string", **kw)  # type: ignore[arg-type]


def _i(name: str, **kw: object) -> Column:
    return Column(name, "int", **kw)  # type: ignore[arg-type]


def _f(name: str, **kw: object) -> Column:
    return Column(name, "float", **kw)  # type: ignore[arg-type]


def _b(name: str, **kw: object) -> Column:
    return Column(name, "bool", **kw)  # type: ignore[arg-type]


def _t(name: str, **kw: object) -> Column:
    return Column(name, "timestamp", **kw)  # type: ignore[arg-type]


def _after(later: str, earlier: str, *, repair: str | None = None) -> RowCheck:
    def ok(df: pd.DataFrame) -> pd.Series:
        a, b = df[later], df[earlier]
        return a.isna() | b.isna() | (a >= b)

    return RowCheck(f"{later}>={earlier}", ok, f"{later} is not before {earlier}", repair)


def _geo() -> tuple[Column, ...]:
    return (
        _s("country", nullable=True),
        _s("region", nullable=True, description="state or province"),
        _s("city", nullable=True),
        _s("zip_prefix", nullable=True),
        _f("lat", nullable=True, min=-90, max=90, repairable=True),
        _f("lon", nullable=True, min=-180, max=180, repairable=True),
    )


ORDER_STATUSES = frozenset(
    {
        "created",
        "approved",
        "invoiced",
        "processing",
        "shipped",
        "delivered",
        "canceled",
        "unavailable",
    }
)
EVENT_TYPES = frozenset({"view", "add_to_cart", "purchase"})
PAYMENT_METHODS = frozenset(
    {"credit_card", "debit_card", "boleto", "voucher", "bank_transfer", "paypal", "other"}
)
SIZE_TYPES = frozenset({"none", "apparel", "shoes", "furniture", "electronics"})
CAMPAIGN_GROUPS = frozenset({"treatment", "control"})
CAMPAIGN_CHANNELS = frozenset({"email", "sms", "push"})


CONTRACTS: dict[str, Contract] = {}


def _register(*contracts: Contract) -> None:
    for c in contracts:
        CONTRACTS[c.table] = c


_register(
    Contract(
        "customers",
        (_s("customer_id"), _t("created_at", nullable=True, keep_earliest=True), *_geo()),
        ("customer_id",),
        description="One row per customer (a person who can order).",
    ),
    Contract(
        "sellers",
        (_s("seller_id"), *_geo()),
        ("seller_id",),
        description="Who ships the items (a marketplace seller, or the shop itself).",
    ),
    Contract(
        "products",
        (
            _s("product_id"),
            _s("category"),
            _s("name", nullable=True),
            _s("size_type", allowed=SIZE_TYPES),
            _f("list_price", nullable=True, min=0),
            _f("unit_cost", nullable=True, min=0),
            _f("weight_g", nullable=True, min=0, repairable=True),
            _f("length_cm", nullable=True, min=0, repairable=True),
            _f("height_cm", nullable=True, min=0, repairable=True),
            _f("width_cm", nullable=True, min=0, repairable=True),
        ),
        ("product_id",),
        description="The catalogue.",
    ),
    Contract(
        "orders",
        (
            _s("order_id"),
            _s("customer_id"),
            _s("status", allowed=ORDER_STATUSES),
            _t("purchased_at"),
            _t("approved_at", nullable=True),
            _t("shipped_at", nullable=True),
            _t("delivered_at", nullable=True),
            _t("estimated_delivery_at", nullable=True),
            _s("carrier", nullable=True),
        ),
        ("order_id",),
        (ForeignKey(("customer_id",), "customers", ("customer_id",)),),
        # Each timestamp after the purchase is one optional fact about the order: one that
        # contradicts the purchase time (clock or time-zone artefacts, seen in Olist) is dropped
        # alone. A delivery before the hand-over to the carrier drops the hand-over: the
        # delivery is what the customer saw, and the delivery label depends on it alone.
        (
            _after("approved_at", "purchased_at", repair="approved_at"),
            _after("shipped_at", "purchased_at", repair="shipped_at"),
            _after("delivered_at", "purchased_at", repair="delivered_at"),
            _after("estimated_delivery_at", "purchased_at", repair="estimated_delivery_at"),
            _after("delivered_at", "shipped_at", repair="shipped_at"),
        ),
        description="One row per order; timestamps are naive UTC.",
    ),
    Contract(
        "order_items",
        (
            _s("order_item_id"),
            _s("order_id"),
            _i("item_seq", min=1),
            _s("product_id"),
            _s("seller_id", nullable=True),
            _i("quantity", min=1),
            _f("unit_price", min=0),
            _f("freight", nullable=True, min=0),
        ),
        ("order_item_id",),
        (
            ForeignKey(("order_id",), "orders", ("order_id",)),
            ForeignKey(("product_id",), "products", ("product_id",)),
            ForeignKey(("seller_id",), "sellers", ("seller_id",)),
        ),
        description="Order lines; order_item_id is '<order_id>-<item_seq>'.",
    ),
    Contract(
        "payments",
        (
            _s("order_id"),
            _i("payment_seq", min=1),
            _s("method", allowed=PAYMENT_METHODS),
            _i("installments", min=0),
            _f("amount", min=0),
        ),
        ("order_id", "payment_seq"),
        (ForeignKey(("order_id",), "orders", ("order_id",)),),
    ),
    Contract(
        "reviews",
        (
            _s("review_id"),
            _s("order_id"),
            _i("score", min=1, max=5),
            _t("created_at"),
            _t("answered_at", nullable=True),
            _s("title", nullable=True),
            _s("comment", nullable=True),
        ),
        ("review_id", "order_id"),
        (ForeignKey(("order_id",), "orders", ("order_id",)),),
        (_after("answered_at", "created_at", repair="answered_at"),),
    ),
    Contract(
        "returns",
        (
            _s("return_id"),
            _s("order_item_id"),
            _t("returned_at"),
            _i("quantity", min=1),
            _f("refund_amount", nullable=True, min=0),
            _s("reason", nullable=True),
        ),
        ("return_id",),
        (ForeignKey(("order_item_id",), "order_items", ("order_item_id",)),),
        description="Items sent back; each links to the order line it returns.",
    ),
    Contract(
        "web_events",
        (
            _s("event_id"),
            _s("session_id"),
            _s("customer_id", nullable=True),
            _s("product_id", nullable=True),
            _s("event_type", allowed=EVENT_TYPES),
            _t("event_at"),
            _s("order_id", nullable=True),
        ),
        ("event_id",),
        (
            ForeignKey(("customer_id",), "customers", ("customer_id",)),
            ForeignKey(("product_id",), "products", ("product_id",)),
        ),
        description="Browsing funnel: view, add_to_cart and purchase events grouped in sessions.",
    ),
    Contract(
        "campaigns",
        (
            _s("campaign_id"),
            _s("name"),
            _s("channel", allowed=CAMPAIGN_CHANNELS),
            _t("sent_at"),
            _i("response_window_days", min=1),
            _f("discount_pct", nullable=True, min=0, max=100),
        ),
        ("campaign_id",),
    ),
    Contract(
        "campaign_sends",
        (
            _s("campaign_id"),
            _s("customer_id"),
            _s("group", allowed=CAMPAIGN_GROUPS),
            _t("assigned_at"),
            _b("responded"),
            _t("responded_at", nullable=True),
            _s("response_order_id", nullable=True),
        ),
        ("campaign_id", "customer_id"),
        (
            ForeignKey(("campaign_id",), "campaigns", ("campaign_id",)),
            ForeignKey(("customer_id",), "customers", ("customer_id",)),
        ),
        (_after("responded_at", "assigned_at", repair="responded_at"),),
        description="Who was targeted; 'control' rows were held out at random and not sent.",
    ),
    Contract(
        "price_history",
        (
            _s("product_id"),
            _t("valid_from"),
            _f("price", min=0),
            _b("is_test"),
        ),
        ("product_id", "valid_from"),
        (ForeignKey(("product_id",), "products", ("product_id",)),),
        description="List price from valid_from until the next row; is_test marks price tests.",
    ),
    # The simulator's truth: what generated each label, for scoring models against the best.
    Contract(
        "oracle_order_items",
        (_s("order_item_id"), _f("p_return", min=0, max=1)),
        ("order_item_id",),
        (ForeignKey(("order_item_id",), "order_items", ("order_item_id",)),),
        oracle=True,
    ),
    Contract(
        "oracle_orders",
        (
            _s("order_id"),
            _f("delivery_days_mean", min=0),
            _f("delivery_days_p50", min=0),
            _f("delivery_days_p90", min=0),
        ),
        ("order_id",),
        (ForeignKey(("order_id",), "orders", ("order_id",)),),
        oracle=True,
    ),
    Contract(
        "oracle_customers",
        (
            _s("customer_id"),
            _f("purchase_rate", min=0, description="orders per day while active, before season"),
            _f("dropout_prob", min=0, max=1, description="chance of churning after each order"),
            _t("churned_at", nullable=True, description="when the customer churned, if they did"),
            _f(
                "order_value_mean",
                min=0,
                description="expected order value (lines, no freight) at the start's prices",
            ),
            _f("order_value_sd", min=0, description="sd of order value at the start's prices"),
            _f("items_per_order_mean", min=1, description="expected lines per order"),
            _f("returner_propensity", description="log-odds shift of this customer's returns"),
            _f("discount_sensitivity", min=0, max=1, description="drives campaign uplift"),
            _i("taste_cluster", min=0, description="dominant latent taste cluster"),
        ),
        ("customer_id",),
        (ForeignKey(("customer_id",), "customers", ("customer_id",)),),
        oracle=True,
    ),
    Contract(
        "oracle_campaign_sends",
        (
            _s("campaign_id"),
            _s("customer_id"),
            _f("p_response_treated", min=0, max=1),
            _f("p_response_control", min=0, max=1),
        ),
        ("campaign_id", "customer_id"),
        (
            ForeignKey(
                ("campaign_id", "customer_id"), "campaign_sends", ("campaign_id", "customer_id")
            ),
        ),
        oracle=True,
    ),
    Contract(
        "oracle_products",
        (
            _s("product_id"),
            _f("base_demand", min=0, description="expected units per day at ref_price"),
            _f("ref_price", min=0),
            _f("elasticity", description="d log(demand) / d log(price); negative"),
        ),
        ("product_id",),
        (ForeignKey(("product_id",), "products", ("product_id",)),),
        oracle=True,
    ),
)

# Parents before children: the order in which a batch of tables is validated and written.
WRITE_ORDER: tuple[str, ...] = tuple(CONTRACTS)
CANONICAL_TABLES: tuple[str, ...] = tuple(t for t, c in CONTRACTS.items() if not c.oracle)
ORACLE_TABLES: tuple[str, ...] = tuple(t for t, c in CONTRACTS.items() if c.oracle)


def get_contract(table: str) -> Contract:
    try:
        return CONTRACTS[table]
    except KeyError:
        raise ContractError(
            f"unknown table {table!r}; known tables: {', '.join(CONTRACTS)}"
        ) from None


REPAIR_COLUMNS = ("row", "column", "rule", "original")


@dataclass
class ValidationResult:
    """One table's verdict: rows_read = accepted (clean) + repaired + quarantined.

    ``accepted`` holds every row kept, repaired ones included (with the field nulled);
    ``repairs`` has one row per nulled field: the row's position in ``accepted``, the column,
    the rule and the original value as text.
    """

    table: str
    accepted: pd.DataFrame
    quarantined: pd.DataFrame  # the offending rows as given, plus a 'rules' column
    rows_read: int
    by_rule: dict[str, int] = field(default_factory=dict)
    repairs: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(REPAIR_COLUMNS))
    )
    repaired_by_rule: dict[str, int] = field(default_factory=dict)

    @property
    def rows_repaired(self) -> int:
        """Rows kept with at least one field nulled."""
        return int(self.repairs["row"].nunique()) if len(self.repairs) else 0

    @property
    def rows_clean(self) -> int:
        """Rows kept as given."""
        return len(self.accepted) - self.rows_repaired


def coerce_types(df: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cast columns to their canonical types. Returns (frame, mask of cells that failed to cast)."""
    out: dict[str, pd.Series] = {}
    bad: dict[str, np.ndarray] = {}
    for col in contract.columns:
        s = df[col.name]
        was_null = s.isna().to_numpy()
        if col.dtype == "string":
            if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
                c = s.astype(object)
            else:
                c = s.astype(object).where(~was_null, None)
                c = c.map(lambda v: None if v is None else str(v))
            c = c.where(~was_null, None)
        elif col.dtype == "int":
            num = pd.to_numeric(s, errors="coerce")
            frac = num.notna() & (num != np.floor(num.fillna(0)))
            num = num.where(~frac)
            c = num.astype("Int64")
        elif col.dtype == "float":
            c = pd.to_numeric(s, errors="coerce").astype("float64")
            c = c.where(np.isfinite(c.to_numpy(dtype="float64", na_value=np.nan)) | c.isna())
        elif col.dtype == "bool":
            c = _to_bool(s)
        elif pd.api.types.is_datetime64_any_dtype(s.dtype):  # timestamp, already typed
            c = s.dt.tz_convert(None) if getattr(s.dt, "tz", None) is not None else s
            c = c.astype("datetime64[ns]")
        else:  # timestamp from text
            # Naive values are UTC by convention; values with an offset ("...Z", "+02:00") are
            # converted to it, so a column mixing both is read, not refused.
            c = pd.to_datetime(s, errors="coerce", format="mixed", utc=True)
            c = c.dt.tz_convert(None).astype("datetime64[ns]")
        bad[col.name] = ~was_null & c.isna().to_numpy()
        out[col.name] = c
    return pd.DataFrame(out, index=df.index), pd.DataFrame(bad, index=df.index)


def _to_bool(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("boolean")
    mapping = {
        "true": True,
        "t": True,
        "1": True,
        "yes": True,
        "y": True,
        "false": False,
        "f": False,
        "0": False,
        "no": False,
        "n": False,
    }
    return s.map(lambda v: mapping.get(str(v).strip().lower()) if pd.notna(v) else None).astype(
        "boolean"
    )


def validate(
    table: str,
    df: pd.DataFrame,
    parent_keys: Mapping[str, pd.DataFrame] | None = None,
) -> ValidationResult:
    """Check ``df`` against the table's contract.

    ``parent_keys`` maps a referenced table to a frame of its valid keys (the rows already in the
    warehouse plus those accepted in the same batch); a reference to a table not given there is
    not checked. A missing column raises :class:`ContractError`; every other problem is a
    per-row rule, and the row goes to quarantine with all the rules it broke.
    """
    contract = get_contract(table)
    missing = [c for c in contract.column_names if c not in df.columns]
    if missing:
        raise ContractError(f"table {table!r} is missing column(s): {', '.join(missing)}")
    raw = df.reset_index(drop=True)
    n = len(raw)
    typed, bad_cast = coerce_types(raw, contract)
    violations: dict[str, np.ndarray] = {}

    def add(rule: str, mask: np.ndarray | pd.Series) -> None:
        m = np.asarray(mask, dtype=bool)
        if m.any():
            violations[rule] = violations[rule] | m if rule in violations else m

    # Field-level problems, by the column they would null: (rule, column, mask).
    fixable: list[tuple[str, str, np.ndarray]] = []
    for col in contract.columns:
        s = typed[col.name]
        rule_add = add
        if col.repairable:

            def rule_add(rule: str, mask: np.ndarray | pd.Series, _c: str = col.name) -> None:
                m = np.asarray(mask, dtype=bool)
                if m.any():
                    fixable.append((rule, _c, m))

        rule_add(f"type:{col.name}", bad_cast[col.name].to_numpy())
        null = s.isna().to_numpy() & ~bad_cast[col.name].to_numpy()
        if not col.nullable:
            add(f"null:{col.name}", null)
        if col.allowed is not None:
            rule_add(f"allowed:{col.name}", s.notna().to_numpy() & ~s.isin(col.allowed).to_numpy())
        if col.min is not None:
            rule_add(f"range:{col.name}", (s < col.min).fillna(False).to_numpy(dtype=bool))
        if col.max is not None:
            rule_add(f"range:{col.name}", (s > col.max).fillna(False).to_numpy(dtype=bool))
    for check in contract.checks:
        if check.repair is None:
            add(f"check:{check.name}", ~check.ok(typed).fillna(True).to_numpy(dtype=bool))
    # Null the failed fields now, each repairable rule judged on the row as repaired so far (a
    # delivery dated before the purchase is nulled first, so it does not also cost the row its
    # carrier date).
    for _, column, mask in fixable:
        typed.loc[mask, column] = None
    for check in contract.checks:
        if check.repair is None:
            continue
        broken = ~check.ok(typed).fillna(True).to_numpy(dtype=bool)
        if broken.any():
            fixable.append((f"check:{check.name}", check.repair, broken))
            typed.loc[broken, check.repair] = None

    # Keys: a null key is already a null violation; duplicates keep the first clean occurrence.
    pk = list(contract.primary_key)
    so_far_bad = _any(violations, n)
    # A later duplicate of a row that itself broke a rule is not a duplicate of an accepted row.
    clean_dup = typed.loc[~so_far_bad, pk].duplicated(keep="first")
    dup = np.zeros(n, dtype=bool)
    dup[np.flatnonzero(~so_far_bad)[clean_dup.to_numpy()]] = True
    add("duplicate_key", dup)

    for fk in contract.foreign_keys:
        if parent_keys is None or fk.table not in parent_keys:
            continue
        parent = parent_keys[fk.table]
        child = typed[list(fk.columns)]
        present = child.notna().all(axis=1).to_numpy()
        if not present.any():
            continue
        ref = parent[list(fk.ref_columns)].drop_duplicates()
        ref.columns = list(fk.columns)
        found = _isin_rows(child, ref)
        add(fk.rule, present & ~found)

    # A row quarantined anyway lists every rule it broke, repairable ones included; the others
    # are kept with the offending fields nulled, and each nulled field is recorded.
    fatal = _any(violations, n)
    for rule, _, mask in fixable:
        add(rule, mask & fatal)
    bad = _any(violations, n)
    rules = _rules_per_row(violations, bad)
    quarantined = raw.loc[bad].copy()
    quarantined["rules"] = rules
    accepted = typed.loc[~bad].reset_index(drop=True)
    by_rule = {rule: int(m.sum()) for rule, m in violations.items()}
    position = np.cumsum(~bad) - 1  # a kept row's position among the kept ones
    parts = []
    for rule, column, mask in fixable:
        rows = np.flatnonzero(mask & ~bad)
        if len(rows):
            parts.append(
                pd.DataFrame(
                    {
                        "row": position[rows],
                        "column": column,
                        "rule": rule,
                        "original": [None if _isna(v) else str(v) for v in raw[column].iloc[rows]],
                    }
                )
            )
    repairs = (
        pd.concat(parts, ignore_index=True).sort_values(["row", "column"], kind="stable")
        if parts
        else pd.DataFrame(columns=list(REPAIR_COLUMNS))
    ).reset_index(drop=True)
    repaired_by_rule = {str(k): int(v) for k, v in repairs["rule"].value_counts().items()}
    return ValidationResult(table, accepted, quarantined, n, by_rule, repairs, repaired_by_rule)


def _isna(value: object) -> bool:
    na = pd.isna(value)
    return bool(na) if isinstance(na, bool | np.bool_) else False


def _any(violations: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    for m in violations.values():
        out |= m
    return out


def _rules_per_row(violations: Mapping[str, np.ndarray], bad: np.ndarray) -> list[str]:
    idx = np.flatnonzero(bad)
    if len(idx) == 0:
        return []
    parts: list[list[str]] = [[] for _ in idx]
    for rule, m in violations.items():
        for j in np.flatnonzero(m[idx]):
            parts[j].append(rule)
    return ["; ".join(p) for p in parts]


def _isin_rows(child: pd.DataFrame, ref: pd.DataFrame) -> np.ndarray:
    if child.shape[1] == 1:
        col = child.columns[0]
        return child[col].isin(ref[col]).to_numpy()
    key = pd.MultiIndex.from_frame(child)
    return key.isin(pd.MultiIndex.from_frame(ref))


def required_tables(tables: Iterable[str]) -> list[str]:
    """The tables in write order (parents first)."""
    wanted = set(tables)
    for t in wanted:
        get_contract(t)
    return [t for t in WRITE_ORDER if t in wanted]
