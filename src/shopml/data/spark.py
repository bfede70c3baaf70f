"""The Spark engine's session: started once per process, quiet, stopped at exit.

``SHOPML_ENGINE=spark`` runs the feature builders, labelled datasets and batch scoring on
Spark. The session comes from the settings: a local driver on ``SHOPML_SPARK_MASTER``
(``local[2]`` by default, or a cluster's master URL), or a Spark Connect server named by
``SHOPML_SPARK_REMOTE`` (``sc://host:15002``), with more Spark settings in
``SHOPML_SPARK_CONF``. Timestamps are naive UTC throughout shopml, so the session's time zone
is always UTC. A local driver needs Java (17 or later); :func:`check_java` says what to install
when it is missing, before Spark fails with a less helpful message.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from shopml.settings import Settings

MIN_JAVA = 17


class _State:
    """The process's one session and the settings it was started with."""

    lock = threading.Lock()
    session: SparkSession | None = None
    key: tuple[Any, ...] | None = None


# The settings every shopml session has; SHOPML_SPARK_CONF may override the tuning ones.
_DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",  # the warehouse's timestamps are naive UTC
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.adaptive.enabled": "true",
}
_FIXED_CONF = {"spark.sql.session.timeZone": "UTC"}


class EngineError(RuntimeError):
    """The engine cannot start or run as configured (no Java, no PySpark, a bad master URL)."""


def java_path() -> str | None:
    """The ``java`` that Spark would start: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else shutil.which("java")


def java_version(java: str | None = None, timeout: float = 60) -> int | None:
    """The major version of the Java that Spark would use (JAVA_HOME, else ``java`` on PATH),
    or None when there is none."""
    java = java or java_path()
    if not java or not Path(java).exists():
        return None
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8" is Java 8


def _java_where() -> str:
    home = os.environ.get("JAVA_HOME")
    return f"JAVA_HOME ({home})" if home else "PATH"


def check_java(timeout: float = 60) -> int:
    """Java's major version; raises :class:`EngineError` naming what to install when Spark's
    local driver cannot run."""
    v = java_version(timeout=timeout)
    where = _java_where()
    if v is None:
        raise EngineError(
            f"the Spark engine needs Java {MIN_JAVA} or later and none was found on {where}: "
            "install a JDK (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; macOS: "
            "`brew install openjdk@17`) or set JAVA_HOME to one; or use SHOPML_ENGINE=duckdb, "
            "or SHOPML_SPARK_REMOTE=sc://... to run on a Spark Connect server"
        )
    if v < MIN_JAVA:
        raise EngineError(
            f"the Spark engine needs Java {MIN_JAVA} or later; the Java on {where} is {v}: "
            "install openjdk-17 (or newer) and point JAVA_HOME at it"
        )
    return v


def _check_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise EngineError(
            "the Spark engine needs PySpark: pip install 'shopml[spark]' (or make install)"
        ) from None


def session_conf(settings: Settings) -> dict[str, str]:
    """The Spark settings of a shopml session (defaults, then SHOPML_SPARK_CONF, then the
    ones shopml relies on)."""
    local = (
        {}
        if settings.spark_remote or not settings.spark_master.startswith("local")
        else {
            # Spark's 200 shuffle partitions suit a cluster; on one machine they are mostly
            # scheduling overhead (adaptive execution coalesces them, but only after the shuffle).
            "spark.sql.shuffle.partitions": "8"
        }
    )
    return {**_DEFAULT_CONF, **local, **settings.spark_conf, **_FIXED_CONF}


def get_spark(settings: Settings) -> SparkSession:
    """The process's Spark session, started on first use with these settings (and stopped at
    exit). A later call with other engine settings stops it and starts another."""
    conf = tuple(sorted(session_conf(settings).items()))
    key = (settings.spark_remote, settings.spark_master, conf)
    with _State.lock:
        if _State.session is not None and _State.key == key and _alive(_State.session):
            return _State.session
        _stop_locked()
        _State.session = _start(settings)
        _State.key = key
        return _State.session


def _alive(session: SparkSession) -> bool:
    try:
        sc = getattr(session, "_sc", None)
        return sc is None or sc._jsc is not None
    except Exception:  # a dead gateway
        return False


def _start(settings: Settings) -> SparkSession:
    _check_pyspark()
    from pyspark.sql import SparkSession

    conf = session_conf(settings)
    builder = SparkSession.builder.appName("shopml")
    if settings.spark_remote:
        builder = builder.remote(settings.spark_remote)
    elif os.environ.get("PYSPARK_GATEWAY_PORT"):
        # Started by spark-submit: its JVM is up, with the master and settings it was given.
        pass
    else:
        check_java()
        # Spark warns that the host name resolves to loopback unless told which address to use.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        if settings.spark_master.startswith("local"):
            # Python workers run shopml's own interpreter (its pyarrow, its model libraries);
            # on a cluster the executors' Python is the cluster's (see docs/how-to/spark.md).
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        quiet = Path(__file__).with_name("spark-log4j2.properties")
        options = f"-Dlog4j2.configurationFile={quiet.as_uri()}"
        extra = conf.get("spark.driver.extraJavaOptions")
        conf["spark.driver.extraJavaOptions"] = f"{options} {extra}" if extra else options
        builder = builder.master(settings.spark_master)
    for k, v in conf.items():
        builder = builder.config(k, v)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # Py4J/Connect errors carry pages of JVM detail
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = settings.spark_remote or settings.spark_master
        raise EngineError(f"Spark did not start on {where}: {first}") from exc
    if not settings.spark_remote and not os.environ.get("PYSPARK_GATEWAY_PORT"):
        session.sparkContext.setLogLevel("ERROR")
    atexit.register(stop_spark)
    return session


def _stop_locked() -> None:
    from shopml.data.lake import forget_views

    forget_views()
    if _State.session is not None:
        with contextlib.suppress(Exception):  # already gone with its JVM
            _State.session.stop()
    _State.session, _State.key = None, None


def stop_spark() -> None:
    """Stop the process's Spark session, if one was started."""
    with _State.lock:
        _stop_locked()
