"""Configuration in one place: environment settings and the parameters of each job, validated by pydantic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tftmon.contract import DEFAULT_FLEET_SIZE, MIN_RAW_INTERVAL

Scenario = Literal["normal", "healthy", "degrading", "critical"]


class Settings(BaseSettings):
    """Process-wide settings from the environment (a remote tracking server is one variable away)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    mlflow_tracking_uri: str = "sqlite:///mlflow.db"
    #: Where runs of our own experiment keep artifacts when the store is local.
    tftmon_artifact_root: Path = Path("mlartifacts")
    tftmon_experiment: str = "tftmon"
    tftmon_model_name: str = "tftmon"
    tftmon_admin_token: str | None = None


def parse_interval(text: str | timedelta) -> timedelta:
    """'5s', '1min', '5min', '1h' -> timedelta; refuses anything shorter than the contract's minimum."""
    if isinstance(text, timedelta):
        interval = text
    else:
        try:
            interval = pd.Timedelta(text).to_pytimedelta()
        except ValueError as exc:
            raise ValueError(f"interval {text!r} is not a duration; use e.g. 5s, 1min, 5min") from exc
    if interval < MIN_RAW_INTERVAL:
        raise ValueError(f"interval {text!r} is shorter than the minimum {MIN_RAW_INTERVAL}; use 5s or more")
    return interval


DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: reproducible weekly pattern by default


class SimulationConfig(BaseModel):
    """Parameters of one simulated dataset (mirrors `tftmon generate`)."""

    servers: int = Field(DEFAULT_FLEET_SIZE, ge=1)
    hours: float = Field(720, gt=0)
    interval: timedelta = timedelta(minutes=5)
    seed: int = 42
    start: datetime = DEFAULT_START
    #: Exact fleet instead of `servers`: hostnames with optional profiles (None = infer from the name).
    fleet: list[tuple[str, str | None]] | None = None
    add_servers: int = Field(0, ge=0)
    retire_servers: int = Field(0, ge=0)
    scenario: Scenario = "normal"
    #: Share of servers forced onto the scenario's path (healthy: share kept free of incidents).
    scenario_fraction: float = Field(0.3, ge=0.0, le=1.0)
    #: Share of servers that have incidents far more often than the rest.
    problem_fraction: float = Field(0.1, ge=0.0, le=1.0)

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: str | timedelta) -> timedelta:
        return parse_interval(value)

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: str | datetime) -> datetime:
        ts = pd.Timestamp(value)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return ts.to_pydatetime()

    @property
    def ticks(self) -> int:
        return int(timedelta(hours=self.hours) / self.interval)
