"""The ``shopml`` command line: thin, it parses, calls the layer below and prints.

Every command that prints a table accepts ``--json``. Errors a user can cause end with one line
on stderr naming what and where, and exit code 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="shopml",
    help="MLOps for e-commerce: simulate or import a shop, then train, track, gate, serve and "
    "watch its models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ingest_app = typer.Typer(
    help="Import a real dataset into the warehouse (replaces the current one, or adds to it "
    "with --append)."
)
app.add_typer(ingest_app, name="ingest")

console = Console()
# The tuning budget's time limit: with one, a loaded machine completes fewer trials than an idle
# one and may choose other parameters; 0 leaves the trials alone to bound the search.
TIMEOUT_HELP = "Tuning seconds (0: no limit, the trials alone bound it: reproducible)."
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _use_engine(value: str | None) -> str | None:
    """``--engine``: the engine for this command and everything it starts (SHOPML_ENGINE)."""
    if value is None:
        return None
    import os

    from shopml.settings import reset_settings

    if value not in ("duckdb", "spark"):
        raise typer.BadParameter(f"choose duckdb or spark, not {value!r}")
    os.environ["SHOPML_ENGINE"] = value
    reset_settings()
    return value


EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="duckdb or spark: where features, datasets and batch scores are computed "
        "(default SHOPML_ENGINE, else duckdb; docs/how-to/spark.md).",
        callback=_use_engine,
        is_eager=True,
    ),
]


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from shopml.data.contracts import ContractError
    from shopml.data.lake import LakeError
    from shopml.data.spark import EngineError
    from shopml.data.warehouse import WarehouseError
    from shopml.lifecycle.registry import RegistryError
    from shopml.settings import SettingsError

    errors: list[type[BaseException]] = [
        UserError,
        ContractError,
        WarehouseError,
        EngineError,
        LakeError,
        SettingsError,
        RegistryError,
    ]
    try:
        from shopml.data.importers import ImportFormatError

        errors.append(ImportFormatError)
    except ImportError:  # pragma: no cover - importers are part of the package
        pass
    return tuple(errors)


def _jsonable(value: Any) -> Any:  # noqa: PLR0911 - one return per kind of value
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(value), indent=2, default=str) + "\n")


def _settings() -> Any:
    from shopml.settings import get_settings

    return get_settings()


def _warehouse(read_only: bool = False) -> Any:
    from shopml.data.warehouse import Warehouse

    return Warehouse.open(_settings(), read_only=read_only)


@contextmanager
def _progress(description: str, quiet: bool = False) -> Iterator[Callable[[str, float], None]]:
    """A Rich progress bar driven by ``update(stage, fraction)`` callbacks."""
    if quiet:
        yield lambda stage, fraction: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=1.0)

        def update(stage: str, fraction: float) -> None:
            bar.update(
                task, completed=min(max(fraction, 0.0), 1.0), description=f"{description}: {stage}"
            )

        yield update


def _parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option} expects a date as YYYY-MM-DD, got {value!r}") from None


def _parse_datetime(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise UserError(
            f"{option} expects a date or time as YYYY-MM-DD[THH:MM], got {value!r}"
        ) from None


# -- data ------------------------------------------------------------------------------------
def _print_report(report: Any, as_json: bool, title: str) -> None:
    """A write's reconciliation. Per table: read = canonical + set aside, and canonical =
    accepted + repaired + quarantined; the JSON carries every term, so it balances by itself."""
    if as_json:
        print_json(report)
        return
    table = Table(title=title)
    for col in ("table", "read", "set aside", "accepted", "repaired", "quarantined", "version"):
        table.add_column(col, justify="left" if col in ("table", "version") else "right")
    for t in report.tables:
        table.add_row(
            t.table,
            f"{t.rows_read:,}",
            f"{t.rows_set_aside:,}" if t.rows_set_aside else "",
            f"{t.rows_accepted:,}",
            f"{t.rows_repaired:,}" if t.rows_repaired else "",
            f"{t.rows_quarantined:,}",
            t.version,
        )
    console.print(table)
    reasons = (
        [(t.table, rule, n) for t in report.tables for rule, n in sorted(t.by_rule.items())]
        + [
            (t.table, f"repaired (field nulled): {rule}", n)
            for t in report.tables
            for rule, n in sorted(t.repaired_by_rule.items())
        ]
        + [
            (name, f"set aside: {reason}", n)
            for name, reasons_ in sorted(report.set_aside.items())
            for reason, n in sorted(reasons_.items())
        ]
    )
    if reasons:
        why = Table(title="Rows not accepted as given, by rule")
        for col in ("table", "rule", "rows"):
            why.add_column(col, justify="right" if col == "rows" else "left")
        for name, rule, n in reasons:
            why.add_row(name, rule, f"{n:,}")
        console.print(why)
    if report.removed:
        console.print(f"Removed tables of the previous dataset: {', '.join(report.removed)}")


@app.command()
def simulate(
    customers: Annotated[int, typer.Option(min=10, help="Number of customers.")] = 20_000,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2023-01-01",
    days: Annotated[int, typer.Option(min=30, help="Number of days to simulate.")] = 730,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same shop.")] = 42,
    scenario: Annotated[
        str, typer.Option(help="World change from --scenario-start on; see `shopml scenarios`.")
    ] = "none",
    scenario_start: Annotated[
        str | None,
        typer.Option(help="When the scenario starts (default: three quarters of the way)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate a shop (ShopSim) and load it into the warehouse, replacing the current data."""
    from shopml.data.scenarios import SCENARIOS
    from shopml.data.simulator import SimConfig
    from shopml.data.simulator import simulate as run_simulation

    if scenario not in SCENARIOS:
        raise UserError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
    config = SimConfig(
        customers=customers,
        start=_parse_date(start, "--start") or date(2023, 1, 1),
        days=days,
        seed=seed,
        scenario=scenario,
        scenario_start=_parse_date(scenario_start, "--scenario-start"),
    )
    with _progress("Simulating", quiet=as_json) as update:
        dataset = run_simulation(config, progress=update)
        update("loading into the warehouse", 0.99)
        with _warehouse() as wh:
            report = dataset.load(wh)
    _print_report(report, as_json, f"Simulated shop (seed {seed}, scenario {scenario})")


@app.command()
def scenarios(as_json: JsonOpt = False) -> None:
    """List the simulator's scenarios."""
    from shopml.data.scenarios import SCENARIOS

    rows = [{"name": name, "description": s.description} for name, s in SCENARIOS.items()]
    if as_json:
        print_json(rows)
        return
    table = Table(title="Scenarios")
    table.add_column("name")
    table.add_column("what changes")
    for r in rows:
        table.add_row(r["name"], r["description"])
    console.print(table)


AppendOpt = Annotated[
    bool,
    typer.Option(
        "--append",
        help="Add these rows to the current data (replacing rows with the same keys) instead "
        "of replacing the dataset: an incremental load, e.g. a day of orders.",
    ),
]


