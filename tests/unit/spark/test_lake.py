"""The lake the Spark engine reads: the warehouse's canonical tables as Parquet, one folder per
data version, the current ones named by a manifest replaced in one step. No Spark here."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from shopml.data.lake import MANIFEST, Lake, LakeError
from shopml.data.spark import EngineError, check_java
from shopml.data.warehouse import Warehouse
from tests.unit.features.shop import load_warehouse, make_tables


@pytest.fixture(scope="module")
def tables() -> dict:
    return make_tables(customers=40, days=120)


def test_sync_publishes_each_version_once_and_drops_what_the_warehouse_lost(
    tmp_path: Path, tables: dict
) -> None:
    wh = load_warehouse(tmp_path / "wh.duckdb", tables)
    lake = Lake(str(tmp_path / "lake"))
    written = lake.sync(wh)
    versions = wh.versions()
    assert sorted(written) == sorted(versions)
    manifest = lake.manifest()
    for name, t in manifest.items():
        assert t.version == versions[name] and t.path == f"{name}/{t.version}"
        files = sorted((tmp_path / "lake" / t.path).glob("*.parquet"))
        assert files, name
        read = pq.read_table(files[0].parent)
        # The contract's columns only (not the warehouse's id keys), every row.
        assert read.column_names == list(tables[name].columns)
        assert read.num_rows == len(tables[name]) == t.rows
    assert lake.sync(wh) == []  # nothing changed, nothing written

    # A new version of one table: a new folder, the old one removed after the manifest moved.
    old = manifest["customers"]
    wh.write_tables({"customers": tables["customers"].head(30)}, source="test", mode="upsert")
    fewer = tables["customers"].iloc[:35]
    wh.write_tables(
        {**{k: v for k, v in tables.items() if k != "customers"}, "customers": fewer},
        source="test",
        mode="dataset",
    )
    assert "customers" in lake.sync(wh)
    new = lake.manifest()["customers"]
    assert new.version != old.version and new.rows == 35
    assert not (tmp_path / "lake" / old.path).exists()

    # A dataset without a table: the lake drops it too.
    wh.write_tables(
        {k: v for k, v in tables.items() if k != "web_events"}, source="test", mode="dataset"
    )
    lake.sync(wh)
    assert "web_events" not in lake.manifest()
    assert not (tmp_path / "lake" / "web_events" / manifest["web_events"].version).exists()
    wh.close()


def test_a_damaged_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / MANIFEST).write_text("{not json")
    with pytest.raises(LakeError, match=MANIFEST):
        Lake(str(tmp_path / "lake")).manifest()
    assert Lake(str(tmp_path / "empty")).manifest() == {}


def test_the_spark_engine_says_what_to_install_without_java(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(EngineError, match="openjdk-17") as err:
        check_java()
    assert "JAVA_HOME" in str(err.value)
    fake = tmp_path / "old-jdk" / "bin"
    fake.mkdir(parents=True)
    (fake / "java").write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    (fake / "java").chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(fake.parent))
    with pytest.raises(EngineError, match="is 11"):
        check_java()


def test_versions_are_the_same_for_the_same_content_however_written(
    tmp_path: Path, tables: dict
) -> None:
    a = load_warehouse(tmp_path / "a.duckdb", tables)
    shuffled = {k: v.sample(frac=1.0, random_state=1) for k, v in tables.items()}
    b = load_warehouse(tmp_path / "b.duckdb", shuffled)
    assert a.versions() == b.versions()
    b.write_tables({"customers": tables["customers"].head(3)}, source="test", mode="upsert")
    assert b.versions()["customers"] == a.versions()["customers"]  # same rows again
    a.close()
    b.close()
    assert json.dumps(Warehouse(tmp_path / "a.duckdb", read_only=True).versions())


def test_without_java_the_engine_flag_fails_in_one_line(tmp_path: Path, tables: dict) -> None:
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    load_warehouse(home / "warehouse.duckdb", tables).close()
    env = {**os.environ, "SHOPML_HOME": str(home), "JAVA_HOME": str(tmp_path / "no-jdk")}
    env.pop("SHOPML_ENGINE", None)
    out = subprocess.run(
        [sys.executable, "-m", "shopml.cli", "features", "customers", "--engine", "spark"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs Java 17" in lines[0] and "Traceback" not in out.stderr
    assert not (home / "lake").exists()  # nothing published for an engine that cannot start


def test_session_settings_keep_utc_and_size_shuffles_to_the_master() -> None:
    from shopml.data.spark import session_conf
    from shopml.settings import Settings

    local = session_conf(Settings(spark_conf={"spark.sql.session.timeZone": "Europe/Paris"}))
    assert local["spark.sql.session.timeZone"] == "UTC"  # the warehouse's timestamps are UTC
    assert local["spark.sql.shuffle.partitions"] == "8"
    cluster = session_conf(Settings(spark_master="yarn", spark_conf={"spark.executor.cores": "4"}))
    assert "spark.sql.shuffle.partitions" not in cluster  # the cluster's own default
    assert cluster["spark.executor.cores"] == "4"
