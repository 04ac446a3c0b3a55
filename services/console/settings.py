"""The console's settings: its port and the base URLs of the services it calls (AIMIS_* variables)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("order", "entitlement", "metering", "expiry")


class ConsoleSettings(BaseSettings):
    """The console holds no secret of the services: it forwards the signed-in user's token."""

    model_config = SettingsConfigDict(env_prefix="AIMIS_", extra="ignore")

    console_port: int = 8000
    host: str = "127.0.0.1"
    log_level: str = "INFO"
    order_port: int = 8001
    entitlement_port: int = 8002
    metering_port: int = 8003
    expiry_port: int = 8004
    # AIMIS_ORDER_URL ... AIMIS_EXPIRY_URL: where the services answer (default http://127.0.0.1:<port>)
    order_url: str | None = None
    entitlement_url: str | None = None
    metering_url: str | None = None
    expiry_url: str | None = None
    # Set behind TLS so the session cookie is sent over HTTPS only.
    console_secure_cookie: bool = False
    # A session never outlives its token; this caps it further (seconds).
    console_session_max_s: int = 12 * 3600
    console_upstream_timeout_s: float = 10.0

    def url_of(self, service: str) -> str:
        explicit = getattr(self, f"{service}_url")
        base = explicit or f"http://127.0.0.1:{getattr(self, f'{service}_port')}"
        return base.rstrip("/")

    @property
    def urls(self) -> dict[str, str]:
        return {s: self.url_of(s) for s in SERVICES}