def _ingest(kind: str, path: Path, as_json: bool, append: bool = False) -> None:
    from shopml.data.importers import IMPORTERS

    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    with _progress(f"Importing {kind}", quiet=as_json) as update:
        update("reading", 0.1)
        try:
            dataset = IMPORTERS[kind](path)
        except (EOFError, OSError, zlib.error) as exc:
            # The importers name what they know; an unreadable input they did not foresee still
            # gets one line (click would take an EOFError for Ctrl-D and print "aborted").
            raise UserError(f"{path} cannot be read: {exc or type(exc).__name__}") from None
        update("validating and loading", 0.6)
        with _warehouse() as wh:
            report = dataset.load(wh, mode="upsert" if append else "dataset")
    verb = "Appended" if append else "Imported"
    _print_report(report, as_json, f"{verb} {kind} from {path}")


@ingest_app.command("olist")
def ingest_olist(
    directory: Annotated[Path, typer.Argument(help="Folder with the nine Olist CSVs.")],
    as_json: JsonOpt = False,
    append: AppendOpt = False,
) -> None:
    """Import the Olist Brazilian e-commerce dataset (the nine Kaggle CSVs)."""
    _ingest("olist", directory, as_json, append)


@ingest_app.command("online-retail")
def ingest_online_retail(
    file: Annotated[Path, typer.Argument(help="CSV, gzip CSV, XLSX or Parquet.")],
    as_json: JsonOpt = False,
    append: AppendOpt = False,
) -> None:
    """Import Online Retail (II) invoice lines; cancellations become returns."""
    _ingest("online-retail", file, as_json, append)


@ingest_app.command("cdnow")
def ingest_cdnow(
    file: Annotated[Path, typer.Argument(help="CDNOW master or sample text file.")],
    as_json: JsonOpt = False,
    append: AppendOpt = False,
) -> None:
    """Import the CDNOW purchase history (master or sample layout, with or without header)."""
    _ingest("cdnow", file, as_json, append)


@ingest_app.command("canonical")
def ingest_canonical(
    path: Annotated[
        Path,
        typer.Argument(
            help="A folder of files named after canonical tables (customers.csv, "
            "orders.jsonl, order_items.parquet, ...), or one such file."
        ),
    ],
    as_json: JsonOpt = False,
    append: AppendOpt = False,
) -> None:
    """Import shopml's own format: one CSV, JSON-lines or Parquet file per canonical table."""
    _ingest("canonical", path, as_json, append)


@app.command()
def tables(
    as_json: JsonOpt = False,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="First recompute id keys and data versions (after editing tables with SQL).",
        ),
    ] = False,
) -> None:
    """Row counts, data versions and quarantine counts of the warehouse's tables."""
    if refresh:
        _warehouse(read_only=True).close()  # one clear error if there is no warehouse yet
        with _warehouse(read_only=False) as wh:
            wh.refresh()
    with _warehouse(read_only=True) as wh:
        info = wh.info()
        source = wh.get_meta("source")
        dataset_version = wh.dataset_version()
    if as_json:
        print_json({"source": source, "dataset_version": dataset_version, "tables": info})
        return
    table = Table(title=f"Warehouse ({source or 'empty'}; dataset version {dataset_version})")
    for col in ("table", "rows", "quarantined", "repaired", "version", "written at"):
        table.add_column(
            col, justify="right" if col in ("rows", "quarantined", "repaired") else "left"
        )
    for t in info:
        name = f"{t.table} [dim](oracle)[/dim]" if t.oracle else t.table
        table.add_row(
            name,
            f"{t.rows:,}",
            f"{t.quarantined:,}",
            f"{t.repaired:,}",
            t.version or "",
            t.written_at.strftime("%Y-%m-%d %H:%M") if t.written_at else "",
        )
    console.print(table)


