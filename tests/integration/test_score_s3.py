"""``shopml score`` with its input and output on ``s3://`` (a moto S3 server on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from shopml.settings import reset_settings
from tests.unit.serving.conftest import build_served_home
from tests.unit.serving.test_score import customers_frame, one_line_error, shopml

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    served = build_served_home(tmp_path_factory)
    monkeypatch.setenv("SHOPML_HOME", str(served))
    reset_settings()
    return served


def test_score_reads_and_writes_s3(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from tests.support.services import s3_server

    with s3_server("batch") as endpoint:
        for var, value in {
            "SHOPML_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(var, value)
        reset_settings()
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        ids = customers_frame(home, 25)
        s3.put_object(Bucket="batch", Key="in/ids.csv", Body=ids.to_csv(index=False).encode())
        local = tmp_path / "ids.parquet"
        ids.to_parquet(local)
        s3.put_object(Bucket="batch", Key="in/ids.parquet", Body=local.read_bytes())
        for src, dest in (("ids.csv", "clv.parquet"), ("ids.parquet", "clv.csv")):
            args = ["-i", f"s3://batch/in/{src}", "-o", f"s3://batch/out/{dest}", "--json"]
            code, stdout, err = shopml(
                ["score", "clv", *args],
                capsys,
                monkeypatch,
            )
            assert code == 0, err
            assert json.loads(stdout)["rows"] == 25
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="batch")["Contents"])
        assert keys == ["in/ids.csv", "in/ids.parquet", "out/clv.csv", "out/clv.parquet"]
        got = tmp_path / "got.parquet"
        got.write_bytes(s3.get_object(Bucket="batch", Key="out/clv.parquet")["Body"].read())
        scored = pd.read_parquet(got)
        assert list(scored["customer_id"]) == list(ids["customer_id"])
        assert scored["predicted_spend_90d"].notna().all()
        # A missing object, a missing bucket, a bucket with no key: one line each, nothing left.
        for args, words in (
            (["-i", "s3://batch/in/nope.csv", "-o", str(tmp_path / "x.csv")], ("nope.csv",)),
            (["-i", "s3://batch/in/ids.csv", "-o", "s3://no-bucket/x.csv"], ("no-bucket",)),
            (["-i", "s3://batch.csv", "-o", str(tmp_path / "x.csv")], ("s3://batch.csv", "key")),
        ):
            code, _, err = shopml(["score", "clv", *args], capsys, monkeypatch)
            one_line_error(code, err, *words)
        left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="batch")["Contents"])
        assert left == keys
