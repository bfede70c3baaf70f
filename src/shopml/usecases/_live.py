"""Live checks: what a use case watches in its served answers beyond drift and delayed-label
performance (a recommender's coverage and hits, a price's guardrails, segment shares).

A use case declares its own in :meth:`UseCase.live_checks`, which gets a :class:`LiveContext`
(the warehouse, the check's clock, the served answers, the training reference) and returns
:class:`LiveFigure` values; monitoring stores, shows and gauges them. The checks that more
than one kind of use case can share are here: :func:`ranking_checks` for any use case that
recommends, :func:`cluster_shares` for any that assigns segments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.runtime.predictions import PredictionWindow

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse
    from shopml.usecases.base import UseCase


@dataclass(frozen=True)
class LiveFigure:
    """One figure of a live check. ``performance``: judged on what really happened (hits of
    recommendations), else a use-case-specific figure (coverage, violations, shares)."""

    metric: str
    value: float
    n: int | None = None
    feature: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    performance: bool = False


@dataclass
class LiveContext:
    """What a live check may read.

    ``window``: the served version's recent answers (the check's traffic window, possibly a
    sample); ``history(since)``: its answers from ``since`` to ``now`` (outputs only), for
    checks that wait for what happened after an answer; ``reference``: the training reference
    (inputs and ``output.<name>`` columns) or None. Everything known strictly before ``now``
    may be used.
    """

    wh: Warehouse
    now: datetime
    window: PredictionWindow
    history: Callable[[datetime], PredictionWindow]
    reference: pd.DataFrame | None = None


def days_of(ts: pd.Series) -> pd.Series:
    """The naive UTC midnight of each timestamp, vectorised (a window may hold millions)."""
    t = pd.to_datetime(ts, utc=True).dt.tz_convert("UTC").dt.tz_localize(None)
    return t.dt.floor("D")


def purchases(wh: Warehouse, start: datetime, end: datetime) -> pd.DataFrame:
    """Lines bought (not canceled) between ``start`` and ``end``: customer, product, time,
    revenue, quantity."""
    return wh.con.execute(
        """
        SELECT o.customer_id, i.product_id, o.purchased_at,
               i.quantity * i.unit_price AS revenue, i.quantity
        FROM order_items i JOIN orders o USING (order_id)
        WHERE o.purchased_at >= ? AND o.purchased_at < ? AND o.status <> 'canceled'
        """,
        [start, end],
    ).df()


def ranking_checks(uc: UseCase, live: LiveContext, items: str = "products") -> list[LiveFigure]:
    """Coverage of the catalogue, novelty (mean self-information of what is recommended, by
    recent popularity), and, once the label window has passed, precision and hit rate (the
    customer bought a recommended product within the window)."""
    wh, known_by = live.wh, live.now
    horizon = timedelta(days=uc.monitoring.label_delay_days or uc.horizon_days)
    window = live.history(live.window.start - horizon)
    if not len(window) or items not in window.outputs.columns:
        return []
    lists = [p if isinstance(p, list) else [] for p in window.outputs[items]]
    recommended = [p for ps in lists for p in ps]
    row = wh.con.execute("SELECT count(*) FROM products").fetchone()
    catalogue = int(row[0]) if row else 0
    out = [
        LiveFigure(
            "coverage",
            len(set(recommended)) / catalogue if catalogue else float("nan"),
            n=len(lists),
            detail={"distinct_recommended": len(set(recommended)), "catalogue": catalogue},
        )
    ]
    end = window.end
    recent = purchases(wh, end - timedelta(days=90), min(end, known_by))
    if len(recent) and recommended:
        share = recent.groupby("product_id")["quantity"].sum()
        share = share / share.sum()
        floor = 1.0 / (len(recent) + 1)
        info = [-np.log2(share.get(p, floor)) for p in recommended]
        out.append(LiveFigure("novelty", float(np.mean(info)), n=len(recommended)))
    frame = window.frame.assign(products=lists, day=days_of(window.frame["ts"]))
    done = frame[frame["day"] + horizon <= pd.Timestamp(known_by)]
    if len(done):
        first, last = done["day"].min().to_pydatetime(), done["day"].max().to_pydatetime()
        bought = purchases(wh, first, last + horizon)
        hits, total, any_hit = 0, 0, 0
        by_customer = {c: g for c, g in bought.groupby("customer_id")}
        for cust, day, products in zip(
            done["entity_id"], done["day"], done["products"], strict=True
        ):
            g = by_customer.get(cust)
            got: set[str] = set()
            if g is not None:
                got = set(
                    g.loc[
                        (g["purchased_at"] >= day) & (g["purchased_at"] < day + horizon),
                        "product_id",
                    ]
                )
            h = len(got.intersection(products))
            hits += h
            total += len(products)
            any_hit += h > 0
        precision = hits / total if total else float("nan")
        out.append(LiveFigure("precision", precision, n=len(done), performance=True))
        out.append(LiveFigure("hit_rate", any_hit / len(done), n=len(done), performance=True))
    return out


def cluster_shares(uc: UseCase, live: LiveContext) -> list[LiveFigure]:
    """The share of each segment in the window, and the largest change from the reference."""
    col = uc.monitoring.prediction
    window = live.window
    if not len(window) or col not in window.outputs.columns:
        return []
    served = pd.to_numeric(window.outputs[col], errors="coerce").dropna().astype(int)
    shares = served.value_counts(normalize=True).sort_index()
    out = [
        LiveFigure("segment_share", float(v), n=len(served), feature=str(k))
        for k, v in shares.items()
    ]
    ref_col = f"output.{col}"
    if live.reference is not None and ref_col in live.reference.columns:
        ref = live.reference[ref_col].dropna().astype(int).value_counts(normalize=True)
        keys = set(ref.index) | set(shares.index)
        change = max(abs(shares.get(k, 0.0) - ref.get(k, 0.0)) for k in keys) if keys else 0.0
        out.append(LiveFigure("segment_share_max_change", float(change), n=len(served)))
    return out
