"""Configuration in one place: environment settings and the parameters of each job, validated by pydantic."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tftmon.alerting import PageRule
from tftmon.contract import (
    DEFAULT_FLEET_SIZE,
    MEDIUM_DRIFT_WITHIN,
    MIN_RAW_INTERVAL,
    MIN_TRAINING_HISTORY,
    MODEL_QUANTILES,
    MODEL_STEP,
    PREDICTION_STEPS,
    QUANTILES,
    steps,
    to_utc,
)

Scenario = Literal["normal", "healthy", "degrading", "critical"]


def reject_unknown_fields(model: type[BaseModel], data: Any) -> Any:
    """Refuse names `model` does not have, listing the valid ones: pydantic's own extra_forbidden error names
    only the bad one, and a misspelt parameter must never run the job with a silent default instead."""
    if not isinstance(data, dict):
        return data
    valid = list(model.model_fields)
    unknown = [str(name) for name in data if name not in model.model_fields]
    if unknown:
        named = [
            f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, valid, n=1)) else name
            for name in unknown
        ]
        raise PydanticCustomError(
            "unknown_field",
            "unknown field {unknown} in {model}; valid fields: {valid}",
            {"unknown": ", ".join(named), "model": model.__name__, "valid": ", ".join(valid)},
        )
    return data


def error_text(exc: ValidationError) -> str:
    """A validation error as one line, `field: problem` per error (nested fields dotted), for the CLI."""
    problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()]
    return f"invalid {exc.title}: {'; '.join(problems)}"


Model = TypeVar("Model", bound=BaseModel)


def load_yaml(model: type[Model], path: Path, error: type[ValueError], shape: str) -> Model:
    """A strict model from a YAML file (mapping, policy); every error names the file, then the key or `shape`
    (what the file should look like), raised as the caller's own `error` type."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc}); {shape}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: {shape}")
    try:
        return model(**data)
    except ValidationError as exc:
        raise error(f"{path}: {error_text(exc)}") from None


def _with_published_quantiles(value: tuple[float, ...]) -> tuple[float, ...]:
    """Forecast quantiles: ascending, in (0, 1), the published ones among them."""
    if list(value) != sorted(set(value)) or not set(QUANTILES) <= set(value) or not 0 < value[0] < value[-1] < 1:
        raise ValueError(f"quantiles must be ascending, in (0, 1) and include {list(QUANTILES)}")
    return value


class StrictConfig(BaseModel):
    """Base of every job's config: a typo is an error naming the valid fields, and a validated config cannot
    change under the job that runs with it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        return reject_unknown_fields(cls, data)

    def params(self, prefix: str) -> dict[str, str]:
        """Every field as a flat `prefix.name` -> text pair (nested configs dotted): MLflow parameters are flat."""

        def flat(name: str, value: Any) -> Iterator[tuple[str, str]]:
            if isinstance(value, dict):
                for key, item in value.items():
                    yield from flat(f"{name}.{key}", item)
            else:
                yield name, str(value)

        return dict(flat(prefix, self.model_dump(mode="json")))


class Settings(BaseSettings):
    """Process-wide settings from the environment (a remote tracking server is one variable away).

    Unknown variables are ignored: with no prefix, every variable of the process environment is a candidate.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    mlflow_tracking_uri: str = "sqlite:///mlflow.db"
    #: Where runs of our own experiment keep artifacts when the store is local.
    tftmon_artifact_root: Path = Path("mlartifacts")
    tftmon_experiment: str = "tftmon"
    #: Where each `tftmon drift` check is a run, so drift over time is a chart in the MLflow UI.
    tftmon_monitoring_experiment: str = "tftmon-monitoring"
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


class SimulationConfig(StrictConfig):
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
        return to_utc(value).to_pydatetime()

    @property
    def ticks(self) -> int:
        return int(timedelta(hours=self.hours) / self.interval)


