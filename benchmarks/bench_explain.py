"""What an explanation costs: a predict answer with ``"explain": true`` beside the same answer
without, through the service's own answerer (validation of the raw JSON body, the model's
preallocated row, the prediction-log record), in one process so that only the model's work
differs.

The model is the serving benchmark's: a 200-tree LightGBM classifier on 20 features, served as
a shopml ``BoosterScorer``; its explanation is LightGBM's own TreeSHAP (``pred_contrib``).
Single-instance answers and batches of 100 are timed, best of several repeats (the least
disturbed run on a shared machine).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Result


def _timed(fn: Any, n: int, repeat: int = 5) -> float:
    """Best seconds per call of ``fn`` over ``repeat`` runs of ``n`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best


def run(quick: bool = False) -> Result:
    import numpy as np

    from benchmarks.bench_serving import N_FEATURES, N_TREES, _train
    from shopml.runtime.answers import InProcess
    from shopml.runtime.scorers import BoosterScorer
    from shopml.serving.models import LoadedModel, VersionInfo
    from shopml.usecases import get_usecase

    n = 300 if quick else 3000
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as tmp:
        clf, frame = _train(Path(tmp))
    scorer = BoosterScorer(
        features=list(frame.columns),
        outputs=["p_return"],
        models=[clf.booster_.model_to_string()],
        kind="probability",
    )
    uc = get_usecase("returns")  # its route's shape; the model is the benchmark's own
    model = LoadedModel(uc.name, scorer, VersionInfo("1"))
    ctx = InProcess(lambda name: model, time.time)
    schemas = uc.answer.schemas(uc, 1000)
    answer = uc.answer.answerer(uc, ctx, schemas)
    validate = schemas.adapter.validate_json
    row = {c: round(float(v), 4) for c, v in frame.iloc[7].items()}
    bodies = {
        "one": json.dumps({"features": row}).encode(),
        "one+explain": json.dumps({"features": row, "explain": True}).encode(),
        "batch": json.dumps({"instances": [{"features": row}] * 100}).encode(),
        "batch+explain": json.dumps(
            {"instances": [{"features": row}] * 100, "explain": True}
        ).encode(),
    }
    out = answer(validate(bodies["one+explain"]), "r")
    assert out["explanation"]["available"], out
    figures: dict[str, Any] = {"rows": n, "trees": N_TREES, "features": N_FEATURES}
    for name, raw in bodies.items():
        calls = n if name.startswith("one") else max(n // 50, 10)

        def call(raw: bytes = raw) -> None:
            answer(validate(raw), "r")
            ctx.records.clear()

        figures[name] = _timed(call, calls) * 1e6  # microseconds per answer
    x = scorer.row_matrix(row)
    booster = scorer.boosters[0]
    figures["predict_row_us"] = _timed(lambda: booster.predict(x, num_threads=1), n) * 1e6
    figures["contrib_row_us"] = (
        _timed(lambda: booster.predict(x, pred_contrib=True, num_threads=1), n) * 1e6
    )
    rows = np.repeat(x, 100, axis=0)
    figures["predict_100_us"] = _timed(lambda: booster.predict(rows, num_threads=1), 50) * 1e6
    figures["contrib_100_us"] = (
        _timed(lambda: booster.predict(rows, pred_contrib=True, num_threads=1), 50) * 1e6
    )
    one, one_x = figures["one"], figures["one+explain"]
    batch, batch_x = figures["batch"], figures["batch+explain"]
    table = [
        "| answer | plain µs | with `explain` µs | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| one instance (answerer: validate, score, record) | {one:,.0f} | {one_x:,.0f} | "
        f"{one_x / one:.1f}x |",
        f"| batch of 100 | {batch:,.0f} | {batch_x:,.0f} | {batch_x / batch:.1f}x |",
        f"| LightGBM alone, one row (`predict` vs `pred_contrib`) | "
        f"{figures['predict_row_us']:,.0f} | {figures['contrib_row_us']:,.0f} | "
        f"{figures['contrib_row_us'] / figures['predict_row_us']:.1f}x |",
        f"| LightGBM alone, 100 rows | {figures['predict_100_us']:,.0f} | "
        f"{figures['contrib_100_us']:,.0f} | "
        f"{figures['contrib_100_us'] / figures['predict_100_us']:.1f}x |",
    ]
    markdown = "\n".join(
        [
            f"Model: LightGBM classifier, {N_TREES} trees, {N_FEATURES} features; best of 5 "
            f"runs of {n:,} single answers ({max(n // 50, 10):,} batches); in one process, "
            "through the predict route's own answerer.",
            "",
            *table,
        ]
    )
    return Result("explain", "Explanations: what `explain` costs", markdown, figures)


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(run(quick="--quick" in sys.argv).markdown)
