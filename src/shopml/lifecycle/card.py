"""A model card per registered version: what it predicts, on which data, how well (against its
baselines and, on simulated data, the truth), where it is calibrated, how it does by slice, what
the gate decided and why, and what it cannot be trusted for.

:func:`build_card` makes it at registration from what the training has in hand (the test
rows, the answers every contender gave on them, the bootstrap behind the gate's intervals, the
gate's decision); :func:`log_card` stores it on the version's run as ``model_card.md`` and
``model_card.json``; :func:`load_card` reads it back for ``shopml card USECASE VERSION``.

Slices are found by column, so one piece of code serves every use case: a product category
(``category``), a region (``customer_region``, ``region``, ``customer_state``) and new versus
returning customers (``frequency_orders``: no order before the cutoff is new). A slice with
fewer than :data:`MIN_SLICE` rows is named, not judged.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shopml.lifecycle.intervals import Interval, bootstrap

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from shopml.lifecycle.gate import GateDecision
    from shopml.lifecycle.intervals import Bootstrap
    from shopml.usecases.base import LabelledData, Predictions, SplitPlan, UseCase

CARD_MD = "model_card.md"
CARD_JSON = "model_card.json"
MIN_SLICE = 30  # rows a slice needs before its metric is shown
SLICE_LEVELS = 6  # the most frequent levels of a slice column; the rest pooled as "other"
SLICE_DRAWS = 100
SLICE_BUDGET_S = 3.0  # seconds of slice resampling at registration; then point estimates
CATEGORY = ("category", "product_category")
REGION = ("customer_region", "region", "customer_state")
ORDERS_BEFORE = ("frequency_orders",)


class CardError(LookupError):
    """No card for this version (an unknown version, or one registered before cards)."""


@dataclass
class SliceFigure:
    slice: str  # category | region | customers
    level: str
    rows: int
    metric: str
    value: dict[str, Any] | None  # the interval, None when the slice is too small


@dataclass
class ModelCard:
    usecase: str
    version: str
    question: str
    entity: str
    kind: str
    outputs: list[str]
    metric: str
    higher_is_better: bool
    data: dict[str, Any]
    metrics: dict[str, dict[str, Any]]  # the model's, with intervals
    baselines: dict[str, dict[str, Any]]  # name -> decisive metric's interval
    differences: dict[str, dict[str, Any]]  # model minus each baseline, paired
    oracle: dict[str, float] | None
    calibration: dict[str, Any] | None
    slices: list[SliceFigure] = field(default_factory=list)
    gate: dict[str, Any] = field(default_factory=dict)
    limits: list[str] = field(default_factory=list)
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    def markdown(self) -> str:
        return render(self.to_dict())


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# -- building it --------------------------------------------------------------------------------
def build_card(
    uc: UseCase,
    version: str,
    outputs: list[str],
    data: LabelledData,
    answers: Predictions,
    boot: Bootstrap,
    decision: GateDecision,
    plan: SplitPlan,
    *,
    dataset_version: str,
    data_source: str,
    rows: dict[str, int],
    oracle: dict[str, float] | None,
    unavailable: dict[str, str],
    model: str = "model",
    baseline_prefix: str = "baseline.",
    seed: int = 0,
) -> ModelCard:
    """The card of a version from its training's test rows, answers and gate decision."""
    metric = uc.gate.metric
    model_ivs = {k: v.to_dict() for k, v in boot.intervals(model).items()}
    baselines: dict[str, dict[str, Any]] = {}
    differences: dict[str, dict[str, Any]] = {}
    for name in boot.names():
        if name.startswith(baseline_prefix):
            short = name.removeprefix(baseline_prefix)
            baselines[short] = boot.interval(name, metric).to_dict()
            differences[short] = boot.difference(model, name, metric).to_dict()
    card = ModelCard(
        usecase=uc.name,
        version=str(version),
        question=uc.question,
        entity=uc.entity,
        kind=uc.kind,
        outputs=list(outputs),
        metric=metric,
        higher_is_better=uc.gate.higher_is_better,
        data={
            "dataset_version": dataset_version,
            "source": data_source,
            "training_cutoffs": [
                plan.train_cutoffs[0].isoformat(),
                plan.train_cutoffs[-1].isoformat(),
            ]
            if plan.train_cutoffs
            else [],
            "validation_cutoff": plan.valid_cutoff.isoformat(),
            "test_cutoff": plan.test_cutoff.isoformat(),
            "data_end": plan.data_end.isoformat(),
            "horizon_days": plan.horizon_days,
            "train_horizon_days": plan.train_horizon_days,
            "rows": dict(rows),
            "test_units": boot.n,
        },
        metrics=model_ivs,
        baselines=baselines,
        differences=differences,
        oracle=oracle,
        calibration=calibration(uc, data, answers),
        gate={
            "verdict": decision.verdict,
            "reasons": list(decision.reasons),
            "champion_version": decision.champion_version,
        },
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    card.slices = slices(uc, data, answers, seed=seed)
    card.limits = limits(card, unavailable)
    return card


def calibration(uc: UseCase, data: LabelledData, answers: Predictions) -> dict[str, Any] | None:
    """Predicted against observed by decile of the first output: for a probability, the
    observed rate and the expected calibration error; for an amount, the ratio of the means.
    None when the first label is not a number the first output predicts (a segment, a list)."""
    if not data.labels or not len(data) or uc.kind not in ("binary", "regression"):
        return None
    try:
        p = answers.column(0)
        y = pd.to_numeric(data.y, errors="coerce").to_numpy(dtype="float64")
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    ok = np.isfinite(p) & np.isfinite(y)
    if ok.sum() < MIN_SLICE:
        return None
    p, y = p[ok], y[ok]
    edges = np.unique(np.quantile(p, np.linspace(0, 1, 11)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    bins = []
    for b in range(max(len(edges) - 1, 1)):
        sel = which == b
        if sel.any():
            bins.append(
                {
                    "rows": int(sel.sum()),
                    "predicted": float(p[sel].mean()),
                    "observed": float(y[sel].mean()),
                }
            )
    out: dict[str, Any] = {"output": answers.values.columns[0], "bins": bins}
    if uc.kind == "binary":
        out["ece"] = float(
            sum(b["rows"] * abs(b["predicted"] - b["observed"]) for b in bins) / len(p)
        )
    else:
        out["mean_ratio"] = float(p.mean() / y.mean()) if y.mean() else None
    return out


def _slice_columns(frame: pd.DataFrame) -> dict[str, pd.Series]:
    found: dict[str, pd.Series] = {}
    for name, candidates in (("category", CATEGORY), ("region", REGION)):
        column = next((c for c in candidates if c in frame.columns), None)
        if column is not None:
            values = frame[column].astype("string").fillna("unknown")
            top = values.value_counts().index[:SLICE_LEVELS]
            found[name] = values.where(values.isin(top), "other")
    orders = next((c for c in ORDERS_BEFORE if c in frame.columns), None)
    if orders is not None:
        before = pd.to_numeric(frame[orders], errors="coerce").fillna(0)
        found["customers"] = pd.Series(np.where(before > 0, "returning", "new"), index=frame.index)
    return found


def slices(
    uc: UseCase, data: LabelledData, answers: Predictions, *, seed: int = 0
) -> list[SliceFigure]:
    """The decisive metric per level of each slice column the test rows have, with its
    interval (point estimates once :data:`SLICE_BUDGET_S` is spent)."""
    metric = uc.gate.metric
    out: list[SliceFigure] = []
    deadline = time.perf_counter() + SLICE_BUDGET_S
    for name, levels in _slice_columns(data.frame).items():
        for level, index in levels.groupby(levels, sort=True).groups.items():
            rows = np.asarray(data.frame.index.get_indexer(index))
            if len(rows) < MIN_SLICE:
                out.append(SliceFigure(name, str(level), len(rows), metric, None))
                continue
            part, got = data.take(rows), answers.take(rows)
            draws = SLICE_DRAWS if time.perf_counter() < deadline else 0
            try:
                iv = bootstrap(uc, part, {"model": got}, draws=draws, seed=seed).interval(
                    "model", metric
                )
            except (ValueError, ZeroDivisionError, FloatingPointError, IndexError):
                iv = Interval(math.nan, math.nan, math.nan, 0, len(rows))
            value = iv.to_dict() if math.isfinite(iv.estimate) else None
            out.append(SliceFigure(name, str(level), len(rows), metric, value))
    return out


def limits(card: ModelCard, unavailable: dict[str, str]) -> list[str]:
    """What the card's own figures say the model cannot be trusted for."""
    out = []
    m = card.metrics.get(card.metric) or {}
    if m.get("low") is not None and m.get("high") is not None:
        out.append(
            f"{card.metric} is known to +-{(m['high'] - m['low']) / 2:.3g} on "
            f"{card.data['test_units']:,} test units: differences smaller than that are not shown "
            "by this test window"
        )
    out.append(
        f"trained on data up to {card.data['data_end'][:10]}: a shop that changed since then "
        "(prices, carriers, catalogue) is outside what it has seen; monitoring watches for it"
    )
    for name, why in unavailable.items():
        out.append(f"baseline {name} could not be compared: {why}")
    small = [f"{s.slice}={s.level} ({s.rows} rows)" for s in card.slices if s.value is None]
    if small:
        out.append(f"too few test rows to judge: {', '.join(small[:8])}")
    weak = [
        s
        for s in card.slices
        if s.value
        and m.get("estimate") is not None
        and s.value.get("high") is not None
        and (
            s.value["high"] < m["estimate"]
            if card.higher_is_better
            else s.value["low"] > m["estimate"]
        )
    ]
    for s in weak:
        v = s.value or {}
        out.append(
            f"worse on {s.slice}={s.level}: {s.metric} {v['estimate']:.3g} "
            f"[{v['low']:.3g}, {v['high']:.3g}] against {m['estimate']:.3g} overall"
        )
    if card.data["source"] == "simulator":
        out.append("trained and tested on simulated data: real shops differ")
    if card.calibration and card.calibration.get("ece", 0) > 0.05:
        out.append(
            f"probabilities off by {card.calibration['ece']:.3f} on average (ECE): rank with them, "
            "do not read them as rates"
        )
    return out


# -- storing and reading it ---------------------------------------------------------------------
def log_card(card: ModelCard) -> None:
    """Write the card as Markdown and JSON artifacts of the active MLflow run."""
    import mlflow

    mlflow.log_text(card.markdown(), CARD_MD)
    mlflow.log_dict(card.to_dict(), CARD_JSON)


def load_card(client: MlflowClient, usecase: str, version: str) -> dict[str, Any]:
    """The card stored with a registered version (``CardError`` naming why there is none)."""
    from mlflow.exceptions import MlflowException

    from shopml.lifecycle.tracking import model_name

    name = model_name(usecase)
    version = str(version).removeprefix("v")
    try:
        mv = client.get_model_version(name, version)
    except MlflowException:
        raise CardError(f"{name} has no version {version}; see `shopml models`") from None
    if not mv.run_id:
        raise CardError(f"{name} v{version} has no training run to hold a card")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path=CARD_JSON, dst_path=tmp
            )
            return dict(json.loads(Path(path).read_text()))
    except (MlflowException, OSError, ValueError):
        raise CardError(
            f"{name} v{version} has no model card (registered before cards were made)"
        ) from None


# -- rendering ----------------------------------------------------------------------------------
def _iv(d: dict[str, Any] | None) -> str:
    if not d or d.get("estimate") is None:
        return "n/a"
    if d.get("low") is None or d.get("high") is None:
        return f"{d['estimate']:.4g}"
    return f"{d['estimate']:.4g} [{d['low']:.4g}, {d['high']:.4g}]"


def render(card: dict[str, Any]) -> str:
    """The card as Markdown."""
    d = card["data"]
    lines = [
        f"# Model card: shopml-{card['usecase']} v{card['version']}",
        "",
        f"**What it predicts.** {card['question']} One answer per {card['entity']} "
        f"({card['kind']}; outputs {', '.join(card['outputs'])}).",
        "",
        "## Data",
        "",
        f"- dataset version `{d['dataset_version']}` ({d['source']}), data up to "
        f"{d['data_end'][:10]}",
        f"- training cutoffs {' to '.join(c[:10] for c in d['training_cutoffs'])}, validation "
        f"{d['validation_cutoff'][:10]}, test {d['test_cutoff'][:10]} (labels over "
        f"{d['horizon_days']} days)",
        f"- rows: {', '.join(f'{k} {v:,}' for k, v in d['rows'].items())}; "
        f"{d['test_units']:,} independent test units",
        "",
        "## How well (test window, 95% intervals)",
        "",
        "| metric | model |",
        "| --- | ---: |",
        *[f"| {k} | {_iv(v)} |" for k, v in card["metrics"].items()],
        "",
    ]
    if card["baselines"]:
        lines += [
            f"| baseline | {card['metric']} | model minus baseline (paired) |",
            "| --- | ---: | ---: |",
            *[
                f"| {k} | {_iv(v)} | {_iv(card['differences'].get(k))} |"
                for k, v in card["baselines"].items()
            ],
            "",
        ]
    if card.get("oracle"):
        truth = card["oracle"].get(card["metric"])
        lines += [f"The truth (the simulator's oracle) scores {card['metric']} {truth:.4g}.", ""]
    cal = card.get("calibration")
    lines += ["## Calibration", ""]
    if cal:
        summary = (
            f"expected calibration error {cal['ece']:.4f}"
            if "ece" in cal
            else f"mean predicted / mean observed {cal.get('mean_ratio') or float('nan'):.3f}"
        )
        lines += [
            f"{cal['output']} by decile: {summary}.",
            "",
            "| rows | predicted | observed |",
            "| ---: | ---: | ---: |",
            *[
                f"| {b['rows']:,} | {b['predicted']:.4g} | {b['observed']:.4g} |"
                for b in cal["bins"]
            ],
            "",
        ]
    else:
        lines += ["Does not apply to this kind of answer.", ""]
    lines += ["## Slices", ""]
    if card["slices"]:
        lines += [
            f"| slice | level | rows | {card['metric']} |",
            "| --- | --- | ---: | ---: |",
            *[
                f"| {s['slice']} | {s['level']} | {s['rows']:,} | "
                f"{_iv(s['value']) if s['value'] else 'too few rows'} |"
                for s in card["slices"]
            ],
            "",
        ]
    else:
        lines += ["The test rows have no category, region or customer-history column.", ""]
    g = card["gate"]
    lines += [
        "## Gate",
        "",
        f"**{g['verdict']}**"
        + (f" (against champion v{g['champion_version']})" if g.get("champion_version") else ""),
        "",
        *[f"- {r}" for r in g["reasons"]],
        "",
        "## Known limits",
        "",
        *[f"- {x}" for x in card["limits"]],
        "",
    ]
    return "\n".join(lines)
