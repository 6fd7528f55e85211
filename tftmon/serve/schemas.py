"""Request and response models of the HTTP service, generated from the contract.

The row model is built from `contract.METRIC_COLUMNS` (type, range, unit), so a new contract column
reaches the API, its validation and its OpenAPI schema without an edit here. A row carries the metrics its
fleet reports: every metric is optional in the schema (range-checked when sent, never null), and a metric
the loaded model forecasts must be in every row (`missing_target_problems`, checked per model). Limits come from
`config.ServiceConfig`; they are part of the schema, so clients (and schemathesis) see them.
"""

from __future__ import annotations

import json
import math
import operator
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from typing import Annotated, Any, ClassVar, Literal, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError, from_json

from tftmon.alerting import TransitionKind
from tftmon.config import ServiceConfig
from tftmon.contract import (
    CPU_PARTS,
    CPU_SUM_FIX,
    CPU_SUM_RULE,
    CPU_SUM_TOLERANCE,
    DEPRECATED_COLUMNS,
    HISTORY_COVERAGE_RULE,
    HORIZONS,
    METRIC_COLUMNS,
    METRICS,
    MIN_HISTORY_COVERAGE,
    PROFILE,
    PROFILE_FIX,
    PROFILE_NAMES,
    PROFILE_RULE,
    QUANTILE_NAMES,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    STEP_MINUTES,
    STEP_NS,
    TIMESTAMP,
    TIMESTAMP_FIX,
    TIMESTAMP_RULE,
    Column,
    normalise_hostname,
    profile_conflicts,
    timestamp_bounds,
)

LIMITS = ServiceConfig()
#: RFC 1123-ish hostname, optionally fully qualified; compared lower-case (contract.normalise_hostname).
HOSTNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$"
#: Columns a client may not send: why not.
_REFUSED_COLUMNS: dict[str, str] = {
    SERVER_ID: "server_id is derived from server_name by the service (SHA-256)",
    STATE: "state is simulator ground truth and never a model input",
}


def _utc(value: datetime) -> datetime:
    """Naive timestamps are read as UTC (the contract's zone); aware ones are converted to it."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in_window(value: datetime) -> datetime:
    """The contract's timestamp rule, before any nanosecond cast can overflow or wrap (past 2262)."""
    low, high = timestamp_bounds()
    if not low <= value <= high:
        raise PydanticCustomError("timestamp_range", TIMESTAMP_RULE, {"fix": TIMESTAMP_FIX})
    return value


Hostname = Annotated[str, Field(pattern=HOSTNAME_PATTERN, examples=["ppweb001"]), AfterValidator(normalise_hostname)]
UtcTimestamp = Annotated[datetime, AfterValidator(_utc), AfterValidator(_in_window)]
ProfileName = Literal[PROFILE_NAMES]  # type: ignore[valid-type]


#: Upper bound for metrics the contract leaves open (rates, counts, load): far above any real host, and it
#: keeps every value inside int64 and finite through resampling and scaling.
OPEN_MAX = 1e9


def _upper(column: Column) -> float:
    return column.max if column.max is not None else (int(OPEN_MAX) if column.type == "int" else OPEN_MAX)


def _metric_field(column: Column) -> tuple[Any, Any]:
    """A contract metric as a strict, range-checked, finite number field; optional (a fleet reports some
    metrics), but never null: an absent metric is left out of the row."""
    unit = f" [{column.unit}]" if column.unit else ""
    common: dict[str, Any] = {"ge": column.min, "le": _upper(column), "description": f"{column.description}{unit}"}
    if column.type == "int":
        return int, Field(None, strict=True, **common)
    return float, Field(None, strict=True, allow_inf_nan=False, **common)


