"""DuckDB vs Spark (local) as the shop grows: customer features and batch scoring.

ShopSim shops of about 1M, 3M and 10M orders (``--quick``: about 100,000) are simulated once
and cached under ``benchmarks/.work/`` (the features benchmark's warehouse files). On each:

* **customer features**: shopml's one Ibis definition (:func:`shopml.features.customer_features`)
  at the same cutoff, run on DuckDB over the warehouse file and on Spark over the lake (the
  canonical tables as Parquet), to a pandas frame on the driver, as training takes it. The
  lake is published first and timed apart ("publish"): a Spark shop keeps its lake, it does
  not rebuild it per query. The two frames are checked equal before anything is reported.
* **batch scoring**: a LightGBM model on those features (fitted once, on a sample) scores
  every customer: on DuckDB's side chunk by chunk in this process, as ``shopml score`` does;
  on Spark's side with ``mapInPandas`` over the features as a Spark DataFrame, written as
  Parquet, as the engine's batch scoring does. Both outputs are checked equal.

Each measurement runs in a fresh process (so a JVM or a DuckDB buffer pool does not carry
over), and the peak memory is the largest resident set of that process and its children (the
JVM and Spark's Python workers) sampled every 0.2 s from /proc. Spark runs ``local[2]``: the
two cores of the machine the other benchmarks use. What Spark buys is not speed on one machine
but that the same job runs on a cluster when the data no longer fits one (docs/how-to/spark.md).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Result

WORK = ROOT / "benchmarks" / ".work"
CUTOFF = datetime(2024, 10, 2)
# Customers per target size: ShopSim's default shop places ~5.6 orders per customer in 730 days.
SIZES = {"1M": 180_000, "3M": 540_000, "10M": 1_800_000}
QUICK = {"0.1M": 18_000}
# ShopSim builds each shop a block of customers at a time, appending each block to the warehouse
# file as it is made, so the simulation's memory stays flat as the shop grows (a shop simulated
# whole took 12.8 GB at 3M orders, ~43 GB projected at 10M).
BLOCK_CUSTOMERS = 50_000
# Spark's local driver is the only executor: at 10M orders it collects ~1.5M customers' features
# (~500 MB) for pandas, too close to what a default 1 GB heap leaves, so every size runs with this
# (SHOPML_SPARK_CONF overrides it).
SPARK_CONF = {"spark.driver.memory": "4g"}


# -- measuring a child process -------------------------------------------------------------
def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every process below it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            pid, ppid = int(entry), int(fields[1])
            rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def measure(step: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``step`` in a fresh process; its result plus the peak memory of its process tree."""
    cmd = [sys.executable, "-m", "benchmarks.bench_engines", "--step", step, json.dumps(kwargs)]
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "SHOPML_SPARK_CONF": os.environ.get("SHOPML_SPARK_CONF", json.dumps(SPARK_CONF)),
    }
    load_before = round(os.getloadavg()[0], 1)  # the machine is shared: say how busy it was
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{step} failed:\n{err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["peak_mb"] = round(peak[0] / 2**20)
    # CPU seconds of the step (and of the children it waited for): on a busy machine the wall
    # clock says as much about the others' jobs as about this one.
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu_s"] = round(
        cpu.ru_utime + cpu.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime, 1
    )
    result["load_before"], result["load_after"] = load_before, round(os.getloadavg()[0], 1)
    # Each figure as it comes: a long run that fails late still leaves what it measured.
    print(f"  {step} {json.dumps(kwargs)}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


# -- the steps, each run in its own process ----------------------------------------------------
def _warehouse_path(customers: int, block_customers: int | None = BLOCK_CUSTOMERS) -> Path:
    from benchmarks.bench_features import sim_warehouse

    return sim_warehouse(customers, block_customers)


def step_simulate(customers: int, block_customers: int | None = BLOCK_CUSTOMERS) -> dict[str, Any]:
    """Simulate the shop into its warehouse file (``block_customers`` 0: whole, in memory, as
    before the simulator could work in blocks); nothing is timed when the file exists."""
    from benchmarks.bench_features import sim_path, sim_warehouse

    block = block_customers or None
    if sim_path(customers, block).exists():
        return {"cached": True}
    with timer_s() as elapsed:
        sim_warehouse(customers, block)
    return {"cached": False, "seconds": elapsed(), "block_customers": block}


def _spark_warehouse(customers: int) -> Any:
    from shopml.data.warehouse import Warehouse
    from shopml.settings import Settings

    home = WORK / f"engines-{customers}"
    settings = Settings(home=home, engine="spark", lake_uri=str(home / "lake"))
    return Warehouse(_warehouse_path(customers), read_only=True, engine="spark", settings=settings)


def _model_path(customers: int) -> Path:
    return WORK / f"engines-{customers}" / "model.txt"


def step_prepare(customers: int) -> dict[str, Any]:
    """Build the shop (cached), its versions, the lake, and the model scored later."""
    import lightgbm as lgb

    from shopml.data.warehouse import Warehouse
    from shopml.features import customer_features, to_frame

    path = _warehouse_path(customers)
    with Warehouse(path) as wh:
        if not wh.versions():
            wh.refresh()  # a bulk-loaded file: its data versions, for the lake
        orders = int(wh.sql("SELECT count(*) AS n FROM orders")["n"][0])
        feats = to_frame(customer_features(wh.ibis(), CUTOFF))
    model = _model_path(customers)
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        sample = feats.sample(min(len(feats), 20_000), random_state=0)
        x = sample[_features(sample)]
        y = (sample["orders_90d"] > 0).astype(int)  # a stand-in label: the timing is the point
        booster = lgb.train(
            {"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 1},
            lgb.Dataset(x.drop(columns=["orders_90d", "orders_30d", "spend_30d", "spend_90d"]), y),
            num_boost_round=100,
        )
        booster.save_model(str(model))
    with timer_s() as elapsed:
        _spark_warehouse(customers).spark_ibis()  # publishes the lake
    return {"orders": orders, "customers": len(feats), "publish_s": elapsed()}


def _features(df: Any) -> list[str]:
    return [c for c in df.columns if c != "customer_id"]


class timer_s:
    def __enter__(self) -> Callable[[], float]:
        self.start = time.perf_counter()
        self.end: float | None = None
        return lambda: round((self.end or time.perf_counter()) - self.start, 2)

    def __exit__(self, *exc: object) -> None:
        self.end = time.perf_counter()


def step_features(customers: int, engine: str) -> dict[str, Any]:
    from shopml.data.warehouse import Warehouse
    from shopml.features import customer_features, to_frame

    wh = (
        _spark_warehouse(customers)
        if engine == "spark"
        else Warehouse(_warehouse_path(customers), read_only=True)
    )
    backend = wh.ibis()  # the session started, the lake registered: not the query's cost
    with timer_s() as elapsed:
        df = to_frame(customer_features(backend, CUTOFF))
    df = df.sort_values("customer_id").reset_index(drop=True)
    df.to_parquet(WORK / f"engines-{customers}" / f"features-{engine}.parquet")
    return {
        "seconds": elapsed(),
        "rows": len(df),
        "driver_mb_per_million": round(df.memory_usage(deep=True).sum() / len(df) * 1e6 / 2**20),
    }


def step_score(customers: int, engine: str) -> dict[str, Any]:
    import lightgbm as lgb
    import pandas as pd

    from shopml.data.warehouse import Warehouse
    from shopml.features import customer_features, to_frame

    booster = lgb.Booster(model_file=str(_model_path(customers)))
    names = booster.feature_name()
    out = WORK / f"engines-{customers}" / f"scores-{engine}.parquet"
    if engine == "duckdb":
        wh = Warehouse(_warehouse_path(customers), read_only=True)
        feats = to_frame(customer_features(wh.ibis(), CUTOFF))
        with timer_s() as elapsed:
            parts = []
            for i in range(0, len(feats), 50_000):
                chunk = feats.iloc[i : i + 50_000]
                p = booster.predict(chunk[names].to_numpy(dtype="float64"), num_threads=2)
                parts.append(pd.DataFrame({"customer_id": chunk.customer_id.to_numpy(), "p": p}))
            pd.concat(parts).to_parquet(out)
    else:
        from shopml.data.spark import get_spark

        wh = _spark_warehouse(customers)
        backend = wh.ibis()
        spark = get_spark(wh.settings)
        model = booster.model_to_string()
        # The features first, as Parquet: what is timed is the scoring, as on DuckDB's side.
        features = str(WORK / f"engines-{customers}" / "features-spark-parts")
        spark.sql(backend.compile(customer_features(backend, CUTOFF))).write.mode(
            "overwrite"
        ).parquet(features)
        with timer_s() as elapsed:
            sdf = spark.read.parquet(features)

            def score(frames: Any) -> Any:
                b = lgb.Booster(model_str=model)
                for f in frames:
                    x = f[names].astype("float64").to_numpy()
                    yield pd.DataFrame(
                        {"customer_id": f.customer_id, "p": b.predict(x, num_threads=1)}
                    )

            sdf.mapInPandas(score, "customer_id string, p double").write.mode("overwrite").parquet(
                str(out)
            )
    return {"seconds": elapsed(), "rows": len(pd.read_parquet(out, columns=["customer_id"]))}


STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "simulate": step_simulate,
    "prepare": step_prepare,
    "features": step_features,
    "score": step_score,
}


# -- the benchmark ---------------------------------------------------------------------------
PLOT = ROOT / "docs" / "img" / "engines-cost.png"


def _row(label: str, fig: dict[str, Any]) -> str:
    prep, f, s = fig["prepare"], fig["features"], fig["score"]
    loads = [
        m[k] for w in (f, s) for m in w.values() for k in ("load_before", "load_after") if k in m
    ]
    load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"
    sim = fig.get("simulate") or {}
    cpu = f" ({sim['cpu_s']:.0f} s CPU)" if "cpu_s" in sim else ""
    simulated = (
        f"{sim['seconds']:.0f} s{cpu} / {sim['peak_mb']:,} MB"
        if "seconds" in sim
        else ("cached" if sim else "not recorded")
    )
    return (
        f"| {label} ({prep['orders']:,} orders, {prep['customers']:,} customers) "
        f"| {simulated} "
        f"| {f['duckdb']['seconds']:.1f} s / {f['duckdb']['peak_mb']:,} MB "
        f"| {f['spark']['seconds']:.1f} s / {f['spark']['peak_mb']:,} MB "
        f"| {f['spark']['seconds'] / f['duckdb']['seconds']:.1f}x "
        f"| {s['duckdb']['seconds']:.1f} s / {s['duckdb']['peak_mb']:,} MB "
        f"| {s['spark']['seconds']:.1f} s / {s['spark']['peak_mb']:,} MB "
        f"| {s['spark']['seconds'] / s['duckdb']['seconds']:.1f}x "
        f"| {prep['publish_s']:.0f} s "
        f"| {f['duckdb']['driver_mb_per_million']:,} MB "
        f"| {load} |"
    )


def markdown(figures: dict[str, Any]) -> str:
    """The results table (one row per shop size) and, when drawn, the cost-against-size plot."""
    header = (
        "| shop | ShopSim into the warehouse file | features, DuckDB | features, Spark local[2] "
        "| Spark / DuckDB "
        "| scoring, DuckDB | scoring, Spark local[2] | Spark / DuckDB | Spark start + lake publish "
        "| features on the driver per 1M customers | load average (1 min) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    md = header + "\n".join(_row(label, fig) for label, fig in figures.items())
    confs = {json.dumps(f["spark_conf"]) for f in figures.values() if "spark_conf" in f}
    blocks = {f["simulate"].get("block_customers") for f in figures.values() if "simulate" in f}
    if confs or blocks - {None}:
        md += "\n\nEach cell: seconds / peak resident memory of the process and its children."
    if blocks - {None}:
        md += (
            " ShopSim simulates the shop in blocks of "
            f"{', '.join(f'{b:,}' for b in sorted(blocks - {None}))} customers, "
            "each appended to the warehouse file as it is made."
        )
    built = sorted(
        {
            f["simulate"]["measured_at"]
            for f in figures.values()
            if "measured_at" in f.get("simulate", {})
        }
    )
    if built:
        md += (
            f" The ShopSim column is from the run that built the shops ({', '.join(built)}), "
            "the other columns from this run, on the same cached shops."
        )
    if confs:
        md += f" Spark settings (SHOPML_SPARK_CONF): `{', '.join(sorted(confs))}`."
    if PLOT.exists():
        md += "\n\n![Seconds and peak memory against orders, both engines](../img/engines-cost.png)"
    return md


def plot(figures: dict[str, Any], path: Path = PLOT) -> Path:
    """Seconds and peak memory against orders, per engine and task, on log-log axes."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(figures.values(), key=lambda f: f["prepare"]["orders"])
    orders = [f["prepare"]["orders"] / 1e6 for f in sizes]
    fig, (ax_s, ax_m) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    for task, style in (("features", "-"), ("score", "--")):
        for engine, colour in (("duckdb", "tab:orange"), ("spark", "tab:blue")):
            label = f"{engine}, {'features' if task == 'features' else 'scoring'}"
            secs = [f[task][engine]["seconds"] for f in sizes]
            mem = [f[task][engine]["peak_mb"] / 1024 for f in sizes]
            ax_s.plot(orders, secs, style, marker="o", color=colour, label=label)
            ax_m.plot(orders, mem, style, marker="o", color=colour, label=label)
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for ax, title in ((ax_s, "seconds"), (ax_m, "peak memory, GiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(orders, [f"{o:.1f}" for o in orders])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        low, high = ax.get_ylim()
        if high / low < 10:  # under a decade: every minor tick labelled
            ax.yaxis.set_minor_formatter(plain)
        elif high / low < 100:  # up to two: 2 and 5 of each decade labelled
            ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(10, subs=(2.0, 5.0)))
            ax.yaxis.set_minor_formatter(plain)
        else:
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("orders (millions)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_s.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run(quick: bool = False, sizes: dict[str, int] | None = None) -> Result:
    # BENCH_ENGINES_SIZES="1M=180000,3M=540000": the sizes to run (label=customers).
    chosen = os.environ.get("BENCH_ENGINES_SIZES")
    if sizes is None and chosen:
        sizes = {k: int(v) for k, v in (p.split("=") for p in chosen.split(","))}
    sizes = sizes or (QUICK if quick else SIZES)
    figures: dict[str, Any] = {}
    for label, customers in sizes.items():
        sim = measure("simulate", customers=customers)
        prep = measure("prepare", customers=customers)
        fig: dict[str, Any] = {"simulate": sim, "prepare": prep, "spark_conf": SPARK_CONF}
        for what in ("features", "score"):
            per = {e: measure(what, customers=customers, engine=e) for e in ("duckdb", "spark")}
            _check_same(what, customers, per)
            fig[what] = per
        figures[label] = fig
    if not quick and len(figures) > 1:
        plot(figures)
    return Result(
        "engines", "DuckDB vs Spark local: seconds and peak memory", markdown(figures), figures
    )


def _check_same(what: str, customers: int, per: dict[str, dict[str, Any]]) -> None:
    """The engines' outputs agree (floats to 1e-9 relative: sums may add up in another order)."""
    import pandas as pd

    folder = WORK / f"engines-{customers}"
    if what == "features":
        pd.testing.assert_frame_equal(
            pd.read_parquet(folder / "features-duckdb.parquet"),
            pd.read_parquet(folder / "features-spark.parquet"),
            check_exact=False,
            rtol=1e-9,
            atol=1e-9,
        )
        return
    a, b = (
        pd.read_parquet(folder / f"scores-{e}.parquet").sort_values("customer_id")
        for e in ("duckdb", "spark")
    )
    assert len(a) == len(b) == per["duckdb"]["rows"]
    assert (a.customer_id.to_numpy() == b.customer_id.to_numpy()).all()
    assert abs(a.p.to_numpy() - b.p.to_numpy()).max() < 1e-9


def _main() -> None:
    if sys.argv[1:] == ["--plot"]:  # redraw the plot and the tables from the saved figures
        from benchmarks.common import RESULTS, save

        saved = json.loads((RESULTS / "engines.json").read_text())
        plot(saved["figures"])
        result = Result(saved["name"], saved["title"], markdown(saved["figures"]), saved["figures"])
        result.measured_at, result.machine = saved["measured_at"], saved["machine"]
        save(result)
        return
    if len(sys.argv) >= 3 and sys.argv[1] == "--step":
        step = sys.argv[2]
        kwargs = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
        print(json.dumps(STEPS[step](**kwargs)), flush=True)


if __name__ == "__main__":
    _main()
