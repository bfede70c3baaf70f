"""Secure by default: with no API key the service refuses to start, saying exactly what to set,
unless the caller opted into open mode (``--insecure-dev`` or SHOPML_ENV=development set
explicitly), and open mode binds to loopback only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shopml import cli
from shopml.serving import ServingConfigError, create_app
from shopml.settings import Settings, reset_settings


@pytest.fixture
def no_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's plain environment: SHOPML_ENV unset (its default is development)."""
    monkeypatch.delenv("SHOPML_ENV", raising=False)
    monkeypatch.delenv("SHOPML_INSECURE_DEV", raising=False)
    reset_settings()


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``uvicorn.run`` recorded instead of serving."""
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    return calls


def shopml(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["shopml", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_default_settings_do_not_serve_open(no_opt_in: None, shopml_home: Path) -> None:
    settings = Settings()
    assert settings.env == "development" and not settings.open_mode_allowed
    with pytest.raises(ServingConfigError) as refused:
        create_app(settings)
    message = str(refused.value)
    for what in ("SHOPML_API_KEYS", "--insecure-dev", "SHOPML_ENV=development", "127.0.0.1"):
        assert what in message
    # Each explicit opt-in, or a key, is enough; production never runs open.
    create_app(Settings(insecure_dev=True))
    create_app(Settings(env="development"))
    create_app(Settings(api_keys=["k-1"]))
    create_app(Settings(admin_keys=["k-admin"]))
    with pytest.raises(ServingConfigError, match="SHOPML_ENV=production"):
        create_app(Settings(env="production", insecure_dev=True))
    with pytest.raises(ServingConfigError, match="SHOPML_API_KEYS"):
        create_app(Settings(env="production", admin_keys=["k-admin"]))
    # Driven in-process only (a replay's test client): no socket, no key needed.
    create_app(Settings(), in_process=True)


def test_the_environment_opt_in_counts(
    no_opt_in: None, monkeypatch: pytest.MonkeyPatch, shopml_home: Path
) -> None:
    monkeypatch.setenv("SHOPML_ENV", "development")
    assert Settings().open_mode_allowed
    monkeypatch.delenv("SHOPML_ENV")
    monkeypatch.setenv("SHOPML_INSECURE_DEV", "1")
    assert Settings().open_mode_allowed


def test_shopml_serve_refuses_without_a_key(
    no_opt_in: None,
    uvicorn_calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = shopml(["serve", "--host", "0.0.0.0"], capsys, monkeypatch)
    assert code == 2 and err.startswith("error: no API key configured"), err
    assert "SHOPML_API_KEYS" in err and "--insecure-dev" in err and "Traceback" not in err
    assert uvicorn_calls == []


def test_open_mode_binds_to_loopback_only(
    no_opt_in: None,
    uvicorn_calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    for host in ("0.0.0.0", "::", "192.0.2.10"):
        code, _, err = shopml(["serve", "--insecure-dev", "--host", host], capsys, monkeypatch)
        assert code == 2, err
        assert f"--host {host}" in err and "loopback" in err and "SHOPML_API_KEYS" in err
    assert uvicorn_calls == []
    for host in ("127.0.0.1", "localhost", "::1"):
        code, _, err = shopml(["serve", "--insecure-dev", "--host", host], capsys, monkeypatch)
        assert code == 0, err
    assert [c["host"] for c in uvicorn_calls] == ["127.0.0.1", "localhost", "::1"]
    # The workers (fresh processes) read the opt-in from the environment.
    assert os.environ["SHOPML_INSECURE_DEV"] == "1"


def test_with_a_key_any_interface(
    no_opt_in: None,
    uvicorn_calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOPML_API_KEYS", "k-7f3a")
    code, _, err = shopml(["serve", "--host", "0.0.0.0"], capsys, monkeypatch)
    assert code == 0, err
    assert uvicorn_calls[0]["host"] == "0.0.0.0"


# -- hostile bodies: a 4xx whatever arrives, never a 500; errors never echo the input back -------
KEY = "k-hostile-5e1d"
CAP = 64 * 1024
SCORING = [
    "/v1/returns/predict",
    "/v1/delivery-time/predict",
    "/v1/clv/predict",
    "/v1/high-value/predict",
    "/v1/campaign/predict",
    "/v1/segments/predict",
    "/v1/recommender/recommend",
    "/v1/pricing/suggest",
]


class NoModels:
    """A registry that holds no champion: requests are validated, then answered 503."""

    def alias_version(self, usecase: str, alias: str) -> None:
        return None

    def load(self, usecase: str, version: str) -> Any:
        raise AssertionError("nothing to load")


@pytest.fixture
def hostile(shopml_home: Path) -> Any:
    """Every use case's route on a service with no model and a 64 KiB body cap."""
    from fastapi.testclient import TestClient

    settings = Settings(api_keys=[KEY], admin_keys=[KEY + "-admin"], serve_max_body_bytes=CAP)
    app = create_app(settings, source_factory=NoModels)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client


