"""The engines benchmark's shop files and its table (no engine is run here)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from benchmarks import bench_engines, bench_features


def test_a_shop_built_in_blocks_is_appended_block_by_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_features, "WORK", tmp_path)
    path = bench_features.sim_warehouse(2500, block_customers=1000)
    assert path == bench_features.sim_path(2500, 1000) and "-b1000-" in path.name
    assert bench_features.sim_path(2500, 5000) == bench_features.sim_path(2500)  # one block
    con = duckdb.connect(str(path), read_only=True)
    n, distinct, customers = con.sql(
        "SELECT count(*), count(DISTINCT order_id), count(DISTINCT customer_id) FROM orders"
    ).fetchone()
    assert n == distinct > 2500
    assert con.sql("SELECT count(*) FROM customers").fetchone() == (2500,)
    assert customers <= 2500
    # Every line's order, every event's session and every order's customer is there once.
    assert con.sql(
        "SELECT count(*) FROM order_items i ANTI JOIN orders o USING (order_id)"
    ).fetchone() == (0,)
    assert con.sql(
        "SELECT count(*) FROM orders o ANTI JOIN customers c USING (customer_id)"
    ).fetchone() == (0,)
    assert con.sql("SELECT count(*) FROM oracle_products").fetchone() == (250,)
    con.close()


def test_the_table_says_what_was_simulated_and_with_which_spark_settings() -> None:
    step = {"seconds": 1.0, "peak_mb": 100, "load_before": 1.0, "load_after": 2.0}
    fig = {
        "prepare": {"orders": 1000, "customers": 200, "publish_s": 3.0},
        "features": {"duckdb": {**step, "driver_mb_per_million": 300}, "spark": step},
        "score": {"duckdb": step, "spark": step},
    }
    old = bench_engines.markdown({"1M": fig})
    assert "| not recorded |" in old and "SHOPML_SPARK_CONF" not in old
    new = bench_engines.markdown(
        {
            "1M": {
                **fig,
                "simulate": {"seconds": 400.4, "cpu_s": 150.2, "peak_mb": 1855,
                             "block_customers": 50_000},
                "spark_conf": {"spark.driver.memory": "4g"},
            }
        }
    )  # fmt: skip
    assert "| 400 s (150 s CPU) / 1,855 MB |" in new
    assert "blocks of 50,000 customers" in new and '"spark.driver.memory": "4g"' in new
    cached = bench_engines.markdown({"1M": {**fig, "simulate": {"cached": True}}})
    assert "| cached |" in cached
