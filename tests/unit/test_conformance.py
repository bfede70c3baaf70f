"""Every use case is a complete plugin: the same checks, whatever the use case (in the spirit of
scikit-learn's ``check_estimator``).

For each registered use case, and for a ninth ranking use case defined only in this module
(proof that adding a use case needs no edit anywhere else), on one small simulated shop:

1. its labelled dataset at a cutoff needs nothing after the label horizon: built on the shop
   as it stood when the labels were final, it is the same;
2. it fits on the small shop's time split, and its scorer survives the MLflow pyfunc round trip;
3. the service builds its route from its answer kind, with examples that validate;
4. a request built the way a replay builds them is answered;
5. the prediction record has the shape the kind declares, read back from the store;
6. its live checks run on those records.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shopml.data.warehouse import Warehouse
from shopml.runtime.answers import Recommend
from shopml.runtime.scorers import Scorer
from shopml.usecases import _live, get_usecases
from shopml.usecases.base import GatePolicy, LabelledData, MonitorSpec, Predictions, UseCase

pytestmark = pytest.mark.slow


# -- a ninth use case, defined here and nowhere else --------------------------------------------
@dataclass
class PopularArticles(Scorer):
    """Recommends the most bought articles a reader has not bought yet."""

    ranking: list[str] = field(default_factory=list)
    seen: dict[str, list[str]] = field(default_factory=dict)

    def knows(self, reader: str) -> bool:
        return reader in self.seen

    def recommend(
        self, reader: str, k: int = 10, exclude: Sequence[str] = (), exclude_seen: bool = False
    ) -> list[tuple[str, float]]:
        banned = set(exclude) | (set(self.seen.get(reader, ())) if exclude_seen else set())
        top = [a for a in self.ranking if a not in banned][:k]
        return [(a, float(len(self.ranking) - i)) for i, a in enumerate(top)]

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), 1), float(len(self.ranking)))

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        recs = [",".join(a for a, _ in self.recommend(str(r), 3)) for r in frame["reader_id"]]
        return pd.DataFrame({"articles": recs}, index=frame.index)


class ArticlesToRead(UseCase):
    """Which articles should this reader see next? (Readers are the shop's customers and
    articles its products: any shop's data serves.)"""

    name = "articles"
    question = "Which articles should this reader see next?"
    entity = "reader"
    key = "reader_id"
    kind = "ranking"
    required_tables = ("orders", "order_items")
    metrics = ("hit_rate",)
    gate = GatePolicy("hit_rate")
    monitoring = MonitorSpec(features=("past_orders",), prediction="articles", label_delay_days=14)
    answer = Recommend(k=3, item="article_id", output="articles")
    horizon_days = 14
    train_cutoffs = 1

    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        bought = wh.sql(
            "SELECT o.customer_id AS reader_id, o.purchased_at, i.product_id "
            "FROM orders o JOIN order_items i USING (order_id) WHERE o.purchased_at < ?",
            [cutoff + timedelta(days=self.horizon_days)],
        )
        before = bought[bought["purchased_at"] < cutoff]
        after = bought[bought["purchased_at"] >= cutoff]
        frame = (
            after.groupby("reader_id")["product_id"]
            .agg(lambda s: ",".join(sorted(set(s))))
            .rename("read")
            .reset_index()
        )
        past = before.groupby("reader_id").size().rename("past_orders")
        frame = frame.join(past, on="reader_id").fillna({"past_orders": 0})
        frame = frame.sort_values("reader_id").reset_index(drop=True)
        return LabelledData(frame, ["reader_id"], ["past_orders"], ["read"], [], [cutoff])

    def fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
    ) -> Scorer:
        reads = train.frame["read"].str.split(",").explode()
        ranking = reads.value_counts().index.astype(str).tolist()
        pairs = zip(train.frame["reader_id"], train.frame["read"], strict=True)
        seen = {r: s.split(",") for r, s in pairs}
        return PopularArticles(["past_orders"], ["articles"], ranking=ranking, seen=seen)

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        return self.fit(wh, train, None, {})

    def predict(self, scorer: Scorer, data: LabelledData) -> Predictions:
        assert isinstance(scorer, PopularArticles)
        lists = [[a for a, _ in scorer.recommend(str(r), 3)] for r in data.frame["reader_id"]]
        return Predictions(pd.DataFrame({"articles": lists}))

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        hits = [
            bool(set(p) & set(str(r).split(",")))
            for p, r in zip(predictions.values["articles"], data.frame["read"], strict=True)
        ]
        return {"hit_rate": float(np.mean(hits)) if hits else float("nan")}

    def live_checks(self, live: _live.LiveContext) -> list[_live.LiveFigure]:
        return _live.ranking_checks(self, live, "articles")


