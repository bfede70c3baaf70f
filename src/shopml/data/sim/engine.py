"""ShopSim's event engine: purchases, baskets, deliveries, payments, reviews, returns, browsing
and campaigns, all vectorised over customers (no Python loop per order).

Purchases follow a BG/NBD-like process in *operational time* (cumulative seasonal intensity):
while alive a customer buys at a constant rate in operational time, so in calendar time the
rate follows the weekly, yearly and holiday pattern; after each purchase they drop out with
their own probability. Drawing the gaps in operational time lets every customer advance one
purchase per vectorised round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from shopml.data.sim.world import (
    ALL_CITIES,
    CANCEL_RATE,
    CARRIERS,
    CATEGORIES,
    COUNTRY,
    HEAVY_KG,
    HOUR_WEIGHTS,
    LATE_MULTIPLIER,
    N_CLUSTERS,
    World,
    _choice,
    _rng,
    haversine_km,
    lognormal_mixture_quantile,
    sigmoid,
)

Progress = Callable[[str, float], None]

CHANNELS = ("email", "sms", "push")
CHANNEL_UPLIFT = np.array([0.0, 0.2, -0.2])
PAYMENT_METHODS = ("credit_card", "debit_card", "paypal", "bank_transfer", "voucher")
PAYMENT_SHARES = np.array([0.68, 0.12, 0.11, 0.05, 0.04])
RETURN_REASONS = ("arrived late", "wrong size", "not as described", "changed mind", "defective")


def ids(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded string ids as an object array (numpy's string ufuncs are the fast path)."""
    s = np.asarray(idx, dtype=np.int64).astype(np.dtypes.StringDType())
    return np.strings.add(prefix, np.strings.zfill(s, width)).astype(object)


def to_timestamp(start: date, t: np.ndarray) -> np.ndarray:
    """Float days since ``start`` -> datetime64[ns], rounded to the second (NaN -> NaT)."""
    base = np.datetime64(start, "s")
    t = np.asarray(t, dtype=float)
    ok = np.isfinite(t)
    secs = np.where(ok, np.round(t * 86400.0), 0).astype(np.int64)
    out = (base + secs.astype("timedelta64[s]")).astype("datetime64[ns]")
    out[~ok] = np.datetime64("NaT")
    return out


def uplift_probability(
    world: World, cust: np.ndarray, recency: np.ndarray, discount: float, channel: int
) -> np.ndarray:
    """Chance that a treated, alive customer places an extra order because of the campaign.

    Heterogeneous on purpose: discount-sensitive and lapsing customers respond, customers who
    buy a lot anyway barely do.
    """
    logit = (
        -3.1
        + 4.0 * (world.discount_sens[cust] - 0.28)
        + 0.05 * discount
        + 0.8 * np.tanh((recency - 45.0) / 45.0)
        - 0.35 * world.value_z[cust]
        + CHANNEL_UPLIFT[channel]
    )
    return sigmoid(logit)


def return_logit(
    world: World,
    *,
    cust: np.ndarray,
    prod: np.ndarray,
    seller: np.ndarray,
    unit_price: np.ndarray,
    late_days: np.ndarray,
    purchase_day: np.ndarray,
) -> np.ndarray:
    """Log-odds that an order line is returned (within 30 days of its delivery)."""
    cat = world.prod_cat[prod]
    base = np.array([c.return_logit for c in CATEGORIES])[cat]
    median = np.array([c.price_median for c in CATEGORIES])[cat]
    shift = np.array([world.scenario.return_logit_shift.get(c.name, 0.0) for c in CATEGORIES])
    after = purchase_day >= world.config.onset_day
    return (
        base
        + 0.35 * np.log(np.maximum(unit_price, 0.01) / median)
        + 0.6 * (late_days > 0)
        + 0.15 * np.minimum(late_days, 10.0)
        - 0.5 * world.seller_quality[seller]
        + world.returner[cust]
        + np.where(after, shift[cat], 0.0)
    )


@dataclass(frozen=True)
class Block:
    """Where a block of customers sits in a shop simulated block by block: the number of each
    kind of id the blocks before it used, so its ids continue theirs (see
    :func:`shopml.data.simulator.simulate_in_blocks`). The whole shop is one block at zero."""

    index: int = 0
    customers: int = 0
    orders: int = 0
    reviews: int = 0
    returns: int = 0
    events: int = 0
    sessions: int = 0


@dataclass
class _Orders:
    cust: np.ndarray
    t: np.ndarray
    discount: np.ndarray  # percent, for campaign-induced orders
    campaign: np.ndarray  # -1 unless induced by a campaign


