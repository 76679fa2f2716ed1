"""All configuration, read once from ``PAYOUTSVC_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from payoutsvc.retry import checked_schedule, parse_schedule

DEFAULT_SQLITE_FILE = "payoutsvc.db"


def _parse_seconds_list(value: object) -> object:
    return parse_schedule(value) if isinstance(value, str) else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYOUTSVC_", extra="ignore")

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
    executor_lease_seconds: float = Field(default=60, gt=0)
    sandbox_latency_ms: float = Field(default=0, ge=0)
    encryption_key: SecretStr | None = None
    policy_file: Path | None = None
    idempotency_ttl_hours: float = Field(default=24, ge=24)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    environment: Literal["development", "production"] = "development"

    @field_validator("webhook_retry_schedule", "executor_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        return _parse_seconds_list(value)

    @field_validator("webhook_retry_schedule", "executor_retry_schedule")
    @classmethod
    def _positive_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return checked_schedule(value)

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