NINTH = ArticlesToRead()
USECASES = [*get_usecases().values(), NINTH]


# -- the shop, the fitted models, the service ---------------------------------------------------
@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from shopml.data.simulator import SimConfig, simulate

    path = tmp_path_factory.mktemp("conformance") / "shop.duckdb"
    wh = Warehouse(path)
    simulate(SimConfig(customers=500, days=730, seed=23)).load(wh)
    wh.close()
    yield path


def as_it_stood(src: Path, dst: Path, when: datetime) -> Warehouse:
    """A copy of the shop as its database stood at ``when``: later rows deleted, later
    milestones of earlier rows blanked (statuses are left: they say how an order ended)."""
    shutil.copy(src, dst)
    wh = Warehouse(dst)
    t = [when]
    run = wh.con.execute
    run("DELETE FROM orders WHERE purchased_at >= ?", t)
    for col in ("approved_at", "shipped_at", "delivered_at"):
        run(f"UPDATE orders SET {col} = NULL WHERE {col} >= ?", t)
    for table in ("order_items", "payments"):
        run(f"DELETE FROM {table} WHERE order_id NOT IN (SELECT order_id FROM orders)")
    run(
        "DELETE FROM reviews WHERE created_at >= ? "
        "OR order_id NOT IN (SELECT order_id FROM orders)",
        t,
    )
    run("UPDATE reviews SET answered_at = NULL WHERE answered_at >= ?", t)
    run(
        "DELETE FROM returns WHERE returned_at >= ? "
        "OR order_item_id NOT IN (SELECT order_item_id FROM order_items)",
        t,
    )
    run("DELETE FROM web_events WHERE event_at >= ?", t)
    run("DELETE FROM campaigns WHERE sent_at >= ?", t)
    run(
        "DELETE FROM campaign_sends WHERE assigned_at >= ? "
        "OR campaign_id NOT IN (SELECT campaign_id FROM campaigns)",
        t,
    )
    run(
        "UPDATE campaign_sends SET responded_at = NULL, responded = false WHERE responded_at >= ?",
        t,
    )
    run("DELETE FROM price_history WHERE valid_from >= ?", t)
    return wh


@dataclass
class Fitted:
    uc: UseCase
    scorer: Scorer
    test: LabelledData
    cutoff: datetime


class Fits:
    """Each use case fitted on the shop's time split (default parameters, no tuning), when a
    test first asks for it."""

    def __init__(self, shop: Path) -> None:
        self.shop = shop
        self.done: dict[str, Fitted] = {}

    def __call__(self, uc: UseCase) -> Fitted:
        from shopml.lifecycle.train import build_splits, fit_model

        if uc.name not in self.done:
            with Warehouse(self.shop, read_only=True) as wh:
                plan = uc.split(wh)
                splits = build_splits(uc, wh, plan)
                scorer = fit_model(uc, wh, splits, uc.default_params(), seed=0)
            self.done[uc.name] = Fitted(uc, scorer, splits.test, plan.test_cutoff)
        return self.done[uc.name]


