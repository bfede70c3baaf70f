"""The Olist delivery-time benchmark on the shared sample: counts that bound what it shows,
every answer with an interval, and paired differences for the model."""

from __future__ import annotations

import pytest
from benchmarks import real_olist

from tests.conftest import shared_data_dir

pytestmark = pytest.mark.realdata


def test_olist_delivery_time_benchmark() -> None:
    folder = shared_data_dir() / "olist"
    if not folder.is_dir():
        pytest.skip(f"real sample {folder} is absent")
    result = real_olist.evaluate(folder, draws=60)
    c = result["counts"]
    assert (c["orders_in_files"], c["orders_kept"]) == (4071, 418)  # orphans quarantined
    assert c["delivered_kept"] == 410
    assert c["train"] + c["valid"] + c["test"] <= c["delivered_kept"]
    answers = {r["answer"] for r in result["rows"]}
    assert answers == {"model", "promise", "constant"}
    for row in result["rows"]:
        assert row["n"] == c["test"] and row["low"] <= row["estimate"] <= row["high"]
        if row["answer"] == "model":
            assert {"vs_promise", "vs_constant"} <= set(row)
    text = real_olist.markdown(result)
    assert f"**{c['test']} orders**" in text and "Olist's promise" in text