class _RowBase(BaseModel):
    """Refuses deprecated, derived and unknown columns by name. Each error carries the offending column
    (`column`, so the problem names it) and its repair (`fix`) in its context."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_columns(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key in data:
            if key in DEPRECATED_COLUMNS:
                old = DEPRECATED_COLUMNS[key]
                raise PydanticCustomError(
                    "deprecated_column",
                    "column {column} is deprecated since contract {since}",
                    {"column": key, "since": old.since,
                     "fix": f"send {' / '.join(old.replacements)} instead ({old.note})"},
                )  # fmt: skip
            if key in _REFUSED_COLUMNS:
                fix = f"remove {key} from every row"
                raise PydanticCustomError(
                    "refused_column", "{why}", {"column": key, "why": _REFUSED_COLUMNS[key], "fix": fix}
                )
        unknown = sorted(str(k) for k in data if k not in cls.model_fields)
        if unknown:  # names shown short and escaped, the first five
            named = ", ".join(map(shown, unknown[:5])) + f" and {len(unknown) - 5} more" * (len(unknown) > 5)
            raise PydanticCustomError(
                "unknown_column",
                "unknown column(s) {unknown}",
                {
                    "unknown": named,
                    **({"column": shown(unknown[0])} if len(unknown) == 1 else {}),
                    "fix": f"remove them; a row takes only {', '.join(cls.model_fields)}",
                },
            )
        return data


MetricRow: type[BaseModel] = create_model(  # type: ignore[call-overload]  # mypy matches **fields to its options
    "MetricRow",
    __base__=_RowBase,
    __doc__="One sample of one server: identity columns and the contract metrics it reports.",
    **{
        TIMESTAMP: (UtcTimestamp, Field(..., description=f"Sample time, ISO 8601; naive means UTC; {TIMESTAMP_RULE}.")),
        SERVER_NAME: (Hostname, Field(..., description="Hostname; compared lower-case.")),
        PROFILE: (ProfileName | None, Field(None, description="Workload profile; inferred from the hostname")),
        **{c.name: _metric_field(c) for c in METRIC_COLUMNS},
    },
)


class RowsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The most rows one request may carry (the schema's maxItems).
    max_rows: ClassVar[int]
    #: Servers sent under more than one spelling (normalised name -> the spellings), for row_rule_problems:
    #: the rows keep only the normalised name.
    _respelled: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _spellings(cls, data: Any, handler: ModelWrapValidatorHandler[RowsRequest]) -> RowsRequest:
        request = handler(data)
        if type(data) is dict and type(data.get("rows")) is list:  # valid rows: objects with a string name
            request._respelled = respelled({row[SERVER_NAME] for row in data["rows"] if type(row) is dict})
        return request

    @model_validator(mode="after")
    def _server_limit(self) -> RowsRequest:
        servers = {getattr(row, SERVER_NAME) for row in self.rows}  # type: ignore[attr-defined]
        if len(servers) > LIMITS.max_servers_per_request:
            limit = LIMITS.max_servers_per_request
            raise PydanticCustomError(
                "too_many_servers",
                "{n} servers in one request; the limit is {limit} (TFTMON_SERVICE_MAX_SERVERS_PER_REQUEST)",
                {"n": len(servers), "limit": limit, "fix": f"split the request: at most {limit} servers each"},
            )
        return self


class PredictRequest(RowsRequest):
    """Recent metrics of one or many servers, at any interval of 5 s or more, covering the encoder window."""

    max_rows: ClassVar[int] = LIMITS.max_rows_per_request
    rows: list[MetricRow] = Field(..., min_length=1, max_length=max_rows)
    include_path: bool = Field(True, description="Also return the full per-step forecast path (96 steps).")


class FeedRequest(RowsRequest):
    """Live ticks of one or many servers; appended to each server's rolling window."""

    max_rows: ClassVar[int] = LIMITS.max_feed_rows
    rows: list[MetricRow] = Field(..., min_length=1, max_length=max_rows)


# ---------------------------------------------------------------------------------------------
# Validated rows as columns
# ---------------------------------------------------------------------------------------------

#: Keys every row must have (profile and each metric are optional).
_REQUIRED = (TIMESTAMP, SERVER_NAME)
#: Per metric: (integer?, min, max), the same bounds as the pydantic fields.
_BOUNDS = {c.name: (c.type == "int", c.min, _upper(c)) for c in METRIC_COLUMNS}
_TIMESTAMPS = TypeAdapter(list[UtcTimestamp])
_HOSTNAMES = TypeAdapter(list[Hostname])
_PROFILES = TypeAdapter(list[ProfileName | None])
#: A row as Arrow reads it: every column typed, so Arrow parses the numbers and a value of another JSON
#: type fails the read. Fields beyond these are inferred, so the fast path sees and refuses them.
_ARROW_ROW = pa.struct(
    [
        (TIMESTAMP, pa.string()),
        (SERVER_NAME, pa.string()),
        (PROFILE, pa.string()),
        *((c.name, pa.int64() if c.type == "int" else pa.float64()) for c in METRIC_COLUMNS),
    ]
)
_ROWS_TYPE = pa.list_(_ARROW_ROW)
_ARROW_SCHEMA = pa.schema([("rows", _ROWS_TYPE)])


@dataclass(frozen=True)
class ArrowBody:
    """A JSON body that Arrow read as one object, its rows as typed columns, and the bytes it came from.

    Parsing a 900-server history into a Python object per row, then taking the rows apart column by
    column, was 2 s of a /predict; Arrow reads the columns directly. It is asked only where it is not
    laxer than pydantic-core (ASCII, so no byte-order mark or invalid UTF-8; one object, not several;
    no key twice in an object), and kept only for the shape the column-wise path reads (`rows` of flat
    row objects, JSON booleans beside it): Arrow nests far deeper than pydantic-core, so a body with
    anything more is left to pydantic-core, whose errors name it. `python()` thus succeeds on every body
    kept, with the same values (floats included; tested).
    """

    table: pa.Table
    raw: bytes

    @classmethod
    def read(cls, raw: bytes) -> ArrowBody | None:
        """None unless Arrow reads `raw` as one JSON object whose `rows` fit the row columns' types."""
        if not raw.isascii():
            return None
        try:
            table = pa_json.read_json(
                pa.BufferReader(raw),
                read_options=pa_json.ReadOptions(use_threads=False, block_size=len(raw) + 1),
                parse_options=pa_json.ParseOptions(explicit_schema=_ARROW_SCHEMA, unexpected_field_behavior="infer"),
            )
        except (pa.ArrowException, OverflowError):  # malformed, or a value of another type: the Python path
            return None
        plain = all(f.type == (_ROWS_TYPE if f.name == "rows" else pa.bool_()) for f in table.schema)
        return cls(table, raw) if table.num_rows == 1 and plain else None

    def python(self) -> Any:
        """The body as pydantic-core parses it, for the requests the column-wise path leaves to the models."""
        return from_json(self.raw)


