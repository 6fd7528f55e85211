"""The mapping file: how a source's fields, names and units become contract columns (YAML, strict).

A typo in a mapping must never ingest with a silent default, so every model refuses unknown keys naming
the valid ones (tftmon.config.StrictConfig), units are checked against the contract column they feed, and
the time zone must exist. Example (CloudWatch export, one `timestamp,value` CSV per instance):

    series: {pattern: "{server}", metric: CPUUtilization}
    metrics:
      CPUUtilization: {column: cpu_user_pct, unit: percent}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from tftmon.config import IngestFormat, StrictConfig, load_yaml
from tftmon.contract import DEPRECATED_COLUMNS, METRICS, PROFILE_NAMES, deprecation_message
from tftmon.data.ingest.units import Unit, resolve_unit

#: Placeholders a per-series file-name pattern may use.
SERIES_PLACEHOLDERS = ("server", "metric")


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the key, the rule and the fix."""


class Fields(StrictConfig):
    """Names of the source's identity fields (columns of a CSV or Parquet file)."""

    timestamp: str = "timestamp"
    #: None: `server`, or `server_name` when the file has that instead.
    server: str | None = None
    #: Long format: the field holding the metric's name, and the one holding its value (also per-series files).
    metric: str = "metric"
    value: str = "value"
    #: A field with each server's profile (optional).
    profile: str | None = None


class MetricSource(StrictConfig):
    """One source metric: the contract column it becomes and the unit it comes in (None: the column's own)."""

    column: str
    unit: str | None = None

    @model_validator(mode="after")
    def _unit_fits_column(self) -> MetricSource:
        resolve_unit(self.column, self.unit)  # ValueError naming the column and the units it accepts
        return self

    @property
    def conversion(self) -> Unit:
        return resolve_unit(self.column, self.unit)


class Series(StrictConfig):
    """Per-series files: where server and metric come from when a file holds only `timestamp,value`."""

    #: Matched against each file's path below SOURCE without its extension: `{server}` and `{metric}` capture,
    #: `*` matches anything within a path part. E.g. `{server}_{metric}`, `{server}/{metric}`, `{server}`.
    pattern: str = "{server}_{metric}"
    #: The server or metric of every file, when the pattern does not name it.
    server: str | None = None
    metric: str | None = None

    @model_validator(mode="after")
    def _names_both(self) -> Series:
        placeholders = set(re.findall(r"\{(\w+)\}", self.pattern))
        unknown = placeholders - set(SERIES_PLACEHOLDERS)
        if unknown:
            raise ValueError(
                f"pattern {self.pattern!r} uses {{{', '.join(sorted(unknown))}}}; only {{server}} and {{metric}} exist"
            )
        for name in SERIES_PLACEHOLDERS:
            if (name in placeholders) == (getattr(self, name) is not None):
                raise ValueError(f"name the {name} either in the pattern as {{{name}}} or as `{name}:`, exactly once")
        return self

    def regex(self) -> re.Pattern[str]:
        """The pattern as a regular expression with named groups server and metric."""
        parts = re.split(r"(\{server\}|\{metric\}|\*)", self.pattern)
        captures = {"{server}": r"(?P<server>[^/]+?)", "{metric}": r"(?P<metric>[^/]+)", "*": r"[^/]*"}
        return re.compile("".join(captures.get(p, re.escape(p)) for p in parts))


class Mapping(StrictConfig):
    """A source described: its format, fields, time zone, metrics with units, and profiles."""

    format: IngestFormat = "auto"
    fields: Fields = Fields()
    #: The zone of timestamps written without an offset (IANA name, e.g. Europe/Berlin). Timestamps with an
    #: offset or Z are taken as given; naive ones are refused when this is not set.
    timezone: str | None = None
    #: Source metric name -> contract column (a name, or {column, unit}). Empty: the source's names already
    #: are contract metrics in contract units; any other name is left out and reported.
    metrics: dict[str, MetricSource] = Field(default_factory=dict)
    #: The profile of every server, and per-server profiles (both win over a profile field and the hostname).
    profile: str | None = None
    profiles: dict[str, str] = Field(default_factory=dict)
    series: Series = Series()

    @field_validator("metrics", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """`name: cpu_user_pct` is short for `name: {column: cpu_user_pct}`."""
        if isinstance(value, dict):
            return {k: {"column": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("metrics")
    @classmethod
    def _one_source_per_column(cls, value: dict[str, MetricSource]) -> dict[str, MetricSource]:
        seen: dict[str, str] = {}
        for name, source in value.items():
            if source.column in seen:
                raise ValueError(f"{seen[source.column]} and {name} both map to {source.column}; keep one")
            seen[source.column] = name
        return value

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Berlin"
                ) from None
        return value

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str | None) -> str | None:
        if value is not None and value not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {value!r}; use one of: {', '.join(PROFILE_NAMES)}")
        return value

    @field_validator("profiles")
    @classmethod
    def _known_profiles(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted({p for p in value.values() if p not in PROFILE_NAMES})
        if bad:
            raise ValueError(f"unknown profile(s) {', '.join(bad)}; use one of: {', '.join(PROFILE_NAMES)}")
        return value

    def contract_metric(self, source_name: str) -> tuple[str, Unit] | None:
        """The contract column and conversion of a source metric name; None when the mapping leaves it out.

        Without a `metrics:` table, contract names map to themselves; a deprecated name is an error."""
        if self.metrics:
            source = self.metrics.get(source_name)
            return None if source is None else (source.column, source.conversion)
        if source_name in DEPRECATED_COLUMNS:
            raise MappingError(deprecation_message(source_name))
        return (source_name, resolve_unit(source_name, None)) if source_name in METRICS else None


def load_mapping(path: Path | None) -> Mapping:
    """The mapping in a YAML file (None: the empty mapping); errors name the file and the key."""
    if path is None:
        return Mapping()
    shape = "a mapping file is a YAML mapping of keys such as metrics:, fields:, timezone:"
    return load_yaml(Mapping, path, MappingError, shape)
