"""What only some use cases have to watch: recommendations' coverage, novelty and hits;
pricing's guardrails and realised revenue against expected; segment sizes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.monitoring.performance import days_of
from shopml.monitoring.store import MetricRow

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse
    from shopml.monitoring.store import PredictionWindow
    from shopml.usecases.base import UseCase


def _purchases(wh: Warehouse, start: datetime, end: datetime) -> pd.DataFrame:
    return wh.con.execute(
        """
        SELECT o.customer_id, i.product_id, o.purchased_at,
               i.quantity * i.unit_price AS revenue, i.quantity
        FROM order_items i JOIN orders o USING (order_id)
        WHERE o.purchased_at >= ? AND o.purchased_at < ? AND o.status <> 'canceled'
        """,
        [start, end],
    ).df()


def recommender(
    uc: UseCase, wh: Warehouse, window: PredictionWindow, known_by: datetime
) -> list[MetricRow]:
    """Coverage of the catalogue, novelty (mean self-information of what is recommended, by
    recent popularity), and, once the label window has passed, precision and hit rate."""
    if not len(window) or "products" not in window.outputs.columns:
        return []
    lists = [p if isinstance(p, list) else [] for p in window.outputs["products"]]
    recommended = [p for ps in lists for p in ps]
    row = wh.con.execute("SELECT count(*) FROM products").fetchone()
    catalogue = int(row[0]) if row else 0
    rows = [
        MetricRow(
            "specific",
            "coverage",
            len(set(recommended)) / catalogue if catalogue else float("nan"),
            n=len(lists),
            detail={"distinct_recommended": len(set(recommended)), "catalogue": catalogue},
        )
    ]
    end = window.end
    recent = _purchases(wh, end - timedelta(days=90), min(end, known_by))
    if len(recent) and recommended:
        share = recent.groupby("product_id")["quantity"].sum()
        share = share / share.sum()
        floor = 1.0 / (len(recent) + 1)
        info = [-np.log2(share.get(p, floor)) for p in recommended]
        rows.append(MetricRow("specific", "novelty", float(np.mean(info)), n=len(recommended)))
    horizon = timedelta(days=uc.monitoring.label_delay_days or uc.horizon_days)
    frame = window.frame.assign(products=lists, day=days_of(window.frame["ts"]))
    done = frame[frame["day"] + horizon <= pd.Timestamp(known_by)]
    if len(done):
        first, last = done["day"].min().to_pydatetime(), done["day"].max().to_pydatetime()
        bought = _purchases(wh, first, last + horizon)
        bought["day"] = bought["purchased_at"].dt.floor("D")
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
        rows.append(
            MetricRow(
                "performance", "precision", hits / total if total else float("nan"), n=len(done)
            )
        )
        rows.append(MetricRow("performance", "hit_rate", any_hit / len(done), n=len(done)))
    return rows


def pricing(
    uc: UseCase, wh: Warehouse, window: PredictionWindow, known_by: datetime
) -> list[MetricRow]:
    """Guardrail violations among the suggestions, and for suggestions a week old the revenue
    realised against the revenue the model expected at the price that was charged."""
    out = window.outputs
    if not len(window) or "suggested_price" not in out.columns:
        return []
    g = pd.json_normalize([v if isinstance(v, dict) else {} for v in out.get("guardrails", [])])
    price = pd.to_numeric(out["suggested_price"], errors="coerce").to_numpy()
    current = pd.to_numeric(out["current_price"], errors="coerce").to_numpy()
    lo = pd.to_numeric(g.get("min_price"), errors="coerce").to_numpy() if len(g) else price
    hi = pd.to_numeric(g.get("max_price"), errors="coerce").to_numpy() if len(g) else price
    step = pd.to_numeric(g.get("max_change"), errors="coerce").to_numpy() if len(g) else None
    conflict = g.get("conflict", pd.Series(False, index=g.index)).fillna(False).to_numpy()
    tol = 0.011  # suggestions are rounded to the cent
    bad = (price < lo - tol) | (price > hi + tol)
    if step is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            bad |= (np.abs(price - current) > step * current + tol) & ~conflict.astype(bool)
    rows = [
        MetricRow("specific", "guardrail_violations", float(bad.sum()), n=len(out)),
        MetricRow("specific", "guardrail_violation_rate", float(bad.mean()), n=len(out)),
    ]
    week = timedelta(days=7)
    frame = window.frame.assign(day=days_of(window.frame["ts"]))
    done = (frame["day"] + week <= pd.Timestamp(known_by)).to_numpy()
    if done.any():
        expected = (
            pd.to_numeric(out["current_price"], errors="coerce")
            * pd.to_numeric(out["expected_units_current"], errors="coerce")
        ).to_numpy()[done] * 7
        sub = frame[done]
        first, last = sub["day"].min().to_pydatetime(), sub["day"].max().to_pydatetime()
        sold = _purchases(wh, first, last + week)
        realised = []
        by_product = {p: grp for p, grp in sold.groupby("product_id")}
        for pid, day in zip(sub["entity_id"], sub["day"], strict=True):
            grp = by_product.get(pid)
            if grp is None:
                realised.append(0.0)
                continue
            m = (grp["purchased_at"] >= day) & (grp["purchased_at"] < day + week)
            realised.append(float(grp.loc[m, "revenue"].sum()))
        total_expected = float(np.nansum(expected))
        rows.append(
            MetricRow(
                "specific",
                "revenue_realised_vs_expected",
                float(np.sum(realised)) / total_expected if total_expected else float("nan"),
                n=int(done.sum()),
                detail={"realised": float(np.sum(realised)), "expected": total_expected},
            )
        )
    return rows


def segments(
    uc: UseCase, reference: pd.DataFrame | None, window: PredictionWindow
) -> list[MetricRow]:
    """The share of each segment in the window, and the largest change from the reference."""
    col = uc.monitoring.prediction
    if not len(window) or col not in window.outputs.columns:
        return []
    live = pd.to_numeric(window.outputs[col], errors="coerce").dropna().astype(int)
    shares = live.value_counts(normalize=True).sort_index()
    rows = [
        MetricRow("specific", "segment_share", float(v), feature=str(k), n=len(live))
        for k, v in shares.items()
    ]
    ref_col = f"output.{col}"
    if reference is not None and ref_col in reference.columns:
        ref = reference[ref_col].dropna().astype(int).value_counts(normalize=True)
        keys = set(ref.index) | set(shares.index)
        change = max(abs(shares.get(k, 0.0) - ref.get(k, 0.0)) for k in keys) if keys else 0.0
        rows.append(MetricRow("specific", "segment_share_max_change", float(change), n=len(live)))
    return rows


SPECIFICS: dict[str, Any] = {"recommender": recommender, "pricing": pricing}