def _purchases(world: World, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Natural purchases: (customer, day-time) of every order, and each customer's churn time."""
    n = world.config.customers
    created = world.cust_created
    u0 = world.op_time(created)
    s_end = world.season_cum[world.config.days]
    lives = rng.geometric(world.dropout)  # purchases until (and including) the one they leave after
    ev_c, ev_u = [], []
    idx = np.flatnonzero(lives > 1)
    cu = u0[idx]
    j = 1
    while idx.size:
        cu = cu + rng.exponential(1.0, idx.size) / world.lam[idx]
        keep = cu < s_end
        idx, cu = idx[keep], cu[keep]
        ev_c.append(idx)
        ev_u.append(cu)
        j += 1
        more = lives[idx] > j
        idx, cu = idx[more], cu[more]
    rep_c = np.concatenate(ev_c) if ev_c else np.array([], np.int64)
    rep_u = np.concatenate(ev_u) if ev_u else np.array([])
    # Operational time gives the day; the hour follows the shop's daily rhythm.
    day = np.minimum(np.floor(world.from_op_time(rep_u)), world.config.days - 1)
    hour = _choice(rng, HOUR_WEIGHTS, len(rep_c))
    rep_t = day + (hour + rng.random(len(rep_c))) / 24.0
    cust = np.concatenate([np.arange(n), rep_c])
    t = np.concatenate([created, rep_t])
    count = np.bincount(cust, minlength=n)
    last = np.full(n, -np.inf)
    np.maximum.at(last, cust, t)
    churned_at = np.where(count == lives, last, np.nan)
    return cust, t, churned_at


def _last_before(
    keys_c: np.ndarray, keys_t: np.ndarray, cust: np.ndarray, when: float
) -> np.ndarray:
    """Time of each customer's last order before ``when`` (-inf if none); keys sorted by (c, t)."""
    span = 1e5
    keys = keys_c * span + keys_t
    pos = np.searchsorted(keys, cust * span + when, side="left") - 1
    ok = (pos >= 0) & (keys_c[np.maximum(pos, 0)] == cust)
    return np.where(ok, keys_t[np.maximum(pos, 0)], -np.inf)


def _campaigns(
    world: World, rng: np.random.Generator, cust: np.ndarray, t: np.ndarray, churned_at: np.ndarray
) -> tuple[_Orders, dict[str, np.ndarray]]:
    """Assign each campaign's audience, hold out a control group, and add induced orders."""
    cfg = world.config
    n = cfg.customers
    order = np.lexsort((t, cust))
    kc, kt = cust[order].astype(float), t[order]
    last_induced = np.full(n, -np.inf)
    sends: dict[str, list[np.ndarray]] = {k: [] for k in ("camp", "cust", "treated", "pt", "pc")}
    ind_c, ind_t, ind_d, ind_k = [], [], [], []
    for k, tau in enumerate(world.camp_day):
        w = float(world.camp_window[k])
        eligible = world.cust_created < tau
        targeted = np.flatnonzero(eligible & (rng.random(n) < cfg.campaign_target_share))
        treated = rng.random(targeted.size) < cfg.campaign_treatment_share
        alive = ~(churned_at[targeted] <= tau)  # NaN (never churned) compares False
        d_op = world.op_time(tau + w) - world.op_time(tau)
        p_nat = alive * (1 - np.exp(-world.lam[targeted] * d_op))
        last = np.maximum(_last_before(kc, kt, targeted.astype(float), tau), last_induced[targeted])
        recency = tau - last
        uplift = alive * uplift_probability(
            world, targeted, recency, float(world.camp_discount[k]), int(world.camp_channel[k])
        )
        induced = treated & (rng.random(targeted.size) < uplift)
        when = tau + rng.random(targeted.size) * w
        induced &= when < cfg.days
        ind_c.append(targeted[induced])
        ind_t.append(when[induced])
        ind_d.append(np.full(int(induced.sum()), world.camp_discount[k]))
        ind_k.append(np.full(int(induced.sum()), k))
        last_induced[targeted[induced]] = when[induced]
        sends["camp"].append(np.full(targeted.size, k))
        sends["cust"].append(targeted)
        sends["treated"].append(treated)
        sends["pt"].append(1 - (1 - p_nat) * (1 - uplift))
        sends["pc"].append(p_nat)

    def cat(parts: list[np.ndarray], dtype: type = float) -> np.ndarray:
        return np.concatenate(parts) if parts else np.array([], dtype=dtype)

    induced_orders = _Orders(cat(ind_c, int), cat(ind_t), cat(ind_d), cat(ind_k, int))
    out = {
        "camp": cat(sends["camp"], int),
        "cust": cat(sends["cust"], int),
        "treated": cat(sends["treated"], bool),
        "pt": cat(sends["pt"]),
        "pc": cat(sends["pc"]),
    }
    return induced_orders, out


def sample_products(
    world: World, rng: np.random.Generator, cust: np.ndarray, day: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw products for order lines (or views): a taste cluster from the customer's mixture,
    then a product from the cluster, kept with probability proportional to its price effect.

    The acceptance step makes P(product | cluster, day) proportional to
    ``phi * (price / ref_price) ** elasticity``, so prices really move demand.
    """
    n = len(cust)
    prod = np.empty(n, dtype=np.int64)
    cluster = np.empty(n, dtype=np.int64)
    cum_theta = np.cumsum(world.theta, axis=1)
    cum_phi = np.cumsum(world.phi, axis=1)
    todo = np.arange(n)
    while todo.size:
        c = cust[todo]
        u = rng.random(todo.size)
        k = np.minimum((u[:, None] > cum_theta[c]).sum(axis=1), N_CLUSTERS - 1)
        v = rng.random(todo.size)
        p = np.empty(todo.size, dtype=np.int64)
        for kk in range(N_CLUSTERS):
            m = k == kk
            if m.any():
                p[m] = np.searchsorted(cum_phi[kk], v[m] * cum_phi[kk, -1], side="right")
        p = np.minimum(p, world.phi.shape[1] - 1)
        effect = world.price_effect(p, world.price_at(p, day[todo]))
        accept = rng.random(todo.size) * world.max_price_effect < effect
        prod[todo[accept]] = p[accept]
        cluster[todo[accept]] = k[accept]
        todo = todo[~accept]
    return prod, cluster


def simulate_tables(
    world: World, progress: Progress | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Run the simulation; returns every canonical and oracle table, plus summary meta."""
    tables, meta, _ = simulate_block(world, progress)
    return tables, meta


def block_rng(seed: int, block: int | None) -> np.random.Generator:
    """The events' random stream: the whole shop's, or one of a shop simulated in blocks."""
    if block is None:
        return _rng(seed, 100)
    return np.random.default_rng(np.random.SeedSequence([seed, 7_919, 100, block]))


def simulate_block(
    world: World, progress: Progress | None = None, block: Block | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, str], dict[str, Any]]:
    """Simulate the customers of ``world`` (a whole shop, or a block of one from
    :meth:`World.customer_block`); returns the tables, the summary meta and the counts the next
    block and the shop-wide oracle need (ids used, order lines per taste cluster, returns).

    Without ``block`` this is the whole shop with every table. With one, the events use the
    block's own random stream, the ids continue the blocks before it, and the shop-wide tables
    (sellers, products, campaigns, price history, oracle products) are left out: they are the
    same for every block (:func:`shop_tables`, :func:`oracle_products`)."""
    cfg = world.config
    start, end = cfg.start, float(cfg.days)
    rng = block_rng(cfg.seed, None if block is None else block.index)
    at = block or Block()

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    # -- purchases and campaigns -----------------------------------------------------------
    report("purchases", 0.0)
    nat_c, nat_t, churned_at = _purchases(world, rng)
    report("campaigns", 0.15)
    induced, sends = _campaigns(world, rng, nat_c, nat_t, churned_at)
    o_cust = np.concatenate([nat_c, induced.cust])
    o_t = np.concatenate([nat_t, induced.t])
    o_disc = np.concatenate([np.zeros(len(nat_c)), induced.discount])
    o_camp = np.concatenate([np.full(len(nat_c), -1), induced.campaign])
    order = np.lexsort((o_cust, o_t))
    o_cust, o_t, o_disc, o_camp = o_cust[order], o_t[order], o_disc[order], o_camp[order]
    n_o = len(o_cust)
    o_day = np.floor(o_t).astype(np.int64)
    order_ids = ids("O", np.arange(at.orders + 1, at.orders + n_o + 1), 8)
    cust_ids = ids("C", np.arange(at.customers + 1, at.customers + cfg.customers + 1), 7)

    # -- baskets --------------------------------------------------------------------------
    report("baskets", 0.25)
    n_items = 1 + rng.poisson(world.items_mean[o_cust])
    i_order = np.repeat(np.arange(n_o), n_items)
    first = np.concatenate([[0], np.cumsum(n_items)[:-1]])
    i_seq = np.arange(len(i_order)) - first[i_order] + 1
    i_cust = o_cust[i_order]
    i_day = o_day[i_order]
    i_prod, i_cluster = sample_products(world, rng, i_cust, i_day)
    extra_qty = np.array([c.extra_qty for c in CATEGORIES])
    i_qty = 1 + rng.poisson(extra_qty[world.prod_cat[i_prod]])
    list_price = world.price_at(i_prod, i_day)
    i_price = np.round(list_price * (1 - o_disc[i_order] / 100.0), 2)
    i_seller = world.prod_seller[i_prod]
    i_dist = haversine_km(
        world.cust_lat[i_cust],
        world.cust_lon[i_cust],
        world.seller_lat[i_seller],
        world.seller_lon[i_seller],
    )
    i_kg = world.weight_g[i_prod] * i_qty / 1000.0
    i_freight = np.round((4.0 + 1.1 * i_kg + 0.002 * i_dist) * np.sqrt(i_qty), 2)
    i_value = i_price * i_qty

    # -- delivery --------------------------------------------------------------------------
    report("deliveries", 0.4)
    o_handling = np.maximum.reduceat(world.handling_mean[i_seller], first)
    o_dist = np.maximum.reduceat(i_dist, first)
    o_late = np.maximum.reduceat(world.late_rate[i_seller], first)
    o_quality = np.minimum.reduceat(world.seller_quality[i_seller], first)
    o_kg = np.add.reduceat(i_kg, first)
    o_value = np.add.reduceat(i_value, first)
    parcel = np.array([c.share for c in CARRIERS])
    o_carrier = np.where(o_kg > HEAVY_KG, len(CARRIERS) - 1, _choice(rng, parcel, n_o))
    c_base = np.array([c.base_days for c in CARRIERS])[o_carrier]
    c_speed = np.array([c.km_per_day for c in CARRIERS])[o_carrier]
    c_sigma = np.array([c.sigma for c in CARRIERS])[o_carrier]
    transit = c_base + o_dist / c_speed + 0.04 * o_kg
    day_season = _delivery_season(start, cfg.days)
    daily = np.bincount(o_day, minlength=cfg.days).astype(float)
    trailing = np.convolve(daily, np.ones(7) / 7.0)[: cfg.days]
    backlog = 1 + 0.35 * np.maximum(trailing / max(daily.mean(), 1e-9) - 1, 0)
    scen = world.scenario
    after = o_day >= cfg.onset_day
    carrier_factor = np.array(
        [scen.carrier_transit_factor.get(c.name, scen.transit_factor) for c in CARRIERS]
    )
    scen_factor = np.where(after, carrier_factor[o_carrier], 1.0)
    late_p = np.minimum(o_late + np.where(after, scen.late_rate_add, 0.0), 0.9)
    median = o_handling + transit * day_season[o_day] * backlog[o_day] * scen_factor
    is_late = rng.random(n_o) < late_p
    delivery = (
        median
        * np.exp(c_sigma * rng.standard_normal(n_o))
        * np.where(is_late, LATE_MULTIPLIER, 1.0)
    )
    delivery = np.maximum(delivery, 0.1)
    log_med = np.log(median)
    d_mean = median * np.exp(c_sigma**2 / 2) * (1 - late_p + late_p * LATE_MULTIPLIER)
    d_p50 = lognormal_mixture_quantile(log_med, c_sigma, late_p, 0.5)
    d_p90 = lognormal_mixture_quantile(log_med, c_sigma, late_p, 0.9)
    approve = np.minimum(rng.exponential(0.02, n_o), 0.3 * delivery)
    shipped = o_t + approve + (delivery - approve) * (o_handling / median)
    delivered = o_t + delivery
    # A shop's estimate: conservative, from distance and carrier only.
    nominal = 2.0 + c_base + o_dist / c_speed
    estimated = o_day + np.ceil(1.4 * nominal + 2.0)
    late_days = np.maximum(delivered - estimated, 0.0)
    canceled = rng.random(n_o) < CANCEL_RATE
    approved_at = o_t + approve
    status = np.full(n_o, "created", dtype=object)
    status[approved_at <= end] = "approved"
    status[shipped <= end] = "shipped"
    status[delivered <= end] = "delivered"
    status[canceled] = "canceled"
    shipped_v = np.where(canceled | (shipped > end), np.nan, shipped)
    delivered_v = np.where(canceled | (delivered > end), np.nan, delivered)
    approved_v = np.where(approved_at > end, np.nan, approved_at)
    carrier_names = np.array([c.name for c in CARRIERS], dtype=object)

    # -- payments --------------------------------------------------------------------------
    report("payments", 0.5)
    total = np.round(o_value + np.add.reduceat(i_freight, first), 2)
    method = _choice(rng, PAYMENT_SHARES, n_o)
    voucher_value = np.round(rng.uniform(10, 50, n_o), 2)
    split = (rng.random(n_o) < 0.06) & (total > voucher_value + 1)
    installments = np.where(
        method == 0, np.minimum(1 + rng.poisson(np.minimum(total / 120.0, 6.0)), 12), 1
    )
    p_order = np.concatenate([np.arange(n_o), np.flatnonzero(split)])
    p_seq = np.concatenate([np.where(split, 2, 1), np.ones(int(split.sum()), np.int64)])
    p_method = np.concatenate([np.where(split, 0, method), np.full(int(split.sum()), 4)])
    p_inst = np.concatenate(
        [np.where(split, installments, installments), np.ones(int(split.sum()), np.int64)]
    )
    p_amount = np.concatenate(
        [np.where(split, np.round(total - voucher_value, 2), total), voucher_value[split]]
    )
    p_order_sorted = np.lexsort((p_seq, p_order))

    # -- reviews ---------------------------------------------------------------------------
    report("reviews", 0.55)
    got = ~canceled & (delivered <= end)
    wants = got & (rng.random(n_o) < np.where(late_days > 0, 0.85, 0.7))
    r_created = delivered + 0.3 + rng.exponential(2.0, n_o)
    wants &= r_created <= end
    latent = (
        4.6
        - 0.9 * (late_days > 0)
        - 0.25 * np.minimum(late_days, 10.0)
        + 0.5 * o_quality
        + rng.normal(0, 0.8, n_o)
    )
    score = np.clip(np.round(latent), 1, 5).astype(np.int64)
    r_answer = r_created + rng.exponential(1.5, n_o)
    answered = (rng.random(n_o) < 0.5) & (r_answer <= end)
    r_idx = np.flatnonzero(wants)
    titles = np.array([None, "terrible", "disappointing", "ok", "good", "excellent"], dtype=object)
    with_text = rng.random(n_o) < 0.3

    # -- returns ---------------------------------------------------------------------------
    report("returns", 0.6)
    i_late = late_days[i_order]
    logit = return_logit(
        world,
        cust=i_cust,
        prod=i_prod,
        seller=i_seller,
        unit_price=i_price,
        late_days=i_late,
        purchase_day=i_day,
    )
    p_return = np.where(canceled[i_order], 0.0, sigmoid(logit))
    returned = rng.random(len(i_order)) < p_return
    ret_at = delivered[i_order] + rng.uniform(0.5, 30.0, len(i_order))
    ret_rows = np.flatnonzero(returned & (ret_at <= end))
    size_type = np.array([CATEGORIES[c].size_type for c in world.prod_cat[i_prod[ret_rows]]])
    reason = np.where(
        i_late[ret_rows] > 0,
        0,
        np.where(
            np.isin(size_type, ["apparel", "shoes"]) & (rng.random(len(ret_rows)) < 0.6),
            1,
            rng.choice(np.array([2, 3, 4]), len(ret_rows)),
        ),
    )
    ret_qty = np.where(
        (i_qty[ret_rows] > 1) & (rng.random(len(ret_rows)) < 0.3), 1, i_qty[ret_rows]
    )
    item_ids = np.strings.add(
        np.strings.add(order_ids[i_order].astype(np.dtypes.StringDType()), "-"),
        i_seq.astype(np.dtypes.StringDType()),
    ).astype(object)

    # -- browsing --------------------------------------------------------------------------
    report("web events", 0.65)
    web = (
        _web_events(
            world,
            rng,
            o_cust=o_cust,
            o_t=o_t,
            i_order=i_order,
            i_prod=i_prod,
            churned_at=churned_at,
        )
        if cfg.web_events
        else None
    )

    # -- tables ----------------------------------------------------------------------------
    report("tables", 0.85)
    tables: dict[str, pd.DataFrame] = {}
    tables["customers"] = pd.DataFrame(
        {
            "customer_id": cust_ids,
            "created_at": to_timestamp(start, world.cust_created - 1 / 24.0),
            **_geo_columns(world.cust_city, world.cust_lat, world.cust_lon, world.cust_zip),
        }
    )
    shop = shop_tables(world)
    if block is None:
        tables["sellers"], tables["products"] = shop["sellers"], shop["products"]
    prod_ids = shop["products"]["product_id"].to_numpy()
    tables["orders"] = pd.DataFrame(
        {
            "order_id": order_ids,
            "customer_id": cust_ids[o_cust],
            "status": status,
            "purchased_at": to_timestamp(start, o_t),
            "approved_at": to_timestamp(start, approved_v),
            "shipped_at": to_timestamp(start, shipped_v),
            "delivered_at": to_timestamp(start, delivered_v),
            "estimated_delivery_at": to_timestamp(start, estimated),
            "carrier": carrier_names[o_carrier],
        }
    )
    seller_ids = shop["sellers"]["seller_id"].to_numpy()
    tables["order_items"] = pd.DataFrame(
        {
            "order_item_id": item_ids,
            "order_id": order_ids[i_order],
            "item_seq": i_seq,
            "product_id": prod_ids[i_prod],
            "seller_id": seller_ids[i_seller],
            "quantity": i_qty,
            "unit_price": i_price,
            "freight": i_freight,
        }
    )
    ps = p_order_sorted
    tables["payments"] = pd.DataFrame(
        {
            "order_id": order_ids[p_order[ps]],
            "payment_seq": p_seq[ps],
            "method": np.array(PAYMENT_METHODS, dtype=object)[p_method[ps]],
            "installments": p_inst[ps],
            "amount": p_amount[ps],
        }
    )
    tables["reviews"] = pd.DataFrame(
        {
            "review_id": ids("R", np.arange(at.reviews + 1, at.reviews + len(r_idx) + 1), 8),
            "order_id": order_ids[r_idx],
            "score": score[r_idx],
            "created_at": to_timestamp(start, r_created[r_idx]),
            "answered_at": to_timestamp(start, np.where(answered, r_answer, np.nan)[r_idx]),
            "title": np.where(with_text[r_idx], titles[score[r_idx]], None),
            "comment": np.where(
                with_text[r_idx] & (late_days[r_idx] > 0),
                np.array("arrived late", dtype=object),
                np.array(None, dtype=object),
            ),
        }
    )
    tables["returns"] = pd.DataFrame(
        {
            "return_id": ids("RT", np.arange(at.returns + 1, at.returns + len(ret_rows) + 1), 7),
            "order_item_id": item_ids[ret_rows],
            "returned_at": to_timestamp(start, ret_at[ret_rows]),
            "quantity": ret_qty,
            "refund_amount": np.round(i_price[ret_rows] * ret_qty, 2),
            "reason": np.array(RETURN_REASONS, dtype=object)[reason],
        }
    )
    if web is None:
        tables["web_events"] = pd.DataFrame(
            {
                c: []
                for c in (
                    "event_id",
                    "session_id",
                    "customer_id",
                    "product_id",
                    "event_type",
                    "event_at",
                    "order_id",
                )
            }
        )
    else:
        w_sess, w_cust, w_prod, w_type, w_t, w_order = web
        tables["web_events"] = pd.DataFrame(
            {
                "event_id": ids("E", np.arange(at.events + 1, at.events + len(w_t) + 1), 9),
                "session_id": ids("W", w_sess + at.sessions + 1, 8),
                "customer_id": np.where(w_cust >= 0, cust_ids[np.maximum(w_cust, 0)], None),
                "product_id": prod_ids[w_prod],
                "event_type": np.array(["view", "add_to_cart", "purchase"], dtype=object)[w_type],
                "event_at": to_timestamp(start, w_t),
                "order_id": np.where(w_order >= 0, order_ids[np.maximum(w_order, 0)], None),
            }
        )
    camp_ids = shop["campaigns"]["campaign_id"].to_numpy()
    if block is None:
        tables["campaigns"] = shop["campaigns"]
    resp = _responses(world, sends, o_cust, o_t, o_camp)
    tables["campaign_sends"] = pd.DataFrame(
        {
            "campaign_id": camp_ids[sends["camp"]],
            "customer_id": cust_ids[sends["cust"]],
            "group": np.where(sends["treated"], "treatment", "control").astype(object),
            "assigned_at": to_timestamp(start, world.camp_day[sends["camp"]]),
            "responded": resp >= 0,
            "responded_at": to_timestamp(
                start, np.where(resp >= 0, o_t[np.maximum(resp, 0)], np.nan)
            ),
            "response_order_id": np.where(resp >= 0, order_ids[np.maximum(resp, 0)], None),
        }
    )
    if block is None:
        tables["price_history"] = shop["price_history"]

    # -- oracle ----------------------------------------------------------------------------
    report("oracle", 0.92)
    tables["oracle_order_items"] = pd.DataFrame({"order_item_id": item_ids, "p_return": p_return})
    tables["oracle_orders"] = pd.DataFrame(
        {
            "order_id": order_ids,
            "delivery_days_mean": d_mean,
            "delivery_days_p50": d_p50,
            "delivery_days_p90": d_p90,
        }
    )
    ov_mean, ov_sd = order_value_moments(world, 0)
    tables["oracle_customers"] = pd.DataFrame(
        {
            "customer_id": cust_ids,
            "purchase_rate": world.lam,
            "dropout_prob": world.dropout,
            "churned_at": to_timestamp(start, churned_at),
            "order_value_mean": ov_mean,
            "order_value_sd": ov_sd,
            "items_per_order_mean": 1 + world.items_mean,
            "returner_propensity": world.returner,
            "discount_sensitivity": world.discount_sens,
            "taste_cluster": world.theta.argmax(axis=1).astype(np.int64),
        }
    )
    tables["oracle_campaign_sends"] = pd.DataFrame(
        {
            "campaign_id": camp_ids[sends["camp"]],
            "customer_id": cust_ids[sends["cust"]],
            "p_response_treated": np.clip(sends["pt"], 0, 1),
            "p_response_control": np.clip(sends["pc"], 0, 1),
        }
    )
    line_clusters = np.bincount(i_cluster, minlength=N_CLUSTERS)
    if block is None:
        tables["oracle_products"] = oracle_products(world, line_clusters)
    meta = {
        "orders": str(n_o),
        "order_items": str(len(i_order)),
        "realised_return_rate": f"{returned[~canceled[i_order]].mean():.4f}" if n_o else "0",
    }
    counts = {
        "customers": cfg.customers,
        "orders": n_o,
        "order_items": len(i_order),
        "reviews": len(r_idx),
        "returns": len(ret_rows),
        "events": 0 if web is None else len(web[4]),
        "sessions": 0 if web is None or not len(web[0]) else int(web[0].max()) + 1,
        "line_clusters": line_clusters,
        "kept_lines": int((~canceled[i_order]).sum()),
        "returned_kept_lines": int(returned[~canceled[i_order]].sum()),
    }
    report("done", 1.0)
    return tables, meta, counts


def shop_tables(world: World) -> dict[str, pd.DataFrame]:
    """The tables that do not depend on the customers: sellers, products, campaigns and the
    price history (drawn with the world, so every block of a shop shares them)."""
    cfg = world.config
    start = cfg.start
    tables: dict[str, pd.DataFrame] = {}
    tables["sellers"] = pd.DataFrame(
        {
            "seller_id": ids("S", np.arange(1, cfg.sellers + 1), 5),
            **_geo_columns(world.seller_city, world.seller_lat, world.seller_lon, world.seller_zip),
        }
    )
    prod_ids = ids("P", np.arange(1, cfg.products + 1), 6)
    cat_names = np.array([c.name for c in CATEGORIES], dtype=object)
    tables["products"] = pd.DataFrame(
        {
            "product_id": prod_ids,
            "category": cat_names[world.prod_cat],
            "name": np.strings.add(
                np.strings.add(cat_names[world.prod_cat].astype(np.dtypes.StringDType()), " item "),
                np.arange(1, cfg.products + 1).astype(np.dtypes.StringDType()),
            ).astype(object),
            "size_type": np.array([c.size_type for c in CATEGORIES], dtype=object)[world.prod_cat],
            "list_price": world.ref_price,
            "unit_cost": world.unit_cost,
            "weight_g": world.weight_g,
            "length_cm": world.dims[:, 0],
            "height_cm": world.dims[:, 1],
            "width_cm": world.dims[:, 2],
        }
    )
    n_camp = len(world.camp_day)
    camp_ids = ids("CMP", np.arange(1, n_camp + 1), 3)
    tables["campaigns"] = pd.DataFrame(
        {
            "campaign_id": camp_ids,
            "name": np.array(world.camp_name, dtype=object),
            "channel": np.array(CHANNELS, dtype=object)[world.camp_channel],
            "sent_at": to_timestamp(start, world.camp_day),
            "response_window_days": world.camp_window.astype(np.int64),
            "discount_pct": world.camp_discount,
        }
    )
    tables["price_history"] = pd.DataFrame(
        {
            "product_id": prod_ids[world.ph_prod],
            "valid_from": to_timestamp(start, world.ph_day.astype(float)),
            "price": world.ph_price,
            "is_test": world.ph_test.astype(bool),
        }
    )
    return tables


def oracle_products(world: World, line_clusters: np.ndarray) -> pd.DataFrame:
    """Each product's expected demand, from the order lines of every customer per taste cluster."""
    cfg = world.config
    # Expected units per day at the reference price: each cluster's observed line rate spread
    # over its products (at reference prices the choice within a cluster is phi itself).
    lines_per_day = line_clusters / cfg.days
    base_demand = (lines_per_day @ world.phi) * world.expected_quantity()
    return pd.DataFrame(
        {
            "product_id": ids("P", np.arange(1, cfg.products + 1), 6),
            "base_demand": base_demand,
            "ref_price": world.ref_price,
            "elasticity": world.elasticity,
        }
    )


def order_value_moments(world: World, day: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd of a customer's (undiscounted) order value with the prices of ``day``."""
    prods = np.arange(len(world.ref_price))
    price = world.price_at(prods, day)
    extra = np.array([c.extra_qty for c in CATEGORIES])[world.prod_cat]
    probs = world.choice_probs(day)
    v1 = probs @ (price * (1 + extra))
    v2 = probs @ (price**2 * (extra + (1 + extra) ** 2))
    x1, x2 = world.theta @ v1, world.theta @ v2
    n_mean, n_var = 1 + world.items_mean, world.items_mean
    var = n_mean * (x2 - x1**2) + n_var * x1**2
    return n_mean * x1, np.sqrt(np.maximum(var, 0))


def _delivery_season(start: date, n_days: int) -> np.ndarray:
    """Transit multiplier per day: winter weather and the holiday parcel peak."""
    out = np.ones(n_days)
    for i in range(n_days):
        d = start + timedelta(days=i)
        if d.month == 12 or (d.month == 1 and d.day <= 6):
            out[i] = 1.15
    return out


def _geo_columns(
    city: np.ndarray, lat: np.ndarray, lon: np.ndarray, zip2: np.ndarray
) -> dict[str, np.ndarray]:
    regions = np.array([c.region for c in ALL_CITIES], dtype=object)
    names = np.array([c.name for c in ALL_CITIES], dtype=object)
    zip3 = np.array([c.zip3 for c in ALL_CITIES]).astype(np.dtypes.StringDType())
    z = np.strings.add(zip3[city], np.strings.zfill(zip2.astype(np.dtypes.StringDType()), 2))
    return {
        "country": np.full(len(city), COUNTRY, dtype=object),
        "region": regions[city],
        "city": names[city],
        "zip_prefix": z.astype(object),
        "lat": np.round(lat, 5),
        "lon": np.round(lon, 5),
    }


def _responses(
    world: World,
    sends: dict[str, np.ndarray],
    o_cust: np.ndarray,
    o_t: np.ndarray,
    o_camp: np.ndarray,
) -> np.ndarray:
    """Index of each send's response order (the first order in the window), or -1."""
    if not len(sends["cust"]):
        return np.array([], dtype=np.int64)
    order = np.lexsort((o_t, o_cust))
    span = 1e5
    keys = o_cust[order] * span + o_t[order]
    tau = world.camp_day[sends["camp"]]
    w = world.camp_window[sends["camp"]].astype(float)
    pos = np.searchsorted(keys, sends["cust"] * span + tau, side="right")
    pos_c = np.minimum(pos, len(keys) - 1)
    hit = order[pos_c]
    ok = (pos < len(keys)) & (o_cust[hit] == sends["cust"]) & (o_t[hit] <= tau + w)
    # A control customer cannot respond with an order the campaign induced (it never does:
    # induced orders only go to the treated), so no extra check is needed.
    return np.where(ok, hit, -1)


def _web_events(
    world: World,
    rng: np.random.Generator,
    *,
    o_cust: np.ndarray,
    o_t: np.ndarray,
    i_order: np.ndarray,
    i_prod: np.ndarray,
    churned_at: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Sessions: one per order (views, add-to-cart, purchase of each line, some extra views),
    browsing sessions without a purchase, and anonymous sessions."""
    cfg = world.config
    n_o = len(o_cust)
    n_i = len(i_order)
    # Purchase sessions: each line viewed, added to the cart, bought.
    i_t = o_t[i_order]
    view_t = i_t - rng.uniform(3, 25, n_i) / 1440.0
    cart_t = i_t - rng.uniform(0.5, 2.5, n_i) / 1440.0
    n_extra = rng.poisson(0.8, n_o)
    x_order = np.repeat(np.arange(n_o), n_extra)
    x_cust = o_cust[x_order]
    x_prod, _ = sample_products(world, rng, x_cust, np.floor(o_t[x_order]).astype(np.int64))
    x_t = o_t[x_order] - rng.uniform(1, 30, len(x_order)) / 1440.0
    # Browsing sessions while the customer is around (until a month after they churn).
    active_end = np.minimum(np.where(np.isnan(churned_at), cfg.days, churned_at + 30), cfg.days)
    span = np.maximum(active_end - world.cust_created, 0)
    n_sess = rng.poisson(world.lam * np.exp(world.engagement) * span)
    b_sess_cust = np.repeat(np.arange(cfg.customers), n_sess)
    b_sess_t = world.cust_created[b_sess_cust] + rng.random(len(b_sess_cust)) * span[b_sess_cust]
    n_anon = int(0.3 * len(b_sess_cust))
    a_sess_t = rng.random(n_anon) * cfg.days
    # Views per browsing session; logged-in views follow taste, anonymous ones popularity.
    s_cust = np.concatenate([b_sess_cust, np.full(n_anon, -1)])
    s_t = np.concatenate([b_sess_t, a_sess_t])
    n_views = 1 + rng.poisson(1.2, len(s_cust))
    v_sess = np.repeat(np.arange(len(s_cust)), n_views)
    v_cust = s_cust[v_sess]
    v_first = np.concatenate([[0], np.cumsum(n_views)[:-1]])
    v_rank = np.arange(len(v_sess)) - v_first[v_sess]
    v_t = np.minimum(
        s_t[v_sess] + v_rank * rng.uniform(0.5, 4, len(v_sess)) / 1440.0, cfg.days - 1e-4
    )
    v_day = np.floor(v_t).astype(np.int64)
    logged = v_cust >= 0
    v_prod = np.empty(len(v_sess), dtype=np.int64)
    v_prod[logged], _ = sample_products(world, rng, v_cust[logged], v_day[logged])
    pop = world.phi.mean(axis=0)
    v_prod[~logged] = _choice(rng, pop, int((~logged).sum()))
    eng = np.where(logged, world.engagement[np.maximum(v_cust, 0)], 0.0)
    carted = rng.random(len(v_sess)) < sigmoid(-2.0 + eng + world.appeal[v_prod])
    c_idx = np.flatnonzero(carted)

    sess_purchase = np.arange(n_o)
    sess_browse = n_o + v_sess
    sess = np.concatenate(
        [
            sess_purchase[i_order],
            sess_purchase[i_order],
            sess_purchase[i_order],
            sess_purchase[x_order],
            sess_browse,
            sess_browse[c_idx],
        ]
    )
    cust = np.concatenate(
        [o_cust[i_order], o_cust[i_order], o_cust[i_order], x_cust, v_cust, v_cust[c_idx]]
    )
    prod = np.concatenate([i_prod, i_prod, i_prod, x_prod, v_prod, v_prod[c_idx]])
    etype = np.concatenate(
        [
            np.zeros(n_i, np.int64),
            np.ones(n_i, np.int64),
            np.full(n_i, 2, np.int64),
            np.zeros(len(x_order), np.int64),
            np.zeros(len(v_sess), np.int64),
            np.ones(len(c_idx), np.int64),
        ]
    )
    t = np.concatenate([view_t, cart_t, i_t, x_t, v_t, v_t[c_idx] + 0.3 / 1440.0])
    order_ref = np.concatenate(
        [
            np.full(2 * n_i, -1),
            i_order,
            np.full(len(x_order), -1),
            np.full(len(v_sess) + len(c_idx), -1),
        ]
    )
    # Session ids follow the time of each session's first event, so they read in order.
    first_t = np.full(n_o + len(s_cust), np.inf)
    np.minimum.at(first_t, sess, t)
    order = np.lexsort((etype, t))
    sess_rank = np.empty_like(first_t, dtype=np.int64)
    sess_rank[np.argsort(first_t, kind="stable")] = np.arange(len(first_t))
    return (
        sess_rank[sess][order],
        cust[order],
        prod[order],
        etype[order],
        t[order],
        order_ref[order],
    )


def expected_arrivals(world: World) -> float:
    """Rough expected number of natural orders (for sizing benchmarks): first orders plus
    repeat orders while alive, ignoring censoring by churn."""
    span = world.season_cum[world.config.days] - world.op_time(world.cust_created)
    return float(np.sum(1 + np.minimum(world.lam * span, 1 / world.dropout)))


__all__ = [
    "Block",
    "expected_arrivals",
    "ids",
    "oracle_products",
    "order_value_moments",
    "shop_tables",
    "simulate_block",
    "simulate_tables",
    "to_timestamp",
]
