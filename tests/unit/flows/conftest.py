"""Fixtures for the flow tests: a tiny simulated shop, and toy use cases that train in a second
(the real ones are tested in tests/unit/usecases; here the orchestration is under test)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shopml.data.dataset import Dataset
from shopml.data.warehouse import Warehouse
from shopml.settings import get_settings
from tests.support.toy import ToyUseCase


class BrokenToy(ToyUseCase):
    """Fails in fit, as a use case with a bug would."""

    name = "toy-broken"

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom: this use case is broken on purpose")


class CountingToy(ToyUseCase):
    """Counts its fits, so a test can tell whether training really ran."""

    name = "toy"
    fits = 0

    def fit(
        self, wh: Warehouse, train: Any, valid: Any, params: Mapping[str, Any], seed: int = 0
    ) -> Any:
        type(self).fits += 1
        return super().fit(wh, train, valid, params, seed)


@pytest.fixture(scope="session")
def tiny_shop() -> Dataset:
    from shopml.data.simulator import SimConfig, simulate

    return simulate(SimConfig(customers=150, days=400, seed=7))


@pytest.fixture
def loaded(tiny_shop: Dataset, shopml_home: Path) -> Path:
    """The tiny shop loaded into this test's warehouse."""
    with Warehouse.open(get_settings()) as wh:
        tiny_shop.load(wh)
    return shopml_home


@pytest.fixture
def toy_usecases(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace the registered use cases with a working and a broken toy."""
    import shopml.usecases

    CountingToy.fits = 0
    usecases = {"toy": CountingToy(), "toy-broken": BrokenToy()}
    monkeypatch.setattr(shopml.usecases, "get_usecases", lambda: usecases)
    return usecases
