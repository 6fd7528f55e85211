"""Request and response models of the HTTP service, generated from the contract.

The row model is built from `contract.METRIC_COLUMNS` (type, range, unit), so a new contract column
reaches the API, its validation and its OpenAPI schema without an edit here. Limits come from
`config.ServiceConfig`; they are part of the schema, so clients (and schemathesis) see them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic_core import PydanticCustomError

from tftmon.config import ServiceConfig
from tftmon.contract import (
    DEPRECATED_COLUMNS,
    HORIZONS,
    METRIC_COLUMNS,
    PROFILE,
    PROFILE_NAMES,
    QUANTILE_NAMES,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    TIMESTAMP,
    Column,
    deprecation_message,
    normalise_hostname,
)

LIMITS = ServiceConfig()
#: RFC 1123-ish hostname, optionally fully qualified; compared lower-case (contract.normalise_hostname).
HOSTNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$"
#: Columns a client may not send, and why.
_REFUSED_COLUMNS: dict[str, str] = {
    SERVER_ID: "server_id is derived from server_name by the service (SHA-256); remove it",
    STATE: "state is simulator ground truth and never a model input; remove it",
}


def _utc(value: datetime) -> datetime:
    """Naive timestamps are read as UTC (the contract's zone); aware ones are converted to it."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Hostname = Annotated[str, Field(pattern=HOSTNAME_PATTERN, examples=["ppweb001"]), AfterValidator(normalise_hostname)]
UtcTimestamp = Annotated[datetime, AfterValidator(_utc)]
ProfileName = Literal[PROFILE_NAMES]  # type: ignore[valid-type]


#: Upper bound for metrics the contract leaves open (rates, counts, load): far above any real host, and it
#: keeps every value inside int64 and finite through resampling and scaling.
OPEN_MAX = 1e9


def _metric_field(column: Column) -> tuple[Any, Any]:
    """A contract metric as a strict, range-checked, finite number field."""
    unit = f" [{column.unit}]" if column.unit else ""
    upper = column.max if column.max is not None else (int(OPEN_MAX) if column.type == "int" else OPEN_MAX)
    common: dict[str, Any] = {"ge": column.min, "le": upper, "description": f"{column.description}{unit}"}
    if column.type == "int":
        return int, Field(..., strict=True, **common)
    return float, Field(..., strict=True, allow_inf_nan=False, **common)


class _RowBase(BaseModel):
    """Refuses deprecated, derived and unknown columns by name, with the fix."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_columns(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key in data:
            if key in DEPRECATED_COLUMNS:
                raise PydanticCustomError("deprecated_column", deprecation_message(key).replace("{", "("))
            if key in _REFUSED_COLUMNS:
                raise PydanticCustomError("refused_column", _REFUSED_COLUMNS[key])
        unknown = sorted(str(k) for k in data if k not in cls.model_fields)
        if unknown:
            raise PydanticCustomError(
                "unknown_column",
                "unknown column(s) {unknown}; the contract's columns are {allowed}",
                {"unknown": ", ".join(unknown)[:200], "allowed": ", ".join(cls.model_fields)},
            )
        return data


MetricRow: type[BaseModel] = create_model(
    "MetricRow",
    __base__=_RowBase,
    __doc__="One sample of one server: identity columns and every contract metric.",
    **{
        TIMESTAMP: (UtcTimestamp, Field(..., description="Sample time, ISO 8601; naive means UTC.")),
        SERVER_NAME: (Hostname, Field(..., description="Hostname; compared lower-case.")),
        PROFILE: (ProfileName | None, Field(None, description="Workload profile; inferred from the hostname")),
        **{c.name: _metric_field(c) for c in METRIC_COLUMNS},
    },
)


class _RowsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _server_limit(self) -> _RowsRequest:
        servers = {getattr(row, SERVER_NAME) for row in self.rows}  # type: ignore[attr-defined]
        if len(servers) > LIMITS.max_servers_per_request:
            raise PydanticCustomError(
                "too_many_servers",
                "{n} servers in one request; the limit is {limit} (TFTMON_SERVICE_MAX_SERVERS_PER_REQUEST): "
                "split the request",
                {"n": len(servers), "limit": LIMITS.max_servers_per_request},
            )
        return self


class PredictRequest(_RowsRequest):
    """Recent metrics of one or many servers, at any interval of 5 s or more, covering the encoder window."""

    rows: list[MetricRow] = Field(..., min_length=1, max_length=LIMITS.max_rows_per_request)  # type: ignore[valid-type]
    include_path: bool = Field(True, description="Also return the full per-step forecast path (96 steps).")


class FeedRequest(_RowsRequest):
    """Live ticks of one or many servers; appended to each server's rolling window."""

    rows: list[MetricRow] = Field(..., min_length=1, max_length=LIMITS.max_feed_rows)  # type: ignore[valid-type]


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------

Quantiles = create_model(
    "Quantiles", __doc__="One forecast value per contract quantile.", **{q: (float, ...) for q in QUANTILE_NAMES}
)
QuantilePath = create_model(
    "QuantilePath",
    __doc__="Per-step forecast, step 1 first, per contract quantile.",
    **{q: (list[float], ...) for q in QUANTILE_NAMES},
)
HorizonName = Literal[tuple(HORIZONS)]  # type: ignore[valid-type]


class ServerForecast(BaseModel):
    """One server's forecast, risk and why."""

    server_name: str
    profile: str
    prediction_time: datetime = Field(..., description="Last observed 5-min bin (UTC): the forecast origin.")
    cold_start: bool = Field(..., description="The model never saw this server; forecast from its profile.")
    model_version: str
    risk: float = Field(..., ge=0, le=1)
    severity: Literal["healthy", "warning", "critical"]
    severity_label: str
    colour: str
    metric: str | None = Field(..., description="The risk metric driving the risk (None when nothing crosses).")
    reason: str
    drivers: list[str] = Field(..., description="Risk metrics above healthy, worst first, in words.")
    horizons: dict[HorizonName, dict[str, Quantiles]]  # type: ignore[valid-type]
    step_minutes: int
    path: dict[str, QuantilePath] | None = None  # type: ignore[valid-type]


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[ServerForecast]


class WarmingServer(BaseModel):
    server_name: str
    have_steps: int
    need_steps: int
    need_minutes: int = Field(..., description="Minutes of further history needed before the first forecast.")


class CurrentPredictions(BaseModel):
    model_version: str | None
    computed_at: datetime | None = Field(..., description="Wall-clock time the cache was filled.")
    predictions: list[ServerForecast]
    warming_up: list[WarmingServer]


class Alert(BaseModel):
    server_name: str
    profile: str
    severity: Literal["warning", "critical"]
    risk: float
    metric: str | None
    value: float | None = Field(..., description="Predicted value of the metric when it crosses.")
    quantile: str | None = Field(..., description="The quantile that crossed (p10 very likely ... p90 possible).")
    minutes_ahead: int
    predicted_for: datetime | None
    reason: str
    since: datetime = Field(..., description="Forecast origin (data time) of the forecast that raised it.")
    raised_at: datetime = Field(..., description="Wall-clock time it was raised.")
    model_version: str


class ActiveAlerts(BaseModel):
    computed_at: datetime | None
    counts: dict[str, int]
    alerts: list[Alert]


class AlertTransition(BaseModel):
    kind: Literal["raised", "escalated", "resolved"]
    server_name: str
    severity: str
    previous_severity: str
    metric: str | None
    reason: str
    data_time: datetime
    at: datetime


class AlertHistory(BaseModel):
    transitions: list[AlertTransition]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model_loaded: bool


class Status(BaseModel):
    model_name: str
    model_version: str | None
    contract_version: str
    model_contract_version: str | None
    loaded_at: datetime | None
    uptime_seconds: float
    servers_known: int
    servers_live: int
    servers_warming_up: int
    unknown_servers: int
    unknown_rate: float = Field(..., description="Share of predictions for unknown servers in the rolling window.")
    unknown_rate_window_seconds: float
    last_prediction_time: datetime | None


class FeedResponse(BaseModel):
    accepted: int
    ignored_stale: int = Field(..., description="Rows not newer than the server's last sample (dropped).")
    servers_live: int
    servers_warming_up: int


class ReloadResponse(BaseModel):
    previous_version: str | None
    model_version: str
    changed: bool
    loaded_at: datetime


class Problem(BaseModel):
    field: str
    rule: str
    fix: str


class ErrorResponse(BaseModel):
    error: str
    fix: str | None = None
    problems: list[Problem] = []
