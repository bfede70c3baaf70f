"""The routes on real champions: looked-up and explicit features, batches, 404s, 422s naming
the field, recommendations, prices, models, readiness and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.serving.conftest import SERVED, a_customer


def test_predict_looks_features_up_and_reports_their_age(client: Any, served_home: Path) -> None:
    cid = a_customer(served_home)
    r = client.post("/v1/clv/predict", json={"customer_id": cid})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1" and body["usecase"] == "clv"
    assert body["request_id"] and r.headers["x-request-id"] == body["request_id"]
    assert body["entity"] == {"customer_id": cid}
    assert set(body["prediction"]) == {"predicted_spend_90d", "expected_spend_90d"}
    # The simulated shop ends in the past: its features are served, flagged stale, with age.
    assert body["feature_age_seconds"] > 86400 and body["stale"] is True


def test_explicit_features_override_looked_up_ones(client: Any, served_home: Path) -> None:
    cid = a_customer(served_home)
    looked = client.post("/v1/clv/predict", json={"customer_id": cid}).json()
    overridden = client.post(
        "/v1/clv/predict",
        json={
            "customer_id": cid,
            "features": {
                # Inputs of the model (CLV reads rates and the BG/NBD summary, not totals).
                "bg_frequency": 0.0,
                "bg_monetary": 0.0,
                "spend_90d": 0.0,
                "recency_days": 400.0,
            },
        },
    ).json()
    assert overridden["prediction"] != looked["prediction"]
    explicit = client.post("/v1/clv/predict", json={"features": {"recency_days": 3.0}})
    assert explicit.status_code == 200 and explicit.json()["feature_age_seconds"] is None


def test_order_line_uses_related_entities(client: Any, served_home: Path) -> None:
    import duckdb

    con = duckdb.connect(str(served_home / "warehouse.duckdb"), read_only=True)
    cid, pid, sid = con.execute(
        "SELECT o.customer_id, i.product_id, i.seller_id FROM order_items i "
        "JOIN orders o USING (order_id) LIMIT 1"
    ).fetchone()
    con.close()
    r = client.post(
        "/v1/returns/predict",
        json={
            "customer_id": cid,
            "product_id": pid,
            "seller_id": sid,
            "features": {"unit_price": 20.0, "delivery_delay_days": 2.0},
        },
    )
    assert r.status_code == 200, r.text
    assert 0.0 <= r.json()["prediction"]["p_return"] <= 1.0


def test_batch_and_its_limit(client_factory: Any, served_home: Path) -> None:
    client = client_factory(serve_max_batch=3)
    cid = a_customer(served_home)
    r = client.post(
        "/v1/segments/predict",
        json={"instances": [{"customer_id": cid}, {"features": {"recency_days": 400.0}}]},
    )
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2 and all("segment_name" in p["prediction"] for p in preds)
    too_many = client.post("/v1/segments/predict", json={"instances": [{"customer_id": cid}] * 4})
    assert too_many.status_code == 422
    assert "instances" in str(too_many.json()["detail"][0]["loc"])


def test_missing_entity_is_404_with_the_id(client: Any) -> None:
    r = client.post("/v1/clv/predict", json={"customer_id": "C-NOBODY"})
    assert r.status_code == 404
    assert r.json()["detail"]["customer_id"] == "C-NOBODY"
    batch = client.post("/v1/clv/predict", json={"instances": [{"customer_id": "C-NOBODY"}]})
    assert batch.status_code == 404 and "C-NOBODY" in batch.text


def test_malformed_requests_are_422_naming_the_field(client: Any) -> None:
    cases = [
        ({"features": {"no_such_feature": 1.0}}, "no_such_feature"),
        ({"features": {"recency_days": "soon"}}, "recency_days"),
        ({"customer_id": 12}, "customer_id"),
        ({"customer_id": "x", "surprise": 1}, "surprise"),
        ({}, "body"),
    ]
    for body, field in cases:
        r = client.post("/v1/clv/predict", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in str(r.json()["detail"]), (body, r.text)
    bad_json = client.post(
        "/v1/clv/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422


def test_recommend_known_and_unknown_customers(client: Any, served_home: Path) -> None:
    cid = a_customer(served_home)
    known = client.post("/v1/recommender/recommend", json={"customer_id": cid, "k": 5}).json()
    assert known["known_customer"] is True and known["strategy"] == "personalised"
    assert len(known["recommendations"]) == 5
    first = known["recommendations"][0]["product_id"]
    excluded = client.post(
        "/v1/recommender/recommend", json={"customer_id": cid, "k": 5, "exclude": [first]}
    ).json()
    assert first not in [r["product_id"] for r in excluded["recommendations"]]
    stranger = client.post("/v1/recommender/recommend", json={"customer_id": "NEW-1", "k": 3})
    assert stranger.status_code == 200
    assert stranger.json()["strategy"] == "popular" and len(stranger.json()["recommendations"]) == 3


def test_pricing_suggests_within_guardrails(client: Any, served_home: Path) -> None:
    import duckdb

    con = duckdb.connect(str(served_home / "warehouse.duckdb"), read_only=True)
    pid = con.execute("SELECT product_id FROM products LIMIT 1").fetchone()[0]
    con.close()
    r = client.post(
        "/v1/pricing/suggest",
        json={
            "product_id": pid,
            "current_price": 100.0,
            "guardrails": {"min_price": 95.0, "max_price": 104.0, "max_change": 0.05},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert 95.0 <= body["suggested_price"] <= 104.0
    assert body["guardrails"]["max_change"] == 0.05 and body["model_version"] == "1"
    # Guardrails that cannot all hold are applied in order (step, floor, ceiling) and the
    # answer says they conflict; a floor over the ceiling is one such case, not an error.
    r = client.post(
        "/v1/pricing/suggest",
        json={
            "product_id": pid,
            "current_price": 100.0,
            "guardrails": {"min_price": 103.0, "max_price": 97.0, "max_change": 0.05},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["suggested_price"] == 103.0 and r.json()["guardrails"]["conflict"] is True
    # The smallest price the schema takes is a cent, and the answer is all numbers.
    r = client.post("/v1/pricing/suggest", json={"product_id": pid, "current_price": 0.01})
    assert r.status_code == 200, r.text
    assert r.json()["suggested_price"] >= 0.01
    assert all(v is not None for v in r.json().values())
    assert client.post("/v1/pricing/suggest", json={"product_id": "P-NONE"}).status_code == 404


def test_models_ready_health_and_metrics(client: Any, served_home: Path) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready", ready
    assert set(ready["models"]) == set(SERVED)
    models = {m["usecase"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["clv"]["version"] == "1" and models["clv"]["alias"] == "champion"
    assert models["clv"]["dataset_version"] and models["clv"]["trained_at"]
    client.post("/v1/clv/predict", json={"customer_id": a_customer(served_home)})
    client.post("/v1/clv/predict", json={"customer_id": "C-NOBODY"})
    text = client.get("/metrics").text
    assert 'shopml_requests_total{method="POST",route="/v1/clv/predict",status="200"}' in text
    assert 'route="/v1/clv/predict",status="404"' in text
    assert 'shopml_model_version_info{usecase="clv",version="1"} 1.0' in text
    assert 'shopml_prediction_count{output="predicted_spend_90d",usecase="clv"}' in text
    assert "shopml_request_duration_seconds_bucket" in text
    assert 'shopml_errors_total{kind="client",route="/v1/clv/predict"}' in text


def test_openapi_has_an_example_per_route(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    for name in ("returns", "clv", "segments"):
        op = spec["paths"][f"/v1/{name}/predict"]["post"]
        examples = op["requestBody"]["content"]["application/json"]["examples"]
        assert {"lookup", "explicit", "both", "batch"} <= set(examples)
    assert "/v1/recommender/recommend" in spec["paths"] and "/v1/pricing/suggest" in spec["paths"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_request_ids_content_types_and_methods(client: Any, served_home: Path) -> None:
    cid = a_customer(served_home)
    r = client.post("/v1/clv/predict", json={"customer_id": cid}, headers={"x-request-id": "abc-1"})
    assert r.json()["request_id"] == "abc-1" and r.headers["x-request-id"] == "abc-1"
    other = client.post("/v1/clv/predict", json={"customer_id": cid}).json()["request_id"]
    assert len(other) == 32 and other != "abc-1"
    # The body is JSON whatever the content type says (`curl -d` sends a form type).
    form = client.post(
        "/v1/clv/predict",
        content=f'{{"customer_id": "{cid}"}}'.encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 200, form.text
    assert client.get("/v1/clv/predict").status_code == 405
    bad = client.post(
        "/v1/segments/predict",
        json={"instances": [{"customer_id": cid}, {"features": {"recency_days": "x"}}]},
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "instances", 1, "features", "recency_days"]


def test_auth_header_forms(client_factory: Any, served_home: Path) -> None:
    client = client_factory(api_keys=["k-1"])
    body = {"customer_id": a_customer(served_home)}
    for header in ("Basic k-1", "Bearer", "Bearer ", "k-1", "bearer k-2"):
        r = client.post("/v1/clv/predict", json=body, headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.headers["www-authenticate"] == "Bearer"
    for header in ("Bearer k-1", "bearer k-1", "Bearer  k-1 "):
        r = client.post("/v1/clv/predict", json=body, headers={"Authorization": header})
        assert r.status_code == 200, (header, r.text)
    assert client.post("/v1/recommender/recommend", json={"customer_id": "x"}).status_code == 401
    assert client.post("/v1/pricing/suggest", json={"product_id": "x"}).status_code == 401
