"""``shopml score`` as a careless user meets it: each bad input gets one line naming what and
where and exit code 2, never a traceback; rows without the model's features are refused or
warned about; a chosen version scores features as of a past cutoff; s3:// in and out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from shopml import cli
from shopml.settings import reset_settings
from tests.unit.serving.conftest import a_customer

pytestmark = pytest.mark.slow  # the session's served home trains five champions


@pytest.fixture
def home(served_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOPML_HOME", str(served_home))
    reset_settings()
    return served_home


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


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def customers_frame(home: Path, n: int = 30) -> pd.DataFrame:
    import duckdb

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        ids = [r[0] for r in con.execute(f"SELECT customer_id FROM customers LIMIT {n}").fetchall()]
    finally:
        con.close()
    return pd.DataFrame({"customer_id": ids})


def test_unreadable_inputs_are_one_line_errors(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "good.parquet"
    customers_frame(home).to_parquet(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(os.urandom(2048))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    binary_csv = tmp_path / "binary.csv"
    binary_csv.write_bytes(b"customer_id\n" + bytes(range(128, 256)) * 8)
    out = tmp_path / "out.parquet"
    for bad, words in (
        (truncated, ("truncated.parquet", "Parquet")),
        (garbage, ("garbage.parquet", "Parquet")),
        (empty, ("empty.csv", "empty")),
        (binary_csv, ("binary.csv", "CSV")),
    ):
        code, _, err = shopml(
            ["score", "clv", "--input", str(bad), "--output", str(out)], capsys, monkeypatch
        )
        one_line_error(code, err, *words)
        assert not out.exists()
    header_only = tmp_path / "header.csv"
    header_only.write_text("customer_id\n")
    code, _, err = shopml(
        ["score", "clv", "--input", str(header_only), "--output", str(out)], capsys, monkeypatch
    )
    one_line_error(code, err, "header.csv", "no rows")
    assert list(tmp_path.glob(".out.parquet.tmp-*")) == []


def test_unwritable_outputs_are_refused_before_scoring(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "ids.csv"
    customers_frame(home).to_csv(src, index=False)
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    a_folder = tmp_path / "scores.parquet"
    a_folder.mkdir()
    cases = [
        (a_file / "out.parquet", ("a-file.txt", "is a file")),
        (a_file / "deeper" / "out.csv", ("a-file.txt", "is a file")),
        (a_folder, ("scores.parquet", "is a folder")),
    ]
    if os.geteuid() != 0:  # root writes anywhere: no unwritable folder to test with
        cases.append((locked / "out.parquet", ("locked", "ermission")))
    cases.append((Path("/proc/shopml-out.parquet"), ("/proc/shopml-out.parquet",)))
    try:
        for output, words in cases:
            code, _, err = shopml(
                ["score", "clv", "--input", str(src), "--output", str(output)], capsys, monkeypatch
            )
            one_line_error(code, err, "cannot write", *words)
    finally:
        locked.chmod(0o700)


def test_rows_without_the_models_features_are_refused_or_warned(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopml.serving.batch import load_champion
    from shopml.settings import get_settings

    features = load_champion(get_settings(), "clv").features
    out = tmp_path / "out.csv"
    unrelated = tmp_path / "unrelated.csv"
    pd.DataFrame({"colour": ["red", "blue"], "size": [1, 2]}).to_csv(unrelated, index=False)
    code, _, err = shopml(
        ["score", "clv", "--input", str(unrelated), "--output", str(out)], capsys, monkeypatch
    )
    one_line_error(code, err, "unrelated.csv", "no feature found", features[0])
    assert not out.exists()
    # Ids nobody knows: no feature can be looked up either.
    strangers = tmp_path / "strangers.csv"
    pd.DataFrame({"customer_id": ["nobody-1", "nobody-2"]}).to_csv(strangers, index=False)
    code, _, err = shopml(
        ["score", "clv", "--input", str(strangers), "--output", str(out)], capsys, monkeypatch
    )
    one_line_error(code, err, "strangers.csv", "no feature found")
    # Some of the features, no ids: scored, with a warning naming the missing ones.
    partial = tmp_path / "partial.csv"
    pd.DataFrame({features[0]: [1.0, 2.0, 3.0], "colour": ["a", "b", "c"]}).to_csv(
        partial, index=False
    )
    code, stdout, err = shopml(
        ["score", "clv", "--input", str(partial), "--output", str(out), "--json"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["rows"] == 3
    assert set(result["missing_features"]) == set(features[1:])
    assert "warning:" in err and features[1] in err and "Traceback" not in err
    assert len(pd.read_csv(out)) == 3
    # The recommender needs a customer_id to rank for.
    code, _, err = shopml(
        ["score", "recommender", "--input", str(unrelated), "--output", str(out)],
        capsys,
        monkeypatch,
    )
    one_line_error(code, err, "unrelated.csv", "customer_id")


def test_a_chosen_version_scores_features_as_of_a_past_cutoff(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopml.data.warehouse import Warehouse
    from shopml.settings import get_settings
    from shopml.usecases import get_usecase

    out = tmp_path / "clv-past.parquet"
    cutoff = "2024-06-01"
    code, stdout, err = shopml(
        ["score", "clv", "--version", "1", "--cutoff", cutoff, "--output", str(out), "--json"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["model_version"] == "1" and result["cutoff"].startswith(cutoff)
    scored = pd.read_parquet(out)
    # Exactly the use case's rows at that cutoff, scored on their features then.
    wh = Warehouse.open(get_settings(), read_only=True)
    try:
        then = get_usecase("clv").dataset(wh, pd.Timestamp(cutoff).to_pydatetime())
    finally:
        wh.close()
    assert len(scored) == len(then) == result["rows"]
    assert set(scored["customer_id"]) == set(then.frame["customer_id"])
    assert (scored["model_version"] == "1").all()
    from shopml.serving.models import read_scorer

    scorer = read_scorer(home / "serving-cache" / "clv" / "1" / "artifacts" / "scorer.pkl")
    expected = scorer.predict_frame(then.frame).iloc[:, 0].to_numpy()
    merged = then.frame[["customer_id"]].assign(expected=expected).merge(scored, on="customer_id")
    assert merged["expected"].to_numpy() == pytest.approx(
        merged[scorer.outputs[0]].to_numpy(), rel=1e-9
    )
    # Given ids: their features at the cutoff, not today's online ones.
    ids = tmp_path / "ids.csv"
    pd.DataFrame({"customer_id": [a_customer(home)]}).to_csv(ids, index=False)
    code, stdout, err = shopml(
        ["score", "clv", "--input", str(ids), "--cutoff", cutoff, "-o", str(out), "--json"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    one = pd.read_parquet(out)
    row = merged[merged["customer_id"] == a_customer(home)]
    assert len(row) == 1
    assert one.iloc[0][scorer.outputs[0]] == pytest.approx(row.iloc[0]["expected"])
    # A version that does not exist and a cutoff outside the data: one line each.
    code, _, err = shopml(
        ["score", "clv", "--version", "99", "--cutoff", cutoff, "-o", str(out)],
        capsys,
        monkeypatch,
    )
    one_line_error(code, err, "version '99'")
    code, _, err = shopml(
        ["score", "clv", "--cutoff", "1990-01-01", "-o", str(out)], capsys, monkeypatch
    )
    one_line_error(code, err, "--cutoff 1990-01-01", "outside")
    code, _, err = shopml(["score", "clv", "--cutoff", "June", "-o", str(out)], capsys, monkeypatch)
    one_line_error(code, err, "--cutoff", "'June'")
