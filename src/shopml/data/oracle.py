"""The truth behind ShopSim's customer- and product-level labels, at any cutoff.

Per-row truth (return probability per line, delivery-time distribution per order, response
probabilities per campaign send, each customer's latent traits and churn time) is in the
``oracle_*`` tables. The functions here derive the truth for labels that depend on a cutoff:
expected spend and the chance of a large order over a horizon, the next-purchase product
distribution, and expected demand at a price. They rebuild the latent world from the
simulation's configuration stored in the warehouse (the world is drawn from the seed alone) and
read each customer's state at the cutoff (alive or churned) from ``oracle_customers``.

"Spend" is the sum of ``unit_price * quantity`` over the lines of non-canceled orders purchased
in ``(cutoff, cutoff + horizon]``; a "large order" is one whose lines sum above the threshold.
Only customers acquired (first order placed) by the cutoff get a row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime

import numpy as np
import pandas as pd

from shopml.data.sim.engine import ids, uplift_probability
from shopml.data.sim.world import (
    CANCEL_RATE,
    CATEGORIES,
    SIM_VERSION,
    SimConfig,
    World,
    build_world,
)
from shopml.data.warehouse import Warehouse, WarehouseError

_WORLDS: dict[str, World] = {}


def load_world(wh: Warehouse) -> World:
    """The latent world behind a simulated warehouse (rebuilt from its stored configuration)."""
    text = wh.get_meta("sim_config")
    if text is None or wh.get_meta("source") != "simulator":
        raise WarehouseError(
            f"warehouse {wh.path} does not hold a simulated dataset; the oracle needs "
            "`shopml simulate`"
        )
    version = wh.get_meta("sim_version")
    if version != SIM_VERSION:
        raise WarehouseError(
            f"warehouse {wh.path} was simulated by ShopSim version {version}, this is "
            f"{SIM_VERSION}; simulate again"
        )
    if text not in _WORLDS:
        _WORLDS.clear()  # one world is enough; they can be large
        _WORLDS[text] = build_world(SimConfig.from_json(text))
    return _WORLDS[text]


def _days(world: World, when: date | datetime | pd.Timestamp | str) -> float:
    ts = pd.Timestamp(when)
    return float((ts - pd.Timestamp(world.config.start)) / pd.Timedelta(days=1))


def _alive_customers(
    wh: Warehouse, world: World, t_c: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(acquired customers, alive-at-cutoff mask, last order time before the cutoff)."""
    acquired = np.flatnonzero(world.cust_created <= t_c)
    oc = wh.read("oracle_customers", ["customer_id", "churned_at"])
    churn = pd.Series(oc["churned_at"].to_numpy(), index=oc["customer_id"].to_numpy())
    cids = ids("C", acquired + 1, 7)
    churned_at = churn.reindex(cids).to_numpy()
    t_churn = (pd.to_datetime(churned_at) - pd.Timestamp(world.config.start)) / pd.Timedelta(days=1)
    alive = ~(np.asarray(t_churn, dtype=float) <= t_c)
    cutoff = pd.Timestamp(world.config.start) + pd.Timedelta(days=t_c)
    last = wh.sql(
        "SELECT customer_id, max(purchased_at) AS last_at FROM orders "
        "WHERE purchased_at <= ? GROUP BY customer_id",
        [cutoff.to_pydatetime()],
    )
    last_s = pd.Series(last["last_at"].to_numpy(), index=last["customer_id"].to_numpy())
    last_t = pd.to_datetime(last_s.reindex(cids).to_numpy()) - pd.Timestamp(world.config.start)
    last_days = np.asarray(last_t / pd.Timedelta(days=1), dtype=float)
    last_days = np.where(np.isnan(last_days), world.cust_created[acquired], last_days)
    return acquired, alive, last_days


