"""Settings from the AIMIS_* environment variables (SPEC 5.4)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import PositiveFloat, PositiveInt, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_AUTH_SECRET = "aimis-dev-secret-not-for-production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIMIS_", extra="ignore")

    kafka_bootstrap: str = "localhost:9092"
    database_url: str = "postgresql://postgres@localhost:5432/aimis"
    auth_secret: str = DEV_AUTH_SECRET
    late_usage_grace_s: int = 300
    expiry_interval_s: float = 30.0
    reminder_days: str = "30,7,1"
    fulfilment_sla_s: PositiveInt = 3600  # a paid order not fulfilled within this is overdue (order view, alert)
    fulfilment_check_s: PositiveFloat = 15.0  # how often the order service recounts overdue orders for /metrics
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

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))


@lru_cache
def get_settings() -> Settings:
    return Settings()
