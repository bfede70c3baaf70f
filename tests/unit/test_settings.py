from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shopml.settings import Settings, SettingsError, get_settings, reset_settings


def test_everything_lives_under_home(shopml_home: Path) -> None:
    s = get_settings()
    assert s.home == shopml_home
    assert s.warehouse == shopml_home / "warehouse.duckdb"
    assert s.landing == shopml_home / "landing"
    assert s.tracking_uri.startswith("sqlite:///") and str(shopml_home) in s.tracking_uri
    assert not shopml_home.exists(), "reading settings must not create anything"


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "shopml.toml"
    cfg.write_text('seed = 7\nwarehouse_path = "/tmp/from-toml.duckdb"\n')
    monkeypatch.setenv("SHOPML_CONFIG", str(cfg))
    monkeypatch.setenv("SHOPML_SEED", "11")
    reset_settings()
    s = get_settings()
    assert s.seed == 11  # environment beats the file
    assert s.warehouse == Path("/tmp/from-toml.duckdb")


def test_api_keys_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPML_API_KEYS", "k1, k2")
    s = Settings()
    assert [k.get_secret_value() for k in s.api_keys] == ["k1", "k2"]
    assert "k1" not in repr(s)


def test_placeholder_secret_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPML_ENV", "production")
    monkeypatch.setenv("SHOPML_API_KEYS", "changeme")
    reset_settings()
    with pytest.raises(SettingsError, match="placeholder"):
        get_settings()
    monkeypatch.setenv("SHOPML_ENV", "development")
    reset_settings()
    assert len(get_settings().api_keys) == 1  # fine for local work


def test_bad_value_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPML_SEED", "many")
    reset_settings()
    with pytest.raises(SettingsError, match="seed: Input should be a valid integer"):
        get_settings()


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import sys, shopml, shopml.settings, shopml.cli, shopml.data.warehouse;"
        "heavy = [m for m in ('mlflow', 'prefect', 'evidently', 'lightgbm') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == [], "importing shopml must not write files"
