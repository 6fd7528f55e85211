"""Where the dashboard finds the service and the feeder, and how often it refreshes (env TFTMON_DASHBOARD_*).

`tftmon dashboard` turns its options into these variables for the Streamlit process it becomes; the
Advanced tab can change them for one browser session.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tftmon.config import ServiceConfig

#: The feeder's control endpoint (`tftmon feed` owns the scenario).
DEFAULT_FEEDER_URL = "http://127.0.0.1:3001"


def _service_url() -> str:
    """Where `tftmon serve` listens by default (TFTMON_SERVICE_HOST/PORT), as `tftmon feed` reads it."""
    service = ServiceConfig()
    return f"http://{service.host}:{service.port}"


class DashboardSettings(BaseSettings):
    """The dashboard's settings; a typo in a variable's value is an error naming the field."""

    model_config = SettingsConfigDict(env_prefix="TFTMON_DASHBOARD_", extra="forbid", frozen=True)

    service_url: str = Field(default_factory=_service_url)
    feeder_url: str = DEFAULT_FEEDER_URL
    #: Seconds between refreshes of the page's data (the service forecasts once per model step).
    refresh_seconds: float = Field(10.0, ge=1, le=3600)
    #: Seconds one HTTP request to the service may take.
    timeout_seconds: float = Field(15.0, gt=0)
    #: Worst servers given fan charts on the Top Servers tab.
    top_servers: int = Field(5, ge=1, le=20)

    @field_validator("service_url", "feeder_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL such as http://127.0.0.1:3000")
        return value.strip().rstrip("/")
