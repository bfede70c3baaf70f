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

from shopml.data.contracts import CONTRACTS
from shopml.data.dataset import Dataset
from shopml.data.scenarios import SCENARIOS, Scenario, get_scenario
from shopml.data.sim.engine import simulate_tables
from shopml.data.sim.world import (
    CARRIERS,
    HOUR_WEIGHTS,
    LATE_MULTIPLIER,
    SIM_VERSION,
    WEEKDAY_FACTOR,
    SimConfig,
    build_world,
)

__all__ = ["SCENARIOS", "Scenario", "SimConfig", "get_scenario", "simulate"]


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
    # Exactly the contract's columns, in its order, for every table.
    tables = {name: df[CONTRACTS[name].column_names] for name, df in tables.items()}
    meta = {
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
    return Dataset(source="simulator", tables=tables, meta=meta)