def post(client: Any, path: str, raw: bytes | str, **headers: str) -> Any:
    body = raw.encode() if isinstance(raw, str) else raw
    return client.post(path, content=body, headers={"content-type": "application/json", **headers})


def test_any_body_is_a_4xx_never_a_500(hostile: Any) -> None:
    big = str(2**64)
    bodies = [
        f'{{"customer_id": {big}}}',  # an integer orjson cannot write (the echo was a 500)
        f'{{"product_id": "P1", "current_price": {big}}}',
        f'{{"customer_id": "C1", "k": {"9" * 400}}}',
        f'{{"features": {{"recency_days": {big}0}}}}',
        f'{{"instances": [{{"customer_id": {big}}}]}}',
        '{"features": {"recency_days": NaN}}',
        '{"features": {"recency_days": Infinity}}',
        '{"product_id": "P1", "current_price": -Infinity}',
        '{"customer_id": "C1", "k": NaN}',
        "[" * 50_000 + "]" * 50_000,  # deep nesting
        '{"a":' * 5_000 + "1" + "}" * 5_000,
        b'{"customer_id": "\xff\xfe"}',  # invalid UTF-8
        b"\x00\x01\x02",
        "",
        "null",
        "[]",
        '"text"',
        "{not json",
        '{"instances": [' + ",".join(['{"customer_id": 1}'] * 5_000) + "]}",  # huge array
        '{"customer_id": "C1", "exclude": [' + ",".join(['"P1"'] * 5_000) + "]}",
        '{"features": {' + ",".join(f'"f{i}": "x"' for i in range(2_500)) + "}}",
        '{"customer_id": "C1", "customer_id": 2}',
    ]
    for path in SCORING:
        for raw in bodies:
            r = post(hostile, path, raw)
            # A valid request gets as far as the model, which this service lacks (503).
            valid = r.status_code == 503 and "model is being served" in r.text
            assert 400 <= r.status_code < 500 or valid, (path, str(raw)[:80], r.text[:300])
            detail = r.json()["detail"]  # always FastAPI's shape, always JSON
            if r.status_code == 422:
                assert isinstance(detail, list) and len(detail) <= 21, (path, str(raw)[:80])
                for item in detail:
                    assert {"loc", "msg", "type"} <= set(item) and item["loc"][0] == "body"
            assert len(r.content) < 8_000, (path, str(raw)[:80], len(r.content))
    # Wrong content types: the body is read as JSON whatever the header says (curl -d).
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = hostile.post("/v1/clv/predict", content=b"a=1&b=2", headers={"content-type": ctype})
        assert r.status_code == 422, (ctype, r.text)


def test_errors_show_a_short_excerpt_of_the_input(hostile: Any) -> None:
    huge = "x" * 60_000
    r = post(hostile, "/v1/clv/predict", f'{{"customer_id": "{huge}"}}')
    assert r.status_code == 422 and len(r.content) < 1_000, len(r.content)
    shown = r.json()["detail"][0]["input"]
    assert shown.startswith("xxx") and len(shown) <= 80
    # Many bad fields: the first 20, then how many more.
    r = post(
        hostile,
        "/v1/clv/predict",
        '{"features": {' + ",".join(f'"f{i}": "x"' for i in range(500)) + "}}",
    )
    detail = r.json()["detail"]
    assert len(detail) == 21 and detail[-1]["msg"] == "and 480 more errors"
    # An integer beyond 64 bits is shown as its digits.
    r = post(hostile, "/v1/clv/predict", f'{{"customer_id": {2**70}}}')
    assert r.status_code == 422 and r.json()["detail"][0]["input"] == str(2**70)


def test_the_body_cap_holds_while_the_body_streams_in(hostile: Any) -> None:
    ok = '{"customer_id": "C1", "pad": "' + "x" * (CAP - 100) + '"}'
    assert post(hostile, "/v1/clv/predict", ok).status_code == 422  # under the cap: read
    over = "x" * (CAP + 1)
    r = post(hostile, "/v1/clv/predict", over)  # a declared length over the cap
    assert r.status_code == 413 and str(CAP) in r.json()["detail"], r.text
    assert "xxx" not in r.text

    def chunks() -> Any:  # no length: chunked transfer
        for _ in range(20):
            yield b"x" * 8192

    r = hostile.post("/v1/clv/predict", content=chunks())
    assert r.status_code == 413, r.text
    # The routes FastAPI answers itself are capped too.
    r = hostile.post(
        "/v1/admin/reload", content=over, headers={"Authorization": f"Bearer {KEY}-admin"}
    )
    assert r.status_code == 413, r.text


