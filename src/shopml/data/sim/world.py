"""ShopSim's latent world: geography, catalogue, sellers, customers' latent traits, prices,
seasonality and the campaign calendar.

Everything here is drawn from the seed before any event is simulated, from its own random
stream, so the oracle can rebuild exactly the same world from the configuration recorded in a
warehouse (see :func:`build_world`) without re-running the simulation.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from shopml.data.scenarios import Scenario, get_scenario


def _source_version() -> str:
    """A hash of the code that defines the world: any change to it is a new ShopSim version, so
    the oracle never rebuilds a different world than the one that made a warehouse."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in (here / "world.py", here / "engine.py", here.parent / "scenarios.py"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


SIM_VERSION = _source_version()

# Days of data kept past the end of the simulation for the oracle's horizons.
HORIZON_PAD_DAYS = 400


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. ``n_products`` and ``n_sellers`` default to customers/10 and /100."""

    customers: int = 20_000
    start: date = date(2023, 1, 1)
    days: int = 730
    seed: int = 42
    scenario: str = "none"
    scenario_start: date | None = None  # default: start + 75% of days
    n_products: int | None = None
    n_sellers: int | None = None
    large_order_threshold: float = 300.0
    campaign_every_days: int = 30
    campaign_target_share: float = 0.25
    campaign_treatment_share: float = 0.8
    web_events: bool = True

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError("customers must be at least 1")
        if self.days < 1:
            raise ValueError("days must be at least 1")
        get_scenario(self.scenario)  # an unknown name fails here, naming the valid ones

    @property
    def onset(self) -> date:
        """The day the scenario starts."""
        if self.scenario_start is not None:
            return self.scenario_start
        return self.start + timedelta(days=int(self.days * 0.75))

    @property
    def onset_day(self) -> int:
        return (self.onset - self.start).days

    @property
    def products(self) -> int:
        return self.n_products or max(50, self.customers // 10)

    @property
    def sellers(self) -> int:
        return self.n_sellers or max(10, self.customers // 100)

    def to_json(self) -> str:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        d["scenario_start"] = self.scenario_start.isoformat() if self.scenario_start else None
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SimConfig:
        d: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["start"] = date.fromisoformat(d["start"])
        if d.get("scenario_start"):
            d["scenario_start"] = date.fromisoformat(d["scenario_start"])
        return cls(**d)


# -- the fixed world: places, categories, carriers ---------------------------------------------


@dataclass(frozen=True)
class City:
    region: str
    name: str
    lat: float
    lon: float
    customer_weight: float
    seller_weight: float
    zip3: str


CITIES: tuple[City, ...] = (
    City("NY", "New York", 40.71, -74.01, 14, 10, "100"),
    City("CA", "Los Angeles", 34.05, -118.24, 12, 8, "900"),
    City("IL", "Chicago", 41.88, -87.63, 8, 6, "606"),
    City("TX", "Houston", 29.76, -95.37, 7, 3, "770"),
    City("TX", "Dallas", 32.78, -96.80, 6, 5, "752"),
    City("AZ", "Phoenix", 33.45, -112.07, 5, 1, "850"),
    City("PA", "Philadelphia", 39.95, -75.17, 5, 3, "191"),
    City("GA", "Atlanta", 33.75, -84.39, 5, 4, "303"),
    City("WA", "Seattle", 47.61, -122.33, 4, 2, "981"),
    City("CO", "Denver", 39.74, -104.99, 4, 1, "802"),
    City("FL", "Miami", 25.76, -80.19, 6, 2, "331"),
    City("MA", "Boston", 42.36, -71.06, 4, 2, "021"),
    City("MN", "Minneapolis", 44.98, -93.27, 3, 1, "554"),
)
# The far-away region a `new-region` scenario opens; no seller lives there.
NEW_REGION_CITIES: tuple[City, ...] = (
    City("AK", "Anchorage", 61.22, -149.90, 6, 0, "995"),
    City("HI", "Honolulu", 21.31, -157.86, 4, 0, "968"),
)
ALL_CITIES: tuple[City, ...] = CITIES + NEW_REGION_CITIES
COUNTRY = "US"


@dataclass(frozen=True)
class Category:
    name: str
    size_type: str
    share: float  # of the catalogue
    price_median: float
    price_sigma: float
    weight_g: float
    return_logit: float  # base log-odds of a return at the category's median price
    elasticity: float
    cost_ratio: float
    extra_qty: float  # mean of (quantity - 1)
    dims_cm: tuple[float, float, float]


CATEGORIES: tuple[Category, ...] = (
    Category("fashion", "apparel", 0.16, 35, 0.5, 400, -1.7, -2.2, 0.45, 0.15, (30, 4, 25)),
    Category("shoes", "shoes", 0.08, 70, 0.4, 900, -1.6, -2.0, 0.50, 0.05, (33, 12, 20)),
    Category(
        "electronics", "electronics", 0.09, 160, 0.8, 1200, -2.7, -1.6, 0.70, 0.05, (25, 10, 18)
    ),
    Category("computers", "electronics", 0.04, 450, 0.6, 2500, -2.9, -1.4, 0.75, 0.02, (40, 8, 30)),
    Category("furniture", "furniture", 0.07, 220, 0.7, 15000, -3.1, -1.3, 0.55, 0.05, (90, 60, 50)),
    Category("beauty", "none", 0.10, 18, 0.5, 250, -3.6, -1.8, 0.40, 0.50, (8, 12, 8)),
    Category("sports", "none", 0.09, 45, 0.6, 1500, -2.9, -1.7, 0.50, 0.10, (40, 15, 25)),
    Category("toys", "none", 0.08, 25, 0.6, 600, -3.3, -1.9, 0.45, 0.30, (25, 20, 15)),
    Category("books", "none", 0.08, 15, 0.4, 500, -3.9, -1.2, 0.55, 0.30, (22, 3, 15)),
    Category("garden", "none", 0.06, 40, 0.7, 3000, -3.3, -1.5, 0.50, 0.15, (50, 20, 30)),
    Category("kitchen", "none", 0.09, 30, 0.6, 1200, -3.4, -1.6, 0.45, 0.20, (30, 20, 25)),
    Category("pets", "none", 0.06, 22, 0.5, 2000, -3.7, -1.3, 0.50, 0.60, (35, 15, 25)),
)


@dataclass(frozen=True)
class Carrier:
    name: str
    base_days: float
    km_per_day: float
    sigma: float  # of log delivery time
    share: float  # among parcels (heavy goods always go by freight)


CARRIERS: tuple[Carrier, ...] = (
    Carrier("PostNet", 1.5, 450.0, 0.35, 0.45),
    Carrier("ParcelCo", 1.0, 700.0, 0.25, 0.35),
    Carrier("ShipQuick", 0.8, 900.0, 0.20, 0.20),
    Carrier("FreightLine", 2.5, 400.0, 0.30, 0.0),
)
HEAVY_KG = 20.0
LATE_MULTIPLIER = 1.8  # a late shipment takes this much longer
CANCEL_RATE = 0.015
N_CLUSTERS = 12
FACTOR_DIM = 6

# Share of the day's orders by hour: quiet at night, an evening peak.
HOUR_WEIGHTS = np.array(
    [
        0.5,
        0.3,
        0.2,
        0.15,
        0.15,
        0.2,
        0.4,
        0.8,
        1.2,
        1.4,
        1.5,
        1.5,
        1.6,
        1.5,
        1.4,
        1.4,
        1.4,
        1.5,
        1.7,
        1.9,
        2.1,
        2.0,
        1.6,
        1.0,
    ]
)
WEEKDAY_FACTOR = np.array([1.06, 1.02, 1.0, 0.98, 0.92, 0.86, 1.16])  # Monday first


def seasonality(start: date, n_days: int) -> np.ndarray:
    """Purchase intensity multiplier per day (mean near 1): weekday, year cycle, holidays.

    The peaks are those a shop sees: Black Friday to Cyber Monday, the run-up to Christmas,
    the quiet Christmas and New Year's days, the after-Christmas sales and a mid-July sale.
    """
    days = np.array([start + timedelta(days=i) for i in range(n_days)])
    doy = np.array([d.timetuple().tm_yday for d in days], dtype=float)
    wd = np.array([d.weekday() for d in days])
    s = WEEKDAY_FACTOR[wd] * (1.0 + 0.12 * np.cos(2 * np.pi * (doy - 350.0) / 365.25))
    index = {d: i for i, d in enumerate(days)}
    for year in range(start.year, (start + timedelta(days=n_days)).year + 1):
        nov1 = date(year, 11, 1)
        thanksgiving = nov1 + timedelta(days=(3 - nov1.weekday()) % 7 + 21)
        bump = {
            thanksgiving + timedelta(days=1): 2.8,  # Black Friday
            thanksgiving + timedelta(days=2): 1.7,
            thanksgiving + timedelta(days=3): 1.6,
            thanksgiving + timedelta(days=4): 2.2,  # Cyber Monday
            date(year, 12, 24): 0.7,
            date(year, 12, 25): 0.4,
            date(year, 1, 1): 0.6,
            date(year, 7, 11): 1.6,
            date(year, 7, 12): 1.5,
        }
        for dom in range(1, 21):
            bump.setdefault(date(year, 12, dom), 1.3)
        for dom in range(26, 32):
            bump.setdefault(date(year, 12, dom), 1.15)
        for when, f in bump.items():
            if when in index:
                s[index[when]] *= f
    return s


def _ndtr(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7), without scipy."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def lognormal_mixture_quantile(
    log_median: np.ndarray, sigma: np.ndarray, late_prob: np.ndarray, q: float
) -> np.ndarray:
    """Quantile ``q`` of ``exp(log_median + sigma Z) * (LATE_MULTIPLIER if late else 1)``."""
    shift = math.log(LATE_MULTIPLIER)
    lo = log_median - 6 * sigma
    hi = log_median + shift + 6 * sigma
    for _ in range(26):  # bisection: 26 halvings of ~12 sigma leave < 1e-6 relative error
        mid = 0.5 * (lo + hi)
        cdf = (1 - late_prob) * _ndtr((mid - log_median) / sigma) + late_prob * _ndtr(
            (mid - log_median - shift) / sigma
        )
        below = cdf < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return np.exp(0.5 * (lo + hi))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# The World's arrays with one entry per customer (a block of customers slices these).
CUSTOMER_FIELDS = (
    "cust_created",
    "cust_city",
    "cust_lat",
    "cust_lon",
    "cust_zip",
    "lam",
    "dropout",
    "items_mean",
    "returner",
    "discount_sens",
    "engagement",
    "value_z",
    "theta",
)


@dataclass
class World:
    """The latent world. Times are float days since ``config.start`` (midnight)."""

    config: SimConfig
    scenario: Scenario
    season: np.ndarray  # intensity per day, scenario demand included, days + pad long
    season_cum: np.ndarray  # operational time at each day boundary (len(season) + 1)
    # customers
    cust_created: np.ndarray
    cust_city: np.ndarray
    cust_lat: np.ndarray
    cust_lon: np.ndarray
    cust_zip: np.ndarray
    lam: np.ndarray  # orders per day while alive, before seasonality
    dropout: np.ndarray  # chance of churning after each order
    items_mean: np.ndarray  # mean number of extra lines per order
    returner: np.ndarray  # latent return propensity (log-odds shift)
    discount_sens: np.ndarray
    engagement: np.ndarray  # browsing and add-to-cart propensity (log-odds shift)
    value_z: np.ndarray  # standardised log of expected value (a driver of uplift)
    theta: np.ndarray  # (customers, clusters): taste mixture
    # sellers
    seller_city: np.ndarray
    seller_lat: np.ndarray
    seller_lon: np.ndarray
    seller_zip: np.ndarray
    handling_mean: np.ndarray  # days
    late_rate: np.ndarray
    seller_quality: np.ndarray  # lowers returns and raises review scores
    # products
    prod_cat: np.ndarray
    prod_seller: np.ndarray
    ref_price: np.ndarray
    unit_cost: np.ndarray
    weight_g: np.ndarray
    dims: np.ndarray  # (products, 3): length, height, width
    elasticity: np.ndarray
    appeal: np.ndarray
    phi: np.ndarray  # (clusters, products): product choice within a taste cluster
    # price history, sorted by product then day
    ph_prod: np.ndarray
    ph_day: np.ndarray
    ph_price: np.ndarray
    ph_test: np.ndarray
    max_price_effect: float
    # campaigns
    camp_day: np.ndarray  # float day of sending
    camp_window: np.ndarray
    camp_discount: np.ndarray
    camp_channel: np.ndarray
    camp_name: list[str] = field(default_factory=list)

    def customer_block(self, lo: int, hi: int) -> World:
        """The same world for customers ``lo`` to ``hi - 1`` only (views, no copies): the shop,
        its catalogue, prices and campaigns unchanged, so a block's events follow the same
        model as the whole shop's."""
        cfg = replace(
            self.config,
            customers=hi - lo,
            n_products=self.config.products,
            n_sellers=self.config.sellers,
        )
        return replace(self, config=cfg, **{f: getattr(self, f)[lo:hi] for f in CUSTOMER_FIELDS})

    # -- time ----------------------------------------------------------------------------------
    def op_time(self, t: np.ndarray | float) -> np.ndarray:
        """Operational time (cumulative intensity) at day-time ``t``: linear within a day."""
        grid = np.arange(len(self.season_cum), dtype=float)
        return np.interp(t, grid, self.season_cum)

    def from_op_time(self, u: np.ndarray) -> np.ndarray:
        grid = np.arange(len(self.season_cum), dtype=float)
        return np.interp(u, self.season_cum, grid)

    # -- prices --------------------------------------------------------------------------------
    @property
    def _key_span(self) -> int:
        return self.config.days + HORIZON_PAD_DAYS + 1

    def price_at(self, prod: np.ndarray, day: np.ndarray | int) -> np.ndarray:
        """List price of products on (integer) days."""
        span = self._key_span
        keys = self.ph_prod.astype(np.int64) * span + self.ph_day
        q = prod.astype(np.int64) * span + np.asarray(day, dtype=np.int64)
        idx = np.searchsorted(keys, q, side="right") - 1
        return self.ph_price[idx]

    def price_effect(self, prod: np.ndarray, price: np.ndarray) -> np.ndarray:
        """Demand multiplier (price / ref_price) ** elasticity."""
        return np.power(price / self.ref_price[prod], self.elasticity[prod])

    def choice_probs(self, day: int) -> np.ndarray:
        """(clusters, products): P(product | cluster) with the prices of ``day``."""
        prods = np.arange(len(self.ref_price))
        effect = self.price_effect(prods, self.price_at(prods, day))
        w = self.phi * effect[None, :]
        return w / w.sum(axis=1, keepdims=True)

    def expected_quantity(self) -> np.ndarray:
        extra = np.array([c.extra_qty for c in CATEGORIES])
        return 1.0 + extra[self.prod_cat]

    def cluster_item_value(self, day: int, discount: float = 0.0) -> np.ndarray:
        """(clusters,): expected value of one order line drawn from each cluster on ``day``."""
        prods = np.arange(len(self.ref_price))
        price = self.price_at(prods, day) * (1 - discount / 100.0)
        return self.choice_probs(day) @ (price * self.expected_quantity())

    def demand_factor(self, day: np.ndarray | int) -> np.ndarray:
        d = np.asarray(day)
        return np.where(d >= self.config.onset_day, self.scenario.demand_factor, 1.0)