@pytest.fixture(scope="module")
def fits(shop: Path) -> Fits:
    return Fits(shop)


class Registry:
    """The fitted scorers as the service's model source (version 1 of each fitted one)."""

    def __init__(self, fits: Fits) -> None:
        self.fits = fits

    def alias_version(self, usecase: str, alias: str) -> Any:
        from shopml.serving.models import VersionInfo

        return VersionInfo("1") if usecase in self.fits.done else None

    def load(self, usecase: str, version: str) -> Scorer:
        return self.fits.done[usecase].scorer


@dataclass
class Served:
    client: Any
    home: Path
    spec: dict[str, Any]
    now: datetime


@pytest.fixture(scope="module")
def served(shop: Path, fits: Fits, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The service on every use case (the ninth one too), its clock at the shop's last day,
    its online store holding the features as of then."""
    from fastapi.testclient import TestClient

    from shopml.features import build_features
    from shopml.online import ONLINE_ENTITIES
    from shopml.online.store import SQLiteOnlineStore
    from shopml.serving import create_app
    from shopml.settings import Settings

    home = tmp_path_factory.mktemp("served")
    keys = {"customers": "customer_id", "products": "product_id", "sellers": "seller_id"}
    store = SQLiteOnlineStore(home / "online.sqlite")
    with Warehouse(shop, read_only=True) as wh:
        now = wh.data_end()
        for entity in ONLINE_ENTITIES:
            store.write(entity, build_features(wh, now, entity), keys[entity], now)
    store.close()
    app = create_app(
        Settings(home=home, prediction_log_flush_seconds=0.05),
        source_factory=lambda: Registry(fits),
        usecases=USECASES,
        clock=lambda: now.replace(tzinfo=UTC).timestamp(),
        in_process=True,
    )
    with TestClient(app) as client:
        yield Served(client, home, app.openapi(), now)


IDS = [uc.name for uc in USECASES]


# -- the checks -------------------------------------------------------------------------------
@pytest.mark.parametrize("uc", USECASES, ids=IDS)
def test_labelled_dataset_needs_nothing_after_its_horizon(
    uc: UseCase, shop: Path, tmp_path: Path
) -> None:
    with Warehouse(shop, read_only=True) as wh:
        cutoff = uc.split(wh).test_cutoff
        full = uc.dataset(wh, cutoff)
    then = as_it_stood(shop, tmp_path / "then.duckdb", cutoff + timedelta(days=uc.horizon_days))
    try:
        known = uc.dataset(then, cutoff)
    finally:
        then.close()
    assert len(full) > 0, f"{uc.name}: no rows at {cutoff:%Y-%m-%d}"
    cols = [*full.keys, *full.features, *full.labels]

    def rows(d: LabelledData) -> pd.DataFrame:
        return d.frame[cols].sort_values(full.keys).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(full), rows(known), check_dtype=False)


def shuffled(src: Path, dst: Path) -> Warehouse:
    """A copy of the shop with every table's rows stored in another (random) order."""
    shutil.copy(src, dst)
    wh = Warehouse(dst)
    wh.con.execute("SELECT setseed(0.25)")
    tables = [r[0] for r in wh.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
    for t in tables:
        wh.con.execute(f'CREATE OR REPLACE TABLE "{t}" AS SELECT * FROM "{t}" ORDER BY random()')
    return wh


@pytest.mark.parametrize("uc", USECASES, ids=IDS)
def test_labelled_dataset_is_the_same_whatever_order_the_rows_are_stored_in(
    uc: UseCase, shop: Path, tmp_path: Path
) -> None:
    """Bit for bit: sums of money are exact (an engine adding the rows in another order, as
    DuckDB's threads do from one run to the next, must not change a feature or a label)."""
    with Warehouse(shop, read_only=True) as wh:
        cutoff = uc.split(wh).test_cutoff
        ordered = uc.dataset(wh, cutoff)
    other = shuffled(shop, tmp_path / "shuffled.duckdb")
    try:
        again = uc.dataset(other, cutoff)
    finally:
        other.close()
    cols = [*ordered.keys, *ordered.features, *ordered.labels]

    def rows(d: LabelledData) -> pd.DataFrame:
        return d.frame[cols].sort_values(ordered.keys).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(ordered), rows(again), check_exact=True)


@pytest.mark.parametrize("uc", USECASES, ids=IDS)
def test_fits_and_survives_the_pyfunc_round_trip(uc: UseCase, fits: Fits, tmp_path: Path) -> None:
    import mlflow.pyfunc

    from shopml.runtime.pyfunc import SCORER_ARTIFACT, ShopmlModel, write_scorer

    f = fits(uc)
    metrics = uc.evaluate(f.scorer, f.test)
    assert uc.gate.metric in metrics
    path = tmp_path / "model"
    mlflow.pyfunc.save_model(
        str(path),
        python_model=ShopmlModel(),
        artifacts={SCORER_ARTIFACT: str(write_scorer(f.scorer, tmp_path / "scorer.pkl"))},
        pip_requirements=[],
    )
    rows = f.test.frame.head(20)
    again = mlflow.pyfunc.load_model(str(path)).predict(rows)
    pd.testing.assert_frame_equal(again, f.scorer.predict_frame(rows))


@pytest.mark.parametrize("uc", USECASES, ids=IDS)
def test_its_route_is_built_with_examples_that_validate(uc: UseCase, served: Served) -> None:
    route = served.spec["paths"].get(uc.answer.path(uc))
    assert route is not None, f"no route {uc.answer.path(uc)}"
    examples = route["post"]["requestBody"]["content"]["application/json"]["examples"]
    schemas = uc.answer.schemas(uc, 100)
    assert examples
    for example in examples.values():
        schemas.adapter.validate_python(example["value"])


@pytest.mark.parametrize("uc", USECASES, ids=IDS)
def test_answers_and_records_the_declared_shape_and_live_checks_run(
    uc: UseCase, shop: Path, fits: Fits, served: Served
) -> None:
    from shopml.monitoring.store import MonitoringStore

    client, home, now = served.client, served.home, served.now
    f = fits(uc)
    client.app.state.shopml.models.refresh()  # the service loads what was just fitted
    kind = uc.answer
    cols = [uc.key, *f.test.features] if kind.needs_rows else [uc.key]
    arrivals = f.test.frame[cols].drop_duplicates(uc.key).head(5)
    model = client.app.state.shopml.models.get(uc.name)
    answered = 0
    for body, n in kind.requests(uc, arrivals, 100, model):
        kind.schemas(uc, 100).adapter.validate_python(body)  # what a replay sends is valid
        r = client.post(kind.path(uc), json=body)
        assert r.status_code in (200, 404), r.text  # 404: an id the model or store lacks
        if r.status_code == 200:
            assert r.json()["model_version"] == "1"
            answered += n
    assert answered > 0, f"{uc.name}: no request answered"

    client.app.state.shopml.log.flush()
    with MonitoringStore(None, home) as store:
        window = store.predictions(uc.name, now - timedelta(days=1), now + timedelta(days=1))
    assert len(window) == answered
    assert set(window.frame["entity_key"]) == {uc.key}
    declared = kind.record_outputs(uc, model)
    assert set(declared) <= set(window.outputs.columns), (declared, list(window.outputs.columns))

    later = now + timedelta(days=uc.monitoring.label_delay_days or uc.horizon_days, hours=25)
    with Warehouse(shop, read_only=True) as wh:
        figures = uc.live_checks(_live.LiveContext(wh, later, window, lambda since: window))
    for fig in figures:
        assert isinstance(fig, _live.LiveFigure) and isinstance(fig.value, float), fig
    if isinstance(kind, Recommend):
        assert {"coverage", "precision", "hit_rate"} <= {x.metric for x in figures}