@dataclass(frozen=True)
class ValidRows:
    """A validated rows request as columns: timestamp (UTC), server_name (normalised), profile (None where
    the row had none) and every metric, NaN where a row did not send it (an integer metric sent in every
    row stays int64); `options` holds the request's other fields, `respelled` the servers sent under more
    than one spelling."""

    frame: pd.DataFrame
    options: dict[str, Any]
    respelled: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_request(cls, request: RowsRequest) -> ValidRows:
        rows = request.rows  # type: ignore[attr-defined]
        frame = pd.DataFrame({c: [getattr(r, c) for r in rows] for c in (TIMESTAMP, SERVER_NAME, PROFILE)})
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        for name, (integer, _, _) in _BOUNDS.items():
            values = [getattr(r, name) for r in rows]
            complete = None not in values
            frame[name] = np.array(values, dtype=np.int64 if integer and complete else np.float64)
        return cls(frame, request.model_dump(exclude={"rows"}), request._respelled)


def respelled(names: Iterable[str]) -> dict[str, list[str]]:
    """The distinct hostnames sent that name one server (contract.normalise_hostname), by that server."""
    spellings: dict[str, list[str]] = {}
    for name in names:
        spellings.setdefault(normalise_hostname(name), []).append(name)
    return {server: sorted(sent) for server, sent in spellings.items() if len(sent) > 1}


#: A column of repeated values as (code per row, distinct values); code -1 is a missing value.
Factorized = tuple[np.ndarray, list[Any]]


def fast_rows(data: Any, model: type[RowsRequest]) -> ValidRows | None:
    """Validate the plain case column by column: the models' rules, ~20x faster than a model per row.

    Takes the body as Arrow read it (ArrowBody) or as Python data. Returns None unless the request is
    plainly valid (string timestamps and hostnames, JSON booleans, every number in range); the caller then
    validates with the pydantic model, which accepts the rare valid outliers (numeric timestamps, lax
    booleans) and words every error. What this accepts the model accepts, with the same values: identity
    values are validated by the same annotated types, once each.
    """
    if isinstance(data, ArrowBody):
        return _arrow_rows(data.table, model, nulls_sent=b"null" in data.raw)
    if type(data) is not dict or "rows" not in data:
        return None
    options = _options(model, {k: v for k, v in data.items() if k != "rows"})
    rows = data["rows"]
    if options is None or type(rows) is not list or not 1 <= len(rows) <= model.max_rows:
        return None
    if set(map(type, rows)) != {dict}:
        return None
    sent = {name: sum(map(operator.contains, rows, repeat(name))) for name in (PROFILE, *METRICS)}
    if sum(map(len, rows)) != len(_REQUIRED) * len(rows) + sum(sent.values()):
        return None  # a row with a key beyond the contract's (or a missing identity key: caught below)
    try:
        columns = {c: list(map(operator.itemgetter(c), rows)) for c in _REQUIRED}
    except KeyError:
        return None
    metrics: dict[str, np.ndarray] = {}
    absent: dict[str, np.ndarray] = {}
    for name, (integer, _, _) in _BOUNDS.items():
        if sent[name] == len(rows):
            values = list(map(operator.itemgetter(name), rows))
        else:  # a metric some rows leave out: NaN there; an explicit null is the model's to refuse
            values = list(map(dict.get, rows, repeat(name)))
            missing = np.fromiter(map(operator.is_, values, repeat(None)), dtype=bool, count=len(values))
            if int(missing.sum()) != len(rows) - sent[name]:
                return None
            values = [v for v in values if v is not None]
            absent[name] = missing
        if not set(map(type, values)) <= ({int} if integer else {int, float}):
            return None
        try:
            given = np.fromiter(values, dtype=np.int64 if integer else np.float64, count=len(values))
        except OverflowError:
            return None
        metrics[name] = given if name not in absent else _with_gaps(given, absent[name])
    profiles = list(map(dict.get, rows, repeat(PROFILE)))
    if set(map(type, columns[TIMESTAMP])) != {str} or set(map(type, columns[SERVER_NAME])) != {str}:
        return None
    if not set(map(type, profiles)) <= {str, type(None)}:
        return None
    identity = {TIMESTAMP: columns[TIMESTAMP], SERVER_NAME: columns[SERVER_NAME], PROFILE: profiles}
    return _valid({name: _factorized(values) for name, values in identity.items()}, metrics, absent, options)


