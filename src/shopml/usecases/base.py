"""The use-case extension point: one subclass of :class:`UseCase` per commerce question.

A use case declares, as data, its name, entity, the tables it needs, its metrics and gate, and
implements four things: build a labelled dataset at a cutoff (features strictly before, labels
strictly after), fit a model, fit a baseline, and evaluate a scorer. Everything generic (time
splits, tuning, tracking, registering, gating, serving, monitoring) is written once in
``shopml.lifecycle`` and friends and takes a use case.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import pandas as pd

from shopml.runtime.answers import AnswerKind, Predict
from shopml.runtime.scorers import Scorer

if TYPE_CHECKING:
    import optuna

    from shopml.data.warehouse import Warehouse
    from shopml.usecases._live import LiveContext, LiveFigure


class BaselineUnavailable(RuntimeError):
    """A baseline that cannot be computed on this data (the reason is the message): the
    training loop records it and judges the model on the baselines that could be fitted."""


class NotEnoughData(ValueError):
    """The data is too short or too thin for this use case's time split (the message says
    what was needed and what the data has)."""


@dataclass(frozen=True)
class GatePolicy:
    """When a candidate may replace the champion.

    The candidate must beat the champion's ``metric`` on the same fresh test window by at least
    ``min_improvement`` (relative), keep every floor (``metric >= value``) and ceiling
    (``metric <= value``), and pass sanity checks: no missing predictions, predictions within
    ``output_range``, and single-row prediction time within ``max_latency_ms`` (CPU time of
    the predicting thread, so a busy machine does not reject a fast model).

    Every metric is judged with its confidence interval (:mod:`shopml.lifecycle.gate`), except
    those named in ``exact``: counts of rule breaches (guardrail violations), where one breach
    on the test rows is a fact about the model, not a sample.
    """

    metric: str
    higher_is_better: bool = True
    min_improvement: float = 0.0
    floors: Mapping[str, float] = field(default_factory=dict)
    ceilings: Mapping[str, float] = field(default_factory=dict)
    output_range: tuple[float | None, float | None] = (None, None)
    max_latency_ms: float = 25.0
    exact: tuple[str, ...] = ()


@dataclass(frozen=True)
class MonitorSpec:
    """What monitoring watches for a use case: inputs, the prediction, the delayed label."""

    features: tuple[str, ...] = ()
    prediction: str = "prediction"
    label: str | None = None
    label_delay_days: int = 0
    performance_metric: str | None = None
    # How much worse than its test figure the live metric may get (relative) before the
    # monitor alerts and retrains; the policy's default for this use case.
    max_degradation: float = 0.25
    # The direction of ``performance_metric`` when it is not the gate's metric.
    higher_is_better: bool | None = None
    # More live checks, each (metric, tolerance, direction[, target]): "lower" or "higher" is
    # better, or "both" (any move away is a problem); judged against ``target`` when given (a
    # calibration ratio's 1), else against the model's test figure.
    also: tuple[tuple[Any, ...], ...] = ()

    @classmethod
    def probabilities(
        cls, features: tuple[str, ...], prediction: str, label: str, label_delay_days: int
    ) -> MonitorSpec:
        """What a use case that predicts a probability watches live: normalized log loss,
        not the gate's AUC (a shift in the base rate, such as a new return policy, leaves the
        ranking and so the AUC nearly intact while every probability is off; a proper score
        sees both), divided by the log loss of the window's own base rate (seasons move the
        base rate, and every model's log loss with it); and calibration in the large,
        positives observed over expected against 1, which such a shift moves first."""
        return cls(
            features=features,
            prediction=prediction,
            label=label,
            label_delay_days=label_delay_days,
            performance_metric="normalized_log_loss",
            higher_is_better=False,
            max_degradation=0.1,
            also=(("calibration_ratio", 0.25, "both", 1.0),),
        )


@dataclass(frozen=True)
class SplitPlan:
    """Time-based split: training cutoffs, then a validation and a test cutoff after them.

    Rows built at a training cutoff have their labels complete before the validation cutoff,
    and validation labels before the test cutoff: no label window overlaps the next split.
    Test rows are labelled over ``horizon_days`` (what the model is judged on); training and
    validation rows over ``train_horizon_days``, which is shorter only when the history before
    the test cutoff cannot hold two full label windows and the use case can extrapolate
    (:attr:`UseCase.extrapolates_horizon`).
    """

    train_cutoffs: tuple[datetime, ...]
    valid_cutoff: datetime
    test_cutoff: datetime
    data_end: datetime
    horizon_days: int
    train_horizon_days: int

    @property
    def extrapolated(self) -> bool:
        """Whether the model learns a shorter horizon than the one it is judged on."""
        return self.train_horizon_days != self.horizon_days

    @property
    def test_end(self) -> datetime:
        """When the test rows' labels are complete."""
        return self.test_cutoff + timedelta(days=self.horizon_days)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_cutoffs": [c.isoformat() for c in self.train_cutoffs],
            "valid_cutoff": self.valid_cutoff.isoformat(),
            "test_cutoff": self.test_cutoff.isoformat(),
            "data_end": self.data_end.isoformat(),
            "horizon_days": self.horizon_days,
            "train_horizon_days": self.train_horizon_days,
        }