def _rng(seed: int, stream: int) -> np.random.Generator:
    # A stream per world component, so adding draws to one never shifts another.
    return np.random.default_rng(np.random.SeedSequence([seed, 7_919, stream]))


def _choice(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    cum = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cum, rng.random(size), side="right"), len(cum) - 1)


def build_world(config: SimConfig) -> World:
    """Draw the latent world for ``config`` (deterministic for its seed)."""
    scenario = get_scenario(config.scenario)
    n_days = config.days + HORIZON_PAD_DAYS
    season = seasonality(config.start, n_days)
    season = season * np.where(np.arange(n_days) >= config.onset_day, scenario.demand_factor, 1.0)
    season_cum = np.concatenate([[0.0], np.cumsum(season)])

    # -- sellers: clustered in hubs, of varying quality ------------------------------------
    rng = _rng(config.seed, 1)
    n_s = config.sellers
    s_city = _choice(rng, np.array([c.seller_weight for c in CITIES], float), n_s)
    s_lat = np.array([CITIES[i].lat for i in s_city]) + rng.normal(0, 0.2, n_s)
    s_lon = np.array([CITIES[i].lon for i in s_city]) + rng.normal(0, 0.2, n_s)
    s_zip = rng.integers(0, 100, n_s)
    handling = np.clip(np.exp(rng.normal(math.log(1.4), 0.5, n_s)), 0.3, 7.0)
    late = rng.beta(1.3, 14.0, n_s)
    quality = -3.0 * (late - 0.085) + rng.normal(0, 0.3, n_s)
    seller_size = np.exp(rng.normal(0, 1.2, n_s))

    # -- products: categories with price, weight and size; latent factors ------------------
    rng = _rng(config.seed, 2)
    n_p = config.products
    cat = _choice(rng, np.array([c.share for c in CATEGORIES]), n_p)
    cats = CATEGORIES
    med = np.array([c.price_median for c in cats])[cat]
    psig = np.array([c.price_sigma for c in cats])[cat]
    ref = np.maximum(np.round(med * np.exp(rng.normal(0, 1, n_p) * psig)) - 0.01, 1.99)
    cost = np.minimum(
        ref * np.array([c.cost_ratio for c in cats])[cat] * np.exp(rng.normal(0, 0.12, n_p)),
        0.95 * ref,
    )
    wscale = np.exp(rng.normal(0, 0.5, n_p))
    weight = np.round(np.array([c.weight_g for c in cats])[cat] * wscale)
    dims = np.array([c.dims_cm for c in cats])[cat] * np.cbrt(wscale)[:, None]
    elast = np.array([c.elasticity for c in cats])[cat] * np.exp(rng.normal(0, 0.2, n_p))
    popularity = rng.normal(0, 0.9, n_p)
    appeal = rng.normal(0, 0.5, n_p)
    prod_seller = _choice(rng, seller_size, n_p)
    v = rng.normal(0, 1, (n_p, FACTOR_DIM))
    centroids = rng.normal(0, 1, (N_CLUSTERS, FACTOR_DIM))
    affinity = rng.dirichlet(np.full(len(cats), 0.3), N_CLUSTERS) * len(cats)
    logits = (
        popularity[None, :]
        + np.log(affinity[:, cat] + 1e-3)
        + 1.8 * (centroids @ v.T) / math.sqrt(FACTOR_DIM)
        # Clusters also have a price tier (budget or premium within each category), which
        # makes a customer's order value persistent and learnable from their history.
        + rng.normal(0, 1.2, N_CLUSTERS)[:, None] * np.log(ref / med)[None, :]
    )
    phi = np.exp(logits - logits.max(axis=1, keepdims=True))
    phi /= phi.sum(axis=1, keepdims=True)

    # -- customers: acquisition, place, latent value, churn and taste ------------------------
    rng = _rng(config.seed, 3)
    n_c = config.customers
    d = config.days
    growth = (0.5 + np.arange(d) / d) * np.sqrt(season[:d])
    cum = np.cumsum(growth / growth.sum())
    launch = rng.random(n_c) < 0.2  # the launch cohort arrives in the first fortnight
    day_pick = np.minimum(np.searchsorted(cum, rng.random(n_c), side="right"), d - 1)
    created_day = np.where(launch, rng.integers(0, min(14, d), n_c), day_pick)
    hour = _choice(rng, HOUR_WEIGHTS, n_c)
    created = created_day + (hour + rng.random(n_c)) / 24.0
    city = _choice(rng, np.array([c.customer_weight for c in CITIES], float), n_c)
    new_city = len(CITIES) + _choice(
        rng, np.array([c.customer_weight for c in NEW_REGION_CITIES], float), n_c
    )
    u_region = rng.random(n_c)
    moved = (created_day >= config.onset_day) & (u_region < scenario.new_region_share)
    city = np.where(moved, new_city, city)
    c_lat = np.array([ALL_CITIES[i].lat for i in city]) + rng.normal(0, 0.25, n_c)
    c_lon = np.array([ALL_CITIES[i].lon for i in city]) + rng.normal(0, 0.25, n_c)
    c_zip = rng.integers(0, 100, n_c)
    value_z = rng.normal(0, 1, n_c)
    lam = rng.gamma(0.9, 0.03 / 0.9, n_c) * np.exp(0.35 * value_z - 0.35**2 / 2)
    dropout = rng.beta(1.4, 9.0, n_c)
    items_mean = 0.3 * np.exp(0.6 * value_z + rng.normal(0, 0.5, n_c) - 0.3)
    returner = rng.normal(0, 0.9, n_c)
    discount_sens = rng.beta(2.0, 5.0, n_c)
    engagement = rng.normal(0, 0.5, n_c)
    theta = rng.dirichlet(np.full(N_CLUSTERS, 0.2), n_c)
    spend_rate = np.log(lam * (1 + items_mean))
    value_z = (spend_rate - spend_rate.mean()) / (spend_rate.std() + 1e-9)

    # -- prices: repricing, randomised tests, scenario changes ------------------------------
    rng = _rng(config.seed, 4)
    ph = _price_history(rng, config, scenario, ref)

    # -- campaigns: one every `campaign_every_days`, response windows never overlap ----------
    rng = _rng(config.seed, 5)
    c_days = np.arange(20, d - 15, max(config.campaign_every_days, 15), dtype=float)
    n_camp = len(c_days)
    window = rng.choice(np.array([7, 10, 14]), n_camp)
    discount = rng.choice(np.array([0.0, 10.0, 15.0, 20.0]), n_camp)
    channel = _choice(rng, np.array([0.6, 0.2, 0.2]), n_camp)
    themes = ("spring sale", "we miss you", "new arrivals", "weekend deal", "loyalty reward")
    names = []
    for i, cd in enumerate(c_days):
        when = config.start + timedelta(days=int(cd))
        names.append(f"{when:%Y-%m} {themes[int(rng.integers(len(themes)))]} #{i + 1}")

    world = World(
        config=config,
        scenario=scenario,
        season=season,
        season_cum=season_cum,
        cust_created=created,
        cust_city=city,
        cust_lat=np.clip(c_lat, -90, 90),
        cust_lon=np.clip(c_lon, -180, 180),
        cust_zip=c_zip,
        lam=lam,
        dropout=dropout,
        items_mean=items_mean,
        returner=returner,
        discount_sens=discount_sens,
        engagement=engagement,
        value_z=value_z,
        theta=theta,
        seller_city=s_city,
        seller_lat=s_lat,
        seller_lon=s_lon,
        seller_zip=s_zip,
        handling_mean=handling,
        late_rate=late,
        seller_quality=quality,
        prod_cat=cat,
        prod_seller=prod_seller,
        ref_price=ref,
        unit_cost=np.round(cost, 2),
        weight_g=weight,
        dims=np.round(dims, 1),
        elasticity=elast,
        appeal=appeal,
        phi=phi,
        ph_prod=ph[0],
        ph_day=ph[1],
        ph_price=ph[2],
        ph_test=ph[3],
        max_price_effect=1.0,
        camp_day=c_days + 10 / 24.0,  # sent at 10:00
        camp_window=window,
        camp_discount=discount,
        camp_channel=channel,
        camp_name=names,
    )
    world.max_price_effect = float(world.price_effect(world.ph_prod, world.ph_price).max())
    return world