def _with_gaps(given: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """The values sent, spread over all rows as float64 with NaN where a row left the metric out."""
    out = np.full(len(absent), np.nan)
    out[~absent] = given
    return out


def _arrow_rows(table: pa.Table, model: type[RowsRequest], nulls_sent: bool) -> ValidRows | None:
    """fast_rows on the columns Arrow read: its schema typed them (ArrowBody keeps no other shape), so only
    nulls (a missing or null value), unknown options and the values themselves remain to check. Arrow reads
    a left-out metric and a JSON null alike: a body that holds `null` anywhere (`nulls_sent`) goes to the
    model when a metric is null."""
    if "rows" not in table.column_names or table.column("rows").null_count:
        return None
    options = _options(model, {k: table.column(k)[0].as_py() for k in table.column_names if k != "rows"})
    rows = table.column("rows").combine_chunks().flatten()
    if options is None or rows.null_count:
        return None  # an option the model does not take, or a null row
    if not 1 <= len(rows) <= model.max_rows:
        return None
    columns = {name: rows.field(name) for name in (TIMESTAMP, SERVER_NAME, PROFILE, *METRICS)}
    if any(columns[name].null_count for name in _REQUIRED):
        return None
    absent = {
        name: columns[name].is_null().to_numpy(zero_copy_only=False) for name in METRICS if columns[name].null_count
    }
    if absent and nulls_sent:
        return None
    metrics = {name: columns[name].to_numpy(zero_copy_only=False) for name in METRICS}
    identity: dict[str, Factorized] = {}
    for name in (TIMESTAMP, SERVER_NAME, PROFILE):
        encoded = columns[name].dictionary_encode()
        identity[name] = (encoded.indices.fill_null(-1).to_numpy(), encoded.dictionary.to_pylist())
    return _valid(identity, metrics, absent, options)


def _options(model: type[RowsRequest], given: dict[str, Any]) -> dict[str, Any] | None:
    """The request's fields other than rows, defaults filled in; None unless each is a JSON boolean."""
    fields = model.model_fields
    options = {k: f.default for k, f in fields.items() if k != "rows"}
    for key, value in given.items():
        if key not in options or fields[key].annotation is not bool or type(value) is not bool:
            return None
        options[key] = value
    return options


def _factorized(values: list[Any]) -> Factorized:
    codes, uniques = pd.factorize(np.array(values, dtype=object))
    return codes, list(uniques)


def _valid(
    identity: dict[str, Factorized],
    metrics: dict[str, np.ndarray],
    absent: dict[str, np.ndarray],
    options: dict[str, Any],
) -> ValidRows | None:
    """The rows as columns if every value is valid: metrics sent in range and finite (`absent` marks the
    rows that left a metric out), identity values (timestamp, server_name, profile) validated per distinct
    value (a request repeats them) by the models' own types."""
    for name, (_, low, high) in _BOUNDS.items():
        array = metrics[name] if name not in absent else metrics[name][~absent[name]]
        if array.size and not (
            np.isfinite(array).all() and (low is None or array.min() >= low) and array.max() <= high
        ):
            return None
    (ts_codes, timestamps), (name_codes, names), (profile_codes, profiles) = (
        identity[name] for name in (TIMESTAMP, SERVER_NAME, PROFILE)
    )
    try:
        ns = pd.DatetimeIndex(_TIMESTAMPS.validate_python(timestamps)).as_unit("ns").asi8
        hostnames = _HOSTNAMES.validate_python(names)
        known = _PROFILES.validate_python(profiles)
    except (ValidationError, pd.errors.OutOfBoundsDatetime):
        return None
    if len(set(hostnames)) > LIMITS.max_servers_per_request:
        return None
    columns = {
        TIMESTAMP: pd.to_datetime(ns[ts_codes], unit="ns", utc=True),
        SERVER_NAME: np.asarray(hostnames, dtype=object)[name_codes],
        PROFILE: np.asarray([*known, None], dtype=object)[profile_codes],  # code -1 (no profile) -> None
    }
    return ValidRows(pd.DataFrame({**columns, **metrics}), options, respelled(names))


def row_count_problem(data: Any, model: type[RowsRequest]) -> Problem | None:
    """Too many rows, counted before any row is validated: 300,001 rows are refused in the time it takes
    to count them, not after a model per row."""
    if isinstance(data, ArrowBody):
        rows = data.table.column("rows") if "rows" in data.table.column_names else None
        count = 0 if rows is None or rows.null_count else int(pc.list_value_length(rows)[0].as_py())
    else:
        count = len(data["rows"]) if type(data) is dict and type(data.get("rows")) is list else 0
    if count <= model.max_rows:
        return None
    setting = "MAX_FEED_ROWS" if model is FeedRequest else "MAX_ROWS_PER_REQUEST"
    return Problem(
        field="rows",
        rule=f"{count} rows in one request; the limit is {model.max_rows} (TFTMON_SERVICE_{setting})",
        fix=f"split the request: at most {model.max_rows} rows per request",
        count=count,
    )


def json_problem(message: str) -> Problem:
    """A body that is not JSON, as pydantic-core words it ("... at line 1 column 15"), with its repair."""
    if message.startswith("recursion limit exceeded"):
        fix = 'nest less deeply: a request is {"rows": [...]} with one flat JSON object per row'
    else:
        fix = "send valid JSON (double-quoted keys, no trailing commas, no NaN or Infinity) at the place named"
    return Problem(field="body", rule=f"invalid JSON: {message}", fix=fix)


def repeated_key_problems(raw: bytes) -> list[Problem]:
    """Objects of a (valid JSON) body that give a key more than once, one problem per key: parsers differ
    on which value wins (pydantic-core takes the last, so a first value out of range would never be
    checked). Rows are named by index. Read with the standard library's parser, which hands over each
    object's pairs; only bodies Arrow did not read come here (Arrow refuses a repeated key itself)."""
    repeated: list[tuple[dict[str, Any], list[str]]] = []

    def pairs_of(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        if len(found) < len(pairs):
            repeated.append((found, sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)))
        return found

    try:
        data = json.loads(raw, object_pairs_hook=pairs_of)
    except ValueError:  # what pydantic-core read and this parser does not (a byte-order mark): nothing to add
        return []
    rows = data.get("rows") if type(data) is dict else None
    index = {id(row): i for i, row in enumerate(rows)} if repeated and type(rows) is list else {}
    found: dict[tuple[str, str], list[int | None]] = {}
    for obj, keys in repeated:
        row = index.get(id(obj))
        for key in map(shown, keys):
            where = f"rows[*].{key}" if row is not None else key if obj is data else "body"
            found.setdefault((where, key), []).append(row)
    return [
        Problem(
            field=where,
            rule=f"key {key} is given more than once in one JSON object",
            fix="send each key once per object: which of its values is meant cannot be told",
            count=len(rows_found),
            rows=[row for row in rows_found if row is not None][:MAX_ROWS_SHOWN],
        )
        for (where, key), rows_found in found.items()
    ]


#: Two rows of one server at one sample time that disagree: the later one would silently win.
SAMPLE_RULE = "a server has one sample per timestamp: rows repeating a server and timestamp must agree"
SAMPLE_FIX = "send each server's sample at a timestamp once (an identical repeat is read once)"
#: Names are compared lower-case (contract.normalise_hostname): two spellings in one request are one server.
SPELLING_RULE = "a server is named one way in a request: names are compared lower-case"


def row_rule_problems(valid: ValidRows) -> list[Problem]:
    """The contract's rules across columns and rows, in the validator's words: the CPU split adds up to
    100, a server has one profile, one spelling and one sample per timestamp. Column-wise, so the fast
    path stays fast."""
    frame, problems = valid.frame, []
    cpu = frame[list(CPU_PARTS)].to_numpy(dtype=np.float64).sum(axis=1)
    bad = np.flatnonzero(np.abs(cpu - 100) > CPU_SUM_TOLERANCE)
    if bad.size:
        problems.append(_row_problem(f"rows[*].{'+'.join(CPU_PARTS)}", CPU_SUM_RULE, CPU_SUM_FIX, bad))
    servers = profile_conflicts(frame[SERVER_NAME], frame[PROFILE])
    if servers:
        rows = np.flatnonzero(frame[SERVER_NAME].isin(servers).to_numpy())
        problems.append(_row_problem(f"rows[*].{PROFILE}", PROFILE_RULE, PROFILE_FIX, rows))
    if valid.respelled:
        rows = np.flatnonzero(frame[SERVER_NAME].isin(list(valid.respelled)).to_numpy())
        sent = "; ".join(" and ".join(map(shown, names)) for names in list(valid.respelled.values())[:3])
        fix = f"send each server under one spelling (sent as {sent})"
        problems.append(_row_problem(f"rows[*].{SERVER_NAME}", SPELLING_RULE, fix, rows))
    disagreeing = _disagreeing_repeats(frame)
    if disagreeing.size:
        problems.append(_row_problem(f"rows[*].{TIMESTAMP}", SAMPLE_RULE, SAMPLE_FIX, disagreeing))
    return problems


def _disagreeing_repeats(frame: pd.DataFrame) -> np.ndarray:
    """Rows (sorted indices) of a server and timestamp sent more than once with different metric values
    (NaN agrees with NaN: a metric left out of both)."""
    ts = frame[TIMESTAMP].to_numpy(dtype="datetime64[ns]").view(np.int64)
    codes = pd.factorize(frame[SERVER_NAME])[0]
    order = np.lexsort((ts, codes))
    repeat_of_previous = (np.diff(codes[order]) == 0) & (np.diff(ts[order]) == 0)
    if not repeat_of_previous.any():
        return np.empty(0, dtype=np.int64)
    pairs = np.flatnonzero(repeat_of_previous)
    values = frame[list(METRICS)].to_numpy(dtype=np.float64)
    later, earlier = values[order[pairs + 1]], values[order[pairs]]
    differ = ~((later == earlier) | (np.isnan(later) & np.isnan(earlier))).all(axis=1)
    return np.unique(np.concatenate([order[pairs[differ]], order[pairs[differ] + 1]]))


def missing_target_problems(frame: pd.DataFrame, targets: Sequence[str], version: str) -> list[Problem]:
    """One problem per metric the loaded model forecasts that some rows leave out: the model reads each
    target's own history. Metrics it does not forecast may be sent or not; they are checked and not used."""
    problems = []
    for target in targets:
        rows = np.flatnonzero(frame[target].isna().to_numpy()) if target in frame.columns else np.arange(len(frame))
        if rows.size:
            rule = f"Field required: version {version} forecasts {target} from its history ({', '.join(targets)})"
            fix = f"add {target} to every row, or serve a model trained without it (tftmon train --targets)"
            problems.append(_row_problem(f"rows[*].{target}", rule, fix, rows))
    return problems


def coverage_problem(frame: pd.DataFrame, encoder_steps: int) -> Problem | None:
    """Servers whose history spans the model's window but leaves most of its steps empty: the model would
    forecast from carried-forward values. Counts each server's distinct steps in its last window; a history
    shorter than the window is the model's InsufficientHistory, said in its own words."""
    bins = frame[TIMESTAMP].to_numpy(dtype="datetime64[ns]").view(np.int64) // STEP_NS
    codes, names = pd.factorize(frame[SERVER_NAME])
    start = np.full(len(names), np.iinfo(np.int64).min)
    first = np.full(len(names), np.iinfo(np.int64).max)
    np.maximum.at(start, codes, bins - encoder_steps + 1)
    np.minimum.at(first, codes, bins)
    inside = bins >= start[codes]
    seen = np.zeros((len(names), encoder_steps), dtype=bool)
    seen[codes[inside], bins[inside] - start[codes][inside]] = True
    have = seen.sum(axis=1)
    short = np.flatnonzero((have < math.ceil(MIN_HISTORY_COVERAGE * encoder_steps)) & (first <= start))
    if not short.size:
        return None
    hours = encoder_steps * STEP_MINUTES / 60
    fix = (
        f"send {hours:g} h of history per server with a sample every {STEP_MINUTES} min or more often "
        f"({names[short[0]]} has samples in {have[short[0]]} of {encoder_steps} steps)"
    )
    rows = np.flatnonzero(np.isin(codes, short))
    problem = _row_problem("rows", HISTORY_COVERAGE_RULE, fix, rows)
    problem.count = len(short)
    return problem


def profile_change_problem(live_profiles: dict[str, str], rows: np.ndarray) -> Problem:
    """/feed rows that give live servers (name -> live profile) another profile: the rule /predict applies
    within a request (row_rule_problems), applied across requests."""
    said = ", ".join(f"{name} is {profile}" for name, profile in list(live_profiles.items())[:MAX_ROWS_SHOWN])
    fix = (
        f"{PROFILE_FIX} (live: {said}); a server whose role changed is a new server: send it under a new name, or "
        "restart the service to forget its window"
    )
    return _row_problem(f"rows[*].{PROFILE}", PROFILE_RULE, fix, rows)


def _history_spans(frame: pd.DataFrame) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """Each server's name, the model steps its history spans (first to last bin, as features.inference_frame
    counts them), and every row's server code."""
    bins = frame[TIMESTAMP].to_numpy(dtype="datetime64[ns]").view(np.int64) // STEP_NS
    codes, names = pd.factorize(frame[SERVER_NAME])
    first = np.full(len(names), np.iinfo(np.int64).max)
    last = np.full(len(names), np.iinfo(np.int64).min)
    np.minimum.at(first, codes, bins)
    np.maximum.at(last, codes, bins)
    return pd.Index(names), last - first + 1, codes


def warming_servers(frame: pd.DataFrame, history_steps: int) -> list[dict[str, Any]]:
    """Servers whose history spans fewer steps than a forecast reads, with what each still needs: a request
    forecasts the others and lists these, as /predictions/current lists live servers still warming up."""
    names, span, _ = _history_spans(frame)
    return [
        {"server_name": str(names[i]), "have_steps": int(span[i]), "need_steps": int(history_steps - span[i]),
         "need_minutes": int(history_steps - span[i]) * STEP_MINUTES}
        for i in np.flatnonzero(span < history_steps).tolist()
    ]  # fmt: skip


def short_history_problem(frame: pd.DataFrame, history_steps: int) -> Problem | None:
    """The servers too short for a forecast, named with the steps each has; None when none is."""
    names, span, codes = _history_spans(frame)
    short = np.flatnonzero(span < history_steps)
    if not short.size:
        return None
    hours = history_steps * STEP_MINUTES / 60
    have = ", ".join(f"{names[i]} has {span[i]}" for i in short[:MAX_ROWS_SHOWN])
    more = f" and {short.size - MAX_ROWS_SHOWN} more" if short.size > MAX_ROWS_SHOWN else ""
    problem = _row_problem(
        "rows",
        f"too little history: a server's history must span what the model reads, {history_steps} steps of "
        f"{STEP_MINUTES} min ({hours:g} h)",
        f"send at least {hours:g} h of history for every server ({have}{more} of {history_steps} steps)",
        np.flatnonzero(np.isin(codes, short)),
    )
    problem.count = len(short)
    return problem


def shown(text: str, limit: int = 64) -> str:
    """A client's string as an answer repeats it: control characters escaped, at most `limit` characters
    (and the length beyond), so a 10,000-character or NUL-laden name cannot fill or garble the answer."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return escaped + (f"… ({len(text)} characters)" if len(text) > limit else "")


def _row_problem(field: str, rule: str, fix: str, rows: np.ndarray) -> Problem:
    return Problem(field=field, rule=rule, fix=fix, count=len(rows), rows=rows[:MAX_ROWS_SHOWN].tolist())


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------

# Fields typed loosely: mypy matches a ** dict against create_model's own options (__base__, ...) too.
Quantiles = create_model(
    "Quantiles",
    __doc__="One forecast value per contract quantile.",
    **cast(dict[str, Any], {q: (float, ...) for q in QUANTILE_NAMES}),
)
QuantilePath = create_model(
    "QuantilePath",
    __doc__="Per-step forecast, step 1 first, per contract quantile.",
    **cast(dict[str, Any], {q: (list[float], ...) for q in QUANTILE_NAMES}),
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
    alert_score: float = Field(
        ..., ge=0, description="The critical level's alert score, which the version's fitted threshold turns critical."
    )
    severity: Literal["healthy", "warning", "critical"]
    severity_label: str
    colour: str
    metric: str | None = Field(..., description="The risk metric driving the risk (None when nothing crosses).")
    reason: str
    drivers: list[str] = Field(..., description="Risk metrics above healthy, worst first, in words.")
    horizons: dict[HorizonName, dict[str, Quantiles]]  # type: ignore[valid-type]
    step_minutes: int
    path: dict[str, QuantilePath] | None = None
    data_age_seconds: float | None = Field(
        None, description="Live forecasts: wall-clock seconds since the server's newest sample."
    )
    stale: bool = Field(False, description="Live forecasts: no new sample for longer than the stale limit.")


class WarmingServer(BaseModel):
    server_name: str
    have_steps: int
    need_steps: int
    need_minutes: int = Field(..., description="Minutes of further history needed before the first forecast.")


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[ServerForecast]
    #: Servers of the request with too little history to forecast, and what each still needs.
    warming_up: list[WarmingServer] = []


class CurrentPredictions(BaseModel):
    model_version: str | None
    computed_at: datetime | None = Field(..., description="Wall-clock time the cache was filled.")
    predictions: list[ServerForecast]
    warming_up: list[WarmingServer]


class Alert(BaseModel):
    """An active alert. One clock: every time in it is data time (the forecasts' origins and what they
    predict for), none wall-clock."""

    server_name: str
    profile: str
    severity: Literal["warning", "critical"] = Field(
        ..., description="Critical: the model's alert fired (at the probability it was tuned to); warning: watch it."
    )
    risk: float
    metric: str | None = Field(..., description="The risk metric driving the alert (None when nothing crosses).")
    probability: float | None = Field(
        None, description="Probability (0-1) that the metric reaches the level named in the reason at predicted_for."
    )
    probability_word: str | None = Field(
        None, description="The probability in the contract's words (contract.PROBABILITY_WORDS: very unlikely < 0.1 …)."
    )
    minutes_ahead: int = Field(..., description="Minutes from prediction_time to the crossing.")
    prediction_time: datetime = Field(..., description="Data time: origin of the latest forecast, which this shows.")
    predicted_for: datetime | None = Field(
        ..., description="Data time of the crossing: prediction_time + minutes_ahead (None when nothing crosses)."
    )
    value: float | None = Field(
        ...,
        description="The forecast's value of the metric at predicted_for: the quantile value_quantile (the median).",
    )
    value_quantile: str | None = Field(..., description="The forecast quantile `value` is: p50.")
    reached_by_quantile: str | None = Field(
        ...,
        description="The lowest forecast quantile at or above the level at predicted_for (p75: at least 25 % likely).",
    )
    reason: str
    since: datetime = Field(..., description="Data time: origin of the forecast that raised the alert.")
    paging: bool = Field(
        ...,
        description="Whether it pages (is posted to Alertmanager): the model's page rule, enough critical forecasts "
        "of the last few (tftmon.alerting.PageRule), until enough in a row are not.",
    )
    model_version: str


class ActiveAlerts(BaseModel):
    computed_at: datetime | None = Field(
        ..., description="Wall-clock time the live forecast was computed; the alerts themselves carry data time only."
    )
    counts: dict[str, int]
    alerts: list[Alert]


class AlertTransition(BaseModel):
    """A change of a server's alert; one clock: data time."""

    kind: TransitionKind
    server_name: str
    severity: str
    previous_severity: str
    metric: str | None
    reason: str
    data_time: datetime = Field(..., description="Data time: origin of the forecast that made the change.")


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
    model_targets: list[str] = Field([], description="The metrics the loaded model forecasts (and needs in every row).")
    loaded_at: datetime | None
    uptime_seconds: float
    servers_known: int
    servers_live: int
    servers_warming_up: int
    unknown_servers: int
    unknown_rate: float = Field(..., description="Share of predictions for unknown servers in the rolling window.")
    unknown_rate_window_seconds: float
    last_prediction_time: datetime | None


class LiveStatus(Status):
    """/status with the live loop's forecast failures, so a server that cannot be forecast is seen."""

    live_forecast_failures: int = Field(..., description="Server forecasts of the live loop that failed.")
    servers_failing: dict[str, str] = Field(..., description="Servers whose last live forecast failed, and why.")
    servers_stale: dict[str, float] = Field(
        {}, description="Live servers without a new sample for longer than the stale limit: seconds since their newest."
    )
    shard: str | None = Field(None, description="The shard i/N of the hosts this replica forecasts (None: all).")
    prometheus: dict[str, Any] | None = Field(None, description="The Prometheus source: pulls, failures, hosts.")
    alertmanager: dict[str, Any] | None = Field(None, description="Alert delivery to Alertmanager, per URL.")


class FleetServer(BaseModel):
    server_name: str
    profile: str
    last_seen: datetime = Field(..., description="Data time of the server's newest sample (UTC).")
    warming_up: bool = Field(..., description="Too little history for a forecast yet.")


class Fleet(BaseModel):
    """The live fleet: every server fed to the service, newest sample first known."""

    servers: list[FleetServer]


class SeverityCounts(BaseModel):
    healthy: int
    warning: int
    critical: int


class ProfileSummary(BaseModel):
    servers: int
    mean_risk: float
    max_risk: float
    counts: SeverityCounts


class FleetSummary(BaseModel):
    """The fleet at one live forecast: what the Historical view plots over time."""

    computed_at: datetime = Field(..., description="Wall-clock time of the forecast.")
    data_time: datetime | None = Field(..., description="Newest forecast origin (data time).")
    model_version: str
    servers: int
    warming_up: int
    mean_risk: float
    max_risk: float
    counts: SeverityCounts
    alerts: dict[str, int] = Field(..., description="Active alerts by severity after this forecast (hysteresis).")
    by_profile: dict[str, ProfileSummary]


class FleetHistory(BaseModel):
    summaries: list[FleetSummary] = Field(..., description="Oldest first; bounded by fleet_history.")


class ServerHistory(BaseModel):
    """What the model read for the server's current forecast, at the model step (bin start, UTC): its metrics."""

    server_name: str
    profile: str
    step_minutes: int
    timestamps: list[datetime]
    metrics: dict[str, list[float | None]]


class VariableWeight(BaseModel):
    name: str
    importance: float = Field(..., ge=0, le=1)


class AttentionWeight(BaseModel):
    minutes_before: int = Field(..., description="Age of the history bin at the forecast origin (0 = newest).")
    weight: float = Field(..., ge=0, le=1)


class ExplainResponse(BaseModel):
    """The TFT's interpretation of the server's current forecast (interpret_output), nothing else."""

    server_name: str
    profile: str
    model_version: str
    prediction_time: datetime
    static_variables: list[VariableWeight] = Field(..., description="Largest first; sums to 1.")
    encoder_variables: list[VariableWeight] = Field(..., description="Largest first; sums to 1.")
    decoder_variables: list[VariableWeight] = Field(..., description="Largest first; sums to 1.")
    attention: list[AttentionWeight] = Field(..., description="First forecast step over the history, oldest first.")


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
    """One rule broken, once however many rows break it."""

    field: str = Field(..., description="Where, rows indexed as rows[*], e.g. rows[*].cpu_user_pct.")
    rule: str
    fix: str
    count: int = Field(1, ge=1, description="How many rows (or places) break the rule.")
    rows: list[int] = Field([], description="The first rows that break it (at most 5), by index.")


class ErrorResponse(BaseModel):
    error: str
    fix: str | None = None
    problems: list[Problem] = []


# ---------------------------------------------------------------------------------------------
# Validation errors: one problem per broken rule, with its repair
# ---------------------------------------------------------------------------------------------

#: Problems listed in one response; the rest are counted in the error line.
MAX_PROBLEMS = 50
#: Row indices kept per problem.
MAX_ROWS_SHOWN = 5


def request_errors(errors: Sequence[Any]) -> ErrorResponse:
    """Pydantic/FastAPI errors (locations under "body") -> the 422 body.

    Errors that differ only in the row they occur in are one problem with a count: 1,080 rows that all
    send server_id read `rows[*].server_id: ..., 1080 rows`, not 1,080 times the same sentence.
    """
    grouped: dict[tuple[str, str], Problem] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())[1:]]
        ctx = error.get("ctx") or {}
        row = int(loc[1]) if len(loc) > 1 and loc[0] == "rows" and loc[1].isdigit() else None
        path = ["rows[*]", *loc[2:]] if row is not None else [] if loc and loc[0].isdigit() else loc  # JSON offset
        if "column" in ctx:
            path.append(str(ctx["column"]))
        field, rule = ".".join(path) or "body", str(error.get("msg", ""))
        problem = grouped.get((field, rule))
        if problem is None:
            grouped[(field, rule)] = Problem(
                field=field, rule=rule, fix=_fix(error, field), rows=[] if row is None else [row]
            )
            continue
        problem.count += 1
        if row is not None and len(problem.rows) < MAX_ROWS_SHOWN:
            problem.rows.append(row)
    return problem_response(list(grouped.values()))


