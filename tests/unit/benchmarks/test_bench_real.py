"""The real-data benchmark's harness on a tiny CDNOW-layout history: imported like ``shopml
ingest``, backtested by ``shopml backtest``'s code, every figure with its interval, each goal
judged on its paired interval, an absent sample said as such; the verdict rules on hand-made
intervals."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from benchmarks import bench_real
from benchmarks.bench_real import Goal, Outcome, Protocol, Sample, Shown

from shopml.lifecycle.train import TrainConfig


def tiny_cdnow(path: Path, customers: int = 150, seed: int = 3) -> Path:
    """A CDNOW sample-layout file: first purchases in Q1 1997, repeats at each customer's own
    rate (some never come back) until mid-1998."""
    rng = np.random.default_rng(seed)
    lines = []
    for c in range(customers):
        day = date(1997, 1, 1) + timedelta(days=int(rng.integers(0, 90)))
        rate = rng.gamma(0.8, 1 / 40)  # purchases per day
        alive = rng.random() < 0.7
        while day < date(1998, 7, 1):
            cds = int(rng.integers(1, 4))
            lines.append(f" {c:05d} {c:04d} {day:%Y%m%d} {cds} {cds * rng.uniform(8, 16):7.2f}")
            if not alive and rng.random() < 0.5:
                break
            day += timedelta(days=1 + int(rng.exponential(1 / max(rate, 1e-3))))
    lines.append(" 00000 0000 19980630 1   11.99")  # the data runs to the end of June 1998
    path.write_text("\n".join(lines) + "\n")
    return path


SHOWN = (
    Shown("mae", "MAE", False, 2),
    Shown("gini", "Gini", True),
    Shown("total_ratio", "predicted / actual total", None),
)
CLV = Protocol(
    "tiny",
    "clv",
    datetime(1997, 10, 1),
    273,
    "CLV on a tiny history",
    "39 weeks after 39 weeks",
    SHOWN,
    (Goal("mae", "bgnbd", "beats BG/NBD on MAE"), Goal("gini", "bgnbd", "beats BG/NBD on Gini")),
)


def test_the_harness_backtests_a_tiny_sample_and_reports_an_absent_one(tmp_path: Path) -> None:
    tiny_cdnow(tmp_path / "tiny.txt")
    samples = {
        "tiny": Sample("tiny", "tiny CDNOW", "cdnow", "tiny.txt"),
        "gone": Sample("gone", "missing", "cdnow", "nowhere/missing.txt"),
    }
    gone = Protocol("gone", "clv", datetime(1997, 10, 1), 90, "gone", "", SHOWN, CLV.goals)
    said: list[str] = []
    outcomes = bench_real.run_protocols(
        tmp_path,
        [CLV, gone],
        samples=samples,
        config=TrainConfig(register=False, trials=0, draws=30),
        say=said.append,
    )
    clv, absent = outcomes
    assert clv.status == "ok", clv.reason
    o = clv.origin
    assert o["horizon_days"] == 273 and 0 < o["train_horizon_days"] < 273  # extrapolated
    assert o["n"] == 150 and o["unit"] == "customers" and o["draws"] == 30
    assert set(o["baselines"]) == {"bgnbd", "historical-rate"}
    for metrics in (o["model"], *o["baselines"].values()):
        mae = metrics["mae"]
        assert mae["low"] <= mae["estimate"] <= mae["high"]
    assert set(o["paired"]["bgnbd"]) >= {"mae", "gini", "rmse"}
    assert absent.status == "absent" and "nowhere/missing.txt is absent" in absent.reason
    assert any("importing" in s for s in said) and any("bootstrap" in s for s in said)

    judged = bench_real.verdicts(outcomes)
    assert [v.goal.text for v in judged] == ["beats BG/NBD on MAE", "beats BG/NBD on Gini"] * 2
    assert {v.verdict for v in judged[:2]} <= {"met", "missed", "not shown"}
    assert {v.verdict for v in judged[2:]} == {"not measured"}
    text = bench_real.markdown(outcomes, None)
    assert "model minus `bgnbd` (paired)" in text and "baseline `historical-rate`" in text
    assert "150 customers on test" in text and "learned on" in text
    assert "absent:" in text and "beats BG/NBD on MAE" in text


def _outcome(low: float, high: float, higher: bool | None = False) -> Outcome:
    shown = (Shown("m", "m", higher),)
    p = Protocol("s", "u", datetime(2020, 1, 1), 30, "t", "d", shown, (Goal("m", "b", "g"),))
    diff = {"estimate": (low + high) / 2, "low": low, "high": high}
    return Outcome(p, "ok", origin={"paired": {"b": {"m": diff}}, "n": 40, "unit": "customers"})


def test_a_goal_is_met_only_when_the_paired_interval_clears_zero_on_the_models_side() -> None:
    goal = Goal("m", "b", "g")
    assert bench_real.judge(goal, _outcome(-2, -1)).verdict == "met"  # lower is better
    assert bench_real.judge(goal, _outcome(1, 2)).verdict == "missed"
    unclear = bench_real.judge(goal, _outcome(-1, 2))
    assert unclear.verdict == "not shown" and "40 customers cannot tell" in unclear.why
    assert bench_real.judge(goal, _outcome(1, 2, higher=True)).verdict == "met"
    assert bench_real.judge(goal, _outcome(1, 2, higher=None)).verdict == "not shown"
    missing = Outcome(_outcome(1, 2).protocol, "ok", origin={"unavailable": {"b": "one class"}})
    assert bench_real.judge(goal, missing).why == "b: one class"
    failed = Outcome(_outcome(1, 2).protocol, "failed", "ValueError: boom")
    assert bench_real.judge(goal, failed).verdict == "not measured"


def test_olist_differences_are_judged_like_the_others() -> None:
    diff = {"estimate": -8.0, "low": -9.9, "high": -6.2}
    straddles = {"estimate": -0.1, "low": -0.7, "high": 0.4}
    result = {
        "cutoff": "2018-05-03T07:24:00",
        "counts": {"test": 103},
        "rows": [
            {"answer": "model", "metric": "mae", "vs_promise": diff, "vs_constant": straddles},
        ],
    }
    judged = {(v.goal.metric, v.goal.baseline): v for v in bench_real.olist_verdicts(result)}
    assert judged[("mae", "promise")].verdict == "met"
    assert judged[("mae", "constant")].verdict == "not shown"
    assert "103 orders cannot tell" in judged[("mae", "constant")].why
    assert judged[("pinball_p90", "promise")].verdict == "not measured"
    text = bench_real.olist_sentence(result, list(judged.values()))
    assert "exclude zero for: MAE below Olist's promise." in text
    assert "cannot tell, either way, for: MAE below a constant median;" in text