def _price_history(
    rng: np.random.Generator, config: SimConfig, scenario: Scenario, ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_p, d = len(ref), config.days
    span = d + HORIZON_PAD_DAYS + 1
    # Regular repricing: a random walk in log price, a few steps a year.
    n_rep = rng.poisson(d / 150.0, n_p)
    rep_prod = np.repeat(np.arange(n_p), n_rep)
    rep_day = rng.integers(1, max(d, 2), len(rep_prod))
    rep_step = rng.normal(0.0, 0.06, len(rep_prod))
    # Randomised price tests: two weeks at +-5..15%, then back.
    has_test = (rng.random(n_p) < 0.15) & (d > 30)
    t_start = rng.integers(7, max(d - 21, 8), n_p)
    t_end = t_start + 14
    t_mult = 1 + np.where(rng.random(n_p) < 0.5, -1, 1) * rng.uniform(0.05, 0.15, n_p)
    # No repricing during a product's test, so the test is the only change it sees.
    in_test = has_test[rep_prod] & (rep_day >= t_start[rep_prod]) & (rep_day <= t_end[rep_prod])
    rep_prod, rep_day, rep_step = rep_prod[~in_test], rep_day[~in_test], rep_step[~in_test]
    order = np.lexsort((rep_day, rep_prod))
    rep_prod, rep_day, rep_step = rep_prod[order], rep_day[order], rep_step[order]
    rep_cum = np.cumsum(rep_step)
    starts = np.searchsorted(rep_prod, np.arange(n_p))
    offset = np.concatenate([[0.0], rep_cum])[starts]  # cumulative sum before each product
    rep_cum = rep_cum - offset[rep_prod]
    # Scenario: a step at onset, then monthly drift.
    global_days = np.array([], dtype=np.int64)
    if (scenario.price_step != 1.0 or scenario.monthly_price_drift) and config.onset_day < d:
        global_days = np.arange(config.onset_day, d, 30, dtype=np.int64)

    test_p = np.flatnonzero(has_test)
    all_prod = np.concatenate(
        [
            np.arange(n_p),
            rep_prod,
            test_p,
            test_p[t_end[test_p] < d],
            np.repeat(np.arange(n_p), len(global_days)),
        ]
    )
    all_day = np.concatenate(
        [
            np.zeros(n_p, np.int64),
            rep_day,
            t_start[test_p],
            t_end[test_p][t_end[test_p] < d],
            np.tile(global_days, n_p),
        ]
    )
    key = np.unique(all_prod.astype(np.int64) * span + all_day)
    prod, day = key // span, key % span
    rep_keys = rep_prod.astype(np.int64) * span + rep_day
    idx = np.searchsorted(rep_keys, key, side="right") - 1
    same = (idx >= 0) & (rep_prod[np.maximum(idx, 0)] == prod)
    walk = np.where(same, rep_cum[np.maximum(idx, 0)], 0.0)
    testing = has_test[prod] & (day >= t_start[prod]) & (day < t_end[prod])
    g = np.ones(len(day))
    after = day >= config.onset_day
    months = (day - config.onset_day) // 30
    g[after] = scenario.price_step * (1 + scenario.monthly_price_drift) ** months[after]
    price = np.round(ref[prod] * np.exp(walk) * np.where(testing, t_mult[prod], 1.0) * g, 2)
    is_test = testing
    return prod, day, np.maximum(price, 0.5), is_test


def haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Great-circle distance in km."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
