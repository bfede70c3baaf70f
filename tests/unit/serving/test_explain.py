"""Explanations: `"explain": true` returns the top feature contributions, which add up to the
model's own output; a model with none says why; the batch scorer writes them too."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.unit.serving.conftest import a_customer, serving_settings


def _line(home: Path) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        cid, pid, sid = con.execute(
            "SELECT o.customer_id, i.product_id, i.seller_id FROM order_items i "
            "JOIN orders o USING (order_id) ORDER BY 1, 2 LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    return {
        "customer_id": cid,
        "product_id": pid,
        "seller_id": sid,
        "features": {"unit_price": 20.0, "delivery_delay_days": 2.0},
    }


def test_a_boosters_contributions_add_up_to_its_log_odds(client: Any, served_home: Path) -> None:
    body = _line(served_home)
    plain = client.post("/v1/returns/predict", json=body)
    assert plain.status_code == 200 and "explanation" not in plain.json()
    r = client.post("/v1/returns/predict", json={**body, "explain": True})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["prediction"] == plain.json()["prediction"]  # explaining changes nothing
    e = answer["explanation"]
    assert e["available"] and e["output"] == "p_return" and e["units"] == "log-odds"
    assert len(e["top"]) == 5
    sizes = [abs(t["contribution"]) for t in e["top"]]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 0
    # TreeSHAP is exact: the base and every contribution add up to the model's raw score.
    p = answer["prediction"]["p_return"]
    assert e["total"] == pytest.approx(math.log(p / (1 - p)), abs=1e-6)
    given = {t["feature"]: t["value"] for t in e["top"]}
    for name, value in body["features"].items():
        if name in given:
            assert given[name] == value


def test_a_batch_explains_what_it_is_asked_to(client: Any, served_home: Path) -> None:
    one = _line(served_home)
    r = client.post(
        "/v1/returns/predict",
        json={"instances": [one, {**one, "explain": True}, {"features": {"unit_price": 5.0}}]},
    )
    assert r.status_code == 200, r.text
    got = [("explanation" in p) for p in r.json()["predictions"]]
    assert got == [False, True, False]
    everything = client.post(
        "/v1/returns/predict", json={"instances": [one, one], "explain": True}
    ).json()["predictions"]
    assert all(p["explanation"]["available"] for p in everything)
    assert everything[0]["explanation"] == everything[1]["explanation"]


def test_a_model_without_contributions_says_why(client: Any, served_home: Path) -> None:
    cid = a_customer(served_home)
    r = client.post("/v1/segments/predict", json={"customer_id": cid, "explain": True})
    assert r.status_code == 200, r.text
    e = r.json()["explanation"]
    assert e["available"] is False and "nearest centroid" in e["reason"]
    bad = client.post("/v1/segments/predict", json={"customer_id": cid, "explain": "yes please"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "explain"]


def test_the_batch_scorer_writes_the_top_contributions(
    client: Any, served_home: Path, tmp_path: Path
) -> None:
    from shopml.serving.batch import score_batch

    line = _line(served_home)
    rows = pd.DataFrame(
        [
            {
                "customer_id": line["customer_id"],
                "product_id": line["product_id"],
                "seller_id": line["seller_id"],
                "unit_price": price,
                "delivery_delay_days": 2.0,
            }
            for price in (5.0, 20.0, 80.0)
        ]
    )
    src = tmp_path / "lines.csv"
    rows.to_csv(src, index=False)
    out = tmp_path / "scored.parquet"
    settings = serving_settings(served_home)
    result = score_batch(settings, "returns", str(out), input_path=str(src), explain=3)
    scored = pd.read_parquet(out)
    assert result.rows == 3
    for i in (1, 2, 3):
        assert {f"explain_{i}_feature", f"explain_{i}_contribution"} <= set(scored.columns)
    assert (scored["explain_units"] == "log-odds").all()
    first = scored["explain_1_contribution"].abs()
    assert (first >= scored["explain_2_contribution"].abs()).all() and (first > 0).all()
    # The service explains the same line the same way.
    served = client.post("/v1/returns/predict", json={**line, "explain": True}).json()
    top = served["explanation"]["top"]
    row = scored.iloc[1]
    assert row["p_return"] == pytest.approx(served["prediction"]["p_return"])
    assert [row[f"explain_{i}_feature"] for i in (1, 2, 3)] == [t["feature"] for t in top[:3]]
    assert row["explain_1_contribution"] == pytest.approx(top[0]["contribution"])
    # A model with nothing to say: a warning, no columns.
    seg = score_batch(
        settings,
        "segments",
        str(tmp_path / "seg.parquet"),
        input_path=str(src),
        explain=3,
    )
    assert any("cannot be explained" in w for w in seg.warnings)
    assert not any(c.startswith("explain_") for c in pd.read_parquet(tmp_path / "seg.parquet"))


def test_clv_explains_its_point_prediction_in_the_service_and_the_batch(
    client: Any, served_home: Path, tmp_path: Path
) -> None:
    """The hybrid (boosters on BG/NBD) explains ``predicted_spend_90d`` by its booster's
    contributions, BG/NBD's features among them: they add up to the answer (its own units, or
    the log of it for a tweedie booster) wherever it is above its floor of 0."""
    from shopml.serving.batch import score_batch

    cid = a_customer(served_home)
    r = client.post("/v1/clv/predict", json={"customer_id": cid, "explain": True})
    assert r.status_code == 200, r.text
    answer = r.json()
    e, spend = answer["explanation"], answer["prediction"]["predicted_spend_90d"]
    assert e["available"] and e["output"] == "predicted_spend_90d"
    assert e["units"] in ("log", "predicted_spend_90d")
    if e["units"] == "log":
        assert e["total"] == pytest.approx(math.log(spend), abs=1e-6)
    elif spend > 0:
        assert e["total"] == pytest.approx(spend, abs=1e-6)
    src = tmp_path / "customers.csv"
    pd.DataFrame({"customer_id": [cid]}).to_csv(src, index=False)
    out = tmp_path / "clv.parquet"
    score_batch(serving_settings(served_home), "clv", str(out), input_path=str(src), explain=3)
    row = pd.read_parquet(out).iloc[0]
    assert row["explain_units"] == e["units"]
    assert [row[f"explain_{i}_feature"] for i in (1, 2, 3)] == [t["feature"] for t in e["top"][:3]]
    assert row["explain_1_contribution"] == pytest.approx(e["top"][0]["contribution"])
