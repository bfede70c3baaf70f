"""``shopml doctor``: one line per component, a failing one named, exit 1, and an answer in
seconds when a server is down or hangs.

The servers here are small stand-ins on loopback: an HTTP server that answers like MLflow or
Prefect would (or refuses credentials, or runs another version), a port nobody listens on, and
a socket that accepts connections and never answers. The real servers are checked by the
production integration test.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shopml import cli
from shopml.doctor import CHECKS, diagnose, mask
from shopml.settings import Settings, reset_settings

COMPONENTS = list(CHECKS)
Route = Callable[[dict[str, str]], tuple[int, str]]


def shopml(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["shopml", *args])
    reset_settings()
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def http_server() -> Iterator[Callable[[dict[str, Route]], str]]:
    """Start an HTTP server answering ``routes`` (path -> (status, body)); yields its URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(routes: dict[str, Route]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                route = routes.get(path)
                status, body = route(dict(self.headers)) if route else (404, "not found")
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlflow_like(version: str = "3.17.2", token: str | None = None) -> dict[str, Route]:
    def guarded(body: str) -> Route:
        def answer(headers: dict[str, str]) -> tuple[int, str]:
            if token and headers.get("Authorization") != f"Bearer {token}":
                return 401, "unauthorized"
            return 200, body

        return answer

    return {
        "/health": lambda h: (200, "OK"),
        "/version": lambda h: (200, version),
        "/api/2.0/mlflow/experiments/search": guarded('{"experiments": []}'),
        "/api/2.0/mlflow-artifacts/artifacts": guarded('{"files": [{"path": "1"}]}'),
    }


def test_the_embedded_defaults_are_healthy(capsys, monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, out, err = shopml(["doctor", "--json"], capsys, monkeypatch)
    assert code == 0, out + err
    report = json.loads(out)
    assert report["healthy"] is True
    assert [c["component"] for c in report["checks"]] == COMPONENTS
    status = {c["component"]: c["status"] for c in report["checks"]}
    assert status.pop("prefect") == "skip"  # no server: only `shopml run` works
    assert set(status.values()) == {"ok"}


def test_one_component_down_is_named_and_fails_the_doctor(capsys, monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("SHOPML_ONLINE_STORE_URI", f"redis://127.0.0.1:{closed_port()}/0")
    code, out, _ = shopml(["doctor"], capsys, monkeypatch)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == len(COMPONENTS) + 1  # one per component and a summary
    failing = [line for line in lines if line.startswith("fail")]
    assert len(failing) == 1 and "online-store" in failing[0]
    assert "unreachable" in failing[0] and "Connection refused" in failing[0]
    assert "failing: online-store" in lines[-1]


@pytest.mark.parametrize(
    ("variable", "uri", "failing"),
    [
        ("SHOPML_MLFLOW_TRACKING_URI", "http://127.0.0.1:{port}",
         {"mlflow-tracking", "mlflow-artifacts"}),
        ("SHOPML_MLFLOW_TRACKING_URI", "postgresql://postgres@127.0.0.1:{port}/mlflow",
         {"mlflow-tracking"}),
        ("SHOPML_MONITORING_STORE_URI", "postgresql://postgres@127.0.0.1:{port}/m",
         {"monitoring-store"}),
        ("SHOPML_ONLINE_STORE_URI", "redis://127.0.0.1:{port}/0", {"online-store"}),
        ("PREFECT_API_URL", "http://127.0.0.1:{port}/api", {"prefect"}),
        ("SHOPML_S3_ENDPOINT_URL", "http://127.0.0.1:{port}", {"landing", "batch-scores"}),
    ],
    ids=["mlflow-server", "mlflow-postgresql", "monitoring", "redis", "prefect", "s3"],
)  # fmt: skip
def test_each_server_down_alone_is_the_one_named(
    variable: str, uri: str, failing: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other component on its embedded default (healthy): only the component whose
    server is down fails, with the reason."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv(variable, uri.format(port=closed_port()))
    if variable == "SHOPML_S3_ENDPOINT_URL":
        monkeypatch.setenv("SHOPML_LANDING_S3_PREFIX", "s3://shop/landing/")
        monkeypatch.setenv("SHOPML_SCORES_URI", "s3://shop/scores/")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    reset_settings()
    from shopml.settings import get_settings

    checks = {c.component: c for c in diagnose(get_settings(), timeout=2)}
    failed = {name for name, c in checks.items() if c.status == "fail"}
    assert failed == failing, {n: (c.status, c.detail) for n, c in checks.items()}
    for name in failing:
        detail = checks[name].detail
        assert "unreachable" in detail or "refused" in detail, checks[name]


def test_a_server_that_hangs_is_reported_within_the_timeout(monkeypatch) -> None:
    """A socket that accepts and never answers: the check gives up after its timeout."""
    with socket.socket() as hang:
        hang.bind(("127.0.0.1", 0))
        hang.listen(8)
        port = hang.getsockname()[1]
        settings = Settings(
            online_store_uri=f"redis://127.0.0.1:{port}/0",
            monitoring_store_uri=f"postgresql://postgres@127.0.0.1:{port}/x",
            mlflow_tracking_uri=f"http://127.0.0.1:{port}",
        )
        checks = {c.component: c for c in diagnose(settings, timeout=1.0)}
    for name in ("online-store", "monitoring-store", "mlflow-tracking", "mlflow-artifacts"):
        assert checks[name].status == "fail", checks[name]
        assert checks[name].seconds <= 3.0, checks[name]  # diagnose's own limit is 2 * 1 + 1


def test_mlflow_server_version_and_credentials(http_server, monkeypatch) -> None:
    url = http_server(mlflow_like(token="s3cret"))
    settings = Settings(mlflow_tracking_uri=url)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    checks = {c.component: c for c in diagnose(settings, timeout=2)}
    assert checks["mlflow-tracking"].status == "fail"
    assert "credentials refused (401)" in checks["mlflow-tracking"].detail
    assert checks["mlflow-artifacts"].status == "fail"

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "s3cret")
    checks = {c.component: c for c in diagnose(settings, timeout=2)}
    assert checks["mlflow-tracking"].status == "ok", checks["mlflow-tracking"]
    assert checks["mlflow-tracking"].version == "3.17.2"
    assert checks["mlflow-artifacts"].status == "ok"
    assert "proxied" in checks["mlflow-artifacts"].target

    old = Settings(mlflow_tracking_uri=http_server(mlflow_like(version="2.9.2")))
    check = next(c for c in diagnose(old, timeout=2) if c.component == "mlflow-tracking")
    assert check.status == "fail" and "major version" in check.detail


def test_a_tracking_server_without_artifact_serving(http_server) -> None:
    routes = mlflow_like()
    del routes["/api/2.0/mlflow-artifacts/artifacts"]
    settings = Settings(mlflow_tracking_uri=http_server(routes))
    check = next(c for c in diagnose(settings, timeout=2) if c.component == "mlflow-artifacts")
    assert check.status == "fail" and "--serve-artifacts" in check.detail


def test_prefect_server_version_and_work_pool(http_server, monkeypatch) -> None:
    from importlib.metadata import version

    client = version("prefect")
    major, minor = client.split(".")[:2]
    url = http_server(
        {
            "/api/health": lambda h: (200, "true"),
            "/api/admin/version": lambda h: (200, json.dumps(f"{major}.{int(minor) - 1}.0")),
        }
    )
    monkeypatch.setenv("PREFECT_API_URL", f"{url}/api")
    check = next(c for c in diagnose(Settings(), timeout=2) if c.component == "prefect")
    assert check.status == "warn", check
    assert "minor versions differ" in check.detail and "missing (run `shopml deploy`)" in (
        check.detail
    )

    same = http_server(
        {
            "/api/health": lambda h: (200, "true"),
            "/api/admin/version": lambda h: (200, json.dumps(client)),
            "/api/work_pools/shopml": lambda h: (200, "{}"),
        }
    )
    monkeypatch.setenv("PREFECT_API_URL", f"{same}/api")
    check = next(c for c in diagnose(Settings(), timeout=2) if c.component == "prefect")
    assert check.status == "ok" and "work pool 'shopml' present" in check.detail


def test_production_without_a_prefect_server_or_with_local_stores(capsys, monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("SHOPML_ENV", "production")
    monkeypatch.setenv("SHOPML_API_KEYS", "k-8c1f0e2a")
    code, out, _ = shopml(["doctor", "--json"], capsys, monkeypatch)
    assert code == 1
    checks = {c["component"]: c for c in json.loads(out)["checks"]}
    assert checks["prefect"]["status"] == "fail"
    assert checks["settings"]["status"] == "warn"
    assert "SHOPML_ONLINE_STORE_URI" in checks["settings"]["detail"]


def test_invalid_settings_are_one_failing_line(capsys, monkeypatch) -> None:
    monkeypatch.setenv("SHOPML_ENV", "production")
    monkeypatch.setenv("SHOPML_API_KEYS", "changeme")
    code, out, err = shopml(["doctor"], capsys, monkeypatch)
    assert code == 1 and "Traceback" not in err
    assert out.startswith("fail") and "settings" in out and "placeholder" in out


def test_s3_without_an_endpoint_answering(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    settings = Settings(
        s3_endpoint_url=f"http://127.0.0.1:{closed_port()}",
        landing_s3_prefix="s3://shop/landing/",
        scores_uri="s3://shop/scores/",
    )
    checks = {c.component: c for c in diagnose(settings, timeout=1)}
    for name in ("landing", "batch-scores"):
        assert checks[name].status == "fail" and "unreachable" in checks[name].detail
        assert checks[name].target.startswith("s3://shop/")


def test_passwords_are_masked() -> None:
    assert mask("postgresql://shopml:pa55@db:5432/m") == "postgresql://shopml:***@db:5432/m"
    assert mask("redis://:pa55@redis:6379/0") == "redis://:***@redis:6379/0"
    assert mask("http://mlflow:5000") == "http://mlflow:5000"


def _spark_line(out: str) -> str:
    return next(line for line in out.splitlines() if "  spark  " in line)


def test_the_spark_engine_without_java_is_one_failing_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("SHOPML_ENGINE", "duckdb")  # restored after `--engine` changes it
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    code, out, err = shopml(["doctor", "--engine", "spark"], capsys, monkeypatch)
    assert code == 1 and "Traceback" not in out + err
    line = _spark_line(out)
    assert line.startswith("fail") and "engine=spark, master local[2]" in line
    assert f"JAVA_HOME ({tmp_path / 'no-jdk'})" in line
    assert "openjdk-17-jre-headless" in line  # what to install
    assert "failing: spark" in out.splitlines()[-1]

    code, out, err = shopml(["doctor", "--engine", "spark", "--json"], capsys, monkeypatch)
    report = json.loads(out)
    spark = next(c for c in report["checks"] if c["component"] == "spark")
    assert code == 1 and report["healthy"] is False and spark["status"] == "fail"
    assert "Java 17 or later" in spark["detail"] and "none was found" in spark["detail"]

    # The DuckDB engine does not need Java: the line says what Spark would need, nothing fails.
    code, out, _ = shopml(["doctor", "--engine", "duckdb", "--json"], capsys, monkeypatch)
    spark = next(c for c in json.loads(out)["checks"] if c["component"] == "spark")
    assert code == 0 and spark["status"] == "skip"
    assert spark["detail"].startswith("not used by this engine; --engine spark: ")
    assert "openjdk-17-jre-headless" in spark["detail"]


def test_the_spark_engine_reports_the_java_it_found(tmp_path, monkeypatch) -> None:
    jdk = tmp_path / "jdk"
    (jdk / "bin").mkdir(parents=True)
    java = jdk / "bin" / "java"
    monkeypatch.setenv("JAVA_HOME", str(jdk))
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    check = diagnose(Settings(engine="spark"), timeout=5, only=["spark"])[0]
    assert check.status == "fail" and "the Java on JAVA_HOME" in check.detail
    assert "is 11" in check.detail and "openjdk-17" in check.detail

    java.write_text("#!/bin/sh\necho 'openjdk version \"21.0.4\" 2024-07-16' >&2\n")
    check = diagnose(Settings(engine="spark"), timeout=5, only=["spark"])[0]
    assert check.status == "ok" and check.detail.startswith(f"Java 21 ({java}), PySpark 4.")
    assert check.version and check.version.startswith("4.")

    # A Spark Connect server runs its own JVM: a missing local Java is not a failure then.
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    check = diagnose(
        Settings(engine="spark", spark_remote="sc://spark:15002"), timeout=5, only=["spark"]
    )[0]
    assert check.status == "ok" and check.target == "engine=spark, Spark Connect sc://spark:15002"
    assert "Java" not in check.detail
