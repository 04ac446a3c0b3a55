"""Settings from the AIMIS_* environment variables (SPEC 5.4)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import PositiveFloat, PositiveInt, field_validator
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
    fulfilment_sla_s: PositiveInt = 3600  # a paid order not fulfilled within this is overdue (order view, alert)
    fulfilment_check_s: PositiveFloat = 15.0  # how often the order service recounts overdue orders for /metrics
    order_port: int = 8001
    entitlement_port: int = 8002
    metering_port: int = 8003
    expiry_port: int = 8004
    host: str = "127.0.0.1"
    topic_partitions: int = 6
    log_level: str = "INFO"
    # Kafka durability and security (SPEC 7.6, 10)
    kafka_replication: int = 1  # replication factor of the topics a service creates (3 in a cluster)
    kafka_min_isr: int = 1  # their min.insync.replicas (2 in a cluster)
    kafka_security: Literal["none", "scram"] = "none"  # scram: SASL/SCRAM-SHA-512, topics made by the operator
    kafka_username: str = ""  # this process's principal (scram)
    kafka_password: str = ""
    kafka_credentials: str = ""  # a credentials.json ({principal: password}) to take the password from
    # SPEC 7.2: /readyz answers 503 when a consumer with lag or the outbox made no progress this long
    stall_s: PositiveFloat = 60.0
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

    def kafka_options(self, principal: str | None = None) -> dict[str, str]:
        """aiokafka client keyword arguments for this process's Kafka identity ({} without security).

        The principal is AIMIS_KAFKA_USERNAME, else `principal`; the password AIMIS_KAFKA_PASSWORD,
        else that principal's entry in AIMIS_KAFKA_CREDENTIALS."""
        if self.kafka_security != "scram":
            return {}
        user = self.kafka_username or principal or ""
        password = self.kafka_password
        if not password and self.kafka_credentials and user:
            password = json.loads(Path(self.kafka_credentials).read_text()).get(user, "")
        if not user or not password:
            raise ValueError("AIMIS_KAFKA_SECURITY=scram needs AIMIS_KAFKA_USERNAME and a password "
                             "(AIMIS_KAFKA_PASSWORD or AIMIS_KAFKA_CREDENTIALS)")
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": user, "sasl_plain_password": password}

    @property
    def is_development(self) -> bool:
        return self.env.strip().lower() == "development"

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))


@lru_cache
def get_settings() -> Settings:
    return Settings()
