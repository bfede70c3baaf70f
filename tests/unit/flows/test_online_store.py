from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopml.online import SQLiteOnlineStore, open_store
from shopml.online.store import OnlineStoreError
from shopml.settings import get_settings

AS_OF = datetime(2024, 12, 31)


def frame(n: int, value: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "orders": np.arange(n, dtype="int64"),
            "spend": [value] * n,
            "last_order": pd.Timestamp("2024-12-01"),
            "missing": np.nan,
        }
    )


def test_round_trip_get_and_get_many(tmp_path: Path) -> None:
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    assert store.write("customers", frame(3, 1.5), "customer_id", AS_OF) == 3
    got = store.get("customers", "c1")
    assert got is not None
    features, as_of = got
    assert features == {
        "orders": 1,
        "spend": 1.5,
        "last_order": "2024-12-01T00:00:00",
        "missing": None,
    }
    assert as_of == AS_OF
    assert store.get("customers", "nobody") is None
    assert store.get("products", "c1") is None  # entity never written
    many = store.get_many("customers", ["c0", "c2", "nobody"])
    assert set(many) == {"c0", "c2"}
    assert many["c2"]["orders"] == 2
    big = store.get_many("customers", [f"c{i}" for i in range(2000)])  # over SQLite's limit
    assert len(big) == 3
    store.close()


def test_a_new_write_replaces_the_old_version_whole(tmp_path: Path) -> None:
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    store.write("customers", frame(5, 1.0), "customer_id", AS_OF)
    store.write("customers", frame(2, 2.0), "customer_id", datetime(2025, 1, 1))
    assert store.get("customers", "c4") is None  # not in the new version
    got = store.get("customers", "c1")
    assert got is not None and got[0]["spend"] == 2.0 and got[1] == datetime(2025, 1, 1)
    tables = store._con.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE 'fs_customers_%'"
    ).fetchall()
    assert len(tables) == 1  # the old version's table is gone
    assert store.entities()["customers"]["rows"] == 2


def test_a_failed_write_leaves_the_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    store.write("customers", frame(3, 1.0), "customer_id", AS_OF)
    bad = frame(3, 9.0)
    bad["spend"] = [object(), object(), object()]  # not JSON-able: fails while staging
    with pytest.raises(TypeError):
        store.write("customers", bad, "customer_id", AS_OF)
    got = store.get("customers", "c0")
    assert got is not None and got[0]["spend"] == 1.0
    leftovers = store._con.execute(
        "SELECT count(*) FROM sqlite_master WHERE name LIKE 'fs_customers_%'"
    ).fetchone()
    assert leftovers == (1,)
    with pytest.raises(OnlineStoreError, match="not unique"):
        store.write("customers", pd.concat([frame(2, 1.0)] * 2), "customer_id", AS_OF)
    with pytest.raises(OnlineStoreError, match="no key column"):
        store.write("customers", frame(2, 1.0), "product_id", AS_OF)


def test_readers_see_the_old_or_the_new_version_never_a_mix(tmp_path: Path) -> None:
    path = tmp_path / "online.sqlite"
    writer = SQLiteOnlineStore(path)
    writer.write("customers", frame(300, 1.0), "customer_id", AS_OF)
    reader = SQLiteOnlineStore(path)
    seen: list[frozenset[float]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                batch = reader.get_many("customers", [f"c{i}" for i in range(300)])
                assert len(batch) == 300
                seen.append(frozenset(f["spend"] for f in batch.values()))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    for i in range(2, 8):
        writer.write("customers", frame(300, float(i)), "customer_id", AS_OF)
    done.set()
    thread.join()
    assert not errors
    assert seen
    assert all(len(values) == 1 for values in seen)  # one version per read


def test_open_store_follows_the_settings(
    shopml_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = open_store(get_settings())
    assert isinstance(store, SQLiteOnlineStore)
    assert store.path == shopml_home / "online.sqlite"
    from shopml.settings import Settings

    other = open_store(Settings(online_store_uri=f"sqlite:///{tmp_path}/x.sqlite"))
    assert isinstance(other, SQLiteOnlineStore) and other.path == tmp_path / "x.sqlite"
    with pytest.raises(OnlineStoreError, match="not supported"):
        open_store(Settings(online_store_uri="mongodb://127.0.0.1/x"))
