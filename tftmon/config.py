"""Configuration in one place: environment settings and the parameters of each job, validated by pydantic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tftmon.contract import DEFAULT_FLEET_SIZE, MIN_RAW_INTERVAL, PREDICTION_STEPS, steps

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
    #: Length of the period; math.inf makes an endless period for a live feed (streaming only).
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
    #: When the forced scenario path starts, in hours after `start`; None = place it so it ends with the
    #: period (batch). A live feeder sets it, e.g. 0.25, because its period has no useful end.
    scenario_start_hours: float | None = Field(None, ge=0.0)

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


class ModelConfig(BaseModel):
    """Every hyperparameter needed to rebuild the network; stored as config.json beside the weights."""

    targets: list[str]
    encoder_steps: int = Field(288, ge=2)
    prediction_steps: int = Field(PREDICTION_STEPS, ge=1)
    hidden_size: int = Field(16, ge=1)
    attention_head_size: int = Field(2, ge=1)
    lstm_layers: int = Field(1, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    hidden_continuous_size: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    reduce_on_plateau_patience: int = Field(3, ge=1)
    #: One weight per target: the loss is in each metric's own unit, so this evens out their scales.
    loss_weights: list[float] | None = None


class TrainConfig(BaseModel):
    """Parameters of one training job (mirrors `tftmon train`)."""

    #: Metrics to forecast; None = all contract metrics.
    targets: list[str] | None = None
    max_epochs: int = Field(4, ge=1)
    #: Bounds CPU time: each epoch draws at most this many random batches (None = all).
    max_batches_per_epoch: int | None = Field(20, ge=1)
    max_val_batches: int | None = Field(5, ge=1)
    encoder_hours: float = Field(6.0, gt=0)
    #: The last part of each server's history held out for validation (at least one forecast length).
    validation_hours: float = Field(16.0, gt=0)
    #: Validation windows start every this many steps (adjacent windows are nearly identical).
    validation_stride: int = Field(12, ge=1)
    hidden_size: int = Field(16, ge=1)
    attention_head_size: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    hidden_continuous_size: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    gradient_clip_val: float = Field(0.1, gt=0)
    early_stopping_patience: int = Field(3, ge=1)
    accelerator: str = "auto"
    devices: int | str = "auto"
    seed: int = 42
    progress_bar: bool = True
    #: Where Lightning checkpoints go; None = a temporary directory removed after training.
    checkpoint_dir: Path | None = None

    @property
    def encoder_steps(self) -> int:
        return steps(timedelta(hours=self.encoder_hours))

    @property
    def validation_steps(self) -> int:
        return steps(timedelta(hours=self.validation_hours))

    def to_model_config(self, targets: list[str], loss_weights: list[float] | None = None) -> ModelConfig:
        return ModelConfig(
            targets=targets,
            encoder_steps=self.encoder_steps,
            hidden_size=self.hidden_size,
            attention_head_size=self.attention_head_size,
            dropout=self.dropout,
            hidden_continuous_size=self.hidden_continuous_size,
            learning_rate=self.learning_rate,
            loss_weights=loss_weights,
        )


class EvaluationConfig(BaseModel):
    """Parameters and targets of a backtest against baselines (tftmon.evaluation.evaluate)."""

    #: The last part of time held out from training (for every server) and scored.
    holdout_hours: float = Field(32.0, gt=8.0)
    #: Share of servers never shown in training, scored as cold starts (at least one when there are 4+).
    cold_start_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    #: Spacing of forecast origins in the held-out period.
    origin_every: timedelta = timedelta(hours=1)
    #: "at": score each horizon at exactly its step; "upto": average over steps 1..horizon.
    horizon_mode: Literal["at", "upto"] = "at"
    #: Seasonal-naive period (one day of 5-min steps) and the linear-drift fit window (one hour).
    seasonal_steps: int = Field(288, ge=1)
    drift_steps: int = Field(12, ge=2)
    #: Baseline p10/p90 come from residual quantiles at up to this many origins in the training part.
    calibration_origins: int = Field(2000, ge=0)
    #: An incident counts as warned when a critical alert came at least this long before it started.
    warning_lead: timedelta = timedelta(minutes=30)
    target_mase_ratio: float = Field(0.85, gt=0)
    target_coverage: tuple[float, float] = (0.75, 0.85)
    target_cold_start_gap: float = Field(0.15, ge=0)
    target_recall: float = Field(0.8, ge=0, le=1)


class DemoConfig(BaseModel):
    """The small fleet `tftmon demo` runs end to end in minutes on 2 CPU cores."""

    simulation: SimulationConfig = SimulationConfig(servers=18, hours=7 * 24)
    train: TrainConfig = TrainConfig()
    evaluation: EvaluationConfig = EvaluationConfig(holdout_hours=32)


class ServiceConfig(BaseSettings):
    """Limits and intervals of the HTTP service (env TFTMON_SERVICE_*): every bound is documented here."""

    model_config = SettingsConfigDict(env_prefix="TFTMON_SERVICE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    #: One /predict request: at most this many servers and rows (900 servers x 24 h of 5-min rows fit).
    max_servers_per_request: int = Field(1000, ge=1)
    max_rows_per_request: int = Field(300_000, ge=1)
    #: One /feed request: at most this many rows (ticks x servers).
    max_feed_rows: int = Field(50_000, ge=1)
    #: Live windows kept at most for this many servers; further new servers are refused (memory bound).
    max_live_servers: int = Field(5000, ge=1)
    #: How often the background loop checks for new live data (seconds, wall clock).
    refresh_seconds: float = Field(2.0, gt=0)
    #: The loop forecasts when live data advanced a model step, or when new data came and this many wall-clock
    #: seconds passed; None = one model step (contract.MODEL_STEP).
    forecast_every_seconds: float | None = Field(None, gt=0)
    #: Alert transitions kept for /alerts/history.
    alert_history: int = Field(1000, ge=1)
    #: An active alert resolves after this many consecutive healthy forecasts (no one-tick flapping).
    resolve_after: int = Field(2, ge=1)
    #: Window of the unknown-server prediction rate (seconds).
    unknown_rate_window_seconds: float = Field(3600.0, gt=0)
    #: Distinct unknown hostnames remembered for the count (bounded memory).
    max_unknown_names: int = Field(100_000, ge=1)
    #: Torch intra-op threads for inference. One: the network's tensors are small, and on a shared 2-core
    #: machine two threads spin against each other (90 servers: forward 0.2 s with one, 3-9 s with two).
    torch_threads: int = Field(1, ge=1)