@dataclass
class LabelledData:
    """A labelled dataset: one frame with keys, features, label(s) and, on simulated data, the
    oracle's truth for the same rows."""

    frame: pd.DataFrame
    keys: list[str]
    features: list[str]
    labels: list[str]
    oracle: list[str] = field(default_factory=list)
    cutoffs: list[datetime] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def X(self) -> pd.DataFrame:
        return self.frame[self.features]

    @property
    def y(self) -> pd.Series:
        return self.frame[self.labels[0]]

    @property
    def has_oracle(self) -> bool:
        return bool(self.oracle) and all(c in self.frame.columns for c in self.oracle)

    def take(self, rows: np.ndarray) -> LabelledData:
        """The rows at these positions (repeats allowed: a bootstrap resample), renumbered."""
        return LabelledData(
            self.frame.iloc[rows].reset_index(drop=True),
            self.keys,
            self.features,
            self.labels,
            self.oracle,
            self.cutoffs,
        )

    @staticmethod
    def concat(parts: list[LabelledData]) -> LabelledData:
        if not parts:
            raise ValueError("no data to concatenate")
        first = parts[0]
        frame = pd.concat([p.frame for p in parts], ignore_index=True)
        return LabelledData(
            frame,
            first.keys,
            first.features,
            first.labels,
            first.oracle,
            [c for p in parts for c in p.cutoffs],
        )


@dataclass
class Predictions:
    """A scorer's answers on a labelled dataset, row-aligned with its frame.

    Metrics are computed from these and the labels (:meth:`UseCase.score`), so a bootstrap
    recomputes them on resampled rows without predicting again, and two models are compared
    on exactly the same rows. ``values`` has one row per data row, in the same order (ranked
    lists and other objects are allowed as cells); ``context`` holds facts about the scorer
    that some metrics need and that do not belong to a row (a catalogue's size, say).
    """

    values: pd.DataFrame
    context: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def take(self, rows: np.ndarray) -> Predictions:
        """The answers at these row positions (the same positions as :meth:`LabelledData.take`)."""
        return Predictions(self.values.iloc[rows].reset_index(drop=True), self.context)

    def column(self, i: int | str = 0) -> np.ndarray:
        """One output as float64, by position or name."""
        col = self.values.iloc[:, i] if isinstance(i, int) else self.values[i]
        return col.to_numpy(dtype="float64")

    @classmethod
    def of_matrix(cls, out: np.ndarray, names: list[str] | None = None) -> Predictions:
        """Wrap a scorer's numeric output (one column per output)."""
        out = np.asarray(out, dtype="float64")
        if out.ndim == 1:
            out = out.reshape(-1, 1)
        cols = (
            names
            if names and len(names) == out.shape[1]
            else [f"out{i}" for i in range(out.shape[1])]
        )
        return cls(pd.DataFrame(out, columns=cols))


