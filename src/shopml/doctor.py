"""``shopml doctor``: is the active configuration usable, store by store?

One check per component of the configuration (settings, warehouse, MLflow tracking and its
artifacts, the Prefect server, the online store, the monitoring store, the S3 landing prefix,
the batch-score location, and what the Spark engine needs: PySpark, Java 17+): reachable,
credentials accepted, versions compatible. Each check is bounded (``timeout`` seconds for its
network calls) and they all run at once, so a server that is down costs one timeout, not one
per retry, and the report comes back in seconds.

Only what the configuration names is checked, with the client libraries this installation has:
the slim serving image checks the stores the service uses and says which it cannot check.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "skip"]

# Oldest server versions shopml is known to work with (what its stores and SQL need).
MIN_POSTGRES = (13, 0)  # Prefect 3 needs 13+; JSONB and the index DDL need far less
MIN_REDIS = (6, 2)  # GETDEL-era servers; the online store's Lua reads and UNLINK need 4+


@dataclass
class Check:
    """One component's verdict: ``ok``, ``warn`` (works, but look), ``fail`` or ``skip``."""

    component: str
    status: Status
    target: str
    detail: str
    version: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The check as plain JSON-ready values."""
        return asdict(self)


class Problem(Exception):
    """A check's failure, with the line to print."""

    def __init__(self, detail: str, status: Status = "fail", version: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.version = version


def mask(uri: str) -> str:
    """A URI with its password (``user:secret@``) replaced by ``***``."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", uri)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# -- HTTP (stdlib only: the serving image has no httpx) -------------------------------------------
def _http(url: str, timeout: float, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except TimeoutError as exc:
        raise Problem(f"no answer within {timeout:g} s") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise Problem(f"no answer within {timeout:g} s") from exc
        raise Problem(
            f"unreachable: {_short(reason) if isinstance(reason, BaseException) else reason}"
        ) from exc


def _compare(client: str, server: str, what: str) -> tuple[Status, str]:
    c, s = _version(client), _version(server)
    if not c or not s:
        return "warn", f"cannot compare {what} versions (client {client}, server {server})"
    if c[0] != s[0]:
        return "fail", f"{what} server {server} and client {client} differ in major version"
    if c[:2] != s[:2]:
        return "warn", f"{what} server {server}, client {client}: minor versions differ"
    return "ok", f"{what} {server} (client {client})"


# -- the checks ------------------------------------------------------------------------------------
def check_settings(settings: Any, timeout: float) -> Check:
    """The settings load, and production has its keys (the API refuses to start without)."""
    target = f"env={settings.env}"
    keys = f"{len(settings.api_keys)} API key(s), {len(settings.admin_keys)} admin key(s)"
    if settings.env == "production" and not settings.api_keys:
        # A worker needs none; the API refuses to start without (and says so itself).
        raise Problem(f"{keys}: `shopml serve` needs SHOPML_API_KEYS in production", "warn")
    if settings.env == "production":
        local = [
            name
            for name, value in (
                ("SHOPML_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri),
                ("SHOPML_ONLINE_STORE_URI", settings.online_store_uri),
                ("SHOPML_MONITORING_STORE_URI", settings.monitoring_store_uri),
            )
            if not value or value.startswith("sqlite")
        ]
        if local:
            raise Problem(
                f"{keys}; {', '.join(local)} still on the local SQLite default: a production "
                "stack shares these stores between processes",
                status="warn",
            )
    return Check("settings", "ok", target, keys)


def check_warehouse(settings: Any, timeout: float) -> Check:
    """The DuckDB file: its folder writable; when it exists, readable (or held by a writer)."""
    path = Path(settings.warehouse).resolve()
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise Problem(f"{folder} is not writable")
    if not path.exists():
        return Check("warehouse", "ok", str(path), "no data loaded yet (created on first load)")
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            return Check("warehouse", "ok", str(path), "in use by a running writer (locked)")
        raise Problem(f"cannot open: {_short(exc)}") from exc
    try:
        tables = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchone()
    finally:
        con.close()
    size = path.stat().st_size / 1e6
    return Check(
        "warehouse", "ok", str(path), f"{tables[0] if tables else 0} tables, {size:.1f} MB"
    )


def _mlflow_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = (
        os.environ.get("MLFLOW_TRACKING_USERNAME"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    if user and password:
        import base64

        raw = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}
    return {}


def _mlflow_client_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("mlflow", "mlflow-skinny"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def _sql_url(uri: str) -> str:
    return uri if "+" in uri.split("://", 1)[0] else uri.replace("://", "+psycopg://", 1)


def _postgres(uri: str, timeout: float) -> tuple[Any, str]:
    """A psycopg connection (autocommit) and the server's version; a Problem if refused."""
    import psycopg

    from shopml.online.postgres_store import _conninfo

    info = _conninfo(uri.replace("postgresql+psycopg://", "postgresql://", 1))
    try:
        con = psycopg.connect(info, autocommit=True, connect_timeout=max(1, round(timeout)))
    except psycopg.OperationalError as exc:
        text = _short(exc)
        if "password" in text or "authentication" in text or "role" in text:
            raise Problem(f"credentials refused: {text}") from exc
        if "does not exist" in text:
            raise Problem(f"database missing: {text}") from exc
        raise Problem(f"unreachable: {text}") from exc
    con.execute(f"SET statement_timeout = {int(timeout * 1000)}")
    server = str(con.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    if _version(server)[:2] < MIN_POSTGRES:
        con.close()
        raise Problem(
            f"PostgreSQL {server} is older than {'.'.join(map(str, MIN_POSTGRES))}",
            version=server,
        )
    return con, server


def check_tracking(settings: Any, timeout: float) -> Check:
    """MLflow tracking: a server (health, version, an authenticated call) or a database
    (reachable, schema at this client's revision)."""
    uri = settings.tracking_uri
    client = _mlflow_client_version() or "not installed"
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        status, _ = _http(f"{base}/health", timeout)
        if status != 200:
            raise Problem(f"/health answered {status}")
        _, body = _http(f"{base}/version", timeout)
        server = body.decode(errors="replace").strip()
        status, body = _http(
            f"{base}/api/2.0/mlflow/experiments/search?max_results=1", timeout, _mlflow_headers()
        )
        if status in (401, 403):
            raise Problem(
                f"credentials refused ({status}): set MLFLOW_TRACKING_USERNAME/PASSWORD or "
                "MLFLOW_TRACKING_TOKEN",
                version=server,
            )
        if status != 200:
            raise Problem(f"experiments/search answered {status}: {body[:200]!r}", version=server)
        verdict, detail = _compare(client, server, "mlflow")
        return Check("mlflow-tracking", verdict, mask(uri), detail, server)
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        where = path if path.exists() else path.parent
        if where.exists() and not os.access(where, os.W_OK):
            raise Problem(f"{where} is not writable")
        return Check("mlflow-tracking", "ok", uri, "embedded SQLite store (one machine only)")
    if uri.startswith(("postgresql", "postgres://")):
        con, server = _postgres(uri, timeout)
        try:
            row = con.execute(
                "SELECT version_num FROM alembic_version"
                " WHERE to_regclass('alembic_version') IS NOT NULL"
            ).fetchone()
        except Exception:
            row = None
        finally:
            con.close()
        if row is None:
            return Check(
                "mlflow-tracking",
                "ok",
                mask(uri),
                f"PostgreSQL {server}; empty (set up on first use)",
                server,
            )
        from mlflow.store.db.utils import _get_latest_schema_revision

        head = _get_latest_schema_revision()
        if row[0] != head:
            raise Problem(
                f"schema at revision {row[0]}, mlflow {client} expects {head} "
                "(run `mlflow db upgrade` or match the client)",
                version=server,
            )
        return Check(
            "mlflow-tracking", "ok", mask(uri), f"PostgreSQL {server}, schema {head}", server
        )
    return Check("mlflow-tracking", "skip", mask(uri), "no check for this kind of store")


def check_artifacts(settings: Any, timeout: float) -> Check:
    """Where MLflow's artifacts go: proxied by the tracking server (the server lists its
    artifact root, so its own S3 access is exercised), an S3 root, or a local folder."""
    uri = settings.tracking_uri
    root = settings.mlflow_artifact_root
    if uri.startswith(("http://", "https://")) and root is None:
        base = uri.rstrip("/")
        status, body = _http(
            f"{base}/api/2.0/mlflow-artifacts/artifacts", timeout, _mlflow_headers()
        )
        if status == 200:
            files = json.loads(body or b"{}").get("files", [])
            return Check(
                "mlflow-artifacts",
                "ok",
                f"{base} (proxied)",
                f"server lists its root ({len(files)} entries)",
            )
        if status in (401, 403):
            raise Problem(f"credentials refused ({status})")
        text = body.decode(errors="replace")
        hint = "the server does not serve artifacts (start it with --serve-artifacts)"
        raise Problem(f"{status}: {hint if status == 404 else text[:200]}")
    root = settings.artifact_root
    if root.startswith("s3://"):
        return _s3_check("mlflow-artifacts", root, settings, timeout)
    if root.startswith("file://"):
        folder = Path(urllib.request.url2pathname(root.removeprefix("file://")))
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            raise Problem(f"{probe} is not writable")
        return Check("mlflow-artifacts", "ok", root, "local folder (one machine only)")
    return Check("mlflow-artifacts", "skip", root, "no check for this kind of store")


def _prefect_api() -> str | None:
    # The environment first (what a worker is given); then Prefect's own profile, if installed.
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    try:
        from prefect.settings import get_current_settings
    except ImportError:
        return None
    url = get_current_settings().api.url
    return str(url) if url else None


def _prefect_headers() -> dict[str, str]:
    key, auth = os.environ.get("PREFECT_API_KEY"), os.environ.get("PREFECT_API_AUTH_STRING")
    if key:
        return {"Authorization": f"Bearer {key}"}
    if auth:
        import base64

        return {"Authorization": f"Basic {base64.b64encode(auth.encode()).decode()}"}
    return {}


def check_prefect(settings: Any, timeout: float) -> Check:
    """The Prefect server: health, its version against this client's, an authenticated read
    of the work pool (missing: deployments are not made yet)."""
    api = _prefect_api()
    if not api:
        status: Status = "fail" if settings.env == "production" else "skip"
        return Check(
            "prefect",
            status,
            "PREFECT_API_URL unset",
            "no Prefect server: `shopml run` works (ephemeral), deployments and the worker do not",
        )
    base = api.rstrip("/")
    code, _ = _http(f"{base}/health", timeout, _prefect_headers())
    if code in (401, 403):
        raise Problem(
            f"credentials refused ({code}): set PREFECT_API_KEY or PREFECT_API_AUTH_STRING"
        )
    if code != 200:
        raise Problem(f"/health answered {code}")
    _, body = _http(f"{base}/admin/version", timeout, _prefect_headers())
    server = body.decode(errors="replace").strip().strip('"')
    try:
        from importlib.metadata import version

        client = version("prefect")
    except Exception:
        client = None
    code, _ = _http(f"{base}/work_pools/{settings.work_pool}", timeout, _prefect_headers())
    if code in (401, 403):
        raise Problem(f"credentials refused ({code})", version=server)
    verdict, detail = _compare(client, server, "prefect") if client else ("ok", f"prefect {server}")
    if code == 404:
        detail += f"; work pool {settings.work_pool!r} missing (run `shopml deploy`)"
        verdict = "warn" if verdict == "ok" else verdict
    elif code == 200:
        detail += f"; work pool {settings.work_pool!r} present"
    return Check("prefect", verdict, base, detail, server)


def check_online_store(settings: Any, timeout: float) -> Check:
    """The online store: Redis (PING, version) or PostgreSQL, or the SQLite file."""
    uri = settings.online_store_uri
    if uri is None or uri.startswith("sqlite:///"):
        path = (
            settings.home / "online.sqlite" if uri is None else Path(uri.removeprefix("sqlite:///"))
        )
        return Check("online-store", "ok", str(path), "embedded SQLite (one machine only)")
    if uri.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(uri, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
            server = str(client.info("server").get("redis_version", "?"))
        except redis.AuthenticationError as exc:
            raise Problem(f"credentials refused: {_short(exc)}") from exc
        except redis.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise Problem(f"credentials refused: {_short(exc)}") from exc
            raise Problem(_short(exc)) from exc
        except redis.RedisError as exc:
            raise Problem(f"unreachable: {_short(exc)}") from exc
        finally:
            client.close()
        if _version(server)[:2] < MIN_REDIS:
            raise Problem(
                f"Redis {server} is older than {'.'.join(map(str, MIN_REDIS))}", version=server
            )
        return Check("online-store", "ok", mask(uri), f"Redis {server}", server)
    if uri.startswith(("postgresql", "postgres://")):
        con, server = _postgres(uri, timeout)
        con.close()
        return Check("online-store", "ok", mask(uri), f"PostgreSQL {server}", server)
    raise Problem("not a supported online store (sqlite:///, redis://, postgresql://)")


def check_monitoring_store(settings: Any, timeout: float) -> Check:
    """The monitoring store (prediction log, checks): PostgreSQL, or the SQLite file."""
    uri = settings.monitoring_store_uri
    if uri is None or uri.startswith("sqlite:///"):
        path = (
            settings.home / "monitoring.sqlite"
            if uri is None
            else Path(uri.removeprefix("sqlite:///"))
        )
        return Check("monitoring-store", "ok", str(path), "embedded SQLite (one machine only)")
    if uri.startswith(("postgresql", "postgres://")):
        con, server = _postgres(uri, timeout)
        try:
            row = con.execute("SELECT to_regclass('prediction_log') IS NOT NULL").fetchone()
        finally:
            con.close()
        tables = "tables present" if row and row[0] else "empty (tables made on first use)"
        return Check("monitoring-store", "ok", mask(uri), f"PostgreSQL {server}; {tables}", server)
    raise Problem("not a supported monitoring store (sqlite:///, postgresql://)")


def _s3_check(component: str, uri: str, settings: Any, timeout: float) -> Check:
    """The bucket answers with these credentials and the prefix can be listed."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return Check(
            component, "skip", uri, "boto3 is not installed here (the worker image has it)"
        )
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        config=Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )
    where = f"{uri} at {settings.s3_endpoint_url or 'AWS'}"
    try:
        client.head_bucket(Bucket=bucket)
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
            raise Problem(f"credentials refused ({code})") from exc
        if code in ("404", "NoSuchBucket"):
            raise Problem(f"bucket {bucket!r} does not exist") from exc
        raise Problem(_short(exc)) from exc
    except BotoCoreError as exc:
        text = _short(exc)
        if "credentials" in text.lower():
            raise Problem(f"no credentials: {text}") from exc
        raise Problem(f"unreachable: {text}") from exc
    found = "objects under the prefix" if listed.get("KeyCount") else "prefix empty"
    return Check(component, "ok", where, f"bucket {bucket!r} reachable; {found}")


def check_landing(settings: Any, timeout: float) -> Check:
    """Where new files land: the S3 prefix, or the local folder."""
    if settings.landing_s3_prefix:
        return _s3_check("landing", settings.landing_s3_prefix, settings, timeout)
    return Check("landing", "ok", str(settings.landing), "local folder (one machine only)")


def check_scores(settings: Any, timeout: float) -> Check:
    """Where the pipeline's batch scores go: an S3 prefix, or a local folder."""
    uri = settings.scores_location
    if uri.startswith("s3://"):
        return _s3_check("batch-scores", uri, settings, timeout)
    return Check("batch-scores", "ok", uri, "local folder (one machine only)")


def _pyspark_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyspark")
    except PackageNotFoundError:
        return None


def _spark_target(settings: Any) -> str:
    if settings.spark_remote:
        return f"engine={settings.engine}, Spark Connect {mask(settings.spark_remote)}"
    return f"engine={settings.engine}, master {settings.spark_master}"


def check_spark(settings: Any, timeout: float) -> Check:
    """What the Spark engine needs here: PySpark, and for a driver on this machine Java 17+.

    With ``SHOPML_ENGINE=duckdb`` nothing fails: the line says whether ``--engine spark`` could
    run (``ok``) or what it would need (``skip``). A Spark Connect server runs its own JVM, so
    only PySpark is checked then; the server itself is met when a command first uses it.
    """
    from shopml.data.spark import EngineError, check_java, java_path

    active = settings.engine == "spark"
    pyspark = _pyspark_version()
    target = _spark_target(settings)
    missing = "" if pyspark else "PySpark is not installed: pip install 'shopml[spark]'"
    java = ""
    if not settings.spark_remote:
        try:
            java = f"Java {check_java(timeout=max(timeout, 1.0))} ({java_path()})"
        except EngineError as exc:
            missing = f"{missing}; {exc}" if missing else str(exc)
    if missing:
        if active:
            raise Problem(missing)
        return Check("spark", "skip", target, f"not used by this engine; --engine spark: {missing}")
    found = ", ".join(p for p in (java, f"PySpark {pyspark}") if p)
    if not active:
        return Check(
            "spark", "ok", target, f"not used by this engine; --engine spark can run: {found}"
        )
    return Check("spark", "ok", target, found, version=pyspark)


CHECKS: dict[str, Callable[[Any, float], Check]] = {
    "settings": check_settings,
    "warehouse": check_warehouse,
    "mlflow-tracking": check_tracking,
    "mlflow-artifacts": check_artifacts,
    "prefect": check_prefect,
    "online-store": check_online_store,
    "monitoring-store": check_monitoring_store,
    "landing": check_landing,
    "batch-scores": check_scores,
    "spark": check_spark,
}


def _run_one(name: str, fn: Callable[[Any, float], Check], settings: Any, timeout: float) -> Check:
    started = time.perf_counter()
    try:
        check = fn(settings, timeout)
    except Problem as exc:
        check = Check(name, exc.status, "", exc.detail, exc.version)
    except ImportError as exc:
        check = Check(name, "skip", "", f"cannot check here: {exc.name or exc} is not installed")
    except Exception as exc:
        check = Check(name, "fail", "", f"{type(exc).__name__}: {_short(exc)}")
    check.seconds = round(time.perf_counter() - started, 2)
    return check


def _target(name: str, settings: Any) -> str:
    """Where a component points, for a line whose check ended before saying so."""
    return {
        "settings": f"env={settings.env}",
        "warehouse": str(settings.warehouse),
        "mlflow-tracking": mask(settings.tracking_uri),
        "mlflow-artifacts": mask(settings.mlflow_artifact_root or settings.tracking_uri),
        "prefect": _prefect_api() or "PREFECT_API_URL unset",
        "online-store": mask(settings.online_store_uri or "sqlite (home)"),
        "monitoring-store": mask(settings.monitoring_store_uri or "sqlite (home)"),
        "landing": settings.landing_s3_prefix or str(settings.landing),
        "batch-scores": settings.scores_location,
        "spark": _spark_target(settings),
    }.get(name, "")


def _preload(settings: Any) -> None:
    """Import the client libraries the checks will use before their clocks start: on a busy
    machine importing boto3 or psycopg takes seconds, which is not a server failing to answer."""
    import contextlib
    import importlib

    uris = " ".join(
        str(u or "")
        for u in (
            settings.tracking_uri,
            settings.mlflow_artifact_root,
            settings.online_store_uri,
            settings.monitoring_store_uri,
            settings.landing_s3_prefix,
            settings.scores_uri,
        )
    )
    wanted = {"postgres": "psycopg", "redis": "redis", "s3://": "boto3", "duckdb": "duckdb"}
    for marker, module in wanted.items():
        if marker in uris or module == "duckdb":
            # Not installed: the check itself says it cannot check here.
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
    _prefect_api()


def diagnose(settings: Any, timeout: float = 5.0, only: list[str] | None = None) -> list[Check]:
    """Run every check at once; each answers within about ``timeout`` seconds (a check still
    running after ``2 * timeout + 1`` is reported as timed out and left behind). The client
    libraries are imported first, outside that bound."""
    names = [n for n in CHECKS if not only or n in only]
    results: dict[str, Check] = {}
    _preload(settings)

    def work(name: str) -> None:
        results[name] = _run_one(name, CHECKS[name], settings, timeout)

    # Daemon threads, not an executor: a check stuck in a blocking call (a DNS lookup of a
    # host that does not answer) must not hold the command at exit.
    threads = {n: threading.Thread(target=work, args=(n,), daemon=True) for n in names}
    for thread in threads.values():
        thread.start()
    limit = 2 * timeout + 1
    deadline = time.monotonic() + limit
    out = []
    for name, thread in threads.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        check = results.get(name) or Check(name, "fail", "", f"no answer within {limit:.0f} s")
        if name not in results:
            check.seconds = round(limit, 2)
        if not check.target:
            check.target = _target(name, settings)
        out.append(check)
    return out


def healthy(checks: list[Check]) -> bool:
    """True when no check failed (warnings and skips do not fail the doctor)."""
    return not any(c.status == "fail" for c in checks)
