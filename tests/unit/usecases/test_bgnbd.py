"""The classical CLV baseline on histories that break the textbook fit: it answers with the model
it could fit (or a simpler one, saying why), and evaluates boundary fits as their limits."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopml.usecases import _bgnbd
from shopml.usecases._bgnbd import (
    MIN_GG_CUSTOMERS,
    BgNbdSpendScorer,
    FitFailed,
    beta_rule,
    fit_bgnbd,
    fit_spend_baseline,
    rfm_summary,
)

END = datetime(2024, 12, 31)
START = datetime(2024, 1, 1)


def _tx(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    """Transactions from (customer, day after START, value)."""
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "at": [START + timedelta(days=float(r[1])) for r in rows],
            "value": [float(r[2]) for r in rows],
        }
    )


def _monthly(
    customers: int, value: float = 10.0, prefix: str = "c"
) -> list[tuple[str, float, float]]:
    """Customers who buy every 30 days from their first day to the end of the year."""
    return [
        (f"{prefix}{i}", float(day), value)
        for i in range(customers)
        for day in range(3 * i, 361, 30)
    ]


def _matrix(summary: pd.DataFrame) -> np.ndarray:
    return summary[["frequency", "recency", "T", "monetary"]].to_numpy(dtype="float64")


# -- the failures, from the smallest histories that reproduce them ------------------------


def test_zero_value_repeat_spend_is_left_out_of_gamma_gamma() -> None:
    """A repeat customer whose repeat purchases were all free has mean repeat spend 0, where the
    Gamma-Gamma density is undefined (pymc-marketing raised SamplingError on the whole fit)."""
    rows = [(f"c{i}", d, 10.0 + i) for i in range(MIN_GG_CUSTOMERS) for d in (0, 40 + i, 90)]
    rows += [("free", 5.0, 20.0), ("free", 50.0, 0.0)]  # one repeat, worth 0
    summary = rfm_summary(_tx(rows), END)
    assert summary.set_index("customer_id").loc["free", "monetary"] == 0.0
    scorer = fit_spend_baseline(_tx(rows), END, 90)
    assert scorer.meta["model"] == "BG/NBD x Gamma-Gamma", scorer.meta["steps"]
    assert scorer.meta["gamma_gamma"]["customers"] == MIN_GG_CUSTOMERS
    out = scorer.predict_matrix(_matrix(summary))
    assert np.isfinite(out).all() and (out >= 0).all()


def test_a_fitted_at_zero_is_the_nbd_limit_not_a_division_by_zero() -> None:
    """Customers who all keep buying to the end show no dropout: the likelihood peaks at a -> 0
    (the scorer divided by a: ZeroDivisionError). The limit is the NBD: P(alive) = 1 and
    (r + x) * t / (alpha + T) expected purchases."""
    tx = _tx(_monthly(10))
    fit = fit_bgnbd(rfm_summary(tx, END))
    assert "a -> 0" in fit.boundary
    scorer = fit_spend_baseline(tx, END, 90)
    assert scorer.a == 0.0 and "a -> 0" in scorer.meta["bgnbd_boundary"]
    assert any("boundary" in s for s in scorer.meta["steps"])
    x, t_x, big_t = np.array([0.0, 3, 11]), np.array([0.0, 90, 330]), np.array([100.0, 100, 360])
    nbd = (scorer.r + x) * 90 / (scorer.alpha + big_t)
    np.testing.assert_allclose(scorer.expected_purchases(x, t_x, big_t), nbd, rtol=1e-12)
    np.testing.assert_allclose(scorer.p_alive(x, t_x, big_t), 1.0)


# -- the fit -------------------------------------------------------------------------------------


def test_summary_counts_purchase_days_and_ignores_what_comes_after_the_end() -> None:
    tx = _tx(
        [("a", 0, 10), ("a", 0.5, 5), ("a", 10, 7), ("a", 30, -4), ("a", 400, 99), ("b", 20, 0)]
    )
    s = rfm_summary(tx, END).set_index("customer_id")
    assert s.loc["a"].to_dict() == {
        "frequency": 2.0,  # days 10 and 30 after the first day (two purchases on day 0)
        "recency": 30.0,
        "T": 365.0,
        "monetary": 1.5,  # (7 - 4) / 2
        "mean_value": 6.0,  # (15 + 7 - 4) / 3
    }
    assert s.loc["b", "frequency"] == 0 and np.isnan(s.loc["b", "monetary"])


def test_all_one_time_buyers_fall_back_to_the_historical_rate() -> None:
    tx = _tx([(f"c{i}", float(i * 7), 25.0) for i in range(40)])
    scorer = fit_spend_baseline(tx, END, 90)
    assert scorer.purchases == "historical-rate" and scorer.spend == "mean"
    assert scorer.meta["model"] == "historical repeat rate x mean spend"
    assert (
        "BG/NBD not used" in scorer.meta["steps"][0]
        and "0 with a repeat" in scorer.meta["steps"][0]
    )
    # Nobody ever bought twice: nobody is expected to.
    assert (scorer.predict_matrix(_matrix(rfm_summary(tx, END))) == 0).all()


def test_too_few_repeaters_for_gamma_gamma_use_the_mean_spend() -> None:
    rows = [(f"c{i}", d, 10.0) for i in range(3) for d in (0, 30, 60)]
    rows += [(f"o{i}", float(i), 50.0) for i in range(20)]
    scorer = fit_spend_baseline(_tx(rows), END, 90)
    assert scorer.meta["model"] == "BG/NBD x mean spend per purchase"
    assert scorer.spend == "mean" and scorer.mean_spend == pytest.approx(10.0)
    assert "Gamma-Gamma not used" in " ".join(scorer.meta["steps"])


def test_no_purchase_at_all_cannot_be_fitted() -> None:
    with pytest.raises(FitFailed, match="no purchase"):
        fit_spend_baseline(_tx([("a", 400, 10)]), END, 90)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 25).map(lambda i: f"c{i}"),
            st.floats(0, 364, allow_nan=False),
            st.one_of(
                st.floats(-100, 1e3, allow_nan=False),
                st.sampled_from([0.0, 0.0, 1e12, -1e6]),
            ),
        ),
        min_size=1,
        max_size=120,
    ),
    st.sampled_from([1, 30, 90, 273]),
)
def test_any_history_gets_finite_non_negative_answers(
    rows: list[tuple[str, float, float]], horizon: int
) -> None:
    """Zero, negative and enormous values, one customer or many, duplicate days: the baseline
    answers, and says which model it is."""
    tx = _tx(rows)
    scorer = fit_spend_baseline(tx, END, horizon)
    assert scorer.meta["model"] in {
        "BG/NBD x Gamma-Gamma",
        "BG/NBD x mean spend per purchase",
        "historical repeat rate x mean spend",
    }
    x = _matrix(rfm_summary(tx, END))
    x_unknown = np.array([[np.nan] * 4, [0.0, 0.0, 0.0, np.nan], [5.0, 400.0, 10.0, -3.0]])
    for m in (x, x_unknown):
        out = scorer.predict_matrix(m)
        assert np.isfinite(out).all() and (out >= 0).all()


# -- the scorer ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [(1e-6, 0.3), (0.01, 2.0), (1.0, 1e-4), (30.0, 5000.0)])
def test_beta_rule_gives_exact_moments_at_extreme_parameters(a: float, b: float) -> None:
    p, w = beta_rule(a, b, 40)
    assert ((p >= 0) & (p <= 1)).all() and w.sum() == pytest.approx(1.0)
    for k in range(1, 6):
        exact = np.prod([(a + j) / (a + b + j) for j in range(k)])
        assert w @ p**k == pytest.approx(exact, rel=1e-9)


def test_b_at_zero_and_huge_alpha_are_their_limits() -> None:
    x, t_x, big_t = np.array([0.0, 1, 4]), np.array([0.0, 50, 80]), np.array([100.0, 100, 100])
    c = 30 / (10 + big_t)
    limit = BgNbdSpendScorer(
        features=[], outputs=["y"], r=0.6, alpha=10, a=0.8, b=0.0, horizon_days=30
    )
    near = BgNbdSpendScorer(
        features=[], outputs=["y"], r=0.6, alpha=10, a=0.8, b=1e-9, horizon_days=30
    )
    got = limit.expected_purchases(x, t_x, big_t)
    # With no repeat yet the next purchase is the last: P(at least one in t).
    assert got[0] == pytest.approx(1 - (1 + c[0]) ** -0.6)
    assert got[1] == pytest.approx(0.0, abs=1e-12)  # one repeat made: dropped out after it
    np.testing.assert_allclose(near.expected_purchases(x, t_x, big_t), got, rtol=1e-6, atol=1e-9)
    # r and alpha growing together: a Poisson process at rate r / alpha (0.02 a day).
    rates = [
        BgNbdSpendScorer(
            features=[], outputs=["y"], r=0.02 * al, alpha=al, a=0.0, b=1.0, horizon_days=30
        ).expected_purchases(x, t_x, big_t)
        for al in (1e6, 1e12, 1e300)
    ]
    np.testing.assert_allclose(rates[1], 0.6, rtol=1e-6)
    np.testing.assert_allclose(rates[2], 0.6, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([0.0, 1e-12, 1e-3, 0.3, 1.0, 7.0, 1e6]),  # r
    st.sampled_from([1e-9, 0.5, 30.0, 1e8, 1e300]),  # alpha
    st.sampled_from([0.0, 1e-9, 0.01, 0.8, 40.0]),  # a
    st.sampled_from([0.0, 1e-9, 0.5, 2.4, 1e5]),  # b
    st.lists(
        st.tuples(
            st.one_of(st.floats(-5, 5000), st.just(np.nan)),
            st.one_of(st.floats(-5, 2000), st.just(np.nan)),
            st.one_of(st.floats(-5, 2000), st.just(np.nan)),
            st.one_of(st.floats(-1e9, 1e9), st.just(np.nan)),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_any_parameters_and_inputs_give_finite_non_negative_spend(
    r: float, alpha: float, a: float, b: float, rows: list[tuple[float, float, float, float]]
) -> None:
    scorer = BgNbdSpendScorer(
        features=list(_bgnbd.SUMMARY_FEATURES),
        outputs=["y"],
        r=r,
        alpha=alpha,
        a=a,
        b=b,
        gg_p=2.0,
        gg_q=3.5,
        gg_v=50.0,
    )
    x = np.asarray(rows, dtype="float64")
    parts = scorer.components(x)
    for name, values in parts.items():
        assert np.isfinite(values).all() and (values >= 0).all(), name
    assert ((parts["p_alive"] >= 0) & (parts["p_alive"] <= 1)).all()


def test_old_pickles_of_the_scorer_keep_their_class_path() -> None:
    """The baseline was importable from the clv module; it still is."""
    from shopml.usecases.clv import BgNbdSpendScorer as FromClv

    assert FromClv is BgNbdSpendScorer


@pytest.mark.realdata
def test_cdnow_calibration_fit_matches_the_published_estimates() -> None:
    """Fader, Hardie and Lee (2005) fit BG/NBD on CDNOW's 1/10 sample over 39 weeks: r 0.243,
    alpha 4.414 (weeks), a 0.793, b 2.426; and Gamma-Gamma p 6.25, q 3.74, gamma 15.44."""
    from tests.conftest import shared_data_dir

    from shopml.data.importers import read_cdnow

    path = shared_data_dir() / "cdnow" / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip(f"the CDNOW sample is not at {path}")
    orders = read_cdnow(path).tables
    lines = orders["order_items"].merge(orders["orders"], on="order_id")
    tx = pd.DataFrame(
        {
            "customer_id": lines["customer_id"],
            "at": lines["purchased_at"],
            "value": lines["unit_price"] * lines["quantity"],
        }
    )
    scorer = fit_spend_baseline(tx, datetime(1997, 9, 30), 273)
    bg, gg = scorer.meta["bgnbd"], scorer.meta["gamma_gamma"]
    assert bg["r"] == pytest.approx(0.243, abs=0.001)
    assert bg["alpha"] / 7 == pytest.approx(4.414, abs=0.002)
    assert bg["a"] == pytest.approx(0.793, abs=0.001)
    assert bg["b"] == pytest.approx(2.426, abs=0.002)
    assert (gg["p"], gg["q"], gg["v"]) == pytest.approx((6.25, 3.74, 15.44), abs=0.01)


def test_the_simple_model_on_request_is_each_customers_rate_times_their_spend() -> None:
    rows = [("a", 0, 10), ("a", 100, 30), ("a", 200, 50), ("b", 300, 99)]
    rows += [(f"c{i}", d, 5.0) for i in range(12) for d in (0, 50)]
    scorer = fit_spend_baseline(_tx(rows), END, 73, simple=True)
    assert scorer.meta["model"] == "historical repeat rate x mean spend"
    assert scorer.meta["steps"] == []
    s = rfm_summary(_tx(rows), END).set_index("customer_id")
    got = scorer.predict_matrix(_matrix(s.reset_index()))
    a = s.index.get_loc("a")
    # Two repeat days in 365 days, 73 days ahead: 0.4 purchases worth 40 each.
    assert got[a] == pytest.approx(2 / 365 * 73 * 40.0)
    assert got[s.index.get_loc("b")] == 0.0  # one purchase, no repeat yet


def test_a_fitted_model_reuses_its_quadrature_rules() -> None:
    """The Gauss-Jacobi rule depends on the fitted a, b and the repeat count only: a model
    answering again (one row at a time, as served) reuses the rules, which nobody can alter."""
    scorer = BgNbdSpendScorer(
        features=["bg_frequency", "bg_recency", "bg_T", "bg_monetary"],
        outputs=["expected_spend"],
        r=0.24, alpha=4.4, a=0.79, b=2.43, gg_p=6.2, gg_q=3.7, gg_v=15.4,
    )  # fmt: skip
    row = np.array([[2.0, 30.0, 200.0, 25.0]])
    first = scorer.predict_matrix(row)
    before = beta_rule.cache_info()
    again = scorer.predict_matrix(row)
    after = beta_rule.cache_info()
    assert after.misses == before.misses and after.hits > before.hits
    np.testing.assert_array_equal(first, again)
    _, weights = beta_rule(0.79, 2.43 + 2.0, 40)
    with pytest.raises(ValueError):
        weights[0] = 1.0
    assert weights.sum() == pytest.approx(1.0)
