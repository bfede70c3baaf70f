"""The command line as a user meets it: JSON output, one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shopml import cli


def shopml(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["shopml", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def wide(monkeypatch: pytest.MonkeyPatch, columns: int = 300) -> None:
    """The CLI's tables printed ``columns`` wide (one line per row). The CLI's consoles read the
    terminal width once, at import, so setting ``COLUMNS`` in a test comes too late."""
    from rich.console import Console

    monkeypatch.setattr(cli, "console", Console(width=columns))
    monkeypatch.setattr(cli, "err_console", Console(width=columns, stderr=True))


@pytest.fixture
def simulated(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> dict:
    code, out, err = shopml(
        ["simulate", "--customers", "300", "--days", "120", "--json"], capsys, monkeypatch
    )
    assert code == 0, err
    return json.loads(out)


def test_simulate_json_reconciles(simulated: dict) -> None:
    tables = {t["table"]: t for t in simulated["tables"]}
    assert tables["orders"]["rows_accepted"] > 0
    for t in tables.values():
        assert t["rows_read"] == t["rows_accepted"] + t["rows_quarantined"]


def test_tables_and_features_json(simulated: dict, capsys, monkeypatch) -> None:
    code, out, _ = shopml(["tables", "--json"], capsys, monkeypatch)
    assert code == 0
    info = json.loads(out)
    assert info["source"] == "simulator" and len(info["dataset_version"]) == 16
    assert {t["table"] for t in info["tables"]} >= {"orders", "returns", "oracle_orders"}
    code, out, _ = shopml(["features", "customers", "--json"], capsys, monkeypatch)
    assert code == 0
    sets = json.loads(out)["feature_sets"]
    assert sets[0]["entity"] == "customers" and sets[0]["rows"] > 0


def test_tables_refresh_after_an_edit_in_sql(simulated: dict, capsys, monkeypatch) -> None:
    from shopml.data.warehouse import Warehouse
    from shopml.settings import get_settings

    code, out, _ = shopml(["tables", "--json"], capsys, monkeypatch)
    before = {t["table"]: t["version"] for t in json.loads(out)["tables"]}
    with Warehouse(get_settings().warehouse) as wh:
        wh.con.execute(
            "UPDATE customers SET customer_id = 'renamed' "
            "WHERE customer_id = (SELECT max(customer_id) FROM customers)"
        )
        stale = wh.sql("SELECT count(*) AS n FROM customers WHERE customer_id = 'renamed'")
        assert stale.n.iloc[0] == 1
    code, out, err = shopml(["tables", "--refresh", "--json"], capsys, monkeypatch)
    assert code == 0, err
    after = {t["table"]: t["version"] for t in json.loads(out)["tables"]}
    assert after["customers"] != before["customers"]
    assert {k: v for k, v in after.items() if k != "customers"} == {
        k: v for k, v in before.items() if k != "customers"
    }
    with Warehouse(get_settings().warehouse, read_only=True) as wh:
        key = wh.sql(
            "SELECT customer_id__key = md5_number_lower('renamed') AS ok FROM customers "
            "WHERE customer_id = 'renamed'"
        )
        assert key.ok.all()


def test_features_written_to_a_file(simulated: dict, tmp_path: Path, capsys, monkeypatch) -> None:
    target = tmp_path / "out" / "customers.parquet"
    code, _, err = shopml(
        ["features", "customers", "--cutoff", "2023-03-01", "--output", str(target)],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    import pandas as pd

    assert len(pd.read_parquet(target)) > 0


def test_quarantine_json_when_clean(simulated: dict, capsys, monkeypatch) -> None:
    code, out, _ = shopml(["quarantine", "--json"], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["counts"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--scenario", "meteor"], "unknown scenario 'meteor'; choose one of"),
        (["simulate", "--start", "yesterday"], "--start expects a date"),
        (["tables"], "no warehouse at"),
        (["features", "nope"], "unknown feature set 'nope'"),
        (["ingest", "cdnow", "/nonexistent/file.txt"], "no such file or directory"),
        (["train", "returns-ish"], "unknown use case(s) returns-ish"),
        (["train"], "name the use cases to train, or pass --all"),
        (["quarantine", "nope"], "unknown table 'nope'"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    args: list[str], message: str, capsys, monkeypatch
) -> None:
    code, _, err = shopml(args, capsys, monkeypatch)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_wrong_file_for_an_importer(tmp_path: Path, capsys, monkeypatch) -> None:
    bad = tmp_path / "orders.csv"
    bad.write_text("order_id,customer_id\n1,2\n")
    code, _, err = shopml(["ingest", "cdnow", str(bad)], capsys, monkeypatch)
    assert code == 2 and "orders.csv" in err and "Traceback" not in err


def test_usage_error_exit_code(capsys, monkeypatch) -> None:
    code, _, err = shopml(["simulate", "--customers", "many"], capsys, monkeypatch)
    assert code == 2 and "Invalid value for '--customers'" in err


def test_config_masks_secrets(capsys, monkeypatch) -> None:
    monkeypatch.setenv("SHOPML_API_KEYS", "super-secret-key")
    from shopml.settings import reset_settings

    reset_settings()
    code, out, _ = shopml(["config", "--json"], capsys, monkeypatch)
    assert code == 0 and "super-secret-key" not in out
    assert json.loads(out)["api_keys"] == "1 configured"
