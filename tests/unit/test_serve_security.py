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
