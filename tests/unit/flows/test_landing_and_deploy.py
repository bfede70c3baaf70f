"""The landing watcher (files -> events, each exactly once) and the deployments' definitions.
The real server round trip is tests/integration/test_prefect_deploy.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopml.flows.deploy import NoPrefectServer, build_deployments, deploy_all
from shopml.flows.landing import EVENT, LocalLanding, guess_kind
from shopml.settings import Settings, get_settings


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("cdnow/anything.txt", "cdnow"),
        ("CDNOW_sample.txt", "cdnow"),
        ("online-retail/2010.xlsx", "online-retail"),
        ("online_retail_II.csv.gz", "online-retail"),
        ("exports/orders.parquet", "online-retail"),
        ("olist/", "olist"),
        ("processed/20250101T000000-cdnow.txt", "cdnow"),
        ("notes.pdf", None),
    ],
)
def test_guess_kind(path: str, kind: str | None) -> None:
    assert guess_kind(path) == kind


def test_a_landed_file_is_claimed_once_it_stops_growing(tmp_path: Path) -> None:
    events: list[tuple[str, str | None]] = []
    landing = LocalLanding(tmp_path / "landing", emit=lambda p, k: events.append((p, k)))
    (tmp_path / "landing" / "cdnow").mkdir(parents=True)
    f = tmp_path / "landing" / "cdnow" / "week1.txt"
    f.write_text("00001 19970101 1 11.77\n")
    (tmp_path / "landing" / "cdnow" / "upload.txt.part").write_text("half")
    assert landing.poll() == []  # first sight: maybe still being written
    f.write_text("00001 19970101 1 11.77\n00002 19970102 2 20.00\n")
    assert landing.poll() == []  # it grew: wait again
    claimed = landing.poll()
    assert len(claimed) == 1 and not f.exists()
    new = Path(claimed[0])
    assert new.parent == (tmp_path / "landing" / "processed" / "cdnow").resolve()
    assert new.name.endswith("-week1.txt") and new.read_text().count("\n") == 2
    assert events == [(str(new), "cdnow")]
    assert landing.poll() == [] and len(events) == 1  # never announced twice


def test_a_file_is_put_back_when_the_event_cannot_be_sent(tmp_path: Path) -> None:
    calls = []

    def down(path: str, kind: str | None) -> None:
        calls.append(path)
        raise ConnectionError("Prefect server unreachable")

    root = tmp_path / "landing"
    root.mkdir()
    f = root / "CDNOW_sample.txt"
    f.write_text("x")
    landing = LocalLanding(root, emit=down)
    landing.poll()
    with pytest.raises(ConnectionError):
        landing.poll()
    assert f.exists() and calls  # back in place for the next poll
    assert not list((root / "processed").glob("*"))


def test_unknown_files_are_set_aside_not_announced(tmp_path: Path) -> None:
    events: list[str] = []
    root = tmp_path / "landing"
    root.mkdir()
    (root / "notes.pdf").write_text("x")
    landing = LocalLanding(root, emit=lambda p, k: events.append(p))
    landing.poll()
    landing.poll()
    assert events == []
    assert [p.name[-9:] for p in (root / "rejected").iterdir()] == ["notes.pdf"]


def test_the_deployments_schedules_and_trigger(shopml_home: Path) -> None:
    settings = Settings(retrain_cron="15 2 * * *", monitor_cron="*/30 * * * *")
    deps = {d.flow_name: d for d in build_deployments(settings, trials=2, timeout_s=10)}
    assert set(deps) == {"pipeline", "retrain", "monitor", "ingest"}
    assert all(d.name == "shopml" and d.work_pool_name == "shopml" for d in deps.values())
    # Module-path entrypoints: a worker imports the installed package, nothing to pull.
    assert deps["pipeline"].entrypoint == "shopml.flows.pipeline.pipeline"
    assert [s.schedule.cron for s in deps["pipeline"].schedules] == ["15 2 * * *"]
    assert deps["pipeline"].parameters == {"source": "warehouse", "trials": 2, "timeout_s": 10}
    assert [s.schedule.cron for s in deps["monitor"].schedules] == ["*/30 * * * *"]
    assert not deps["retrain"].schedules and not deps["ingest"].schedules
    (trigger,) = deps["ingest"].triggers
    assert trigger.expect == {EVENT}
    assert trigger.parameters["path"] == "{{ event.payload.path }}"
    assert trigger.parameters["trials"] == 2
    assert deps["monitor"].parameters == {}
    # Limited to some use cases: the scheduled pipeline, the monitor and each landed file's
    # pipeline run only those (retrain takes one by name anyway).
    only = ["segments", "pricing"]
    deps = {d.flow_name: d for d in build_deployments(settings, 2, 10, usecases=only)}
    assert deps["pipeline"].parameters["usecases"] == only
    assert deps["monitor"].parameters == {"usecases": only}
    assert deps["ingest"].triggers[0].parameters["usecases"] == only
    assert "usecases" not in deps["retrain"].parameters
    # No monitor schedule on the server when another scheduler owns it (Kubernetes' CronJob).
    settings = Settings(monitor_cron="")
    deps = {d.flow_name: d for d in build_deployments(settings)}
    assert not deps["monitor"].schedules and deps["pipeline"].schedules


def test_deploy_without_a_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: None}),
        pytest.raises(NoPrefectServer, match="prefect server start"),
    ):
        deploy_all(get_settings())


def test_an_s3_prefix_is_watched_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    from shopml.flows.landing import S3Landing

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="shop")
        s3.put_object(Bucket="shop", Key="landing/cdnow/week.txt", Body=b"x\n")
        s3.put_object(Bucket="shop", Key="landing/upload.part", Body=b"half")
        s3.put_object(Bucket="shop", Key="other/ignored.txt", Body=b"x")
        events: list[tuple[str, str | None]] = []
        landing = S3Landing(
            "s3://shop/landing/", emit=lambda p, k: events.append((p, k)), client=s3
        )
        assert landing.poll() == []
        (claimed,) = landing.poll()
        assert claimed.startswith("s3://shop/landing/processed/cdnow/")
        assert claimed.endswith("-week.txt") and events == [(claimed, "cdnow")]
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="shop")["Contents"])
        assert "landing/cdnow/week.txt" not in keys
        assert "landing/upload.part" in keys and "other/ignored.txt" in keys
        assert landing.poll() == [] and len(events) == 1