class NetworkConfig(StrictConfig):
    """The network's hyperparameters: what a user tunes, nested in TrainConfig as `model`."""

    hidden_size: int = Field(32, ge=1)
    attention_head_size: int = Field(2, ge=1)
    lstm_layers: int = Field(1, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    hidden_continuous_size: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    reduce_on_plateau_patience: int = Field(3, ge=1)
    #: Quantiles the network forecasts (ascending, including the published contract.QUANTILES): the tails
    #: let risk read the probability of crossing a level (tftmon.risk.exceedance).
    quantiles: tuple[float, ...] = MODEL_QUANTILES
    #: Targets are standardised per window with the encoder's spread, centred on the mean of its last this
    #: many steps (None: the whole encoder's mean). Centred on the last value, persistence is the network's
    #: zero: the 30-min forecast beats the last value by 16 % instead of 12 % (docs/BENCHMARKS.md).
    center_steps: int | None = Field(1, ge=1)
    #: Known-future inputs: each target's value this many hours before every encoder and forecast step (e.g.
    #: (24,) for yesterday, (24, 168) for last week too), standardised per window as the target is. A forecast
    #: then needs this much more history than the encoder. Each must be at least the horizon, so every forecast
    #: step's value is already observed. 24 h cut the held-out 8-h MASE by 11 % (docs/BENCHMARKS.md, "Yesterday in
    #: view"); off by default until warnings are measured with it, as it makes each history nine times longer.
    seasonal_lag_hours: tuple[int, ...] = ()

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return _with_published_quantiles(value)

    @field_validator("seasonal_lag_hours")
    @classmethod
    def _seasonal_lags(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        horizon = PREDICTION_STEPS * MODEL_STEP / timedelta(hours=1)
        if any(hours < horizon for hours in value) or len(set(value)) != len(value):
            raise ValueError(f"seasonal_lag_hours {value}: each must be at least the {horizon:g}-h horizon, once")
        return tuple(sorted(value))

    @property
    def seasonal_lag_steps(self) -> int:
        """How far the longest seasonal lag reaches back, in model steps (0: none)."""
        return max((steps(timedelta(hours=hours)) for hours in self.seasonal_lag_hours), default=0)


class ModelConfig(NetworkConfig):
    """Everything needed to rebuild a trained network: its hyperparameters plus what training derived from the
    data; stored flat as config.json beside the weights (the layout every saved model has)."""

    targets: list[str]
    encoder_steps: int = Field(288, ge=2)
    prediction_steps: int = Field(PREDICTION_STEPS, ge=1)
    #: One weight per target: the loss is in each metric's own unit, so this evens out their scales.
    loss_weights: list[float] | None = None
    #: Models saved before quantiles were a setting forecast exactly the published ones.
    quantiles: tuple[float, ...] = QUANTILES
    #: Models saved before the recent centre were centred on the encoder's mean.
    center_steps: int | None = Field(None, ge=1)

    @property
    def history_steps(self) -> int:
        """Steps of history one forecast reads: the encoder and, before it, the longest seasonal lag."""
        return self.encoder_steps + self.seasonal_lag_steps


class TrainConfig(StrictConfig):
    """Parameters of one training job (mirrors `tftmon train`)."""

    #: Metrics to forecast; None = all contract metrics.
    targets: list[str] | None = None
    #: With max_batches_per_epoch, what a 2-core machine at ~400 samples/s fits in 15 min; validation loss still
    #: falls at epoch 90, and held-out recall rises on average with it (docs/BENCHMARKS.md). `max_fit_minutes`
    #: bounds slower machines.
    max_epochs: int = Field(90, ge=1)
    #: Wall-clock budget of the fit (None: none): training stops there and keeps its best validation weights,
    #: so `tftmon train` stays within 20 minutes on 2 CPU cores whatever their speed.
    max_fit_minutes: float | None = Field(16.0, gt=0)
    #: Bounds CPU time: each epoch draws at most this many random batches (None = all).
    max_batches_per_epoch: int | None = Field(64, ge=1)
    #: Bounds validation time: at most this many batches of validation windows, spread evenly over every
    #: server and the whole held-out tail (None = all).
    max_val_batches: int | None = Field(5, ge=1)
    #: History each forecast reads. 3 h holds the longest ramp an incident grows out of; on three held-out
    #: fleets the 3-h encoder warns of more incidents than the 6-h one at the same cost (docs/BENCHMARKS.md).
    encoder_hours: float = Field(3.0, gt=0)
    #: The last part of each server's history held out for validation: early stopping, and the origins the
    #: alert threshold is fitted on (EvaluationConfig.alert_fit_hours + one forecast fit in 32 h).
    validation_hours: float = Field(32.0, gt=0)
    #: Windows with an incident in the first `incident_lead_hours` of their forecast are drawn 1 + this many
    #: times as often (0: uniform).
    incident_oversampling: float = Field(8.0, ge=0)
    #: Those windows' encoders end in the ramp before the incident, which is what the model must learn to read.
    #: An incident further ahead is not visible yet: drawing it more only fattens every quiet window's tail.
    incident_lead_hours: float = Field(3.0, gt=0)
    #: Validation windows start every this many steps (adjacent windows are nearly identical).
    validation_stride: int = Field(12, ge=1)
    model: NetworkConfig = NetworkConfig()
    batch_size: int = Field(64, ge=1)
    #: Data-loader worker processes (0: batches are built in the training process).
    num_workers: int = Field(0, ge=0)
    gradient_clip_val: float = Field(0.1, gt=0)
    #: Validation scores, and training keeps, a moving average of the weights decaying by this much per step
    #: (None: the weights as they are). 0.995 spans about 200 steps, 3 epochs: after 90 epochs validation loss
    #: is 0.29 lower and every MASE ratio better; recall is unchanged (docs/BENCHMARKS.md).
    weight_average_decay: float | None = Field(0.995, gt=0, lt=1)
    #: Validation loss is judged on 5 batches and moves by ~0.2 between epochs: a shorter patience stops early.
    early_stopping_patience: int = Field(12, ge=1)
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
    def history_steps(self) -> int:
        """Steps of history one forecast of the trained model reads: its encoder and its seasonal lags' reach."""
        return self.encoder_steps + self.model.seasonal_lag_steps

    @property
    def validation_steps(self) -> int:
        return steps(timedelta(hours=self.validation_hours))

    @property
    def incident_lead_steps(self) -> int:
        return steps(timedelta(hours=self.incident_lead_hours))

    def to_model_config(self, targets: list[str], loss_weights: list[float] | None = None) -> ModelConfig:
        """The config saved with a network trained by this job on `targets`."""
        return ModelConfig(
            **self.model.model_dump(), targets=targets, encoder_steps=self.encoder_steps, loss_weights=loss_weights
        )


class EvaluationConfig(StrictConfig):
    """Parameters and targets of a backtest against baselines (tftmon.evaluation.backtest).

    Every server is trained on; cold start is measured on a held-out fleet whose added servers no
    training saw (`tftmon evaluate`, recipe in docs/BENCHMARKS.md).
    """

    #: The last part of time held out from training (for every server) and scored.
    holdout_hours: float = Field(32.0, gt=8.0)
    #: Spacing of forecast origins in the held-out period.
    origin_every: timedelta = timedelta(hours=1)
    #: "at": score each horizon at exactly its step; "upto": average over steps 1..horizon.
    horizon_mode: Literal["at", "upto"] = "at"
    #: Seasonal-naive period (one day of 5-min steps) and the linear-drift fit window (one hour).
    seasonal_steps: int = Field(288, ge=1)
    #: A server's MASE scale below this share of the metric's fleet median counts as flat and borrows its
    #: peers' (`evaluation.metrics.seasonal_scale`).
    negligible_scale: float = Field(0.05, ge=0.0, lt=1.0)
    drift_steps: int = Field(12, ge=2)
    #: Baseline p10/p90 come from residual quantiles at up to this many origins in the training part.
    calibration_origins: int = Field(2000, ge=0)
    #: An incident counts as warned when a critical alert came at least this long before it started.
    warning_lead: timedelta = timedelta(minutes=30)
    #: Alert thresholds are fitted on validation origins every `alert_fit_every` over this many hours before
    #: the held-out period, for at most `alert_budget` false alarms per server-day (counted at origins every
    #: `origin_every`; below the target, so the held-out rate has room for noise).
    alert_fit_hours: float = Field(24.0, gt=0)
    alert_fit_every: timedelta = timedelta(minutes=30)
    alert_budget: float = Field(0.8, gt=0)
    target_false_alarms: float = Field(1.0, gt=0)
    target_mase_ratio: float = Field(0.85, gt=0)
    target_coverage: tuple[float, float] = (0.75, 0.85)
    target_cold_start_gap: float = Field(0.15, ge=0)
    target_recall: float = Field(0.8, ge=0, le=1)
    #: Operator units: every forecaster replayed at every model step (the service's cadence) over the first
    #: `page_hours` of the held-out period (0: not replayed), its alerts turned into pages by the service's
    #: rule (tftmon.alerting.PageRule: `page_persist` of the last `page_window` forecasts open a page,
    #: `page_clear_after` in a row without clear it).
    page_hours: float = Field(24.0, ge=0)
    page_persist: int = Field(PageRule.persist, ge=1)
    page_window: int = Field(PageRule.window, ge=1)
    page_clear_after: int = Field(PageRule.clear_after, ge=1)

    @property
    def page_rule(self) -> PageRule:
        return PageRule(self.page_persist, self.page_window, self.page_clear_after)

    @model_validator(mode="after")
    def _page_rule_valid(self) -> EvaluationConfig:
        self.page_rule  # noqa: B018  # raises naming the fields when persist > window
        return self


class PeerConfig(StrictConfig):
    """The strong practical peer the TFT is measured against (tftmon.evaluation.peer): a global LightGBM
    quantile forecaster per metric and quantile on lags, rolling statistics, yesterday's value, calendar and
    profile, the forecast step a feature (the M5 winners' recipe)."""

    #: Trees per booster, learning rate and leaves: a practitioner's first try, a few minutes on 2 cores.
    trees: int = Field(120, ge=1)
    learning_rate: float = Field(0.08, gt=0, le=1)
    leaves: int = Field(31, ge=2)
    min_rows_in_leaf: int = Field(100, ge=1)
    #: Training origins: every `origin_every` per server over the training period, each with a full day of
    #: history behind it (yesterday's value) and a full forecast ahead.
    origin_every: timedelta = timedelta(hours=1)
    #: Forecast steps trained on (the step is a feature; steps between are predicted by the same trees).
    train_steps: tuple[int, ...] = (1, 2, 3, 4, 6, 9, 12, 18, 24, 36, 48, 60, 72, 84, 96)
    #: Training rows kept at most per metric (a uniform sample beyond it) and histogram bins per feature:
    #: bound time and memory (docs/BENCHMARKS.md).
    max_rows: int = Field(200_000, ge=1000)
    bins: int = Field(63, ge=2)
    #: Quantiles forecast, a booster each: the published p10/p50/p90 and the tails (p2, p98) the risk scale
    #: reads a low crossing probability from, as it reads the TFT's.
    quantiles: tuple[float, ...] = (0.02, 0.1, 0.5, 0.9, 0.98)
    #: LightGBM threads (None: LightGBM's default, every core).
    threads: int | None = Field(None, ge=1)
    seed: int = 0

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return _with_published_quantiles(value)


class DemoConfig(StrictConfig):
    """The small fleet `tftmon demo` runs end to end in minutes on 2 CPU cores."""

    simulation: SimulationConfig = SimulationConfig(servers=18, hours=7 * 24)
    #: A quarter of the default training: the demo model must still beat the baselines (docs/BENCHMARKS.md).
    #: It keeps the milder oversampling of any incident in the whole forecast: so short a training on 18
    #: servers, drawing their few ramps 9×, falls behind the last value at every horizon (MASE ratio 1.09 at 1 h).
    #: Its 320 steps are too few to average the weights over: with the average, the 1-h ratio is 0.971, not 0.929.
    train: TrainConfig = TrainConfig(
        max_epochs=8,
        max_batches_per_epoch=40,
        weight_average_decay=None,
        incident_oversampling=4,
        incident_lead_hours=PREDICTION_STEPS * MODEL_STEP / timedelta(hours=1),
    )
    evaluation: EvaluationConfig = EvaluationConfig(holdout_hours=32)


#: The environment variable of ServiceConfig.feed_token (named like TFTMON_ADMIN_TOKEN, not TFTMON_SERVICE_*).
FEED_TOKEN_ENV = "TFTMON_FEED_TOKEN"


class ServiceConfig(BaseSettings):
    """Limits and intervals of the HTTP service (env TFTMON_SERVICE_*): every bound is documented here."""

    model_config = SettingsConfigDict(env_prefix="TFTMON_SERVICE_", extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and FEED_TOKEN_ENV in data:  # feed_token's env name, outside the prefix
            data = {**{k: v for k, v in data.items() if k != FEED_TOKEN_ENV}, "feed_token": data[FEED_TOKEN_ENV]}
        return reject_unknown_fields(cls, data)

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    #: One /predict request: at most this many servers and rows (900 servers x 24 h of 5-min rows fit).
    max_servers_per_request: int = Field(1000, ge=1)
    max_rows_per_request: int = Field(300_000, ge=1)
    #: One /feed request: at most this many rows (ticks x servers).
    max_feed_rows: int = Field(50_000, ge=1)
    #: The largest request body read (bytes), checked from Content-Length and while it streams in; a full
    #: /predict (300,000 rows of ~390 bytes of JSON each) fits.
    max_body_bytes: int = Field(160 * 2**20, ge=1)
    #: A request body that sends nothing for this many seconds (a Content-Length larger than what comes), or
    #: is not complete this many seconds after it began (a trickle), is refused (408) and its connection
    #: closed: no client holds a connection, or a worker's memory, by sending slowly.
    body_idle_timeout_seconds: float = Field(15.0, gt=0)
    body_timeout_seconds: float = Field(120.0, gt=0)
    #: Live windows kept at most for this many servers; further new servers are refused (memory bound).
    max_live_servers: int = Field(5000, ge=1)
    #: Memory the live windows may hold, in MiB: new servers beyond this / one full window (the encoder span at
    #: one tick per MIN_RAW_INTERVAL) are refused before anything is stored. Keeps the worker under 2 GB.
    max_live_window_mib: int = Field(768, ge=1)
    #: Bearer token of /feed (env TFTMON_FEED_TOKEN; a token of its own, not the admin one). Unset: /feed is
    #: disabled, so no unauthenticated client can fill the live windows.
    feed_token: SecretStr | None = Field(None, validation_alias=AliasChoices("feed_token", FEED_TOKEN_ENV))
    #: How often the background loop checks for new live data (seconds, wall clock).
    refresh_seconds: float = Field(2.0, gt=0)
    #: The loop forecasts when live data advanced a model step, or when new data came and this many wall-clock
    #: seconds passed; None = one model step (contract.MODEL_STEP).
    forecast_every_seconds: float | None = Field(None, gt=0)
    #: Alert transitions kept for /alerts/history.
    alert_history: int = Field(1000, ge=1)
    #: Fleet summaries kept for /fleet/history, one per live forecast (2016 = a week of 5-min steps).
    fleet_history: int = Field(2016, ge=1)
    #: Per-client rate limits (token bucket per client address; a rate or a burst of 0 = no limit), checked
    #: before the body is read: a client over its limit gets 429 with Retry-After. Behind a reverse proxy the
    #: client address is the proxy's unless the server trusts its forwarded headers (docs/SECURITY.md).
    predict_per_minute: float = Field(300.0, ge=0)
    predict_burst: int = Field(30, ge=0)
    feed_per_minute: float = Field(1200.0, ge=0)
    feed_burst: int = Field(120, ge=0)
    #: An active alert resolves after this many consecutive healthy forecasts (no one-tick flapping).
    resolve_after: int = Field(2, ge=1)
    #: Window of the unknown-server prediction rate (seconds).
    unknown_rate_window_seconds: float = Field(3600.0, gt=0)
    #: Distinct unknown hostnames remembered for the count (bounded memory).
    max_unknown_names: int = Field(100_000, ge=1)
    #: Torch intra-op threads for inference. One: the network's tensors are small, and on a shared 2-core
    #: machine two threads spin against each other (90 servers: forward 0.2 s with one, 3-9 s with two).
    torch_threads: int = Field(1, ge=1)
    #: A Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir, VictoriaMetrics) the service pulls every
    #: host's node_exporter metrics from (tftmon serve --prometheus). None: live data only through /feed.
    prometheus_url: str | None = None
    #: Seconds between pulls; None: once per model step, just after each step closes (what training saw).
    prometheus_pull_seconds: float | None = Field(None, gt=0)
    #: The step (seconds) of each pull's query; None: the model step, so live values are exactly what
    #: `tftmon ingest --prometheus` reads. Finer steps see a step's data before it closes (partial bins).
    prometheus_resolution_seconds: float | None = Field(
        None, ge=MIN_RAW_INTERVAL.total_seconds(), le=MODEL_STEP.total_seconds()
    )
    #: Seconds one Prometheus request may take before the pull counts as failed (the last forecast stays, aging).
    prometheus_timeout_seconds: float = Field(30.0, gt=0)
    #: A host's forecast is stale when its newest sample is older than this many seconds (default 3 steps).
    stale_after_seconds: float = Field(3 * MODEL_STEP.total_seconds(), gt=0)
    #: This replica forecasts only the hosts of shard "i/N" (0 <= i < N) by a stable hash of the host name;
    #: None: every host. N replicas with shards 0/N .. N-1/N cover the fleet exactly once.
    shard: str | None = Field(None, pattern=r"^\d+/\d+$")
    #: Alertmanager base URLs (JSON list in the environment) every critical alert is posted to (API v2).
    alertmanager_urls: tuple[str, ...] = ()
    #: Active alerts are re-posted at least this often (seconds); Alertmanager resolves one it stops hearing of.
    alertmanager_resend_seconds: float = Field(60.0, gt=0)
    #: The dashboard's URL, for the link in each alert (None: no link).
    dashboard_url: str | None = None
    #: Forecast series on /metrics/forecasts: the metrics, horizons and quantiles exported (None: all the model
    #: has), to bound the series per server (docs/PROMETHEUS.md).
    export_metrics: tuple[str, ...] | None = None
    export_horizons: tuple[str, ...] | None = None
    export_quantiles: tuple[str, ...] | None = None

    @field_validator("prometheus_url", "dashboard_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL; give e.g. http://prometheus:9090")
        return value

    @field_validator("alertmanager_urls")
    @classmethod
    def _urls(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            cls._url(value)
        return values

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        if value is not None:
            index, count = map(int, value.split("/"))
            if count < 1 or not 0 <= index < count:
                raise ValueError(f"shard {value}: give i/N with N >= 1 and 0 <= i < N, e.g. 0/2 and 1/2")
        return value


IngestFormat = Literal["auto", "long", "wide", "series"]
DuplicateRule = Literal["last", "mean", "error"]


class IngestConfig(StrictConfig):
    """How `tftmon ingest` turns real telemetry into a contract dataset; every fix-up is counted in its metadata."""

    #: long (timestamp, server, metric, value), wide (a column per metric) or series (one file per server and
    #: metric, `timestamp,value`); auto: from the columns of the first file.
    format: IngestFormat = "auto"
    #: A missing stretch of at most this long is interpolated linearly (and counted); a longer one splits the
    #: series there (both parts kept, reported as segments). 0 interpolates nothing.
    max_gap: timedelta = timedelta(minutes=15)
    #: Two samples of one server, metric and timestamp: the later one in the input wins (a re-sent sample
    #: corrects the first), their mean is taken, or the input is refused.
    duplicates: DuplicateRule = "last"

    @field_validator("max_gap", mode="before")
    @classmethod
    def _max_gap(cls, value: str | timedelta) -> timedelta:
        gap = value if isinstance(value, timedelta) else pd.Timedelta(value).to_pytimedelta()
        if gap < timedelta(0):
            raise ValueError("max_gap must not be negative; use 0 to interpolate nothing")
        steps(gap)  # a whole number of model steps, or a ValueError naming the step
        return gap

    @property
    def max_gap_steps(self) -> int:
        return steps(self.max_gap)


class DriftConfig(StrictConfig):
    """Parameters of one drift check (mirrors `tftmon drift`); its thresholds are contract facts (Fleet drift)."""

    #: Recent telemetry: the last this many hours of the data (up to the newest sample) are compared with the
    #: training data, per metric and profile.
    recent_hours: float = Field(24.0, gt=0)
    #: The training data to compare with; None = the dataset the Production model's training run recorded.
    reference: Path | None = None
    #: The reference: the last this many hours of the model's training period (a week: every weekday).
    reference_hours: float = Field(168.0, gt=0)
    #: Values drawn at most per metric, profile and side for the shift scores (keeps a 900-server check fast).
    sample_size: int = Field(2000, ge=10)
    seed: int = 0
    #: Backtest the Production model on the end of the data (needs 2.5 days of it) against its logged MASE, as
    #: the promotion gate scores it. Off by default: it loads torch and backtests 12 servers with the baselines,
    #: tens of seconds on 2 busy cores against a few for the rest of the check (docs/BENCHMARKS.md).
    forecast_error: bool = False
    #: Seconds to wait for the service's /fleet and /status.
    timeout_seconds: float = Field(30.0, gt=0)
    #: Log the check as a run of the monitoring experiment (Settings.tftmon_monitoring_experiment).
    track: bool = True
    progress_bar: bool = True
    #: From Prometheus: each host's last sample over the last SUNSET_AFTER is read at this step (one point per
    #: host and step, so a month stays cheap at a thousand hosts); a host silent for less than `recent_hours` is
    #: timed to the model step from the recent telemetry instead.
    survey_step: timedelta = Field(timedelta(hours=1), gt=timedelta(0))


def parse_duration(value: str | float | timedelta) -> timedelta:
    """'6h', '30d', '90min' (or seconds as a number) -> timedelta, for durations in YAML files and options."""
    if isinstance(value, timedelta):
        return value
    try:
        if isinstance(value, int | float):
            return timedelta(seconds=value)
        return pd.Timedelta(value).to_pytimedelta()
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a duration; use e.g. 90min, 6h, 30d") from exc


class RetrainConfig(StrictConfig):
    """The retraining chain (mirrors `tftmon retrain`): collect -> validate -> train -> evaluate -> promote
    -> reload -> verify, one parent MLflow run with a child run per step."""

    #: The telemetry dataset to retrain on (a contract dataset, e.g. from `tftmon ingest`); None (and no
    #: `prometheus_url`): simulate the demo fleet as it is now (`simulation`, its period moved to end now).
    data: Path | None = None
    #: Instead of `data`: the Prometheus scraping the fleet's node_exporters (e.g. http://prometheus:9090); the last
    #: `days` are collected through `tftmon ingest --prometheus`'s code into `out`. Credentials are never logged.
    prometheus_url: str | None = None
    #: With `prometheus_url`: the days up to now collected (fractions allowed; 30 holds every weekday 4 times).
    days: float = Field(30.0, gt=0)
    simulation: SimulationConfig = DemoConfig().simulation
    #: Where the simulated fleet and the collected training dataset are written.
    out: Path = Path("data/retrain")
    #: Active servers with less history than this are reported and left out of training (cold start).
    min_history_hours: float = Field(MIN_TRAINING_HISTORY.total_seconds() / 3600, gt=0)
    #: The training settings. None: the champion's own (recorded with its model by `tftmon train`), so that a
    #: candidate is trained as the model it must beat was; TrainConfig's defaults when there is no champion or
    #: no record; the demo's short training (DemoConfig.train) with `simulate`.
    train: TrainConfig | None = None
    #: TrainConfig fields set over those settings, whichever they are (`tftmon retrain --max-epochs 20`).
    train_overrides: dict[str, Any] = {}
    #: The evaluation settings. None: as for `train`, the champion's own, EvaluationConfig's defaults, or the demo's.
    evaluation: EvaluationConfig | None = None
    #: The running service to reload and verify (e.g. http://127.0.0.1:3000); None: registry only, and every
    #: active server's forecast is verified in-process with the new Production model.
    service_url: str | None = None
    #: Bearer token of POST /admin/reload; None = TFTMON_ADMIN_TOKEN.
    admin_token: SecretStr | None = None
    #: Servers per verification /predict request (within the service's TFTMON_SERVICE_MAX_SERVERS_PER_REQUEST).
    verify_batch_servers: int = Field(20, ge=1)
    #: Seconds one reload may take (the service imports and smoke-tests the new version first).
    reload_timeout_seconds: float = Field(300.0, gt=0)
    #: Seconds one verification request may take.
    verify_timeout_seconds: float = Field(120.0, gt=0)
    #: Append-only log of retraining events, one JSON line each (also read by `tftmon monitor`).
    event_log: Path = Path("logs/retrain-events.jsonl")
    #: The lock file that keeps a second retrain from starting while one runs.
    lock_file: Path = Path("logs/retrain.lock")

    @field_validator("train_overrides")
    @classmethod
    def _train_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Each a TrainConfig field with a value it accepts: refused now, not after the data is collected."""
        try:
            checked = TrainConfig(**value)
        except ValidationError as exc:
            raise ValueError(error_text(exc)) from None
        return {name: getattr(checked, name) for name in value}

    @model_validator(mode="after")
    def _one_source(self) -> RetrainConfig:
        if self.data is not None and self.prometheus_url is not None:
            raise ValueError("give one data source: data (a dataset) or prometheus_url, not both")
        if self.prometheus_url is not None and not self.prometheus_url.startswith(("http://", "https://")):
            raise ValueError(
                f"prometheus_url {self.prometheus_url!r} is not an http(s) URL; give e.g. http://host:9090"
            )
        if self.prometheus_url is None and "days" in self.model_fields_set:
            raise ValueError("days is the span collected from Prometheus: give it with prometheus_url (--prometheus)")
        if self.prometheus_url is not None and self.days * 24 < self.min_history_hours:
            raise ValueError(
                f"days {self.days:g} is shorter than min_history_hours {self.min_history_hours:g}: no server could be "
                "trained on; collect more days, or lower min_history_hours"
            )
        return self

    @property
    def simulate(self) -> bool:
        return self.data is None and self.prometheus_url is None

    @property
    def min_history(self) -> timedelta:
        return timedelta(hours=self.min_history_hours)


class RetrainPolicy(StrictConfig):
    """When `tftmon monitor` retrains: one YAML file (`--policy FILE`, example in configs/retrain-policy.yaml);
    fields left out keep these defaults, an unknown field is an error. Durations: 90min, 6h, 30d."""

    #: At least this long between two retrain attempts; failed attempts count, so a failing retrain never loops.
    min_gap: timedelta = timedelta(hours=6)
    #: At most this many retrain attempts in any 7 days.
    max_per_week: int = Field(3, ge=1)
    #: A Production model older than this is retrained whatever the drift (None: never forced by age).
    max_model_age: timedelta | None = timedelta(days=30)
    #: The daily maintenance window (UTC) a low-priority drift waits for: its start hour and length.
    maintenance_start_hour: int = Field(2, ge=0, le=23)
    maintenance_hours: float = Field(2.0, gt=0, le=24)
    #: A medium-priority drift is retrained in a maintenance window if one starts within this long of its
    #: detection, else at once; high priority: at once.
    medium_within: timedelta = MEDIUM_DRIFT_WITHIN

    @field_validator("min_gap", "max_model_age", "medium_within", mode="before")
    @classmethod
    def _durations(cls, value: str | float | timedelta | None) -> timedelta | None:
        return None if value is None else parse_duration(value)


#: The config behind each command, for `tftmon config --schema JOB`.
JOB_CONFIGS: dict[str, type[BaseModel]] = {
    "generate": SimulationConfig,
    "train": TrainConfig,
    "evaluate": EvaluationConfig,
    "demo": DemoConfig,
    "serve": ServiceConfig,
    "ingest": IngestConfig,
    "drift": DriftConfig,
    "retrain": RetrainConfig,
    "monitor": RetrainPolicy,
}
