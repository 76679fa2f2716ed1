"""All configuration, read once from ``PAYOUTSVC_*`` environment variables."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from payoutsvc.retry import checked_schedule, parse_schedule

DEFAULT_SQLITE_FILE = "payoutsvc.db"
# A bootstrap key is an admin key anyone can try to guess: outside development it needs at
# least this many characters (`payoutsvc create-api-key` makes 40+).
MIN_BOOTSTRAP_KEY_CHARS = 32
_RATE_LIMIT_STORAGES = ("memory://", "redis://", "rediss://")
_HH_MM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _parse_seconds_list(value: object) -> object:
    return parse_schedule(value) if isinstance(value, str) else value


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting must not print secrets (the bootstrap key, the
    # encryption key, a database URL's password) into a startup log.
    model_config = SettingsConfigDict(
        env_prefix="PAYOUTSVC_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///./{DEFAULT_SQLITE_FILE}",
        description="SQLAlchemy async URL; sqlite+aiosqlite:// or postgresql+asyncpg://.",
    )
    gateway: str = Field(default="sandbox", description="Default gateway for every recipient type.")
    gateway_routes: str = Field(
        default="",
        description="Per recipient type gateway, e.g. 'alipay=alipay,paypal=paypal'.",
    )
    run_worker: bool = True
    bootstrap_api_key: SecretStr | None = None
    webhook_allow_private: bool = False
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = (
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
    )
    webhook_timeout_seconds: float = 15.0
    worker_poll_interval: float = Field(default=0.5, gt=0)
    executor_retry_schedule: Annotated[tuple[float, ...], NoDecode] = (
        1,
        2,
        5,
        15,
        30,
        60,
        120,
        300,
    )
    # How often a payout the provider holds pending (WeChat Pay WAIT_USER_CONFIRM, PayPal
    # UNCLAIMED, Alipay DEALING) is checked until the provider's own deadline.
    executor_hold_check_seconds: float = Field(default=900, gt=0)
    executor_batch_size: int = Field(default=200, ge=1, le=5000)
    executor_concurrency: int = Field(default=256, ge=1, le=4096)
    # PostgreSQL connections a process keeps open, and all it opens: past them a request waits
    # for one (db/engine.py: overflow connections opened and closed under load).
    db_pool_size: int = Field(default=20, ge=1, le=1000)
    executor_lease_seconds: float = Field(default=60, gt=0)
    sandbox_latency_ms: float = Field(default=0, ge=0)
    encryption_key: SecretStr | None = None
    # The audit chain's HMAC key material; unset: derived (HKDF) from the encryption key.
    audit_key: SecretStr | None = Field(default=None, min_length=32)
    # How often the worker records a signed audit checkpoint (chain heads), in seconds.
    audit_checkpoint_interval_seconds: float = Field(default=86400, gt=0)
    # -- reconciliation (README "Reconciliation") ------------------------------------------
    reconcile_calls_per_second: int = Field(
        default=10,
        ge=1,
        description="Gateway calls a reconciliation may make per second and gateway, in each "
        "worker process: what it takes away from paying.",
    )
    reconcile_at: str = Field(
        default="02:00",
        description="Local time (HH:MM, policy timezone) after which the worker reconciles "
        "the previous day for every gateway that can be asked; empty: no daily run.",
    )
    reconcile_lease_seconds: float = Field(default=300, gt=0)
    reconcile_poll_seconds: float = Field(default=10, gt=0)
    # How often the worker scans new payouts and approvals for anomalies (review/), seconds.
    review_interval: float = Field(default=3600, gt=0)
    review_max_duty: float = Field(
        default=0.15,
        gt=0,
        le=1,
        description="The share of wall time a review scan may be busy: it reads in chunks "
        "and sleeps between them so that payout creation beside it keeps its pace (1: no "
        "pauses).",
    )
    review_chunk_payouts: int = Field(
        default=2000,
        ge=100,
        description="New payouts (and approvals) one chunk of a review scan reads, in one "
        "short transaction.",
    )
    policy_file: Path | None = None
    idempotency_ttl_hours: float = Field(default=24, ge=24)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    environment: Literal["development", "production"] = "development"
    # -- limits (README "Limits") ---------------------------------------------------------
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Largest request body (413 beyond)."
    )
    rate_limit: str = Field(
        default="100/second",
        description="Sustained request rate per API key, and per client address for "
        "requests without a valid key and for gateway callbacks (limits library notation).",
    )
    rate_limit_burst: int = Field(
        default=200, ge=1, description="How many requests may come at once within the rate."
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where budgets are counted: memory:// (this process) or redis://host:port "
        "(shared by every API replica).",
    )
    webhook_max_endpoints: int = Field(default=20, ge=1, le=1000)
    api_key_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=2,
        description="How long a verified key is trusted without a query: the longest a "
        "revocation takes to reach another process.",
    )
    metrics_token: SecretStr | None = None
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL (e.g. http://collector:4318): traces are "
        "exported there. Unset or empty: tracing is off and costs nothing.",
    )
    metrics_refresh_seconds: float = Field(default=5.0, ge=0)
    # -- finance: the account a batch's pain.001 SEPA credit-transfer file pays from --------
    sepa_debtor_name: str | None = Field(default=None, min_length=1, max_length=70)
    sepa_debtor_iban: str | None = Field(default=None, min_length=15, max_length=34)
    sepa_debtor_bic: str | None = Field(default=None, min_length=8, max_length=11)

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _empty_endpoint_is_off(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_shape(cls, value: str) -> str:
        items = parse_many(value)  # ValueError names what it could not read
        if len(items) != 1:
            raise ValueError("expected one rate such as '100/second'")
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _rate_limit_storage_scheme(cls, value: str) -> str:
        if not value.startswith(_RATE_LIMIT_STORAGES):
            raise ValueError(f"expected a URL starting with one of {_RATE_LIMIT_STORAGES}")
        return value

    @model_validator(mode="after")
    def _strong_bootstrap_key(self) -> Settings:
        key = self.bootstrap_api_key
        if (
            self.environment != "development"
            and key is not None
            and len(key.get_secret_value()) < MIN_BOOTSTRAP_KEY_CHARS
        ):
            raise ValueError(
                f"PAYOUTSVC_BOOTSTRAP_API_KEY needs at least {MIN_BOOTSTRAP_KEY_CHARS} "
                "characters outside development (generate one: "
                "python -c 'import secrets; print(\"psk_\" + secrets.token_urlsafe(32))')"
            )
        return self

    @field_validator("webhook_retry_schedule", "executor_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        return _parse_seconds_list(value)

    @field_validator("webhook_retry_schedule", "executor_retry_schedule")
    @classmethod
    def _positive_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return checked_schedule(value)

    @field_validator("reconcile_at")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        value = value.strip()
        if value and not _HH_MM.fullmatch(value):
            raise ValueError("expected HH:MM (24-hour clock), or empty for no daily run")
        return value

    @field_validator("gateway_routes")
    @classmethod
    def _routes_shape(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if part.count("=") != 1 or not all(part.split("=")):
                raise ValueError(f"expected type=gateway pairs, got {part!r}")
        return value

    def gateway_for(self, recipient_type: str) -> str:
        """The gateway that pays this recipient type: its route, else the default."""
        routes = dict(
            part.strip().split("=", 1) for part in self.gateway_routes.split(",") if part.strip()
        )
        return routes.get(recipient_type, self.gateway).strip()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """Filesystem path of the SQLite database, or None for in-memory/PostgreSQL."""
        if not self.is_sqlite:
            return None
        _, _, rest = self.database_url.partition(":///")
        if not rest or rest.startswith(":memory:"):
            return None
        return Path(rest.split("?", 1)[0])

    @property
    def uses_embedded_default(self) -> bool:
        return self.is_sqlite


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
