"""The one settings object for shopml.

Values come, highest priority first, from keyword arguments, ``SHOPML_*`` environment variables,
a ``.env`` file, and ``shopml.toml`` in the working directory (or the file named by
``SHOPML_CONFIG``). Every path lives under ``home`` unless configured otherwise. Nothing here runs
at import time: call :func:`get_settings`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "placeholder", "xxx", "todo"}


class SettingsError(ValueError):
    """A configuration value a user set is unusable."""


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024}
_SIZE_UNITS.update({"m": 1024**2, "mb": 1024**2, "mib": 1024**2, "g": 1024**3, "gb": 1024**3})
_SIZE_UNITS["gib"] = 1024**3


def parse_size(text: str) -> int:
    """``"1048576"``, ``"512k"``, ``"1MiB"``, ``"4m"`` as bytes (binary units: 1k = 1024)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size: write bytes, or a number with k, m or g")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def _config_file() -> Path:
    return Path(os.environ.get("SHOPML_CONFIG", "shopml.toml"))


class Settings(BaseSettings):
    """Configuration for every part of shopml; the docs' settings reference lists it all."""

    model_config = SettingsConfigDict(
        env_prefix="SHOPML_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    env: Literal["development", "production"] = Field(
        default="development",
        description="`production` refuses placeholder secrets and always needs API keys.",
    )
    insecure_dev: bool = Field(
        default=False,
        description="Serve without API keys (open mode, loopback only); `shopml serve "
        "--insecure-dev` sets it. Refused with SHOPML_ENV=production.",
    )
    home: Path = Field(default=Path(".shopml"), description="Folder that holds all local state.")

    # Data layer.
    warehouse_path: Path | None = Field(
        default=None, description="DuckDB warehouse file; default <home>/warehouse.duckdb."
    )
    shared_data_dir: Path = Field(
        default=Path("../shared/data"), description="Where the public sample datasets live."
    )
    landing_dir: Path | None = Field(
        default=None, description="Folder watched for new files; default <home>/landing."
    )

    # The engine that builds features, labelled datasets and batch scores (docs/how-to/spark.md).
    engine: Literal["duckdb", "spark"] = Field(
        default="duckdb",
        description="duckdb (one machine, the warehouse file) or spark (the canonical tables "
        "as Parquet in the lake, read by Spark); `--engine` on the commands that read data.",
    )
    lake_uri: str | None = Field(
        default=None,
        description="Where the Spark engine reads the canonical tables: a folder or "
        "s3://bucket/prefix/ of Parquet; default <home>/lake.",
    )
    spark_master: str = Field(
        default="local[2]",
        description="Spark master URL (local[N], spark://host:7077, yarn, k8s://...).",
    )
    spark_remote: str | None = Field(
        default=None,
        description="A Spark Connect server (sc://host:15002) used instead of a local driver.",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description='More Spark settings, e.g. {"spark.driver.memory": "8g"} '
        "(SHOPML_SPARK_CONF as JSON).",
    )

    # Tracking and registry (used from the models issue on).
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking store; default sqlite:///<home>/mlflow.db, e.g. "
        "postgresql+psycopg://user@host/db or http://mlflow:5000.",
    )
    mlflow_registry_uri: str | None = Field(
        default=None, description="A separate model registry; default the tracking URI."
    )
    mlflow_artifact_root: str | None = Field(
        default=None,
        description="Where new experiments keep artifacts; default <home>/mlartifacts with "
        "local stores, e.g. s3://bucket/mlflow.",
    )

    # Object storage (s3:// outputs, artifacts); any S3-compatible endpoint.
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Any S3-compatible endpoint (MinIO, moto, ...); default AWS.",
    )

    # Serving.
    # NoDecode: the environment gives "k1,k2", not JSON; _split_keys parses it.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys that may score and read the control tower, comma-separated "
        "(`Authorization: Bearer <key>`).",
    )
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys that may also use /v1/admin/* and the control tower's actions, "
        "comma-separated.",
    )
    online_store_uri: str | None = Field(
        default=None,
        description="Online features the API looks up by id; default SQLite under the home, "
        "or redis://host:6379/0, or postgresql://...",
    )
    monitoring_store_uri: str | None = Field(
        default=None,
        description="Prediction log and monitoring results; default "
        "sqlite:///<home>/monitoring.sqlite, postgresql://... in production.",
    )
    serve_max_batch: int = Field(
        default=100, ge=1, le=10_000, description="Most instances in one predict request."
    )
    serve_header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest a client may take to send a request's head."
    )
    serve_body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest a client may take to send a request's body."
    )
    serve_keepalive_seconds: int = Field(
        default=5, ge=1, description="Idle keep-alive connections are closed after this."
    )
    serve_max_connections: int = Field(
        default=1000, ge=1, description="Open connections per worker; beyond, 503."
    )
    serve_shared_dir: Path | None = Field(
        default=None,
        description="Folder the workers of one `shopml serve --workers N` share (it sets it): "
        "a reload reaches every worker through it.",
    )
    serve_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body (bytes; or 512k, 4m: binary units as nginx's "
        "client_max_body_size); beyond, 413, refused while it streams in.",
    )
    registry_poll_seconds: float = Field(
        default=30.0, gt=0, description="How often the service checks the champion aliases."
    )
    registry_start_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest the service's start waits for the registry before serving the "
        "champions in its serving cache (and retrying in the background).",
    )
    feature_max_age_hours: float = Field(
        default=48.0, gt=0, description="Online features older than this are flagged stale."
    )
    feature_cache_seconds: float = Field(
        default=5.0, ge=0, description="Online lookups cached per worker (0 turns it off)."
    )
    prediction_log_batch: int = Field(
        default=500, ge=1, description="Prediction-log rows per write."
    )
    prediction_log_flush_seconds: float = Field(
        default=1.0, gt=0, description="Longest a logged prediction waits before written."
    )
    prediction_log_max_queue: int = Field(
        default=200_000, ge=1, description="Queued log rows beyond which new ones are dropped."
    )

    # The control tower (`shopml ui`, or mounted in the API at /ui).
    serve_ui: bool = Field(
        default=False,
        description="Mount the control tower at /ui in the API (`shopml serve`); same keys.",
    )
    ui_mlflow_url: str | None = Field(
        default=None,
        description="MLflow UI the control tower links runs to; default the tracking server, "
        "else http://127.0.0.1:5000 (`mlflow ui`).",
    )
    ui_prefect_url: str | None = Field(
        default=None,
        description="Prefect UI the control tower links flow runs to; default PREFECT_UI_URL, "
        "else PREFECT_API_URL without /api, else http://127.0.0.1:4200.",
    )
    ui_api_url: str | None = Field(
        default=None,
        description="The API whose /metrics give the control tower live traffic and latency "
        "when it runs on its own (`shopml ui`); mounted in the API, it reads them in-process.",
    )

    # Orchestration (Prefect deployments made by `shopml deploy`, run by `shopml worker`).
    landing_s3_prefix: str | None = Field(
        default=None, description="s3://bucket/prefix/ watched instead of the landing folder."
    )
    landing_poll_seconds: float = Field(
        default=5.0, description="How often the landing folder or prefix is listed."
    )
    scores_uri: str | None = Field(
        default=None,
        description="Where the pipeline's batch scores go: a folder, or s3://bucket/prefix/ "
        "(also kept under <home>/scores); default <home>/scores.",
    )
    retrain_cron: str = Field(default="0 3 * * *", description="Daily retrain of every use case.")
    monitor_cron: str = Field(
        default="0 * * * *",
        description="Hourly monitoring report; empty: no schedule on the Prefect server "
        "(another scheduler runs the monitor/shopml deployment).",
    )
    schedule_timezone: str = Field(default="UTC", description="Time zone of both schedules.")
    work_pool: str = Field(default="shopml", description="The Prefect process work pool.")

    # Monitoring (drift, delayed-label performance, alerts, the retrain loop).
    alert_webhook_url: str | None = Field(
        default=None, description="Where alerts are POSTed (Slack-compatible JSON)."
    )
    monitor_retrain: Literal["inline", "deployment", "off"] = Field(
        default="inline",
        description="How the loop retrains: run the retrain flow in the monitor's process, "
        "start the retrain/shopml deployment on the Prefect server, or not at all.",
    )
    monitor_policy: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='Thresholds per use case (and "default"), e.g. '
        '{"delivery-time": {"max_degradation": 0.3}}.',
    )
    monitor_reports: bool = Field(
        default=True, description="Write HTML reports and Evidently workspace snapshots."
    )
    monitor_keep_reports: int = Field(
        default=30,
        ge=1,
        description="HTML drift reports and Evidently snapshots kept per use case (newest).",
    )
    prediction_log_retention_days: float = Field(
        default=400.0, gt=0, description="Logged predictions older than this are pruned."
    )

    # Rollout of challengers (shadow, canary, A/B); `shopml rollout` records a mode in the
    # registry, which takes precedence over this.
    rollout: dict[str, str] = Field(
        default_factory=dict,
        description="Rollout mode per use case when the registry records none, e.g. "
        '{"returns": "shadow", "clv": "canary:0.1", "high-value": "ab:0.5"}.',
    )

    # Reproducibility.
    seed: int = Field(default=42, description="Training seed.")

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        # Environment variables carry lists as comma-separated strings.
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("serve_max_body_bytes", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("rollout")
    @classmethod
    def _check_rollout(cls, value: dict[str, str]) -> dict[str, str]:
        from shopml.runtime.rollout import parse

        for usecase, mode in value.items():
            try:
                parse(mode)
            except ValueError as exc:
                raise ValueError(f"SHOPML_ROLLOUT[{usecase!r}]: {exc}") from None
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.env == "production":
            for name in ("api_keys", "admin_keys"):
                for key in getattr(self, name):
                    if key.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                        raise ValueError(
                            f"SHOPML_{name.upper()} holds a placeholder key; set a real secret "
                            "or run with SHOPML_ENV=development"
                        )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return (init_settings, env_settings, dotenv_settings, toml, file_secret_settings)

    @property
    def open_mode_allowed(self) -> bool:
        """Whether the service may run without API keys: only when the caller opted in, with
        SHOPML_INSECURE_DEV / ``--insecure-dev`` or by setting SHOPML_ENV=development
        explicitly (the default ``development`` does not count), and never in production."""
        if self.env != "development":
            return False
        return self.insecure_dev or "env" in self.model_fields_set

    # Derived locations. Properties, so that changing ``home`` moves everything with it.
    @property
    def warehouse(self) -> Path:
        return self.warehouse_path or self.home / "warehouse.duckdb"

    @property
    def landing(self) -> Path:
        return self.landing_dir or self.home / "landing"

    @property
    def lake_location(self) -> str:
        """The Spark engine's Parquet lake: a folder or ``s3://`` prefix (see ``lake_uri``)."""
        return self.lake_uri or str((self.home / "lake").resolve())

    @property
    def scores_location(self) -> str:
        """The batch scores' folder or ``s3://`` prefix (see ``scores_uri``)."""
        return self.scores_uri or str(self.home / "scores")

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def evidently_workspace(self) -> Path:
        return self.home / "evidently"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.home / "mlartifacts").resolve().as_uri()

    def ensure_home(self) -> Path:
        """Create the home folder (and nothing else) when something is about to be written."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use.

    Raises :class:`SettingsError` with one line per bad value instead of pydantic's report.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from None


def reset_settings() -> None:
    """Forget cached settings (tests and long-lived processes that change the environment)."""
    get_settings.cache_clear()