def problem_response(problems: list[Problem]) -> ErrorResponse:
    """The 422 body for these problems: each named in the error line (the first three), all listed."""
    said = [f"{p.field}: {p.rule}" + (f", {p.count} row{'s' * (p.count > 1)}" if p.rows else "") for p in problems]
    more = f"; and {len(said) - 3} more" if len(said) > 3 else ""
    error = f"{len(problems)} problem{'s' * (len(problems) != 1)} in the request: {'; '.join(said[:3])}{more}"
    return ErrorResponse(error=error, problems=problems[:MAX_PROBLEMS])


def _fix(error: Any, field: str) -> str:
    """How to repair one error, in words: the error's own `fix` (our rules carry theirs), else by type."""
    kind, ctx = str(error["type"]), error.get("ctx") or {}
    if "fix" in ctx:
        return str(ctx["fix"])
    name = field.rsplit(".", 1)[-1]
    if kind == "missing":
        if field == "body":
            return 'send a JSON object {"rows": [...]} with Content-Type: application/json'
        if field == "rows":
            return 'send the history as "rows": [...], one object per server and sample time'
        return f"add {name} to every row (see /docs.json)"
    fixes = {
        "json_invalid": "send valid JSON (double-quoted keys, no trailing commas, no NaN or Infinity)",
        "finite_number": "send a finite number: drop samples whose value is NaN or infinite",
        "greater_than_equal": f"send {name} of at least {ctx.get('ge')} (the contract's range)",
        "less_than_equal": f"send {name} of at most {ctx.get('le')} (the contract's range)",
        "too_short": "send at least one row",
        "too_long": f"split the request: at most {ctx.get('max_length')} rows per request",
        "literal_error": f"use one of {', '.join(PROFILE_NAMES)}, or leave profile out to infer it from the hostname",
        "string_pattern_mismatch": "send a hostname: letters, digits, '.', '-', '_', starting with a letter or digit",
        "extra_forbidden": f"remove {name}; the request takes only the fields in its schema (see /docs.json)",
        "model_type": "send a JSON object",
        "model_attributes_type": "send each row as a JSON object",
        "dict_type": "send a JSON object",
        "list_type": "send rows as a JSON array of row objects",
        "int_type": f"send {name} as a whole JSON number (no fraction, not a string)",
        "int_from_float": f"send {name} as a whole JSON number (no fraction)",
        "int_parsing": f"send {name} as a whole JSON number (not a string)",
        "float_type": f"send {name} as a JSON number (not a string or boolean)",
        "float_parsing": f"send {name} as a JSON number (not a string)",
        "bool_type": f"send {name} as true or false",
        "bool_parsing": f"send {name} as true or false",
        "string_type": f"send {name} as a JSON string",
    }
    if kind in fixes:
        return fixes[kind]
    if kind.startswith(("datetime", "timestamp", "date")):
        return f"send {name} as an ISO 8601 timestamp, e.g. 2026-01-05T12:00:00Z (naive means UTC)"
    return f"send {name} as the request schema at /docs.json describes"