class UseCase(ABC):
    """Base class of every use case. Subclasses set the class attributes and implement
    :meth:`dataset`, :meth:`fit`, :meth:`baseline`, :meth:`predict` and :meth:`score`."""

    name: ClassVar[str]
    question: ClassVar[str]
    entity: ClassVar[str]
    key: ClassVar[str]
    kind: ClassVar[str]
    required_tables: ClassVar[tuple[str, ...]]
    metrics: ClassVar[tuple[str, ...]]
    gate: ClassVar[GatePolicy]
    monitoring: ClassVar[MonitorSpec] = MonitorSpec()
    # How it answers, with its parameters (shopml.runtime.answers): the kind owns the route
    # (POST /v1/<name>/<verb>), its schemas and examples, the prediction record and how a
    # replay builds requests. The model's outputs per instance by default.
    answer: ClassVar[AnswerKind] = Predict()

    # Whether ``fit`` takes ``previous=`` (the current champion's scorer, or None), for models
    # that must stay consistent across retrains (stable segment ids).
    uses_previous: ClassVar[bool] = False

    # Time split: labels of rows built at a cutoff are complete `horizon_days` later. A class
    # default that an instance may override (:meth:`with_horizon`): a backtest over 39 weeks.
    horizon_days: int = 30
    train_cutoffs: ClassVar[int] = 6
    train_step_days: ClassVar[int] = 30
    # Long horizons on short histories (a 39-week spend after a cutoff 39 weeks into the
    # data): whether a model fitted on labels over a shorter horizon can answer for the full
    # one (:meth:`final_fit` is then told both). A use case that cannot gets NotEnoughData.
    extrapolates_horizon: ClassVar[bool] = False
    # Days of history the latest training cutoff keeps before it when the training horizon
    # is shortened, and the shortest training horizon worth extrapolating from.
    min_history_days: ClassVar[int] = 30
    min_train_horizon_days: ClassVar[int] = 28

    # Rows that are resampled together when a metric's interval is bootstrapped: the column
    # naming the independent unit (lines of one customer share that customer's habits). None:
    # ``customer_id`` when the rows have it, else each row on its own.
    bootstrap_unit: ClassVar[str | None] = None

    # -- declared behaviour ------------------------------------------------------------------
    def with_horizon(self, days: int | None) -> Self:
        """This use case with its label horizon set to ``days`` (None keeps the default)."""
        if days is None or days == self.horizon_days:
            return self
        if days < 1:
            raise ValueError(f"the horizon must be at least 1 day, not {days}")
        other = copy.copy(self)
        other.horizon_days = int(days)
        return other

    def skip_reason(self, wh: Warehouse) -> str | None:
        """Why this use case cannot run on the warehouse's data, or None."""
        missing = [t for t in self.required_tables if not wh.exists(t)]
        if missing:
            return f"the data has no {', '.join(missing)} table(s)"
        empty = [t for t in self.required_tables if wh.sql(f'SELECT 1 FROM "{t}" LIMIT 1').empty]
        if empty:
            return f"the {', '.join(empty)} table(s) are empty"
        return None

    @staticmethod
    def has_delivery_dates(wh: Warehouse) -> bool:
        """Whether the orders record when they were delivered (imported data often does not)."""
        row = wh.con.execute("SELECT count(delivered_at) FROM orders").fetchone()
        return bool(row and row[0])

    def data_end(self, wh: Warehouse) -> datetime:
        """Midnight after the last order (:meth:`Warehouse.data_end`)."""
        return wh.data_end()

    def data_start(self, wh: Warehouse | None) -> datetime | None:
        """The day of the first order (None when the data has no orders)."""
        span = wh.order_span() if wh is not None else None
        if span is None:
            return None
        return datetime(span[0].year, span[0].month, span[0].day)

    def split(self, wh: Warehouse, end: datetime | None = None) -> SplitPlan:
        """The training split: the test window is the last label horizon before ``end`` (the
        end of the data by default), so the newest labels judge the model."""
        end = end or self.data_end(wh)
        return self.split_at(wh, end - timedelta(days=self.horizon_days), data_end=end)

    def split_at(
        self, wh: Warehouse | None, cutoff: datetime, *, data_end: datetime | None = None
    ) -> SplitPlan:
        """A split whose test rows are scored at ``cutoff`` and labelled over the horizon after
        it; training and validation use only what is known before ``cutoff``.

        Cutoffs walk back from ``cutoff`` one label horizon apart (validation, then training
        every ``train_step_days``); training cutoffs at or before the first order are left out.
        When the history before ``cutoff`` cannot hold two full label windows (training labels
        before validation, validation labels before the test cutoff) plus
        ``min_history_days``, a use case that extrapolates learns a shorter horizon; any other
        raises :class:`NotEnoughData` naming the horizon and the history available.
        """
        horizon = self.horizon_days
        start = self.data_start(wh)
        end = data_end or (self.data_end(wh) if wh is not None else cutoff)
        if cutoff + timedelta(days=horizon) > end:
            raise NotEnoughData(
                f"{self.name}: labels over {horizon} days after the cutoff {cutoff:%Y-%m-%d} "
                f"need data through {cutoff + timedelta(days=horizon - 1):%Y-%m-%d}; the data "
                f"ends {end - timedelta(days=1):%Y-%m-%d}"
            )
        train_h = horizon
        if start is not None:
            history = (cutoff - start).days
            if history < 2 * horizon + self.min_history_days:
                train_h = (history - self.min_history_days) // 2
                if not self.extrapolates_horizon or train_h < min(
                    horizon, self.min_train_horizon_days
                ):
                    raise NotEnoughData(self._short_history(cutoff, start, history))
        h = timedelta(days=train_h)
        valid = cutoff - h
        first = valid - h
        step = timedelta(days=self.train_step_days)
        train = tuple(
            sorted(
                c
                for c in (first - i * step for i in range(self.train_cutoffs))
                if start is None or c > start
            )
        )
        return SplitPlan(train, valid, cutoff, end, horizon, train_h)

    def _short_history(self, cutoff: datetime, start: datetime, history: int) -> str:
        need = 2 * self.horizon_days + self.min_history_days
        text = (
            f"{self.name}: a {self.horizon_days}-day horizon needs {need} days of history before "
            f"the cutoff {cutoff:%Y-%m-%d} (training labels, then validation labels, each "
            f"{self.horizon_days} days, after {self.min_history_days} days of history); the "
            f"data has {history} days (from {start:%Y-%m-%d})"
        )
        if self.extrapolates_horizon:
            return (
                f"{text}, too few to learn even a {self.min_train_horizon_days}-day horizon and "
                "extrapolate"
            )
        return f"{text}, and this use case cannot extrapolate from a shorter training horizon"

    def search_space(self, trial: optuna.Trial) -> dict[str, Any]:
        """Hyper-parameters to tune; an empty dict means nothing to tune."""
        return {}

    def default_params(self) -> dict[str, Any]:
        return {}

    def starting_params(self) -> list[dict[str, Any]]:
        """Parameter sets tuning tries first, in order, before its sampler explores (the
        defaults; a use case may add a second well-founded design, such as a recommender
        close to "buy again", and let the validation window choose)."""
        return [self.default_params()]

    @abstractmethod
    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        """Rows known at ``cutoff`` with features strictly before it, labels strictly after."""

    @abstractmethod
    def fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
    ) -> Scorer:
        """Fit the model; ``valid`` may be used for early stopping or calibration."""

    def final_fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
        *,
        as_of: datetime,
        **kwargs: Any,
    ) -> Scorer:
        """The model that is evaluated on the test window and registered.

        ``as_of`` is the test cutoff: a use case whose model state comes from data known at
        scoring time (interaction histories, say) may refresh it up to ``as_of``; nothing at or
        after it may be used. The default is :meth:`fit` on the training rows.

        The model must answer for ``self.horizon_days``. When the history was too short for
        full-horizon training labels (:attr:`extrapolates_horizon`), ``train`` and ``valid``
        are labelled over a shorter horizon, passed as ``label_horizon_days``: a use case that
        extrapolates overrides this to scale its answers from that horizon to its own.
        """
        label_horizon = kwargs.pop("label_horizon_days", None)
        if label_horizon is not None and label_horizon != self.horizon_days:
            raise NotEnoughData(
                f"{self.name} cannot answer for {self.horizon_days} days from a model fitted "
                f"on {label_horizon}-day labels"
            )
        return self.fit(wh, train, valid, params, seed, **kwargs)

    @abstractmethod
    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        """The simple model to beat, fitted on the same training rows.

        ``cutoff`` is the test cutoff: a baseline that learns from history alone (popularity,
        BG/NBD) may use everything known before it, as it would in production. Raises
        :class:`BaselineUnavailable` with the reason when it cannot be fitted on this data.
        """

    def baselines(
        self, wh: Warehouse, train: LabelledData, cutoff: datetime
    ) -> Mapping[str, Scorer | BaselineUnavailable]:
        """Every baseline to compare against, by short name; the first is the main one (the
        one :meth:`baseline` returns). Use cases with several classical baselines override
        this; a baseline that cannot be fitted is returned as the
        :class:`BaselineUnavailable` it raised (``{name: exc}``), so the training loop records
        it by name and judges the model on the others. If this method raises, the loop
        records the failure under ``"baseline"``."""
        return {"baseline": self.baseline(wh, train, cutoff)}

    def predict(self, scorer: Scorer, data: LabelledData) -> Predictions:
        """The scorer's answers on every row of ``data`` (the default: its numeric outputs)."""
        out = scorer.predict_matrix(scorer.to_matrix(data.frame))
        return Predictions.of_matrix(out, list(scorer.outputs))

    @abstractmethod
    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        """Metrics of these answers against the labels of ``data`` (row-aligned); the gate's
        metric among them. Pure: no model, no warehouse, so it can run on resampled rows."""

    def evaluate(self, scorer: Scorer, data: LabelledData) -> dict[str, float]:
        """Metrics of a scorer on a labelled dataset: :meth:`score` of :meth:`predict`."""
        return self.score(data, self.predict(scorer, data))

    def oracle_metrics(self, wh: Warehouse, data: LabelledData) -> dict[str, float] | None:
        """The same metrics scored with the simulator's truth, when the data has an oracle."""
        return None

    def plots(self, scorer: Scorer, data: LabelledData, outdir: Any) -> list[Any]:
        """Diagnostic figures written under ``outdir`` (paths returned)."""
        return []

    def monitored_metric(self) -> tuple[str, bool]:
        """The metric live performance is judged on, and whether higher is better."""
        spec = self.monitoring
        metric = spec.performance_metric or self.gate.metric
        if spec.higher_is_better is not None:
            return metric, spec.higher_is_better
        return metric, self.gate.higher_is_better

    def live_checks(self, live: LiveContext) -> list[LiveFigure]:
        """What monitoring watches in the served answers beyond drift and delayed-label
        performance (``shopml.usecases._live``: a recommender's coverage, a price's
        guardrails); none by default. Monitoring stores and shows the figures."""
        return []

    def arrivals(self, wh: Warehouse, start: datetime, end: datetime) -> pd.DataFrame | None:
        """The entities a shop scores between ``start`` and ``end``, as they come (one column,
        :attr:`key`): the traffic ``shopml replay`` sends. None (the default) means the use
        case's whole population, as a daily batch scores it: every row of its dataset on that
        day (the customers a value model rates). Use cases on orders, lines, campaigns,
        products or visitors say what arrives for them."""
        return None

    @staticmethod
    def active_customers(wh: Warehouse, start: datetime, end: datetime) -> pd.DataFrame:
        """Customers who were active between ``start`` and ``end`` (a web session or an
        order): who a shop answers online."""
        parts = [
            "SELECT customer_id FROM orders WHERE purchased_at >= $start AND purchased_at < $end"
        ]
        if wh.exists("web_events"):
            parts.append(
                "SELECT customer_id FROM web_events WHERE event_at >= $start AND event_at < $end "
                "AND customer_id IS NOT NULL"
            )
        sql = f"SELECT DISTINCT customer_id FROM ({' UNION ALL '.join(parts)}) ORDER BY 1"
        return wh.con.execute(sql, {"start": start, "end": end}).df()

    def input_example(self, data: LabelledData) -> pd.DataFrame:
        """A few rows of model input, for the registered model's signature and docs."""
        return data.frame[[*data.keys, *data.features]].head(5)