def _segments(
    world: World, t_c: float, horizon: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split (t_c, t_c + horizon] at midnights: (day of each piece, operational length,
    operational time from the cutoff to the piece's start)."""
    inner = np.arange(math.floor(t_c) + 1, math.ceil(t_c + horizon), dtype=float)
    edges = np.concatenate([[t_c], inner[inner < t_c + horizon], [t_c + horizon]])
    op = world.op_time(edges)
    return np.floor(edges[:-1]).astype(np.int64), np.diff(op), op[:-1] - op[0]


def _campaigns_in(world: World, t_c: float, horizon: float) -> list[tuple[int, float]]:
    """Campaigns sent in the window, with the share of their response window inside it."""
    out = []
    for k, tau in enumerate(world.camp_day):
        if t_c < tau <= t_c + horizon:
            w = float(world.camp_window[k])
            inside = min(1.0, (t_c + horizon - tau) / w, max(world.config.days - tau, 0) / w)
            out.append((k, inside))
    return out


def _expected_uplift(
    world: World, cust: np.ndarray, last: np.ndarray, t_c: float, k: int
) -> np.ndarray:
    """E[alive at the send * uplift] for a customer alive at the cutoff.

    Uplift depends on recency at the send, which is random: if the customer buys nothing
    between the cutoff and the send, recency is known; otherwise it is approximated by half
    the gap (an approximation, the one place the oracle is not exact).
    """
    tau = float(world.camp_day[k])
    d_op = world.op_time(tau) - world.op_time(t_c)
    lam, p = world.lam[cust], world.dropout[cust]
    none = np.exp(-lam * d_op)
    alive = np.exp(-p * lam * d_op)
    disc, ch = float(world.camp_discount[k]), int(world.camp_channel[k])
    u_long = uplift_probability(world, cust, tau - last, disc, ch)
    u_short = uplift_probability(world, cust, np.full(len(cust), (tau - t_c) / 2), disc, ch)
    return none * u_long + np.maximum(alive - none, 0) * u_short


def expected_spend(
    wh: Warehouse, cutoff: date | datetime | pd.Timestamp | str, horizon_days: int = 90
) -> pd.DataFrame:
    """E[spend in (cutoff, cutoff + horizon]] per customer acquired by the cutoff.

    Uses the latent state at the cutoff (alive or not, purchase rate, dropout, basket size and
    taste), seasonality, prices and scenario effects in the window, and the expected extra
    orders of campaigns sent in the window.
    """
    world = load_world(wh)
    cfg = world.config
    t_c = _days(world, cutoff)
    cust, alive, last = _alive_customers(wh, world, t_c)
    lam, p = world.lam[cust], world.dropout[cust]
    seg_day, seg_op, seg_before = _segments(world, t_c, float(horizon_days))
    value = {int(d): world.cluster_item_value(int(d)) for d in np.unique(seg_day)}
    basket = 1 + world.items_mean[cust]
    total = np.zeros(len(cust))
    for d, op_len, before in zip(seg_day, seg_op, seg_before, strict=True):
        orders = np.exp(-p * lam * before) * (1 - np.exp(-p * lam * op_len)) / p
        total += orders * basket * (world.theta[cust] @ value[int(d)])
    for k, inside in _campaigns_in(world, t_c, float(horizon_days)):
        tau_day = int(world.camp_day[k])
        v = world.cluster_item_value(tau_day, float(world.camp_discount[k]))
        share = cfg.campaign_target_share * cfg.campaign_treatment_share * inside
        total += (
            share * _expected_uplift(world, cust, last, t_c, k) * basket * (world.theta[cust] @ v)
        )
    spend = np.where(alive, total, 0.0) * (1 - CANCEL_RATE)
    return pd.DataFrame({"customer_id": ids("C", cust + 1, 7), "expected_spend": spend})


def p_value_above(
    world: World,
    cust: np.ndarray,
    day: int,
    threshold: float,
    *,
    discount: float = 0.0,
    bins: int = 511,
) -> np.ndarray:
    """P(an order's value > threshold) per customer, with the prices of ``day``.

    Exact up to a grid of ``bins`` steps: an order is 1 + Poisson(m) lines, each a taste
    cluster, a product and a quantity; the chance that the sum stays below the threshold only
    involves lines below it, so the n-fold convolutions are truncated at the threshold
    (values are non-negative) and need no wrap-around padding beyond twice the grid.
    """
    width = threshold / bins
    prods = np.arange(len(world.ref_price))
    price = world.price_at(prods, day) * (1 - discount / 100.0)
    extra = np.array([c.extra_qty for c in CATEGORIES])[world.prod_cat]
    probs = world.choice_probs(day)
    g = np.zeros((probs.shape[0], bins + 1))
    pq = np.exp(-extra)  # P(Q = 1)
    for q in range(1, 12):
        b = np.rint(price * q / width).astype(np.int64)
        ok = b <= bins
        for k in range(probs.shape[0]):
            g[k] += np.bincount(b[ok], weights=probs[k, ok] * pq[ok], minlength=bins + 1)
        pq = pq * extra / q  # P(Q = q + 1)
    m = world.items_mean[cust]
    n_fft = 1 << (2 * (bins + 1) - 1).bit_length()  # a power of two: fast FFTs, no wrap
    out = np.empty(len(cust))
    for lo in range(0, len(cust), 4000):
        sl = slice(lo, lo + 4000)
        gi = world.theta[cust[sl]] @ g
        fg = np.fft.rfft(gi, n_fft, axis=1)
        h = gi
        mm = m[sl]
        pn = np.exp(-mm)  # P(N = 1) = P(Poisson(m) = 0)
        below = pn * h.sum(axis=1)
        tail = 1 - pn  # P(N > n)
        n = 1
        # Stop once what is left (P(N > n) * P(n lines stay below)) cannot matter.
        while n < 80 and (tail * h.sum(axis=1)).max() > 1e-7:
            h = np.clip(
                np.fft.irfft(np.fft.rfft(h, n_fft, axis=1) * fg, n_fft, axis=1)[:, : bins + 1],
                0,
                None,
            )
            pn = pn * mm / n
            tail = np.maximum(tail - pn, 0)
            n += 1
            below += pn * h.sum(axis=1)
        out[sl] = 1 - below
    return np.clip(out, 0, 1)


def p_large_order(
    wh: Warehouse,
    cutoff: date | datetime | pd.Timestamp | str,
    threshold: float | None = None,
    horizon_days: int = 30,
) -> pd.DataFrame:
    """P(at least one order above ``threshold`` in (cutoff, cutoff + horizon]) per customer
    acquired by the cutoff (threshold defaults to the simulation's ``large_order_threshold``).

    Large orders and (non-large) dropouts compete while the customer is alive; campaign-induced
    orders add their own chance, with discounted prices.
    """
    world = load_world(wh)
    cfg = world.config
    thr = float(threshold if threshold is not None else cfg.large_order_threshold)
    t_c = _days(world, cutoff)
    cust, alive, last = _alive_customers(wh, world, t_c)
    cust_a = cust[alive]
    lam, p = world.lam[cust_a], world.dropout[cust_a]
    seg_day, seg_op, _ = _segments(world, t_c, float(horizon_days))
    # Prices move rarely: evaluate the large-order chance weekly through the window.
    week = (seg_day - seg_day[0]) // 7
    q_week = {
        int(w): p_value_above(world, cust_a, int(seg_day[week == w][0]), thr)
        for w in np.unique(week)
    }
    survive = np.ones(len(cust_a))  # alive and no large order yet
    p_large = np.zeros(len(cust_a))
    for w, op_len in zip(week, seg_op, strict=True):
        q = q_week[int(w)] * (1 - CANCEL_RATE)  # a canceled order is not a large order
        h_large, h_drop = lam * op_len * q, lam * op_len * (1 - q) * p
        h = h_large + h_drop
        frac = np.where(h > 0, h_large / np.maximum(h, 1e-300), 0.0)
        p_large += survive * (1 - np.exp(-h)) * frac
        survive *= np.exp(-h)
    none = 1 - p_large
    for k, inside in _campaigns_in(world, t_c, float(horizon_days)):
        q = p_value_above(
            world, cust_a, int(world.camp_day[k]), thr, discount=float(world.camp_discount[k])
        )
        share = cfg.campaign_target_share * cfg.campaign_treatment_share * inside
        none *= 1 - share * _expected_uplift(world, cust_a, last[alive], t_c, k) * q * (
            1 - CANCEL_RATE
        )
    out = np.zeros(len(cust))
    out[alive] = 1 - none
    return pd.DataFrame({"customer_id": ids("C", cust + 1, 7), "p_large_order": out})


def purchase_scores(
    wh: Warehouse,
    cutoff: date | datetime | pd.Timestamp | str,
    customer_ids: Sequence[str] | None = None,
    k: int = 10,
) -> pd.DataFrame:
    """The true distribution of a customer's next purchased product at the cutoff, top ``k``.

    Returns ``customer_id, product_id, probability, rank`` (rank 1 = most likely). ``None``
    scores every customer acquired by the cutoff.
    """
    world = load_world(wh)
    t_c = _days(world, cutoff)
    if customer_ids is None:
        cust = np.flatnonzero(world.cust_created <= t_c)
    else:
        cust = np.array([int(c[1:]) - 1 for c in customer_ids], dtype=np.int64)
        if len(cust) and (cust.min() < 0 or cust.max() >= world.config.customers):
            raise ValueError("unknown customer id in customer_ids")
    probs = world.choice_probs(math.floor(t_c))
    k = min(k, probs.shape[1])
    c_out, p_out, s_out = [], [], []
    for lo in range(0, len(cust), 2000):
        c = cust[lo : lo + 2000]
        scores = world.theta[c] @ probs
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        c_out.append(np.repeat(c, k))
        p_out.append(np.take_along_axis(top, order, axis=1).ravel())
        s_out.append(np.take_along_axis(top_s, order, axis=1).ravel())
    c_all = np.concatenate(c_out) if c_out else np.array([], np.int64)
    return pd.DataFrame(
        {
            "customer_id": ids("C", c_all + 1, 7),
            "product_id": ids("P", np.concatenate(p_out) + 1 if p_out else np.array([], int), 6),
            "probability": np.concatenate(s_out) if s_out else np.array([]),
            "rank": np.tile(np.arange(1, k + 1), len(cust)),
        }
    )


def expected_demand(
    wh: Warehouse,
    product_ids: Sequence[str],
    prices: Sequence[float] | np.ndarray,
    days: float = 1.0,
) -> pd.DataFrame:
    """Expected units sold over ``days`` at the given prices: ``base_demand * (price /
    ref_price) ** elasticity * days`` (base demand is the simulation's average daily rate at the
    reference price; the choice model scales each product's demand by exactly that factor)."""
    op = wh.read("oracle_products").set_index("product_id")
    missing = [p for p in product_ids if p not in op.index]
    if missing:
        raise ValueError(f"unknown product id(s): {', '.join(missing[:5])}")
    rows = op.loc[list(product_ids)]
    price = np.asarray(prices, dtype=float)
    units = (
        rows["base_demand"].to_numpy()
        * np.power(price / rows["ref_price"].to_numpy(), rows["elasticity"].to_numpy())
        * days
    )
    return pd.DataFrame({"product_id": list(product_ids), "price": price, "expected_units": units})
