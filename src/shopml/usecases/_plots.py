"""Diagnostic figures logged with every run (matplotlib, written to files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def importance(values: Mapping[str, float], path: Path, top: int = 20) -> Path:
    plt = _plt()
    items = sorted(values.items(), key=lambda kv: kv[1])[-top:]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#3b6ea5")
    ax.set_xlabel("share of total gain")
    ax.set_title("Feature importance")
    return _save(fig, path)


def calibration(y: np.ndarray, p: np.ndarray, path: Path, bins: int = 10) -> Path:
    plt = _plt()
    order = np.argsort(p)
    chunks = [c for c in np.array_split(order, bins) if len(c)]
    mp = [p[c].mean() for c in chunks]
    my = [y[c].mean() for c in chunks]
    fig, ax = plt.subplots(figsize=(5, 5))
    top = max(*mp, *my) * 1.05 or 1.0
    ax.plot([0, top], [0, top], "--", color="grey", label="perfect")
    ax.plot(mp, my, "o-", label="model")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_title("Calibration (equal-count bins)")
    ax.legend()
    return _save(fig, path)


def lift(y: np.ndarray, p: np.ndarray, path: Path, bins: int = 10) -> Path:
    plt = _plt()
    order = np.argsort(-p)
    chunks = [c for c in np.array_split(order, bins) if len(c)]
    base = y.mean() or 1.0
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(range(1, len(chunks) + 1), [y[c].mean() / base for c in chunks], color="#3b6ea5")
    ax.axhline(1.0, color="grey", linestyle="--")
    ax.set_xlabel("decile by score (1 = highest)")
    ax.set_ylabel("lift over average")
    ax.set_title("Lift by decile")
    return _save(fig, path)


def residuals(y: np.ndarray, pred: np.ndarray, path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].scatter(pred, y, s=4, alpha=0.3)
    lim = float(np.nanpercentile(np.concatenate([y, pred]), 99.5))
    axes[0].plot([0, lim], [0, lim], "--", color="grey")
    axes[0].set_xlabel("predicted")
    axes[0].set_ylabel("actual")
    axes[1].hist(y - pred, bins=50, color="#3b6ea5")
    axes[1].set_xlabel("actual - predicted")
    fig.suptitle("Residuals")
    return _save(fig, path)


def quantile_coverage(
    y: np.ndarray, upper: np.ndarray, target: float, path: Path, bins: int = 10
) -> Path:
    """Share of outcomes at or below a predicted upper quantile, per bin of that prediction:
    a well-calibrated quantile stays near ``target`` for short and long predictions alike."""
    plt = _plt()
    order = np.argsort(upper)
    chunks = [c for c in np.array_split(order, bins) if len(c)]
    mid = [float(np.median(upper[c])) for c in chunks]
    cov = [float((y[c] <= upper[c]).mean()) for c in chunks]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(mid, cov, "o-", label="observed coverage")
    ax.axhline(target, color="grey", linestyle="--", label=f"target {target:g}")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("predicted upper quantile (median of bin)")
    ax.set_ylabel("share at or below it")
    ax.set_title("Coverage of the upper quantile (equal-count bins)")
    ax.legend()
    return _save(fig, path)


def elasticities(
    values: Mapping[str, float],
    path: Path,
    pooled: float | None = None,
    truth: Mapping[str, float] | None = None,
) -> Path:
    """Estimated price elasticity per group (e.g. category), with the pooled value and, on
    simulated data, the true average elasticity of each group."""
    plt = _plt()
    names = list(values)
    pos = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    ax.barh(pos, [values[n] for n in names], color="#3b6ea5", label="estimated")
    if truth:
        ax.scatter(
            [truth.get(n, np.nan) for n in names],
            pos,
            color="#c0392b",
            zorder=3,
            label="true (mean)",
        )
    if pooled is not None:
        ax.axvline(pooled, color="grey", linestyle="--", label=f"pooled {pooled:.2f}")
    ax.axvline(-1.0, color="black", linewidth=0.8)
    ax.set_yticks(pos)
    ax.set_yticklabels(names)
    ax.set_xlabel("elasticity (d log units / d log price); left of -1: cuts raise revenue")
    ax.set_title("Price elasticity")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def qini(y: np.ndarray, treated: np.ndarray, uplift: np.ndarray, path: Path) -> Path:
    """Qini curve: incremental responses when targeting the top of the uplift ranking, against
    random targeting (the straight line)."""
    plt = _plt()
    y = np.asarray(y, dtype="float64")
    t = np.asarray(treated, dtype=bool)
    order = np.argsort(-np.asarray(uplift, dtype="float64"), kind="mergesort")
    y, t = y[order], t[order]
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    with np.errstate(divide="ignore", invalid="ignore"):
        curve = np.cumsum(y * t) - np.where(n_c > 0, np.cumsum(y * ~t) * n_t / n_c, 0.0)
    share = np.arange(1, len(y) + 1) / max(len(y), 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(share, curve, label="model")
    ax.plot([0, 1], [0, curve[-1] if len(curve) else 0], "--", color="grey", label="random")
    ax.set_xlabel("share targeted (by predicted uplift)")
    ax.set_ylabel("incremental responses")
    ax.set_title("Qini curve")
    ax.legend()
    return _save(fig, path)


def bars(values: Mapping[str, float], path: Path, title: str, xlabel: str) -> Path:
    """Horizontal bars, one per label, in the given order (top to bottom)."""
    plt = _plt()
    items = list(values.items())[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.4))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#3b6ea5")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _save(fig, path)


def binary_diagnostics(
    y: np.ndarray, p: np.ndarray, meta: dict[str, Any], outdir: Path
) -> list[Path]:
    """Calibration and lift of a probability, plus feature importance when the model has it."""
    out = [calibration(y, p, outdir / "calibration.png"), lift(y, p, outdir / "lift.png")]
    if "feature_importance" in meta:
        out.append(importance(meta["feature_importance"], outdir / "feature_importance.png"))
    return out