def test_the_schema_says_what_the_service_takes(hostile: Any) -> None:
    spec = hostile.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    # An instance names an id or gives features: the schema says so (anyOf), and a body that
    # does neither is refused by validation.
    instance = schemas["ClvInstance"]
    assert {"customer_id", "features"} == {a["required"][0] for a in instance["anyOf"]}, instance
    for body in ('{"instances": [{}]}', "{}", '{"customer_id": null, "features": null}'):
        r = post(hostile, "/v1/clv/predict", body)
        assert r.status_code == 422 and "name the instance" in r.text, (body, r.text)
    assert post(hostile, "/v1/clv/predict", '{"instances": [{"features": {}}]}').status_code == 503
    # Booleans and integers are JSON's own: no 0 for false, no "5" for 5 (5.0 is an integer).
    for body in (
        '{"customer_id": "C1", "exclude_seen": 0}',
        '{"customer_id": "C1", "k": "5"}',
        '{"customer_id": "C1", "k": true}',
        '{"customer_id": "C1", "k": 2.5}',
        '{"features": {"recency_days": "3"}}',
    ):
        path = "/v1/clv/predict" if "features" in body else "/v1/recommender/recommend"
        assert post(hostile, path, body).status_code == 422, body
    r = post(hostile, "/v1/recommender/recommend", '{"customer_id": "C1", "k": 5.0}')
    assert r.status_code == 503, r.text  # valid; no model to answer it
    # Prices are at least a cent (below it the suggestion rounded to 0); min > max is taken.
    for price in ("0.001", "5e-324", "0"):
        r = post(
            hostile, "/v1/pricing/suggest", f'{{"product_id": "P1", "current_price": {price}}}'
        )
        assert r.status_code == 422, (price, r.text)
    assert (
        schemas["PricingSuggestRequest"]["properties"]["current_price"]["anyOf"][0]["minimum"]
        == 0.01
    )
    r = post(
        hostile,
        "/v1/pricing/suggest",
        '{"product_id": "P1", "guardrails": {"min_price": 30, "max_price": 20}}',
    )
    assert r.status_code == 503, r.text
    # Every status the service or its HTTP layer answers is documented.
    paths = spec["paths"]
    for path in SCORING:
        documented = set(paths[path]["post"]["responses"])
        assert {"200", "401", "413", "422", "431", "503"} <= documented, (path, documented)
    assert {"401", "403", "413", "431"} <= set(paths["/v1/admin/reload"]["post"]["responses"])
    assert {"401", "431"} <= set(paths["/v1/models"]["get"]["responses"])
    assert "503" in paths["/ready"]["get"]["responses"]


def test_shopml_serve_takes_a_body_cap(
    uvicorn_calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from shopml.settings import get_settings

    # Set here so that the test's end removes what `shopml serve` puts in the environment.
    monkeypatch.setenv("SHOPML_SERVE_MAX_BODY_BYTES", "1m")
    code, _, err = shopml(["serve", "--insecure-dev", "--max-body", "256k"], capsys, monkeypatch)
    assert code == 0, err
    # The workers (fresh processes) read it from the environment.
    assert os.environ["SHOPML_SERVE_MAX_BODY_BYTES"] == "256k"
    assert get_settings().serve_max_body_bytes == 256 * 1024
    code, _, err = shopml(["serve", "--insecure-dev", "--max-body", "lots"], capsys, monkeypatch)
    assert code == 2 and "serve_max_body_bytes" in err and "'lots' is not a size" in err, err
    monkeypatch.setenv("SHOPML_SERVE_MAX_BODY_BYTES", "1m")
    reset_settings()


def test_a_body_is_refused_as_soon_as_it_passes_the_cap() -> None:
    import asyncio

    from shopml.serving.app import BodyTooLarge, _read_body

    received: list[int] = []

    async def receive() -> dict[str, Any]:  # 8 MB in 8 KiB chunks, as a server hands it over
        received.append(1)
        return {"type": "http.request", "body": b"x" * 8192, "more_body": len(received) < 1000}

    with pytest.raises(BodyTooLarge):
        asyncio.run(_read_body(receive, CAP))
    assert len(received) == CAP // 8192 + 1  # never more than the cap and one chunk held
    received.clear()
    assert len(asyncio.run(_read_body(receive, 10 * 1024 * 1024))) == 1000 * 8192
