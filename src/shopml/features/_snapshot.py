"""What the warehouse knew at a cutoff: the canonical tables filtered to facts strictly before it.

Every feature builder starts from a :class:`Snapshot`, so the point-in-time rules live in one
place: an order exists once purchased, its later milestones (approval, shipping, delivery) only
once they happened, a return once returned, a review once written, a price once valid, a campaign
response once responded. Optional tables a dataset lacks read as empty tables of the canonical
schema, so the features built from them come out as 0 or null rather than an error.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any

import ibis
import ibis.expr.types as ir

from shopml.data.contracts import CONTRACTS, get_contract, key_column

_IBIS_TYPES = {
    "string": "string",
    "int": "int64",
    "float": "float64",
    "bool": "boolean",
    "timestamp": "timestamp",
}

SECONDS_PER_DAY = 86_400.0


def as_cutoff(cutoff: datetime | date | str) -> datetime:
    """A cutoff as a naive UTC datetime (the warehouse stores naive UTC timestamps)."""
    if isinstance(cutoff, str):
        cutoff = datetime.fromisoformat(cutoff)
    elif not isinstance(cutoff, datetime):  # a date: midnight at its start
        cutoff = datetime(cutoff.year, cutoff.month, cutoff.day)
    if cutoff.tzinfo is not None:
        cutoff = cutoff.astimezone(UTC).replace(tzinfo=None)
    # pandas.Timestamp is a datetime subclass; a plain datetime keeps literals portable.
    c = cutoff
    return datetime(c.year, c.month, c.day, c.hour, c.minute, c.second, c.microsecond)


def canonical_schema(table: str) -> ibis.Schema:
    """The Ibis schema of a canonical table, from its contract."""
    return ibis.schema({c.name: _IBIS_TYPES[c.dtype] for c in get_contract(table).columns})


def epoch_seconds(at: ir.Value) -> ir.IntegerValue:
    """Whole seconds since 1970 (null if ``at`` is): the same integer on every backend.

    DuckDB's ``epoch`` keeps the fraction of a second and Spark's ``unix_timestamp`` drops it;
    flooring both makes durations exact and equal on both to the second (every source shopml
    reads records whole seconds or coarser; a cutoff's fraction of a second is ignored).
    """
    return at.epoch_seconds().floor()


def days_between(later: ir.Value, earlier: ir.Value) -> ir.FloatingValue:
    """Fractional days from ``earlier`` to ``later`` (null if either is null)."""
    # Epoch seconds rather than interval types, and a float division (Spark would divide an
    # integer by the literal as a decimal, rounded to 6 places): the arithmetic then means the
    # same on every backend Ibis compiles to (DuckDB, Spark).
    diff = epoch_seconds(later) - epoch_seconds(earlier)
    return diff.cast("float64") / SECONDS_PER_DAY


# Sums of money (and other measured quantities) are added as whole millionths in integers.
EXACT_PLACES = 6


def units(x: ir.NumericValue, places: int = EXACT_PLACES) -> ir.IntegerValue:
    """``x`` in whole ``10**-places`` (millionths by default) as a 64-bit integer."""
    return (x.cast("float64") * 10**places).round().cast("int64")


def from_units(total: ir.NumericValue, places: int = EXACT_PLACES) -> ir.FloatingValue:
    """A sum of :func:`units` back as a float."""
    return total.cast("float64") / 10**places


def exact_sum(
    x: ir.NumericValue, where: ir.BooleanValue | None = None, places: int = EXACT_PLACES
) -> ir.FloatingScalar:
    """The sum of ``x`` rounded to ``places`` decimals, added as integers: the same to the last
    bit whatever order the engine adds the rows in. A float sum is not: DuckDB's threads
    merge their partial sums in a different order from one run to the next, and the last bit
    of a customer's spend then changed, and with it the model trained on it. Exact up to
    9.2e12 (int64 millionths); null over no row, like ``sum``. A sum of sums keeps the inner
    ones in :func:`units` (``units(x).sum()``) and sums those: one rounding per row."""
    return from_units(units(x, places).sum(where=where), places)


def mean_days_between(later: ir.Value, earlier: ir.Value) -> ir.FloatingScalar:
    """The mean of :func:`days_between` over a group's rows where both are known, from the
    integer sum of the seconds (exact, whatever the order of the rows)."""
    seconds = epoch_seconds(later) - epoch_seconds(earlier)
    return (
        seconds.sum().cast("float64")
        / seconds.count().cast("float64").nullif(0.0)
        / (SECONDS_PER_DAY)
    )


def ratio(num: ir.NumericValue, den: ir.NumericValue) -> ir.FloatingValue:
    """``num / den`` as a float, null when the denominator is 0 or null."""
    return num.cast("float64") / den.cast("float64").nullif(0.0)


def attach(base: ir.Table, parts: list[ir.Table], key: str | list[str]) -> ir.Table:
    """Left-join each part (keyed like ``base``) onto ``base``, keeping one copy of the key.

    The parts join in one flat chain on ``base``'s key, so the SQL is a single ``FROM`` with
    one ``LEFT JOIN`` per part rather than a nest of subqueries (smaller to compile, and the
    same plan on every backend).
    """
    keys = [key] if isinstance(key, str) else list(key)
    if not parts:
        return base
    joined: Any = base
    for i, part in enumerate(parts):
        joined = joined.left_join(part, keys, rname=f"{{name}}__{i}")
    return joined.drop(
        *[c for c in joined.columns if c not in base.columns and _is_key_copy(c, keys)]
    )


def _is_key_copy(column: str, keys: list[str]) -> bool:
    head, sep, tail = column.rpartition("__")
    return bool(sep) and head in keys and tail.isdigit()


TEXT_SUFFIX = "__text"


class Snapshot:
    """The canonical tables as known strictly before ``cutoff``, on an Ibis backend.

    With ``keys=True``, and when every canonical table on the backend stores the warehouse's
    integer id keys (see :mod:`shopml.data.warehouse`), the entity id columns (``customer_id``,
    ``order_id``, ``order_item_id``, ``product_id``, ``seller_id``) hold those keys instead of
    the ids, so every join and group-by on them runs on integers; a table's own id is then
    also there as text (:meth:`id_text`) for the output. A builder that asks for keys must
    output ids through :meth:`id_text`. Without keys on the backend (an older warehouse, another
    engine) the same expressions run on the ids themselves.
    """

    def __init__(self, backend: Any, cutoff: datetime | date | str, *, keys: bool = False) -> None:
        self.backend = backend
        self.cutoff = as_cutoff(cutoff)
        self.c: ir.TimestampScalar = ibis.literal(self.cutoff, type="timestamp")
        self._present = set(backend.list_tables())
        self._tables: dict[str, ir.Table] = {}
        self._stored: dict[str, ir.Table] = {}
        self._keys = keys

    def _stored_table(self, name: str) -> ir.Table:
        if name not in self._stored:
            self._stored[name] = self.backend.table(name)
        return self._stored[name]

    @cached_property
    def keyed(self) -> bool:
        """Whether id columns hold the warehouse's integer keys (all tables or none)."""
        if not self._keys:
            return False
        for name, contract in CONTRACTS.items():
            if contract.oracle or not contract.keyed_columns or not self.has(name):
                continue
            columns = set(self._stored_table(name).columns)
            if any(key_column(c) not in columns for c in contract.keyed_columns):
                return False
        return True

    def id_text(self, t: ir.Table, column: str) -> ir.StringValue:
        """A table's own id as text (``column`` itself unless it holds keys)."""
        return t[column + TEXT_SUFFIX] if self.keyed else t[column]

    # -- raw tables ------------------------------------------------------------------------
    def has(self, table: str) -> bool:
        return table in self._present

    def table(self, name: str) -> ir.Table:
        """A canonical table with exactly its contract columns, or an empty one if absent."""
        if name not in self._tables:  # one schema lookup per table, however often it is used
            self._tables[name] = self._read(name)
        return self._tables[name]

    def _read(self, name: str) -> ir.Table:
        schema = canonical_schema(name)
        contract = get_contract(name)
        keyed = contract.keyed_columns if self.keyed else []
        own = contract.primary_key[0] if len(contract.primary_key) == 1 else None
        if not self.has(name):
            empty = ibis.memtable(schema.to_pyarrow().empty_table())
            # Arrow gives timestamp(6); cast back so unions with real tables line up.
            cols = {
                c: empty[c].cast("uint64" if c in keyed else dtype) for c, dtype in schema.items()
            }
            if own in keyed:
                cols[own + TEXT_SUFFIX] = empty[own].cast("string")
            return empty.select(**cols)
        t = self._stored_table(name)
        # Only the contract's columns, cast only where an imported table's type differs.
        cols = {
            c: t[c]
            if t[c].type().copy(nullable=True) == dtype.copy(nullable=True)
            else t[c].cast(dtype)
            for c, dtype in schema.items()
        }
        if keyed:
            if own in keyed:
                cols[own + TEXT_SUFFIX] = cols[own]
            cols.update({c: t[key_column(c)] for c in keyed})
        return t.select(**cols)

    def ago(self, days: float) -> ir.TimestampScalar:
        """The instant ``days`` before the cutoff, as a literal."""
        return ibis.literal(self.cutoff - timedelta(days=days), type="timestamp")

    def days_before_cutoff(self, at: ir.Value) -> ir.FloatingValue:
        return days_between(self.c, at)

    def _known(self, at: ir.TimestampValue) -> ir.TimestampValue:
        """``at`` if it happened before the cutoff, else null (not yet known)."""
        return (at < self.c).ifelse(at, ibis.null("timestamp"))

    # -- facts known at the cutoff -----------------------------------------------------------
    @cached_property
    def orders(self) -> ir.Table:
        """Orders purchased before the cutoff; later milestones nulled; no ``status``.

        ``status`` is the order's *current* status (it may have changed after the cutoff and
        carries no timestamp), so it is left out. ``estimated_delivery_at`` and ``carrier`` are
        taken as fixed at purchase: the promise and the shipping option chosen at checkout.
        """
        o = self.table("orders")
        o = o.filter(o.purchased_at < self.c)
        return o.select(
            "order_id",
            "customer_id",
            "purchased_at",
            approved_at=self._known(o.approved_at),
            shipped_at=self._known(o.shipped_at),
            delivered_at=self._known(o.delivered_at),
            estimated_delivery_at=o.estimated_delivery_at,
            carrier=o.carrier,
        )

    @cached_property
    def items(self) -> ir.Table:
        """Order lines of the known orders, with their order's customer and purchase time."""
        i = self.table("order_items")
        o = self.orders.select("order_id", "customer_id", "purchased_at")
        j = i.join(o, "order_id")
        return j.mutate(line_value=j.unit_price * j.quantity)

    @cached_property
    def returns(self) -> ir.Table:
        """Returns made before the cutoff, of lines of known orders, with the line's columns."""
        r = self.table("returns")
        r = r.filter(r.returned_at < self.c).select(
            "return_id",
            "order_item_id",
            "returned_at",
            return_quantity=r.quantity,
            refund_amount=r.refund_amount,
        )
        return r.join(self.items, "order_item_id")

    @cached_property
    def written_reviews(self) -> ir.Table:
        """Reviews written before the cutoff (of any order: join to :attr:`orders` to keep
        only known orders' reviews)."""
        r = self.table("reviews")
        return r.filter(r.created_at < self.c).select(
            "review_id", "order_id", "score", "created_at"
        )

    @cached_property
    def reviews(self) -> ir.Table:
        """Reviews written before the cutoff, of known orders, with the order's customer."""
        return self.written_reviews.join(self.orders.select("order_id", "customer_id"), "order_id")

    @cached_property
    def web_events(self) -> ir.Table:
        e = self.table("web_events")
        return e.filter(e.event_at < self.c)

    @cached_property
    def campaign_sends(self) -> ir.Table:
        """Sends assigned (and, when the campaign is known, sent) before the cutoff.

        ``responded`` is replaced by whether the response happened before the cutoff: the stored
        flag is the current state and would reveal responses that came later.
        """
        s = self.table("campaign_sends")
        camp = self.table("campaigns").select("campaign_id", "sent_at")
        j = s.left_join(camp, "campaign_id").drop("campaign_id_right")
        started = ibis.coalesce(j.sent_at, j.assigned_at)
        j = j.filter((j.assigned_at < self.c) & (started < self.c))
        return j.select(
            "campaign_id",
            "customer_id",
            "group",
            "assigned_at",
            responded=(j.responded_at < self.c).fill_null(False),
        )

    @cached_property
    def price_history(self) -> ir.Table:
        p = self.table("price_history")
        return p.filter(p.valid_from < self.c)
