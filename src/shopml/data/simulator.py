"""ShopSim: a simulated shop with real, learnable signal behind every label, and its truth.

``simulate(SimConfig(...))`` returns a :class:`~shopml.data.dataset.Dataset` holding every
canonical table plus the oracle tables (the probabilities and distributions that generated each
label). The world (:mod:`shopml.data.sim.world`) is drawn from the seed first; the events
(:mod:`shopml.data.sim.engine`) are simulated vectorised over customers. The same configuration
always gives identical tables. :mod:`shopml.data.oracle` computes the truth for customer-level
labels at any cutoff from a warehouse the simulator filled.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd

from shopml.data.contracts import CONTRACTS
from shopml.data.dataset import Dataset
from shopml.data.scenarios import SCENARIOS, Scenario, get_scenario
from shopml.data.sim.engine import (
    Block,
    oracle_products,
    shop_tables,
    simulate_block,
    simulate_tables,
)
from shopml.data.sim.world import (
    CARRIERS,
    HOUR_WEIGHTS,
    LATE_MULTIPLIER,
    SIM_VERSION,
    WEEKDAY_FACTOR,
    SimConfig,
    build_world,
)

__all__ = ["SCENARIOS", "Scenario", "SimConfig", "get_scenario", "simulate", "simulate_in_blocks"]

Progress = Callable[[str, float], None]
Tables = dict[str, pd.DataFrame]


def simulate(
    config: SimConfig | None = None, progress: Callable[[str, float], None] | None = None
) -> Dataset:
    """Simulate a shop for ``config``; deterministic for its seed.

    ``progress(stage, fraction)`` is called as the stages advance (fraction in [0, 1]).
    """
    config = config or SimConfig()
    if progress is not None:
        progress("world", 0.0)
    world = build_world(config)
    tables, summary = simulate_tables(world, progress)
    return Dataset(source="simulator", tables=_contracted(tables), meta=_meta(config, summary))


def simulate_in_blocks(
    config: SimConfig,
    write: Callable[[Tables], None],
    *,
    block_customers: int = 50_000,
    progress: Progress | None = None,
) -> dict[str, str]:
    """Simulate a shop too large to hold in memory, a block of customers at a time, handing
    each batch of tables to ``write`` (e.g. an append to a warehouse) as soon as it is made;
    returns the shop's meta, as :func:`simulate` records it.

    Memory is bounded by one block's tables (about 25 MB per 1,000 customers of a two-year
    shop, two thirds of it browsing events) plus the world (about 200 bytes per customer).
    ``write`` is called first with the tables every block shares (sellers, products,
    campaigns, price history), then once per block with its customers' tables, in the order
    of their foreign keys, and last with ``oracle_products`` (which counts every block's lines).

    The world is the whole shop's (so the oracle, which rebuilds it from the recorded
    configuration, stays consistent with the events), and each block's customers follow the
    same model; but each block draws its events from its own random stream, so the events are
    not those of :func:`simulate` for the same configuration unless the shop fits one block,
    in which case this *is* :func:`simulate`. Deterministic for the seed and the block size.
    Ids continue from block to block (customers in order, then each block's orders in time
    order, so order ids follow purchase time within a block, not across blocks); the
    delivery backlog is the block's own (its daily volume against its own mean, the same
    shape as the shop's).
    """
    if block_customers < 1:
        raise ValueError("block_customers must be at least 1")
    if config.customers <= block_customers:
        ds = simulate(config, progress)
        write(ds.tables)
        return ds.meta
    world = build_world(config)
    write(_contracted(shop_tables(world)))
    starts = list(range(0, config.customers, block_customers))
    at = Block()
    clusters = np.zeros(0, dtype=np.int64)
    kept = returned = lines = 0
    for k, lo in enumerate(starts):
        hi = min(lo + block_customers, config.customers)

        def report(stage: str, fraction: float, k: int = k) -> None:
            if progress is not None:
                progress(f"block {k + 1}/{len(starts)}: {stage}", (k + fraction) / len(starts))

        at = Block(
            index=k,
            customers=lo,
            orders=at.orders,
            reviews=at.reviews,
            returns=at.returns,
            events=at.events,
            sessions=at.sessions,
        )
        tables, _, counts = simulate_block(world.customer_block(lo, hi), report, at)
        write(_contracted(tables))
        del tables
        at = Block(
            index=k,
            customers=hi,
            orders=at.orders + counts["orders"],
            reviews=at.reviews + counts["reviews"],
            returns=at.returns + counts["returns"],
            events=at.events + counts["events"],
            sessions=at.sessions + counts["sessions"],
        )
        lc = counts["line_clusters"]
        clusters = lc if not clusters.size else clusters + lc
        kept += counts["kept_lines"]
        returned += counts["returned_kept_lines"]
        lines += counts["order_items"]
    write(_contracted({"oracle_products": oracle_products(world, clusters)}))
    summary = {
        "orders": str(at.orders),
        "order_items": str(lines),
        "realised_return_rate": f"{returned / kept:.4f}" if kept else "0",
        "block_customers": str(block_customers),
    }
    return _meta(config, summary)


def _contracted(tables: Tables) -> Tables:
    """Exactly the contract's columns, in its order, for every table."""
    return {name: df[CONTRACTS[name].column_names] for name, df in tables.items()}


def _meta(config: SimConfig, summary: dict[str, str]) -> dict[str, str]:
    return {
        "sim_version": SIM_VERSION,
        "sim_config": config.to_json(),
        "seed": str(config.seed),
        "scenario": config.scenario,
        "scenario_start": config.onset.isoformat(),
        "start": config.start.isoformat(),
        "days": str(config.days),
        "customers": str(config.customers),
        "large_order_threshold": str(config.large_order_threshold),
        "seasonality": json.dumps(
            {
                "weekday_factor_mon_first": WEEKDAY_FACTOR.round(3).tolist(),
                "yearly_amplitude": 0.12,
                "yearly_peak_day_of_year": 350,
                "holidays": "Black Friday x2.8, Cyber Monday x2.2, Dec 1-20 x1.3, Dec 24-25 "
                "x0.7/x0.4, Dec 26-31 x1.15, Jan 1 x0.6, Jul 11-12 x1.6/x1.5",
                "hour_weights": HOUR_WEIGHTS.tolist(),
            }
        ),
        "carriers": json.dumps(
            {
                c.name: {"base_days": c.base_days, "km_per_day": c.km_per_day, "sigma": c.sigma}
                for c in CARRIERS
            }
        ),
        "late_multiplier": str(LATE_MULTIPLIER),
        "spend_definition": "sum of unit_price * quantity over lines of non-canceled orders",
        **{f"sim_{k}": v for k, v in summary.items()},
    }
