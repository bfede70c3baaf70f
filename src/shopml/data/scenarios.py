"""ShopSim scenarios: declarative changes to the simulated world from a start date on.

A scenario is data, not code: the simulator and the oracle read the same few effect
parameters, so the oracle reflects a scenario exactly as the simulation applied it. Every effect
applies to orders purchased (or customers acquired) on or after the scenario's start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


def _frozen(d: Mapping[str, float] | None = None) -> Mapping[str, float]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Scenario:
    """A change to the world from ``scenario_start`` on.

    ``target`` names the quantity the scenario moves (what a monitor should see drift in).
    """

    name: str
    description: str
    target: str
    # Delivery: transit time multiplied per carrier (missing carriers use ``transit_factor``).
    transit_factor: float = 1.0
    carrier_transit_factor: Mapping[str, float] = field(default_factory=_frozen)
    late_rate_add: float = 0.0
    # Acquisition: share of newly acquired customers who live in the new, far-away region.
    new_region_share: float = 0.0
    # Prices: a step at onset, then a monthly drift (compounded), on every product.
    price_step: float = 1.0
    monthly_price_drift: float = 0.0
    # Purchase rate multiplier (how many orders customers place), e.g. when prices rise.
    demand_factor: float = 1.0
    # Return logit shift per category (a policy that makes returns free in those categories).
    return_logit_shift: Mapping[str, float] = field(default_factory=_frozen)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("none", "No change: the world stays as it is.", target="nothing"),
        Scenario(
            "carrier-strike",
            "The main postal carrier strikes: its transit times triple, the other carriers are "
            "overloaded (x1.8) and sellers ship late more often.",
            target="delivery time",
            transit_factor=1.8,
            carrier_transit_factor=_frozen({"PostNet": 3.0}),
            late_rate_add=0.10,
        ),
        Scenario(
            "new-region",
            "The shop launches in Alaska and Hawaii: 40% of new customers come from there, far "
            "from every seller.",
            target="customer geography (and delivery time)",
            new_region_share=0.40,
        ),
        Scenario(
            "price-inflation",
            "Prices jump 15% and keep rising 2% a month; customers order 12% less often.",
            target="prices (and order value, demand)",
            price_step=1.15,
            monthly_price_drift=0.02,
            demand_factor=0.88,
        ),
        Scenario(
            "return-policy-change",
            "Free returns on fashion, shoes and electronics: their return rates jump.",
            target="return rate",
            return_logit_shift=_frozen({"fashion": 1.1, "shoes": 1.1, "electronics": 1.3}),
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; an unknown name raises ValueError listing the valid ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; valid scenarios: {', '.join(SCENARIOS)}"
        ) from None
