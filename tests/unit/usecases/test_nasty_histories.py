"""Every baseline and every model of the customer and order-line use cases, on histories with
what real shops' data contains: each answers with finite predictions, or refuses with a reason
(:class:`BaselineUnavailable`, :class:`NotEnoughData`, or the use case's skip reason), never a
crash."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from tests.unit.usecases.nasty import HISTORIES, START

from shopml.data.warehouse import Warehouse
from shopml.usecases import get_usecase
from shopml.usecases.base import BaselineUnavailable, NotEnoughData, UseCase

USECASES = ("clv", "high-value", "returns", "recommender", "segments")
CUTOFF = START + timedelta(days=300)
# Small models: the point is that fitting runs, not what it learns.
SMALL = {"num_boost_round": 20, "iterations": 3, "factors": 4}


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Warehouse]]:
    folder: Path = tmp_path_factory.mktemp("nasty")
    opened: dict[str, Warehouse] = {}
    for i, (name, make) in enumerate(HISTORIES.items()):
        wh = Warehouse(folder / f"h{i}.duckdb")
        report = wh.write_tables(make(np.random.default_rng(i)), source="test", mode="dataset")
        assert report.rows_quarantined == 0, name
        opened[name] = wh
    yield opened
    for wh in opened.values():
        wh.close()


def _answers(uc: UseCase, scorer: object, data: object) -> None:
    """The scorer's answers on the rows are defined: finite numbers, or ranked lists."""
    predictions = uc.predict(scorer, data)  # type: ignore[arg-type]
    assert len(predictions) == len(data)  # type: ignore[arg-type]
    numeric = predictions.values.select_dtypes("number")
    assert np.isfinite(numeric.to_numpy(dtype="float64")).all()
    uc.score(data, predictions)  # type: ignore[arg-type]


@pytest.mark.parametrize("history", list(HISTORIES))
@pytest.mark.parametrize("usecase", USECASES)
def test_baselines_and_models_answer_or_say_why_not(
    warehouses: dict[str, Warehouse], history: str, usecase: str
) -> None:
    wh = warehouses[history]
    uc = get_usecase(usecase)
    if (reason := uc.skip_reason(wh)) is not None:
        assert reason  # skipped, with the reason the pipeline reports
        return
    try:
        data = uc.dataset(wh, CUTOFF)
    except NotEnoughData as exc:
        assert str(exc)  # a definition the history cannot give (high-value's threshold)
        return
    if not len(data):
        return  # no rows at this cutoff: the split reports NotEnoughData
    try:
        baselines = dict(uc.baselines(wh, data, CUTOFF))
    except BaselineUnavailable as exc:
        baselines = {"baseline": exc}
    for name, baseline in baselines.items():
        if isinstance(baseline, BaselineUnavailable):
            assert str(baseline), name
            continue
        _answers(uc, baseline, data)
    params = {**uc.default_params(), **{k: v for k, v in SMALL.items() if k in uc.default_params()}}
    try:
        scorer = uc.fit(wh, data, data, params)
    except NotEnoughData as exc:
        assert str(exc)  # the reason the pipeline reports
        return
    _answers(uc, scorer, data)
