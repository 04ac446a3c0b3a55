"""Settings from the AIMIS_* environment variables (SPEC 5.4)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_AUTH_SECRET = "aimis-dev-secret-not-for-production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIMIS_", extra="ignore")

    env: str = "production"  # AIMIS_ENV: "development" allows the development auth secret
    kafka_bootstrap: str = "localhost:9092"
    database_url: str = "postgresql://postgres@localhost:5432/aimis"
    auth_secret: str = DEV_AUTH_SECRET
    token_max_ttl_s: int = 86_400  # a token's exp - iat may not exceed this (SPEC 7.4)
    payment_webhook_secret: str = ""  # HMAC-SHA256 key of POST /v1/payments/webhook; empty: webhook off
    # SPEC 7.5: an HTTP request still waiting (on PostgreSQL or Kafka) after this answers 503
    http_deadline_s: float = 4.0
    late_usage_grace_s: int = 300
    expiry_interval_s: float = 30.0
    reminder_days: str = "30,7,1"
    order_port: int = 8001
    entitlement_port: int = 8002
    metering_port: int = 8003
    expiry_port: int = 8004
    host: str = "127.0.0.1"
    topic_partitions: int = 6
    log_level: str = "INFO"
    # consumer tuning (not in the SPEC; defaults suit this machine)
    batch_max_records: int = 2000
    batch_timeout_ms: int = 50

    @field_validator("reminder_days")
    @classmethod
    def _reminders(cls, v: str) -> str:
        days = [int(x) for x in v.split(",") if x.strip()]
        if any(d < 0 for d in days):
            raise ValueError("AIMIS_REMINDER_DAYS must be non-negative integers")
        return v

    @property
    def reminder_day_list(self) -> list[int]:
        return sorted({int(x) for x in self.reminder_days.split(",") if x.strip()}, reverse=True)

    @property
    def is_development(self) -> bool:
        return self.env.strip().lower() == "development"

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))


@lru_cache
def get_settings() -> Settings:
    return Settings()