@app.command()
def quarantine(
    table: Annotated[str | None, typer.Argument(help="Only this table.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Rows that broke a contract, with the rules they broke."""
    from shopml.data.contracts import get_contract

    if table is not None:
        get_contract(table)
    with _warehouse(read_only=True) as wh:
        q = wh.quarantine(table)
    counts = (
        q.groupby(["table_name", "rules"]).size().reset_index(name="rows")
        if len(q)
        else q.assign(rows=0)[["table_name", "rules", "rows"]]
    )
    if as_json:
        print_json(
            {
                "counts": counts.to_dict(orient="records"),
                "rows": [
                    {"table": r.table_name, "rules": r.rules, "row": json.loads(r.row_json)}
                    for r in q.head(limit).itertuples()
                ],
            }
        )
        return
    summary = Table(title="Quarantine: rows by rule")
    for col in ("table", "rules", "rows"):
        summary.add_column(col, justify="right" if col == "rows" else "left")
    for r in counts.itertuples():
        summary.add_row(r.table_name, r.rules, f"{r.rows:,}")
    console.print(summary)
    if len(q):
        sample = Table(title=f"First {min(limit, len(q))} quarantined rows")
        sample.add_column("table")
        sample.add_column("rules")
        sample.add_column("row", overflow="fold")
        for r in q.head(limit).itertuples():
            sample.add_row(r.table_name, r.rules, r.row_json)
        console.print(sample)


@app.command()
def repairs(
    table: Annotated[str | None, typer.Argument(help="Only this table.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Fields nulled on import because they contradicted their row (the row was kept)."""
    from shopml.data.contracts import get_contract

    if table is not None:
        get_contract(table)
    with _warehouse(read_only=True) as wh:
        r = wh.repairs(table)
    counts = (
        r.groupby(["table_name", "column_name", "rule"]).size().reset_index(name="rows")
        if len(r)
        else _empty_repair_counts()
    )
    if as_json:
        print_json(
            {
                "counts": counts.to_dict(orient="records"),
                "rows": [
                    {
                        "table": x.table_name,
                        "key": json.loads(x.row_key),
                        "column": x.column_name,
                        "rule": x.rule,
                        "original": x.original,
                    }
                    for x in r.head(limit).itertuples()
                ],
            }
        )
        return
    summary = Table(title="Repairs: fields nulled, rows kept")
    for col in ("table", "column", "rule", "rows"):
        summary.add_column(col, justify="right" if col == "rows" else "left")
    for c in counts.itertuples():
        summary.add_row(c.table_name, c.column_name, c.rule, f"{c.rows:,}")
    console.print(summary)
    if len(r):
        sample = Table(title=f"First {min(limit, len(r))} repaired fields")
        for col in ("table", "key", "column", "original"):
            sample.add_column(col, overflow="fold")
        for x in r.head(limit).itertuples():
            sample.add_row(x.table_name, x.row_key, x.column_name, x.original or "")
        console.print(sample)


def _empty_repair_counts() -> Any:
    """An empty repairs summary with its columns."""
    import pandas as pd

    return pd.DataFrame({"table_name": [], "column_name": [], "rule": [], "rows": []})


def _default_cutoff(wh: Any) -> datetime:
    wh.require("orders")
    if wh.order_span() is None:
        raise UserError("the orders table is empty; nothing to build features from")
    end: datetime = wh.data_end()
    return end


def _feature_summary(wh: Any, cutoff: datetime, entities: list[str]) -> list[dict[str, Any]]:
    from shopml.features import FEATURE_SETS, build_features

    rows = []
    for entity in entities:
        df = build_features(wh, cutoff, entity)
        numeric = df.select_dtypes("number")
        rows.append(
            {
                "entity": entity,
                "rows": len(df),
                "columns": len(df.columns),
                "null_share": float(df.isna().mean().mean()) if len(df) else 0.0,
                "numeric_columns": list(numeric.columns),
                "description": FEATURE_SETS[entity].description,
            }
        )
    return rows


@app.command()
def features(
    entity: Annotated[str | None, typer.Argument(help="Feature set (default: all).")] = None,
    cutoff: Annotated[
        str | None,
        typer.Option(
            help="Use only what was known before this time (default: the day after the last order)."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write the feature table (parquet or csv).")
    ] = None,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build point-in-time features at a cutoff and summarise them (or write them to a file)."""
    from shopml.features import FEATURE_SETS, build_features

    if entity is not None and entity not in FEATURE_SETS:
        raise UserError(f"unknown feature set {entity!r}; choose one of: {', '.join(FEATURE_SETS)}")
    if output is not None and entity is None:
        raise UserError("--output needs a single feature set, e.g. `shopml features customers`")
    with _warehouse(read_only=True) as wh:
        at = _parse_datetime(cutoff, "--cutoff") or _default_cutoff(wh)
        if output is not None:
            assert entity is not None
            df = build_features(wh, at, entity)
            _write_frame(df, output)
            console.print(f"Wrote {len(df):,} rows of {entity} features at {at} to {output}")
            return
        rows = _feature_summary(wh, at, [entity] if entity else list(FEATURE_SETS))
    _print_feature_summary(rows, at, as_json)


def _print_feature_summary(rows: list[dict[str, Any]], at: datetime, as_json: bool) -> None:
    if as_json:
        print_json({"cutoff": at, "feature_sets": rows})
        return
    table = Table(title=f"Point-in-time features at {at:%Y-%m-%d %H:%M}")
    for col in ("feature set", "rows", "columns", "null share", "what"):
        table.add_column(
            col, justify="right" if col in ("rows", "columns", "null share") else "left"
        )
    for r in rows:
        table.add_row(
            r["entity"],
            f"{r['rows']:,}",
            str(r["columns"]),
            f"{r['null_share']:.1%}",
            r["description"],
        )
    console.print(table)


def _write_frame(df: Any, output: Path) -> None:
    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise UserError(f"{output}: output must end in .parquet or .csv")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    if suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    tmp.replace(output)  # atomic: readers see the old file or the new one


@app.command()
def config(as_json: JsonOpt = False) -> None:
    """Show the effective configuration (secrets masked)."""
    s = _settings()
    values = {
        "env": s.env,
        "home": str(s.home),
        "warehouse": str(s.warehouse),
        "landing": str(s.landing),
        "tracking_uri": s.tracking_uri,
        "artifact_root": s.artifact_root,
        "api_keys": f"{len(s.api_keys)} configured",
        "admin_keys": f"{len(s.admin_keys)} configured",
    }
    if as_json:
        print_json(values)
        return
    table = Table(title="Configuration")
    table.add_column("setting")
    table.add_column("value")
    for k, v in values.items():
        table.add_row(k, v)
    console.print(table)


@app.command()
def doctor(
    timeout: Annotated[
        float, typer.Option(min=0.5, max=60, help="Seconds each server has to answer.")
    ] = 5.0,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the active configuration: every store reachable, credentials accepted, versions
    compatible. One line per component; exit 1 when one fails."""
    import time

    from shopml.doctor import Check, diagnose, healthy
    from shopml.settings import SettingsError, get_settings

    started = time.perf_counter()
    try:
        checks = diagnose(get_settings(), timeout=timeout)
    except SettingsError as exc:
        checks = [Check("settings", "fail", "SHOPML_* / shopml.toml", str(exc))]
    if as_json:
        print_json(
            {
                "healthy": healthy(checks),
                "seconds": round(time.perf_counter() - started, 2),
                "checks": [c.to_dict() for c in checks],
            }
        )
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
        width = max(len(c.component) for c in checks)
        for c in checks:
            console.print(
                f"[{colour[c.status]}]{c.status:<4}[/{colour[c.status]}]  "
                f"{c.component:<{width}}  {c.target}  {c.detail}",
                highlight=False,
                soft_wrap=True,
            )
        failed = [c.component for c in checks if c.status == "fail"]
        console.print(
            f"{len(checks) - len(failed)} of {len(checks)} components usable"
            + (f"; failing: {', '.join(failed)}" if failed else "")
            + f" ({time.perf_counter() - started:.1f} s)",
            highlight=False,
            soft_wrap=True,
        )
    if not healthy(checks):
        raise typer.Exit(1)


# -- models ----------------------------------------------------------------------------------
def _usecase_names(names: list[str] | None, all_: bool) -> list[str]:
    from shopml.usecases import get_usecases, select_usecases

    if not all_ and not names:
        raise UserError(
            "name the use cases to train, or pass --all; known: " + ", ".join(get_usecases())
        )
    try:
        return select_usecases(None if all_ else names)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _fmt_metric(value: Any) -> str:
    if value is None:
        return ""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "" if math.isnan(f) else f"{f:.4g}"  # NaN prints as blank


@app.command()
def train(
    usecases: Annotated[list[str] | None, typer.Argument(help="Use cases to train.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Train every use case.")] = False,
    trials: Annotated[int, typer.Option(min=0, help="Tuning trials per use case.")] = 8,
    timeout: Annotated[float, typer.Option(min=0, help=TIMEOUT_HELP)] = 45.0,
    force: Annotated[
        bool, typer.Option(help="Train even if this data and config were trained already.")
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Train as if today were this date (YYYY-MM-DD): the split ends there and "
            "nothing later is used. For replays of the past.",
        ),
    ] = None,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train, evaluate, register and gate use cases on the warehouse's data."""
    from shopml.lifecycle.train import TrainConfig, train_usecase
    from shopml.usecases import get_usecase

    names = _usecase_names(usecases, all_)
    settings = _settings()
    config = TrainConfig(
        trials=trials,
        timeout_s=timeout,
        seed=settings.seed,
        force=force,
        as_of=_parse_datetime(as_of, "--as-of"),
    )
    results = []
    with _warehouse() as wh, _progress("Training", quiet=as_json) as update:
        for i, name in enumerate(names):

            def say(msg: str, i: int = i) -> None:
                update(msg, i / len(names))

            results.append(train_usecase(get_usecase(name), wh, settings, config, say))
    _print_train_results(results, as_json)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


@app.command()
def backtest(
    usecase: Annotated[str, typer.Argument(help="Use case to backtest.")],
    cutoff: Annotated[
        list[str],
        typer.Option(
            "--cutoff",
            help="Train strictly before this date (YYYY-MM-DD) and judge over the horizon "
            "after it; repeat for a rolling-origin backtest.",
        ),
    ],
    horizon: Annotated[
        int | None,
        typer.Option(min=1, help="Label horizon in days (default: the use case's own)."),
    ] = None,
    trials: Annotated[int, typer.Option(min=0, help="Tuning trials per cutoff.")] = 8,
    timeout: Annotated[float, typer.Option(min=0, help=TIMEOUT_HELP)] = 45.0,
    draws: Annotated[int, typer.Option(min=10, help="Bootstrap resamples per interval.")] = 400,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Backtest a use case at past cutoffs against every baseline, with 95% intervals.

    Logs to the MLflow experiment shopml-<usecase>-backtest; registers nothing and never
    touches the champion or challenger.
    """
    from shopml.lifecycle.backtest import backtest as run_backtest
    from shopml.lifecycle.train import TrainConfig
    from shopml.usecases import get_usecase

    _usecase_names([usecase], False)
    cutoffs = [c for c in (_parse_datetime(v, "--cutoff") for v in cutoff) if c is not None]
    if not cutoffs:
        raise UserError("give at least one --cutoff YYYY-MM-DD")
    settings = _settings()
    config = TrainConfig(
        trials=trials, timeout_s=timeout, seed=settings.seed, register=False, draws=draws
    )
    with _warehouse(read_only=True) as wh, _progress("Backtesting", quiet=as_json) as update:
        done = [0]

        def say(msg: str) -> None:
            update(msg, done[0] / len(cutoffs))
            if "bootstrap" in msg:
                done[0] += 1

        result = run_backtest(
            get_usecase(usecase),
            wh,
            sorted(cutoffs),
            horizon_days=horizon,
            config=config,
            settings=settings,
            progress=say,
        )
    if as_json:
        print_json(result.to_dict())
    else:
        _print_backtest(result)
    if not result.completed:
        reasons = "; ".join(sorted({o.reason for o in result.origins}))
        raise UserError(f"no cutoff could be backtested: {reasons}")


def _print_backtest(result: Any) -> None:
    """One table per cutoff (every answer, every metric with its interval), the paired
    differences on the decisive metric, and a summary over the cutoffs."""
    m = result.metric
    better = "higher" if result.higher_is_better else "lower"
    for o in result.origins:
        if o.status != "ok":
            style = "yellow" if o.status == "skipped" else "red"
            console.print(
                f"[{style}]{result.usecase} at {o.cutoff:%Y-%m-%d}: {o.status}[/{style}]: "
                f"{o.reason}",
                highlight=False,
            )
            continue
        horizon = f"{o.horizon_days} days"
        if o.train_horizon_days != o.horizon_days:
            horizon += f" (trained on {o.train_horizon_days}-day labels, extrapolated)"
        table = Table(
            title=f"{result.usecase}: cutoff {o.cutoff:%Y-%m-%d}, horizon {horizon}, "
            f"{o.n:,} {o.unit} on test (95% intervals, {o.draws} resamples)"
        )
        answers = [("model", o.model), *o.baselines.items()]
        table.add_column("metric")
        for answer, _ in answers:
            table.add_column(answer, justify="right")
        for name in o.model:
            table.add_row(
                name + (" (decides)" if name == m else ""),
                *(_fmt_iv(values.get(name)) for _, values in answers),
            )
        console.print(table)
        for name, diff in o.differences.items():
            verdict = o.verdict(name, result.higher_is_better)
            console.print(
                f"  model - {name} on {m} ({better} is better): {_fmt_iv(diff)} -> {verdict}",
                highlight=False,
            )
        for name, why in o.unavailable.items():
            console.print(f"  [yellow]baseline {name} unavailable[/yellow]: {why}", highlight=False)
    if len(result.origins) > 1 and result.completed:
        table = Table(title=f"{result.usecase}: over {len(result.completed)} cutoffs ({m})")
        for col in ("baseline", "cutoffs", "model better", "model worse", "unclear", "mean diff"):
            table.add_column(col, justify="left" if col == "baseline" else "right")
        for c in result.comparisons():
            table.add_row(
                c.baseline,
                str(c.origins),
                str(c.better),
                str(c.worse),
                str(c.unclear),
                _fmt_metric(c.mean_difference),
            )
        console.print(table)
        console.print(
            f"mean {m} of the model over the cutoffs: {_fmt_metric(result.mean('model'))}"
        )
    if result.experiment:
        console.print(f"[dim]MLflow experiment {result.experiment}, run {result.run_id}[/dim]")


def _fmt_iv(interval: Any) -> str:
    """``estimate [low, high]`` of an Interval (estimate alone when it has no interval)."""
    if interval is None:
        return ""
    text = _fmt_metric(interval.estimate)
    if interval.defined:
        text += f" [{_fmt_metric(interval.low)}, {_fmt_metric(interval.high)}]"
    return text


def _print_train_results(results: list[Any], as_json: bool) -> None:
    if as_json:
        print_json([r.to_dict() for r in results])
        return
    table = Table(title="Training")
    right = ("model", "95% interval", "n", "baseline", "oracle", "s")
    for col in (
        "use case",
        "status",
        "version",
        "metric",
        "model",
        "95% interval",
        "n",
        "baseline",
        "oracle",
        "s",
    ):
        table.add_column(col, justify="right" if col in right else "left")
    for r in results:
        m = r.metric
        decision = r.decision or {}
        table.add_row(
            r.usecase,
            r.status,
            r.version or "",
            m or "",
            _fmt_metric(r.metrics.get(m) if m else None),
            _fmt_interval((decision.get("intervals") or {}).get(m) if m else None),
            str(decision["n"]) if decision.get("n") is not None else "",
            _fmt_metric(r.baseline.get(m) if m else None),
            _fmt_metric((r.oracle or {}).get(m) if m else None),
            f"{r.seconds:.0f}",
        )
    console.print(table)
    for r in results:
        if r.reason:
            style = {"failed": "red", "skipped": "yellow"}.get(r.status, "dim")
            console.print(f"[{style}]{r.usecase}[/{style}]: {r.reason}", highlight=False)
        for name, why in (r.unavailable or {}).items():
            console.print(
                f"[yellow]{r.usecase}[/yellow]: baseline {name} unavailable: {why}",
                highlight=False,
            )
        for line in r.cleaned or []:
            console.print(f"[dim]{r.usecase}: {line}[/dim]", highlight=False)


def _fmt_interval(interval: dict[str, Any] | None) -> str:
    """``[low, high]`` of an interval record, blank without one."""
    if not interval or interval.get("low") is None or interval.get("high") is None:
        return ""
    return f"[{_fmt_metric(interval['low'])}, {_fmt_metric(interval['high'])}]"


def _client() -> Any:
    from shopml.lifecycle.tracking import configure

    return configure(_settings())


@app.command()
def models(as_json: JsonOpt = False) -> None:
    """Champion and challenger per use case: versions, metrics, when and on which data."""
    from shopml.lifecycle.registry import describe
    from shopml.usecases import get_usecases

    client = _client()
    summaries = [describe(client, name) for name in get_usecases()]
    if as_json:
        print_json(summaries)
        return
    table = Table(title="Models")
    for col in (
        "use case",
        "alias",
        "version",
        "metric",
        "value",
        "95% interval",
        "n",
        "trained",
        "test cutoff",
        "data",
        "gate",
        "rollout",
    ):
        table.add_column(col, justify="right" if col in ("value", "95% interval", "n") else "left")
    for s in summaries:
        uc_metric = _gate_metric(s.usecase)
        shown = False
        for alias, v in (("champion", s.champion), ("challenger", s.challenger)):
            if v is None:
                continue
            shown = True
            table.add_row(
                s.usecase,
                alias,
                v.version,
                uc_metric,
                _fmt_metric(v.metrics.get(uc_metric)),
                _fmt_interval(v.interval),
                f"{v.n} {v.unit or ''}".strip() if v.n is not None else "",
                v.created_at,
                (v.cutoff or "")[:10],
                v.dataset_version or "",
                v.verdict or "",
                _rollout_cell(s.rollout) if alias == "challenger" or not s.challenger else "",
            )
        if not shown:
            table.add_row(
                s.usecase,
                "",
                "",
                uc_metric,
                "",
                "",
                "",
                "",
                "",
                "",
                "not trained" if not s.versions else "no alias",
                "",
            )
    console.print(table)


def _rollout_cell(recorded: dict[str, Any] | None) -> str:
    """The rollout mode, and how the last one ended when it is off."""
    from shopml.runtime.rollout import Rollout

    if not recorded:
        return ""
    state = Rollout(**{k: v for k, v in recorded.items() if k in Rollout.__dataclass_fields__})
    if state.mode == "off" and state.reason:
        return f"off ({state.reason})"
    return state.describe()


def _gate_metric(usecase: str) -> str:
    from shopml.usecases import get_usecase

    return get_usecase(usecase).gate.metric


@app.command()
def promote(
    usecase: Annotated[str, typer.Argument(help="Use case.")],
    version: Annotated[str, typer.Argument(help="Model version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded on the version).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Make a version champion regardless of the gate (an explicit, recorded override)."""
    from shopml.lifecycle.registry import promote as do_promote

    _usecase_names([usecase], False)
    previous = do_promote(_client(), usecase, version, reason)
    out = {"usecase": usecase, "champion": version, "previous": previous, "manual": True}
    if as_json:
        print_json(out)
    else:
        console.print(
            f"{usecase}: champion is now v{version} (was "
            f"{'v' + previous if previous else 'none'}); recorded as a manual override"
        )


@app.command()
def rollback(
    usecase: Annotated[str, typer.Argument(help="Use case.")],
    as_json: JsonOpt = False,
) -> None:
    """Move the champion back to the previous champion."""
    from shopml.lifecycle.registry import rollback as do_rollback

    _usecase_names([usecase], False)
    old, new = do_rollback(_client(), usecase)
    if as_json:
        print_json({"usecase": usecase, "from": old, "to": new})
    else:
        console.print(f"{usecase}: champion rolled back from v{old} to v{new}")


# -- rollout (shadow, canary, A/B of the challenger) ------------------------------------------
@app.command()
def rollout(
    usecase: Annotated[str, typer.Argument(help="Use case.")],
    mode: Annotated[
        str | None,
        typer.Argument(help="off, shadow, canary or ab; leave out to show the current mode."),
    ] = None,
    share: Annotated[
        float | None,
        typer.Option(help="Share of entities the challenger answers (canary 0.1, ab 0.5)."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded with the mode).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Show or set how the challenger meets live traffic: shadow (scored, logged, never
    returned), canary or ab (a sticky share of entities answered by it), or off. Recorded in
    the registry: every serving worker follows within one poll."""
    from shopml.lifecycle.rollout import current, set_mode

    _usecase_names([usecase], False)
    client = _client()
    if mode is None:
        if share is not None:
            raise UserError("--share needs a mode (canary or ab)")
        state = current(client, usecase, _settings())
    else:
        state = set_mode(client, usecase, mode, share, reason=reason)
    out = {"usecase": usecase, **state.to_dict()}
    if as_json:
        print_json(out)
        return
    against = f" (challenger v{state.challenger})" if state.challenger else ""
    origin = "configured" if state.source == "config" else f"set {state.set_at or ''}".strip()
    console.print(f"{usecase}: rollout {state.describe()}{against}; {origin}")


@app.command()
def card(
    usecase: Annotated[str, typer.Argument(help="Use case.")],
    version: Annotated[str, typer.Argument(help="Registered version (3 or v3).")],
    as_json: JsonOpt = False,
) -> None:
    """A version's model card: what it predicts, data and periods, metrics against baselines
    (and the truth on simulated data) with intervals, calibration, slices, the gate's decision
    and known limits. Made at registration; also in MLflow as model_card.md on the run."""
    from shopml.lifecycle.card import CardError, load_card, render

    _usecase_names([usecase], False)
    try:
        found = load_card(_client(), usecase, version)
    except CardError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(found)
    else:
        sys.stdout.write(render(found))


# Defaults for `shopml run`: a budget that keeps the whole run within 5 minutes on a shared
# 2-core machine (see the pipeline benchmark); `shopml train` keeps the full TrainConfig budget.
RUN_TRIALS = 3
RUN_TIMEOUT_S = 15.0


@app.command()
def run(
    customers: Annotated[int, typer.Option(min=10, help="Customers to simulate.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    trials: Annotated[int, typer.Option(min=0, help="Tuning trials per use case.")] = RUN_TRIALS,
    timeout: Annotated[float, typer.Option(min=0, help=TIMEOUT_HELP)] = RUN_TIMEOUT_S,
    source: Annotated[
        str, typer.Option(help="simulate (ShopSim) or warehouse (the data loaded last).")
    ] = "simulate",
    usecase: Annotated[
        list[str] | None, typer.Option(help="Only these use cases (repeatable).")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Redo every step even when its inputs are unchanged.")
    ] = False,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The main job: the `pipeline` flow in-process (Prefect's ephemeral mode, no server).

    Simulate a shop (or use the warehouse), validate, build features, train, gate and promote
    every use case, materialise online features, batch-score the champions and write the
    monitoring report. Steps whose inputs are unchanged since the last run are skipped.
    """
    import os

    if source not in ("simulate", "warehouse"):
        raise UserError(f"--source must be simulate or warehouse, got {source!r}")
    if usecase:
        _usecase_names(usecase, False)
    # Prefect's own INFO lines would fight with the progress bar; warnings still show.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from shopml.flows import listen, pipeline
    from shopml.flows.tasks import DataInvalid

    with _progress("Pipeline", quiet=as_json) as update:
        last = [0.0]

        def on_progress(stage: str, fraction: float | None) -> None:
            if fraction is not None:
                last[0] = fraction
            update(stage, last[0])

        update("starting Prefect (ephemeral)", 0.0)
        try:
            with listen(on_progress):
                summary = pipeline(
                    source=source,
                    customers=customers,
                    seed=seed,
                    trials=trials,
                    timeout_s=timeout,
                    usecases=usecase,
                    force=force,
                )
        except DataInvalid as exc:
            raise UserError(str(exc)) from None
    if as_json:
        print_json(summary.to_dict())
    else:
        _print_pipeline_summary(summary)
    if summary.failed:
        raise typer.Exit(1)


def _print_pipeline_summary(summary: Any) -> None:
    data = summary.data
    what = (
        f"simulated {data.get('customers', 0):,} customers (seed {data.get('seed')})"
        if data.get("source") == "simulator"
        else f"the warehouse ({summary.validation.get('source')})"
    )
    loaded = "loaded" if data.get("loaded") else "unchanged, not reloaded"
    console.print(
        f"Data: {what}, {loaded}; dataset version "
        f"{summary.validation.get('dataset_version')}, data end "
        f"{str(summary.validation.get('data_end', ''))[:10]}",
        highlight=False,
    )
    table = Table(title="Pipeline")
    for col in (
        "use case",
        "this run",
        "trained",
        "champion",
        "metric",
        "champion value",
        "baseline",
        "scored rows",
    ):
        table.add_column(
            col, justify="right" if col in ("champion value", "baseline", "scored rows") else "left"
        )
    styles = {"failed": "red", "skipped": "yellow", "promoted": "green"}
    for u in summary.usecases:
        status = u.status + (" (cached)" if u.cached else "")
        style = styles.get(u.status, "")
        table.add_row(
            u.usecase,
            f"[{style}]{status}[/{style}]" if style else status,
            f"v{u.version}" if u.version else "",
            f"v{u.champion_version}" if u.champion_version else "none",
            u.metric or "",
            _fmt_metric(u.champion_metric),
            _fmt_metric(u.baseline_metric),
            f"{u.scored_rows:,}" if u.scored_rows is not None else "",
        )
    console.print(table)
    for u in summary.usecases:
        if u.status in ("failed", "skipped") or u.score_error:
            style = styles.get(u.status, "yellow")
            why = u.reason if u.status in ("failed", "skipped") else f"scoring: {u.score_error}"
            console.print(f"[{style}]{u.usecase}[/{style}]: {why}", highlight=False)
    online = ", ".join(f"{o['entity']} {o['rows']:,}" for o in summary.online)
    steps = summary.next_steps
    console.print(
        f"\nOnline features: {online or 'none'}\n"
        f"Batch scores: {steps.get('scores')}\n"
        f"Monitoring report: {summary.monitoring.get('latest', 'none')}\n"
        f"\nNext: `{steps.get('models')}` (champions and challengers)\n"
        f"      `{steps.get('mlflow_ui')}` (runs, metrics, plots)\n"
        f"      reports in {steps.get('reports')}\n"
        f"      API: {steps.get('api')}",
        highlight=False,
    )


@app.command()
def deploy(
    trials: Annotated[int, typer.Option(min=0, help="Tuning trials per use case.")] = 8,
    timeout: Annotated[float, typer.Option(min=0, help=TIMEOUT_HELP)] = 45.0,
    usecase: Annotated[
        list[str] | None,
        typer.Option(help="Only these use cases in the pipeline, monitor and ingest (repeatable)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or update the Prefect deployments (pipeline, retrain, monitor, ingest) on the
    server named by PREFECT_API_URL, with their schedules and the landing trigger."""
    from shopml.flows.deploy import NoPrefectServer, deploy_all

    names = _usecase_names(usecase, False) if usecase else None
    settings = _settings()
    try:
        deployed = deploy_all(settings, trials=trials, timeout_s=timeout, usecases=names)
    except NoPrefectServer as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(deployed)
        return
    table = Table(title=f"Deployments (work pool {settings.work_pool})")
    for col in ("deployment", "schedule", "trigger", "id"):
        table.add_column(col)
    for d in deployed:
        table.add_row(d.name, d.schedule, d.trigger, d.deployment_id)
    console.print(table)
    console.print(
        "Run them with `shopml worker`; drop files into "
        f"{settings.landing_s3_prefix or settings.landing} to trigger an ingest.",
        highlight=False,
    )


@app.command()
def worker(
    watch: Annotated[
        bool, typer.Option(help="Also watch the landing location and emit an event per new file.")
    ] = True,
) -> None:
    """Run the deployments: a Prefect process worker for the work pool, plus the landing
    watcher that turns new files into `shopml.landing.file` events. Stop with Ctrl-C."""
    import logging

    from shopml.flows.deploy import NoPrefectServer, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings()
    try:
        code = run_worker(settings, watch_landing=watch)
    except NoPrefectServer as exc:
        raise UserError(str(exc)) from None
    raise typer.Exit(code)


# -- serving (issue 5: `serve` and `score`; owned by the serving work) -------------------------
METRICS_PREFIX = "prometheus-"


def _is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (127.0.0.0/8, ::1)."""
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server worker processes.")] = 1,
    access_log: Annotated[
        bool,
        typer.Option(
            help="Log every request line (keys are never logged; metrics count requests anyway)."
        ),
    ] = False,
    insecure_dev: Annotated[
        bool,
        typer.Option(
            "--insecure-dev",
            help="Serve without API keys (open mode; loopback only). For your own machine.",
        ),
    ] = False,
    max_body: Annotated[
        str | None,
        typer.Option(
            "--max-body",
            help="Largest request body: bytes, or 512k, 4m (default SHOPML_SERVE_MAX_BODY_BYTES, "
            "1m); larger ones are answered 413 as they stream in.",
        ),
    ] = None,
) -> None:
    """Serve every use case's champion over HTTP (FastAPI; docs at /docs).

    Needs an API key (SHOPML_API_KEYS) unless --insecure-dev (or SHOPML_ENV=development) opts
    into open mode, which binds to loopback only.
    """
    import os
    import shutil

    import uvicorn

    from shopml.api import create_app as create_api
    from shopml.lifeline import SUPERVISOR_ENV, owned_dir, remove_stale_dirs
    from shopml.serving import ServingConfigError
    from shopml.settings import reset_settings

    if insecure_dev:
        os.environ["SHOPML_INSECURE_DEV"] = "1"  # the workers read their settings again
        reset_settings()
    if max_body is not None:
        os.environ["SHOPML_SERVE_MAX_BODY_BYTES"] = max_body  # checked by _settings() below
        reset_settings()
    settings = _settings()
    try:  # fail here, with one line, rather than in every worker
        create_api(settings)
    except ServingConfigError as exc:
        raise UserError(str(exc)) from None
    if not settings.api_keys and not settings.admin_keys and not _is_loopback(host):
        raise UserError(
            f"open mode (no API key) serves on loopback only, not --host {host}: use --host "
            "127.0.0.1, or set SHOPML_API_KEYS=<key> to serve on other interfaces"
        )
    # Metrics folders are named after the service that owns them: a killed one's goes here.
    remove_stale_dirs(settings.home, METRICS_PREFIX)
    shared = None
    if workers > 1:
        # The workers' shared folder: reloads reach them all (serving.swap), and unless the
        # environment names another, each writes its metric samples there so /metrics adds
        # them all up.
        shared = owned_dir(settings.home, METRICS_PREFIX)
        os.environ["SHOPML_SERVE_SHARED_DIR"] = str(shared)
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(shared))
    if workers > 1:
        # Workers shut down if this process is killed (they would keep serving, orphaned).
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
    from shopml.serving.models import fail_fast_registry

    fail_fast_registry()  # this process and its workers only serve: registry calls fail fast
    console.print(
        f"serving on http://{host}:{port} ({workers} worker(s)); docs at /docs", highlight=False
    )
    from shopml.serving.http import MAX_HEAD_BYTES, PROTOCOL, log_config

    try:
        uvicorn.run(
            "shopml.api:serve_app" if workers > 1 else "shopml.api:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            log_level="info",
            log_config=log_config(),  # query strings redacted on the access log
            timeout_graceful_shutdown=30,
            # Slow and greedy clients: deadlines for a request's head and body, a head size,
            # idle keep-alive and connections per worker (README "Hardening").
            http=PROTOCOL,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,  # h11 only (PROTOCOL caps both)
            timeout_keep_alive=settings.serve_keepalive_seconds,
            limit_concurrency=settings.serve_max_connections,
            # A worker loading its models on a busy host can hold the interpreter for more
            # than uvicorn's 5 s health-check ping: it was killed and restarted in a loop.
            timeout_worker_healthcheck=120,
        )
    finally:
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    insecure_dev: Annotated[
        bool,
        typer.Option(
            "--insecure-dev",
            help="Serve without API keys (open mode; loopback only). For your own machine.",
        ),
    ] = False,
    screenshots: Annotated[
        Path | None,
        typer.Option(
            help="Instead of serving: save screenshots of the overview and each trained use "
            "case's page to this folder (headless Chromium), then exit.",
            file_okay=False,
        ),
    ] = None,
    shot_usecases: Annotated[
        list[str] | None,
        typer.Option(
            "--usecase",
            "-u",
            help="With --screenshots: only these use cases' pages (repeatable; default every "
            "trained one).",
        ),
    ] = None,
) -> None:
    """The control tower: every model's state, drift and performance plots, the gate's history,
    alerts, and promote / rollback / retrain for admin keys; at http://HOST:PORT/ui/.

    Same keys as the API (SHOPML_API_KEYS read, SHOPML_ADMIN_KEYS act). The API can serve it
    too, at /ui, with SHOPML_SERVE_UI=true.
    """
    import os

    from shopml.serving import ServingConfigError
    from shopml.settings import reset_settings

    if shot_usecases and screenshots is None:
        raise UserError("--usecase chooses the pages of --screenshots; give --screenshots DIR")
    if insecure_dev:
        os.environ["SHOPML_INSECURE_DEV"] = "1"
        reset_settings()
    settings = _settings()
    if screenshots is not None:
        from shopml.ui.screenshots import ScreenshotError, take_screenshots

        try:
            saved = take_screenshots(settings, screenshots, shot_usecases or None)
        except ScreenshotError as exc:
            raise UserError(str(exc)) from None
        for path in saved:
            console.print(str(path), highlight=False)
        return
    from shopml.ui import standalone_app

    try:
        app_ = standalone_app(settings)
    except ServingConfigError as exc:
        raise UserError(str(exc).replace("shopml serve", "shopml ui")) from None
    if not settings.api_keys and not settings.admin_keys and not _is_loopback(host):
        raise UserError(
            f"open mode (no API key) serves on loopback only, not --host {host}: use --host "
            "127.0.0.1, or set SHOPML_API_KEYS=<key> to serve on other interfaces"
        )
    import uvicorn

    from shopml.serving.http import MAX_HEAD_BYTES, PROTOCOL, log_config

    console.print(f"control tower on http://{host}:{port}/ui/", highlight=False)
    uvicorn.run(
        app_,
        host=host,
        port=port,
        log_level="info",
        log_config=log_config(),
        http=PROTOCOL,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_keep_alive=settings.serve_keepalive_seconds,
        limit_concurrency=settings.serve_max_connections,
    )


@app.command()
def score(
    usecase: Annotated[str, typer.Argument(help="Use case whose model scores the rows.")],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Parquet or CSV file, or s3://bucket/key (SHOPML_S3_*)."
        ),
    ],
    input_path: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="Parquet or CSV file (or s3://bucket/key) of rows: ids and/or features.",
        ),
    ] = None,
    table: Annotated[str | None, typer.Option(help="A warehouse table instead of a file.")] = None,
    version: Annotated[
        str | None,
        typer.Option(help="Score with this model version (default: the champion)."),
    ] = None,
    cutoff: Annotated[
        str | None,
        typer.Option(
            help="Features as of this past date, built from the warehouse (not the online "
            "store); without --input/--table, score the use case's rows at that date."
        ),
    ] = None,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows per chunk.")] = 50_000,
    engine: EngineOpt = None,
    explain: Annotated[
        int,
        typer.Option(min=0, max=50, help="Also write each row's N largest feature contributions."),
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Batch-score rows with a model (the champion, or --version) and the online features,
    as the service would; or with the features as of a past --cutoff.

    Examples: `shopml score clv --table customers -o clv.parquet`;
    `shopml score clv --version 3 --cutoff 2024-06-01 -o clv-june.parquet`.
    """
    from shopml.serving.batch import BatchError, score_batch

    _usecase_names([usecase], False)
    at = _parse_datetime(cutoff, "--cutoff")
    if version is not None:
        version = version.removeprefix("v")
    if at is None and input_path is None and table is None:
        raise UserError("give --input FILE or --table NAME (or --cutoff DATE to score its rows)")
    with _progress(f"Scoring {usecase}", quiet=as_json) as update:

        def on_progress(done: int, total: int | None) -> None:
            update(f"{done:,} rows", done / total if total else 0.0)

        try:
            result = score_batch(
                _settings(),
                usecase,
                output,
                input_path=input_path,
                table=table,
                chunk_rows=chunk_rows,
                progress=on_progress,
                version=version,
                cutoff=at,
                explain=explain,
            )
        except BatchError as exc:
            raise UserError(str(exc)) from None
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(result.to_dict())
    else:
        when = f" as of {result.cutoff[:10]}" if result.cutoff else ""
        console.print(
            f"{usecase}: scored {result.rows:,} rows with v{result.model_version}{when} "
            f"in {result.seconds:.1f} s -> {result.output}",
            highlight=False,
        )


# -- end of serving commands --------------------------------------------------------------------


# -- monitoring ---------------------------------------------------------------------------------
def _monitor_errors() -> tuple[type[BaseException], ...]:
    from shopml.monitoring.replay import ReplayError
    from shopml.monitoring.store import MonitoringStoreError

    return (ReplayError, MonitoringStoreError, ValueError)


def _print_checks(results: list[Any]) -> None:
    table = Table(title="Monitoring")
    for col in (
        "use case",
        "status",
        "model",
        "preds",
        "drift",
        "out drift",
        "live",
        "vs test",
        "action",
    ):
        table.add_column(col, justify="right" if col in ("preds", "drift") else "left")
    for r in results:
        drift = r.drift or {}
        pred = (drift.get("outputs") or [{}])[0] if drift else {}
        perf = r.performance or {}
        metric = perf.get("metric")
        live = (perf.get("live") or {}).get(metric) if metric else None
        decision = r.decision or {}
        style = {"alert": "red", "failed": "red", "ok": "green", "pending": "yellow"}.get(
            r.status, "dim"
        )
        table.add_row(
            r.usecase,
            f"[{style}]{r.status}[/{style}]",
            f"v{r.model_version}" if r.model_version else "",
            f"{r.predictions:,}",
            f"{drift['share']:.0%}" if drift else "",
            _fmt_metric(pred.get("score")) if pred else "",
            f"{metric} {_fmt_metric(live)}" if metric else "",
            f"{perf['degradation']:+.0%}"
            if perf.get("degradation") == perf.get("degradation")
            and perf.get("degradation") is not None
            else "",
            decision.get("action", ""),
        )
    console.print(table)
    for r in results:
        if r.rollout:
            for reason in r.rollout.get("reasons", []):
                console.print(
                    f"{r.usecase} rollout ({r.rollout.get('status')}): {reason}", highlight=False
                )
    for r in results:
        for reason in (r.decision or {}).get("reasons", []):
            console.print(f"[red]{r.usecase}[/red]: {reason}", highlight=False)
        if (r.decision or {}).get("outcome") and (r.decision or {}).get("triggered"):
            console.print(f"[red]{r.usecase}[/red]: {r.decision['outcome']}", highlight=False)
        for warning in (r.decision or {}).get("warnings", []):
            console.print(f"[yellow]{r.usecase}[/yellow]: {warning}", highlight=False)
        for note in r.notes:
            console.print(f"[dim]{r.usecase}: {note}[/dim]", highlight=False)
        if r.reports.get("html"):
            console.print(f"[dim]{r.usecase}: report {r.reports['html']}[/dim]", highlight=False)


@app.command()
def monitor(
    usecases: Annotated[
        list[str] | None, typer.Argument(help="Use cases to check (default: all).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check and record, but send no alert, retrain nothing."),
    ] = False,
    at: Annotated[
        str | None,
        typer.Option("--at", help="Check as of this time (YYYY-MM-DD[THH:MM]); default now."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check drift, delayed-label performance and use-case specifics now, and act on them:
    alert, and retrain through the gate, as the policy says."""
    from shopml.flows.retraining import default_retrain
    from shopml.monitoring.run import run_checks

    settings = _settings()
    try:
        with _progress("Monitoring", quiet=as_json) as update:
            update("checking", 0.1)
            results = run_checks(
                usecases or None,
                settings=settings,
                now=_parse_datetime(at, "--at"),
                act=not dry_run,
                retrain=None if dry_run else default_retrain(settings),
            )
    except _monitor_errors() as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json([r.to_dict() for r in results])
    else:
        _print_checks(results)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


@app.command()
def replay(
    start: Annotated[str, typer.Option(help="First day to replay (YYYY-MM-DD).")],
    days: Annotated[int, typer.Option(min=1, help="Days to replay.")] = 28,
    usecases: Annotated[
        list[str] | None,
        typer.Option("--usecase", "-u", help="Use cases to replay (repeatable; default all)."),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="api: through the service in-process; batch: batch scoring.")
    ] = "api",
    monitor_every: Annotated[
        int, typer.Option(min=1, help="Run monitoring every N simulated days.")
    ] = 7,
    max_per_day: Annotated[
        int, typer.Option(min=1, help="At most this many requests per use case per day.")
    ] = 400,
    feature_refresh_days: Annotated[
        int,
        typer.Option(min=1, help="Rebuild the features every N days (1: daily; 7: faster)."),
    ] = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Monitor, but send no alert and retrain nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Play a period of the warehouse's history day by day as traffic, let labels arrive as
    they would, and run monitoring (and the retrain loop) on its schedule."""
    from shopml.flows.retraining import default_retrain
    from shopml.monitoring.replay import replay as run_replay

    when = _parse_date(start, "--start")
    assert when is not None
    settings = _settings()
    try:
        with _progress("Replaying", quiet=as_json) as update:
            result = run_replay(
                datetime(when.year, when.month, when.day),
                days,
                usecases=usecases or None,
                mode=mode,
                monitor_every=monitor_every,
                max_per_day=max_per_day,
                feature_refresh_days=feature_refresh_days,
                act=not dry_run,
                retrain=None if dry_run else default_retrain(settings),
                settings=settings,
                progress=update,
            )
    except _monitor_errors() as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"Replay {result.start:%Y-%m-%d} + {result.days} days ({result.mode})")
    for col in (
        "day",
        "use case",
        "status",
        "model",
        "drift",
        "live",
        "action",
        "outcome",
    ):
        table.add_column(col, no_wrap=col in ("day", "use case", "status"))
    for c in result.checks:
        perf = c.get("performance") or {}
        metric = perf.get("metric")
        live = (perf.get("live") or {}).get(metric) if metric else None
        d = c.get("decision") or {}
        table.add_row(
            c["now"][5:10],
            c["usecase"],
            c["status"],
            f"v{c['model_version']}" if c.get("model_version") else "",
            f"{c['drift']['share']:.0%}" if c.get("drift") else "",
            _fmt_metric(live) if metric else "",
            d.get("action", ""),
            (d.get("outcome") or "")[:60],
        )
    console.print(table)
    for name, why in result.skipped.items():
        console.print(f"[yellow]{name}[/yellow]: not replayed ({why})", highlight=False)
    sent = ", ".join(f"{k} {v:,}" for k, v in result.requests.items())
    console.print(
        f"requests: {sent}; {sum(result.errors.values())} failed; {result.seconds:.0f} s",
        highlight=False,
    )


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one line and exit 2."""
    from typer._click.exceptions import ClickException  # typer >= 0.20 vendors click

    from shopml.lifeline import guard_prefect_server

    # A command killed with -9 must not leave Prefect's ephemeral server running.
    guard_prefect_server()
    errors = _user_errors()
    try:
        # Without standalone mode, click returns a command's `typer.Exit(code)` instead of
        # exiting with it: pass it on, or `shopml run` with a failed use case would exit 0.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except errors as exc:
        # soft_wrap: one line however long (a path is not broken mid-word), for scripts too.
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
