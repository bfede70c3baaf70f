"""ShopSim speed: a whole simulated shop of about a million orders, against a 60 s goal.

The peer, measured in the same run, is a straightforward per-customer Python loop over the same
purchase process (gaps in operational time, dropout after each order, 1 + Poisson lines per order
drawn from the customer's taste mixture with the price-effect acceptance step). It produces only
orders and order lines (no deliveries, payments, reviews, returns, browsing or campaigns), so the
ratio understates the simulator's advantage. The peer runs on a sample of customers and is
extrapolated per order.
"""

from __future__ import annotations

import bisect
import math
import os
import random
import time

import numpy as np

from benchmarks.common import Result, timer
from shopml.data.sim.engine import _purchases, sample_products
from shopml.data.sim.world import CATEGORIES, World, _rng, build_world
from shopml.data.simulator import SimConfig, simulate

GOAL_SECONDS = 60.0
TARGET_ORDERS = 1_000_000


def loop_purchases(world: World, customers: range, seed: int = 0) -> tuple[int, int]:
    """The peer: one customer, one order, one line at a time. Returns (orders, lines)."""
    rnd = random.Random(seed)
    days = world.config.days
    cum_op = world.season_cum.tolist()
    s_end = cum_op[days]
    cum_theta = [list(row) for row in world.theta.cumsum(axis=1)]
    cum_phi = [list(row) for row in world.phi.cumsum(axis=1)]
    extra = [CATEGORIES[c].extra_qty for c in world.prod_cat]
    span = days + 1000
    ph_keys = (world.ph_prod * span + world.ph_day).tolist()
    ph_price = world.ph_price.tolist()
    ref, elast = world.ref_price.tolist(), world.elasticity.tolist()
    m_max = world.max_price_effect
    lines = orders = 0
    for i in customers:
        lam, p, m = float(world.lam[i]), float(world.dropout[i]), float(world.items_mean[i])
        t = float(world.cust_created[i])
        day0 = int(t)
        u = cum_op[day0] + (t - day0) * (cum_op[day0 + 1] - cum_op[day0])
        while u < s_end:
            day = min(bisect.bisect_right(cum_op, u) - 1, days - 1)
            orders += 1
            n_lines = 1 + _poisson(rnd, m)
            for _ in range(n_lines):
                while True:
                    k = min(bisect.bisect_right(cum_theta[i], rnd.random()), len(cum_phi) - 1)
                    row = cum_phi[k]
                    j = min(bisect.bisect_right(row, rnd.random() * row[-1]), len(row) - 1)
                    price = ph_price[bisect.bisect_right(ph_keys, j * span + day) - 1]
                    if rnd.random() * m_max < (price / ref[j]) ** elast[j]:
                        break
                _qty = 1 + _poisson(rnd, extra[j])
                lines += 1
            if rnd.random() < p:
                break
            u += rnd.expovariate(lam)
    return orders, lines


def vector_purchases(world: World) -> tuple[int, int]:
    """The same work as the peer (orders and lines only), done the simulator's way."""
    rng = _rng(world.config.seed, 100)
    cust, t, _ = _purchases(world, rng)
    n_items = 1 + rng.poisson(world.items_mean[cust])
    i_order = np.repeat(np.arange(len(cust)), n_items)
    prod, _ = sample_products(world, rng, cust[i_order], np.floor(t[i_order]).astype(np.int64))
    extra = np.array([c.extra_qty for c in CATEGORIES])
    _qty = 1 + rng.poisson(extra[world.prod_cat[prod]])
    return len(cust), len(prod)


def _poisson(rnd: random.Random, mean: float) -> int:
    # Knuth's method: fine for the small means of basket sizes and quantities.
    limit, k, prod = math.exp(-mean), 0, rnd.random()
    while prod > limit:
        k += 1
        prod *= rnd.random()
    return k


def run(quick: bool = False) -> Result:
    """Simulate about a million orders (50k with ``quick``) and time the loop peer."""
    target = 50_000 if quick else TARGET_ORDERS
    pilot = simulate(SimConfig(customers=4000, days=730, seed=1, web_events=False))
    per_customer = len(pilot.tables["orders"]) / 4000
    customers = int(target / per_customer)
    config = SimConfig(customers=customers, days=730, seed=42)
    load_before = os.getloadavg()[0]
    cpu = time.process_time()
    with timer() as elapsed:
        ds = simulate(config)
    seconds = elapsed()
    cpu_seconds = time.process_time() - cpu
    n_orders = len(ds.tables["orders"])
    n_lines = len(ds.tables["order_items"])
    n_rows = sum(len(df) for df in ds.tables.values())
    del ds

    world = build_world(config)
    sample = range(2000 if quick else 5000)
    with timer() as peer_elapsed:
        peer_orders, _ = loop_purchases(world, sample)
    peer_per_order = peer_elapsed() / max(peer_orders, 1)
    peer_seconds = peer_per_order * n_orders
    with timer() as same_elapsed:
        same_orders, _ = vector_purchases(world)
    # Per order, so the campaign-induced orders in the full run do not skew the comparison.
    same_seconds = same_elapsed() / same_orders * n_orders
    speedup = peer_seconds / same_seconds
    figures = {
        "customers": customers,
        "orders": n_orders,
        "order_items": n_lines,
        "rows_all_tables": n_rows,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "load_average_at_start": round(load_before, 2),
        "orders_per_second": round(n_orders / seconds),
        "goal_seconds": GOAL_SECONDS,
        "ratio_to_goal": round(seconds / GOAL_SECONDS, 3),
        "peer_sample_customers": len(sample),
        "peer_sample_orders": peer_orders,
        "peer_seconds_extrapolated": round(peer_seconds, 1),
        "vectorised_orders_and_lines_seconds": round(same_seconds, 2),
        "speedup_vs_peer": round(speedup, 1),
    }
    markdown = "\n".join(
        [
            "| what | orders | seconds | orders/s | vs 60 s goal |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| `simulate()`: every table ({n_rows:,} rows) | {n_orders:,} | {seconds:.1f} | "
            f"{n_orders / seconds:,.0f} | "
            f"{seconds / GOAL_SECONDS:.2f}x |",
            f"| peer: per-customer Python loop, orders and lines only (extrapolated from "
            f"{peer_orders:,} orders of {len(sample):,} customers) | {n_orders:,} | "
            f"{peer_seconds:.1f} | {n_orders / peer_seconds:,.0f} | "
            f"{peer_seconds / GOAL_SECONDS:.2f}x |",
            f"| ShopSim's vectorised stages for the same work (orders and lines only) | "
            f"{n_orders:,} | {same_seconds:.1f} | {n_orders / same_seconds:,.0f} | "
            f"{same_seconds / GOAL_SECONDS:.2f}x |",
            "",
            f"On the same work (orders and lines) ShopSim is **{speedup:.1f}x** faster than "
            f"the loop peer; the whole shop (deliveries, payments, reviews, returns, browsing, "
            f"campaigns and the oracle) takes {seconds:.1f} s for {customers:,} customers over "
            f"730 days ({cpu_seconds:.1f} s of CPU; the shared 2-core host had a load average "
            f"of {load_before:.1f} at the start). The peer's time is extrapolated per order "
            f"from a sample.",
        ]
    )
    return Result("simulator", "ShopSim speed", markdown, figures)
