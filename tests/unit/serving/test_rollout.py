"""Rollout modes: sticky assignment, shadow answers never returned, arms and versions logged,
a batch split between two versions, modes recorded in the registry and followed by every
worker, and a prediction log made before arms existed brought up to date."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shopml.runtime import rollout as modes
from shopml.runtime.scorers import ConstantScorer, Scorer
from shopml.serving.models import MlflowSource, VersionInfo
from tests.unit.serving.conftest import a_customer, registry_client, serving_settings

SCORE_KEY, ADMIN_KEY = "score-key-1b2c3d", "admin-key-9e8f7a"


# -- assignment -------------------------------------------------------------------------------
def test_assignment_is_sticky_independent_and_keeps_its_entities_when_the_share_grows() -> None:
    ids = [f"C{i:07d}" for i in range(20_000)]
    canary = modes.make("canary", 0.1)
    first = [modes.challenger_answers(canary, "clv", i) for i in ids]
    # The same answer every time, in any process (a hash, not a draw per request).
    assert first == [modes.challenger_answers(canary, "clv", i) for i in ids]
    assert modes.bucket("clv", "C0000001") == modes.bucket("clv", "C0000001")
    assert 0.09 < np.mean(first) < 0.11
    # Ramping the canary up keeps everyone who already had the challenger.
    half = [modes.challenger_answers(modes.make("ab"), "clv", i) for i in ids]
    assert all(h for f, h in zip(first, half, strict=True) if f) and 0.48 < np.mean(half) < 0.52
    # Another use case splits the same customers independently.
    other = [modes.challenger_answers(canary, "high-value", i) for i in ids]
    assert abs(np.mean(np.array(first) & np.array(other)) - 0.01) < 0.005
    # No id, nothing to stick to: the champion answers; shadow and off route nobody.
    assert not modes.challenger_answers(canary, "clv", None)
    assert not any(modes.challenger_answers(modes.make(m), "clv", "C1") for m in ("off", "shadow"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("blue", "rollout mode 'blue' is not one of off, shadow, canary, ab"),
        ("canary:1.5", "between 0 and 1"),
        ("ab:0", "between 0 and 1"),
        ("canary:ten", "share 'ten'"),
        ("shadow:0.2", "--share applies to canary and ab, not shadow"),
    ],
)
def test_bad_modes_are_refused_naming_the_value(text: str, message: str) -> None:
    with pytest.raises(modes.RolloutError, match=message.replace("(", r"\(")):
        modes.parse(text)


def test_configured_modes_are_checked_and_the_registry_wins() -> None:
    from shopml.settings import Settings

    with pytest.raises(ValueError, match=r"SHOPML_ROLLOUT\['clv'\].*not one of"):
        Settings(rollout={"clv": "sideways"})
    recorded = modes.from_tag(modes.make("ab", 0.3, reason="test").to_tag())
    assert recorded is not None and recorded.share == 0.3 and recorded.source == "registry"
    assert modes.effective(recorded, "shadow") == recorded
    assert modes.effective(None, "canary").describe() == "canary 10%"
    assert modes.effective(None, None).mode == "off"
    assert modes.from_tag("{not json") is None  # unreadable: as if none were recorded


# -- the prediction log's arm column ----------------------------------------------------------
def test_a_log_made_before_arms_gains_the_column_and_its_rows_are_the_champions(
    tmp_path: Path,
) -> None:
    from datetime import datetime

    from shopml.monitoring.store import MonitoringStore
    from shopml.runtime.predictions import PredictionRecord

    db = tmp_path / "monitoring.sqlite"
    old = sqlite3.connect(db)
    old.execute(
        "CREATE TABLE prediction_log (request_id TEXT, ts TEXT, usecase TEXT, "
        "model_version TEXT, entity_key TEXT, entity_id TEXT, features TEXT, output TEXT)"
    )
    old.execute(
        "INSERT INTO prediction_log VALUES ('r0', '2025-01-02T00:00:00.000000+00:00', 'clv', "
        "'1', 'customer_id', 'C1', NULL, '{\"predicted_spend_90d\": 3.0}')"
    )
    old.commit()
    old.close()
    with MonitoringStore(f"sqlite:///{db}", tmp_path) as store:
        ts = datetime(2025, 1, 2, 12).timestamp()
        store.log_predictions(
            [
                PredictionRecord("r1", ts, "clv", "2", "customer_id", "C1", {"p": 1.0}, arm=arm)
                for arm in ("challenger", "shadow")
            ]
        )
        start, end = datetime(2025, 1, 1), datetime(2025, 1, 3)
        served = store.predictions("clv", start, end)
        everything = store.predictions("clv", start, end, arms=None)
        assert store.count_predictions("clv", start, end) == 2
    assert served.frame["arm"].tolist() == ["champion", "challenger"]
    assert sorted(everything.frame["arm"]) == ["challenger", "champion", "shadow"]


# -- the service ------------------------------------------------------------------------------
@dataclass
class Broken(Scorer):
    """A challenger that fails on every answer."""

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("the challenger is broken")


@dataclass
class Slow(Scorer):
    """A challenger that, once ``armed`` (after the service's warm-up call), holds every
    answer until the test releases it (at most :data:`HOLD` seconds): ``entered`` says an
    answer started, ``finished`` that one returned."""

    def __post_init__(self) -> None:
        self.armed, self.entered, self.release, self.finished = (
            threading.Event() for _ in range(4)
        )

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        if not self.armed.is_set():
            return np.full((len(x), len(self.outputs)), 123.0)
        self.entered.set()
        self.release.wait(HOLD)
        self.finished.set()
        return np.full((len(x), len(self.outputs)), 123.0)


HOLD = 20.0  # a slow challenger's longest hold: a service that waited for it answers late


class TwoVersions:
    """The real champion (v1) and a stand-in challenger (v2) for every served use case."""

    def __init__(self, home: Path, challenger: str | Slow = "constant") -> None:
        self.inner = MlflowSource(serving_settings(home))
        self.kind = challenger

    def alias_version(self, usecase: str, alias: str) -> VersionInfo | None:
        champion = self.inner.alias_version(usecase, "champion")
        assert champion is not None
        return champion if alias == "champion" else VersionInfo(str(int(champion.version) + 1))

    def load(self, usecase: str, version: str) -> Any:
        champion = self.inner.alias_version(usecase, "champion")
        scorer = self.inner.load(usecase, version if champion is None else champion.version)
        if champion is not None and version == champion.version:
            return scorer
        if self.kind == "broken":
            return Broken(list(scorer.features), list(scorer.outputs))
        if isinstance(self.kind, Slow):  # the champion's inputs and outputs, held answers
            self.kind.features, self.kind.outputs = list(scorer.features), list(scorer.outputs)
            return self.kind
        if self.kind == "narrow":  # takes three of the champion's inputs and one of its own
            features = [*scorer.features[:3], "challenger_only"]
            return ConstantScorer(features, list(scorer.outputs), values=[123.0])
        return ConstantScorer(list(scorer.features), list(scorer.outputs), values=[123.0])


def _logged(db: Path) -> list[tuple[str, str, str, str, str]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT request_id, entity_id, model_version, arm, output FROM prediction_log "
            "WHERE usecase = 'clv' ORDER BY rowid"
        ).fetchall()
    finally:
        con.close()


def _customers(home: Path, n: int) -> list[str]:
    import duckdb

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute(
            f"SELECT DISTINCT customer_id FROM orders ORDER BY 1 LIMIT {int(n)}"
        ).fetchall()
    finally:
        con.close()
    return [str(r[0]) for r in rows]


def _serving(
    client_factory: Any,
    home: Path,
    tmp_path: Path,
    mode: str,
    challenger: str | Slow = "constant",
    clock: Any = None,
    **settings: Any,
) -> tuple[Any, Path]:
    """A service on :class:`TwoVersions` with clv in ``mode``, and its prediction log."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "monitoring.sqlite"
    client = client_factory(
        {"source_factory": lambda: TwoVersions(home, challenger), "clock": clock},
        monitoring_store_uri=f"sqlite:///{db}",
        rollout={"clv": mode},
        **settings,
    )
    return client, db


def test_shadow_answers_are_logged_never_returned(
    client_factory: Any, served_home: Path, tmp_path: Path
) -> None:
    client, db = _serving(client_factory, served_home, tmp_path, "shadow")
    champion = client.get("/v1/models").json()["models"][1]["version"]
    cid = a_customer(served_home)
    answers = [client.post("/v1/clv/predict", json={"customer_id": cid}) for _ in range(5)]
    batch = client.post(
        "/v1/clv/predict",
        json={"instances": [{"customer_id": c} for c in _customers(served_home, 4)]},
    )
    for r in [*answers, batch]:
        assert r.status_code == 200 and r.json()["model_version"] == champion
        assert "123.0" not in r.text  # the challenger's constant never reaches a caller
    client.__exit__(None, None, None)  # drains the shadow queue and the log
    rows = _logged(db)
    champ = [r for r in rows if r[3] == "champion"]
    shadow = [r for r in rows if r[3] == "shadow"]
    assert len(champ) == len(shadow) == 9
    # Paired: the same request ids and entities, the challenger's version and answer.
    assert [r[:2] for r in champ] == [r[:2] for r in shadow]
    assert {r[2] for r in shadow} == {str(int(champion) + 1)} and {r[2] for r in champ} == {
        champion
    }
    assert all("123.0" in r[4] for r in shadow)


def test_a_failing_shadow_challenger_fails_no_answer(
    client_factory: Any, served_home: Path, tmp_path: Path
) -> None:
    client, db = _serving(
        client_factory,
        served_home,
        tmp_path,
        "shadow",
        "broken",
        admin_keys=[ADMIN_KEY],
        api_keys=[SCORE_KEY],
    )
    auth = {"Authorization": f"Bearer {SCORE_KEY}"}
    cid = a_customer(served_home)
    for _ in range(4):
        assert (
            client.post("/v1/clv/predict", json={"customer_id": cid}, headers=auth).status_code
            == 200
        )
    state = client.get("/v1/admin/rollout", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    clv = next(r for r in state.json()["rollout"] if r["usecase"] == "clv")
    assert clv["mode"] == "shadow" and clv["worker"]["failed"] == 4
    assert "the challenger is broken" in clv["worker"]["last_error"]
    text = client.get("/metrics").text
    assert 'shopml_rollout_answers_total{arm="shadow",outcome="failed",usecase="clv"} 4.0' in text
    client.__exit__(None, None, None)
    assert {r[3] for r in _logged(db)} == {"champion"}


@pytest.mark.parametrize("challenger", ["broken", "slow"])
def test_shadow_fails_and_slows_no_champion_answer(
    client_factory: Any, served_home: Path, tmp_path: Path, challenger: str
) -> None:
    """Whatever the challenger does in shadow (raise, or take its time), the champion's answers
    are those of the same service with rollout off: all 200, the same bodies; and an answer is
    sent while its own shadow answer is still being computed."""
    customers = _customers(served_home, 5)
    requests = [
        *({"customer_id": c} for c in customers),
        {"instances": [{"customer_id": c} for c in customers[:3]]},
        {"customer_id": customers[0], "explain": True},
        {"features": {"recency_days": 3.0}},
    ]

    def answers(client: Any, bodies: list[dict[str, Any]]) -> list[Any]:
        out = []
        for body in bodies:
            r = client.post("/v1/clv/predict", json=body)
            assert r.status_code == 200, (body, r.text)
            out.append({k: v for k, v in r.json().items() if k != "request_id"})
        return out

    def clock() -> float:
        return 1_735_689_600.0  # one instant for both services: feature ages compare

    off, off_db = _serving(client_factory, served_home, tmp_path / "off", "off", clock=clock)
    expected = answers(off, requests)
    off.__exit__(None, None, None)
    slow = Slow([], []) if challenger == "slow" else None
    client, db = _serving(
        client_factory, served_home, tmp_path / "shadow", "shadow", slow or challenger, clock
    )
    if slow is None:
        got = answers(client, requests)
    else:
        slow.armed.set()
        # The answer's bytes reach the caller before its shadow answer is done: read as they
        # are sent (the test client hands them over one ASGI message at a time).
        with client.stream("POST", "/v1/clv/predict", json=requests[0]) as r:
            assert r.status_code == 200
            chunks = r.iter_raw()
            sent = next(chunks)
            assert not slow.finished.is_set()
            assert slow.entered.wait(HOLD) and not slow.finished.is_set()  # held, meanwhile
            slow.release.set()
            first = json.loads(sent + b"".join(chunks))
        got = [{k: v for k, v in first.items() if k != "request_id"}]
        got += answers(client, requests[1:])
    assert got == expected
    client.__exit__(None, None, None)  # drains the shadow queue and the log
    served, logged = _logged(off_db), _logged(db)
    champion = [r for r in logged if r[3] == "champion"]
    assert [r[1:] for r in champion] == [r[1:] for r in served]  # the same records, in order
    shadow = [r for r in logged if r[3] == "shadow"]
    assert len(shadow) == (0 if challenger == "broken" else len(served))


def test_canary_is_sticky_by_customer_and_splits_a_batch(
    client_factory: Any, served_home: Path, tmp_path: Path
) -> None:
    client, db = _serving(client_factory, served_home, tmp_path, "ab:0.5")
    customers = _customers(served_home, 30)
    seen: dict[str, set[str]] = {}
    for _ in range(3):
        for c in customers:
            r = client.post("/v1/clv/predict", json={"customer_id": c})
            assert r.status_code == 200
            seen.setdefault(c, set()).add(r.json()["model_version"])
    assert all(len(v) == 1 for v in seen.values())  # sticky: one version per customer
    version = {c: next(iter(v)) for c, v in seen.items()}
    expected = {c: modes.challenger_answers(modes.make("ab"), "clv", c) for c in customers}
    challenger = {c for c, v in expected.items() if v}
    assert 0 < len(challenger) < len(customers)
    assert {version[c] for c in challenger} != {
        version[c] for c in customers if c not in challenger
    }
    # A batch with both arms: answered in order, each prediction naming its version.
    batch = client.post(
        "/v1/clv/predict", json={"instances": [{"customer_id": c} for c in customers]}
    )
    assert batch.status_code == 200
    got = batch.json()["predictions"]
    assert [p["entity"]["customer_id"] for p in got] == customers
    assert [p["model_version"] for p in got] == [version[c] for c in customers]
    assert all(
        (p["prediction"]["predicted_spend_90d"] == 123.0) == expected[c]
        for p, c in zip(got, customers, strict=True)
    )
    # Features only, no id: nothing to stick to, the champion answers.
    features = client.post("/v1/clv/predict", json={"features": {"recency_days": 3.0}})
    champion = version[next(c for c in customers if c not in challenger)]
    assert features.json()["model_version"] == champion
    client.__exit__(None, None, None)
    rows = _logged(db)
    arms = {(r[1], r[3], r[2]) for r in rows if r[1] is not None}
    assert arms == {(c, "challenger" if expected[c] else "champion", version[c]) for c in customers}


def test_a_mode_set_on_one_worker_is_followed_by_another(
    client_factory: Any, served_home: Path
) -> None:

    mlc = registry_client(served_home)
    name = "shopml-clv"
    champion = mlc.get_model_version_by_alias(name, "champion")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    keys = {"admin_keys": [ADMIN_KEY], "api_keys": [SCORE_KEY]}
    one, two = client_factory(**keys), client_factory(**keys)
    try:
        # No challenger yet: refused, naming what to do.
        refused = one.put("/v1/admin/rollout/clv", json={"mode": "canary"}, headers=admin)
        assert refused.status_code == 409 and "no challenger" in refused.json()["detail"]
        bad = one.put("/v1/admin/rollout/clv", json={"mode": "ab", "share": 2}, headers=admin)
        assert bad.status_code == 422 and "less than 1" in str(bad.json()["detail"])
        # The document says which bodies are valid: no share for off and shadow, no blank mode.
        for body in ({"mode": "shadow", "share": 0.5}, {"mode": ""}, {"mode": "canary", "x": 1}):
            wrong = one.put("/v1/admin/rollout/clv", json=body, headers=admin)
            assert wrong.status_code == 422, (body, wrong.text)
        unknown = one.put("/v1/admin/rollout/nope", json={"mode": "off"}, headers=admin)
        assert unknown.status_code == 404
        scoring = one.put(
            "/v1/admin/rollout/clv",
            json={"mode": "off"},
            headers={"Authorization": f"Bearer {SCORE_KEY}"},
        )
        assert scoring.status_code == 403
        challenger = mlc.create_model_version(name, champion.source, run_id=champion.run_id)
        mlc.set_registered_model_alias(name, "challenger", str(challenger.version))
        set_ = one.put(
            "/v1/admin/rollout/clv", json={"mode": "canary", "share": 0.2}, headers=admin
        )
        assert set_.status_code == 200, set_.text
        assert set_.json()["mode"] == "canary" and set_.json()["challenger"] == str(
            challenger.version
        )
        deadline = time.monotonic() + 30
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            rows = two.get("/v1/admin/rollout", headers=admin).json()["rollout"]
            state = next(r for r in rows if r["usecase"] == "clv")
            if state["mode"] == "canary":
                break
            time.sleep(0.1)
        assert state["mode"] == "canary" and state["share"] == 0.2
        assert state["recorded"]["by"] == "admin route" and state["recorded"]["set_at"]
    finally:
        mlc.delete_registered_model_tag(name, modes.TAG)
        mlc.delete_registered_model_alias(name, "challenger")


def test_the_rollout_command_sets_shows_and_refuses(
    served_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from shopml.settings import reset_settings
    from tests.unit.test_cli import shopml

    monkeypatch.setenv("SHOPML_HOME", str(served_home))
    reset_settings()
    mlc = registry_client(served_home)
    name = "shopml-clv"
    code, out, _ = shopml(["rollout", "clv", "--json"], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["mode"] == "off"
    code, _, err = shopml(["rollout", "clv", "shadow"], capsys, monkeypatch)
    assert code == 2 and "has no challenger to put in shadow" in err and "Traceback" not in err
    code, _, err = shopml(["rollout", "clv", "sideways"], capsys, monkeypatch)
    assert code == 2 and "not one of off, shadow, canary, ab" in err
    code, _, err = shopml(["rollout", "nope", "off"], capsys, monkeypatch)
    assert code == 2
    champion = mlc.get_model_version_by_alias(name, "champion")
    challenger = mlc.create_model_version(name, champion.source, run_id=champion.run_id)
    mlc.set_registered_model_alias(name, "challenger", str(challenger.version))
    try:
        code, _, err = shopml(["rollout", "clv", "ab", "--share", "1.2"], capsys, monkeypatch)
        assert code == 2 and "between 0 and 1" in err
        args = ["rollout", "clv", "canary", "--share", "0.05", "--reason", "first look"]
        code, out, err = shopml([*args, "--json"], capsys, monkeypatch)
        assert code == 0, err
        set_ = json.loads(out)
        assert set_["mode"] == "canary" and set_["share"] == 0.05
        assert set_["challenger"] == str(challenger.version) and set_["by"] == "cli"
        code, out, _ = shopml(["rollout", "clv"], capsys, monkeypatch)
        assert f"clv: rollout canary 5% (challenger v{challenger.version})" in out
        code, out, _ = shopml(["models", "--json"], capsys, monkeypatch)
        clv = next(m for m in json.loads(out) if m["usecase"] == "clv")
        assert clv["rollout"]["mode"] == "canary" and clv["rollout"]["reason"] == "first look"
        from tests.unit.test_cli import wide

        wide(monkeypatch)  # the table on one line per row
        code, out, _ = shopml(["models"], capsys, monkeypatch)
        assert code == 0 and "canary 5%" in out
    finally:
        mlc.delete_registered_model_tag(name, modes.TAG)
        mlc.delete_registered_model_alias(name, "challenger")


def test_each_arm_gets_the_features_it_takes(
    client_factory: Any, served_home: Path, tmp_path: Path
) -> None:
    client, db = _serving(client_factory, served_home, tmp_path, "shadow", "narrow")
    # A feature only the challenger takes, one only the champion takes: both answer.
    both = {"features": {"recency_days": 3.0, "challenger_only": 1.0}}
    r = client.post("/v1/clv/predict", json=both)
    assert r.status_code == 200, r.text
    # A name neither model takes is still refused, naming it.
    bad = client.post("/v1/clv/predict", json={"features": {"no_such_feature": 1.0}})
    assert bad.status_code == 422 and "no_such_feature" in bad.text
    client.__exit__(None, None, None)
    arms = [r[3] for r in _logged(db)]
    assert arms == ["champion", "shadow"]


def test_the_admin_bodies_take_exactly_the_runtime_modes() -> None:
    """The route's two body shapes spell the modes out (the document lists them): together they
    are the runtime's modes, and the shape with a share is the modes that have one."""
    from typing import get_args

    from shopml.runtime import rollout as modes
    from shopml.serving.rollout import RolloutSplit, RolloutStill

    still = set(get_args(RolloutStill.model_fields["mode"].annotation))
    split = set(get_args(RolloutSplit.model_fields["mode"].annotation))
    assert still | split == set(modes.MODES) and not still & split
    assert split == set(modes.DEFAULT_SHARE)
