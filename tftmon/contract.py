"""The data contract: the one place that names columns, dtypes, ranges, states, profiles and the time grid.

Every other module imports these facts; docs/DATA_CONTRACT.md and the Great Expectations suites in
expectations/ are generated from this module, and tests fail when they drift from it. This module
imports nothing of tftmon's, so anything may depend on it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, overload

if TYPE_CHECKING:
    import pandas as pd

CONTRACT_VERSION = "2.0.0"

# ---------------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------------

LogicalType = Literal["timestamp", "string", "float", "int"]
ColumnRole = Literal["identity", "metric", "label"]
Aggregation = Literal["mean", "max", "last"]
PandasDtype = Literal["datetime64[ns, UTC]", "str", "float64", "int64"]

#: pandas dtype each logical type is stored as (Parquet maps these one to one).
PANDAS_DTYPES: dict[LogicalType, PandasDtype] = {
    "timestamp": "datetime64[ns, UTC]",
    "string": "str",
    "float": "float64",
    "int": "int64",
}


@dataclass(frozen=True)
class Column:
    """One column of the contract, with everything a validator or a doc needs to know about it."""

    name: str
    type: LogicalType
    role: ColumnRole
    unit: str
    description: str
    min: float | None = None
    max: float | None = None
    required_simulated: bool = True
    required_telemetry: bool = True
    #: How raw samples are combined into one model step (metrics only).
    aggregation: Aggregation | None = None

    @property
    def pandas_dtype(self) -> PandasDtype:
        return PANDAS_DTYPES[self.type]

    @property
    def is_percentage(self) -> bool:
        return self.unit == "%"


def _pct(name: str, description: str) -> Column:
    return Column(name, "float", "metric", "%", description, 0.0, 100.0, required_telemetry=False, aggregation="mean")


IDENTITY_COLUMNS: tuple[Column, ...] = (
    Column("timestamp", "timestamp", "identity", "UTC", "Sample time, timezone-aware UTC."),
    Column("server_name", "string", "identity", "", "Hostname as the fleet reports it."),
    Column(
        "server_id",
        "string",
        "identity",
        "",
        "Stable SHA-256 id of the normalised hostname (tftmon.encoding); derived when absent.",
        required_telemetry=False,
    ),
    Column(
        "profile",
        "string",
        "identity",
        "",
        "Workload profile; inferred from the hostname when absent.",
        required_telemetry=False,
    ),
)

STATE_COLUMN = Column(
    "state",
    "string",
    "label",
    "",
    "Simulator ground truth. Never a model input: real telemetry has no state.",
    required_telemetry=False,
)

METRIC_COLUMNS: tuple[Column, ...] = (
    _pct("cpu_user_pct", "User-space CPU."),
    _pct("cpu_sys_pct", "Kernel CPU."),
    _pct("cpu_iowait_pct", "CPU waiting on I/O: the most telling bottleneck signal."),
    _pct("cpu_idle_pct", "Idle CPU. user + sys + iowait + idle = 100; show used = 100 - idle."),
    _pct("java_cpu_pct", "CPU of JVM/Spark processes; never above user + sys."),
    _pct("mem_used_pct", "Memory in use."),
    _pct("swap_used_pct", "Swap in use."),
    _pct("disk_usage_pct", "Disk space in use; a slow trend that fills."),
    Column(
        "net_in_mb_s", "float", "metric", "MB/s", "Network ingress.", 0.0, required_telemetry=False, aggregation="mean"
    ),
    Column(
        "net_out_mb_s", "float", "metric", "MB/s", "Network egress.", 0.0, required_telemetry=False, aggregation="mean"
    ),
    Column(
        "back_close_wait",
        "int",
        "metric",
        "connections",
        "TCP CLOSE_WAIT to back ends.",
        0.0,
        required_telemetry=False,
        aggregation="max",
    ),
    Column(
        "front_close_wait",
        "int",
        "metric",
        "connections",
        "TCP CLOSE_WAIT from front ends.",
        0.0,
        required_telemetry=False,
        aggregation="max",
    ),
    Column(
        "load_average",
        "float",
        "metric",
        "",
        "1-minute load average.",
        0.0,
        required_telemetry=False,
        aggregation="mean",
    ),
    Column(
        "uptime_days",
        "int",
        "metric",
        "days",
        "Days since reboot; resets on reboot/maintenance.",
        0.0,
        30.0,
        required_telemetry=False,
        aggregation="last",
    ),
)

COLUMNS: tuple[Column, ...] = (*IDENTITY_COLUMNS, STATE_COLUMN, *METRIC_COLUMNS)
COLUMNS_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}

METRICS: tuple[str, ...] = tuple(c.name for c in METRIC_COLUMNS)
PERCENT_METRICS: tuple[str, ...] = tuple(c.name for c in METRIC_COLUMNS if c.is_percentage)
INTEGER_METRICS: tuple[str, ...] = tuple(c.name for c in METRIC_COLUMNS if c.type == "int")

TIMESTAMP = "timestamp"
SERVER_NAME = "server_name"
SERVER_ID = "server_id"
PROFILE = "profile"
STATE = "state"

#: The CPU split that must add up to 100 % in every row, and the tolerance allowed.
CPU_PARTS: tuple[str, ...] = ("cpu_user_pct", "cpu_sys_pct", "cpu_iowait_pct", "cpu_idle_pct")
CPU_USER = "cpu_user_pct"
CPU_IDLE = "cpu_idle_pct"
CPU_IOWAIT = "cpu_iowait_pct"
MEM_USED = "mem_used_pct"
SWAP_USED = "swap_used_pct"
DISK_USAGE = "disk_usage_pct"
LOAD_AVERAGE = "load_average"
NET_IN = "net_in_mb_s"
NET_OUT = "net_out_mb_s"
BACK_CLOSE_WAIT = "back_close_wait"
FRONT_CLOSE_WAIT = "front_close_wait"
CPU_SUM_TOLERANCE = 0.01
#: java_cpu_pct must not exceed the sum of these.
JAVA_CPU = "java_cpu_pct"
JAVA_CPU_BOUND: tuple[str, ...] = ("cpu_user_pct", "cpu_sys_pct")
#: Uptime resets to this on a reboot; counts the days since.
UPTIME = "uptime_days"

#: Row rules and their repairs, worded once for the validator and the service.
CPU_SUM_RULE = f"{' + '.join(CPU_PARTS)} must equal 100 ± {CPU_SUM_TOLERANCE:g} %"
CPU_SUM_FIX = "rescale the CPU split so its parts add up to 100"
PROFILE_RULE = "a server has one profile"
PROFILE_FIX = "send the same profile in every row of a server, or leave it out"

#: Timestamps outside [TIMESTAMP_MIN, now + TIMESTAMP_MAX_AHEAD] are refused: older data is a unit or epoch
#: mistake, later is a clock error, and past 2262 a nanosecond timestamp wraps round (to 1816).
TIMESTAMP_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TIMESTAMP_MAX_AHEAD = timedelta(days=1)
TIMESTAMP_RULE = f"{TIMESTAMP} must lie between {TIMESTAMP_MIN:%Y-%m-%d} and now + {TIMESTAMP_MAX_AHEAD.days} day (UTC)"
TIMESTAMP_FIX = f"send UTC sample times from {TIMESTAMP_MIN:%Y-%m-%d} to now: fix the clock, or the epoch or unit"


def metric_bounds(metrics: Iterable[str]) -> tuple[list[float], list[float]]:
    """Each metric's contract range as (lower, upper) lists, an open end as ∓inf: forecasts are clipped to
    it, so no one is shown a negative percentage or a share above 100."""
    columns = [COLUMNS_BY_NAME[m] for m in metrics]
    lower = [c.min if c.min is not None else float("-inf") for c in columns]
    upper = [c.max if c.max is not None else float("inf") for c in columns]
    return lower, upper


def profile_conflicts(names: pd.Series, profiles: pd.Series) -> list[object]:
    """Servers whose rows give more than one profile (a row without one agrees with any); vectorised."""
    import numpy as np
    import pandas as pd

    name_codes, uniques = pd.factorize(names)
    profile_codes, _ = pd.factorize(profiles)
    given = profile_codes >= 0
    seen = np.zeros((len(uniques), int(profile_codes.max(initial=-1)) + 1), dtype=bool)
    seen[name_codes[given], profile_codes[given]] = True
    counts = seen.sum(axis=1)
    return list(uniques[np.flatnonzero(counts > 1)])


def timestamp_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The earliest and latest timestamp the contract accepts at `now` (default: the current time)."""
    return TIMESTAMP_MIN, (now or datetime.now(UTC)) + TIMESTAMP_MAX_AHEAD


def required_columns(suite: Literal["simulated", "telemetry"]) -> tuple[str, ...]:
    """Columns a dataset must carry to pass the given suite: every column for simulated data; for real
    telemetry only the identity columns, plus at least MIN_METRICS of the metrics (`present_metrics`)."""
    if suite == "simulated":
        return tuple(c.name for c in COLUMNS if c.required_simulated)
    return tuple(c.name for c in COLUMNS if c.required_telemetry)


def present_metrics(columns: Iterable[str]) -> tuple[str, ...]:
    """The contract metrics among `columns`, in contract order: what a real fleet happens to report."""
    given = set(columns)
    return tuple(m for m in METRICS if m in given)


#: Real telemetry carries any subset of the metrics, but at least this many: a dataset of identity
#: columns alone has nothing to forecast. Rules across metrics (the CPU split's sum, java ≤ user + sys)
#: apply only where every metric they name is present.
MIN_METRICS = 1
METRIC_PRESENT_RULE = f"a dataset must carry at least {MIN_METRICS} contract metric"
METRIC_PRESENT_FIX = f"add a metric column named as the contract names it ({', '.join(METRICS[:3])}, …)"


# ---------------------------------------------------------------------------------------------
# Deprecated names (contract 1.x): rejected with a message that names the replacement
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deprecation:
    name: str
    since: str
    replacements: tuple[str, ...]
    note: str


DEPRECATED_COLUMNS: dict[str, Deprecation] = {
    d.name: d
    for d in (
        Deprecation(
            "cpu_pct",
            "2.0",
            CPU_PARTS,
            "split total CPU into user/sys/iowait/idle (they sum to 100)",
        ),
        Deprecation("mem_pct", "2.0", ("mem_used_pct",), "rename"),
        Deprecation(
            "disk_io_mb_s",
            "2.0",
            ("cpu_iowait_pct",),
            "disk throughput is no longer collected; I/O pressure is measured as iowait",
        ),
        Deprecation(
            "latency_ms",
            "2.0",
            ("load_average", "back_close_wait", "front_close_wait"),
            "latency is not collected; saturation shows in load and CLOSE_WAIT counts",
        ),
    )
}


def deprecation_message(name: str) -> str:
    """Human-readable fix for a deprecated column name."""
    d = DEPRECATED_COLUMNS[name]
    return (
        f"column {name} is deprecated since contract {d.since}: replace it with {' / '.join(d.replacements)} ({d.note})"
    )


# ---------------------------------------------------------------------------------------------
# States (simulator ground truth) and profiles
# ---------------------------------------------------------------------------------------------

STATES: tuple[str, ...] = (
    "healthy",
    "idle",
    "morning_spike",
    "heavy_load",
    "critical_issue",
    "recovery",
    "maintenance",
    "offline",
)
#: States from least to most severe: a model-step bin takes its most severe state, so a critical minute
#: inside a five-minute bin is never averaged away (incident warnings are scored against it).
STATE_SEVERITY: tuple[str, ...] = (
    "idle",
    "healthy",
    "morning_spike",
    "recovery",
    "heavy_load",
    "maintenance",
    "offline",
    "critical_issue",
)
#: The state whose episodes incident early-warning is scored against.
INCIDENT_STATE = "critical_issue"
#: The ramp most incidents grow out of: an episode whose server was not yet in it at any origin early enough
#: to warn showed no sign in the history a forecaster reads (the evaluation counts those).
PRECURSOR_STATE = "heavy_load"
OFFLINE_STATE = "offline"
MAINTENANCE_STATE = "maintenance"


@dataclass(frozen=True)
class Profile:
    name: str
    #: Hostname pattern as operators write it: '#' is one digit.
    pattern: str
    default_count: int
    character: str

    @property
    def prefix(self) -> str:
        return self.pattern.rstrip("#")

    @property
    def digits(self) -> int:
        return len(self.pattern) - len(self.prefix)

    def hostname(self, number: int) -> str:
        """The number-th host of this profile, e.g. ppweb007."""
        return f"{self.prefix}{number:0{self.digits}d}"


PROFILES: tuple[Profile, ...] = (
    Profile("web_api", "ppweb###", 25, "network heavy, latency critical, many connections"),
    Profile("ml_compute", "ppml####", 20, "high CPU and memory, compute bound (low iowait normal)"),
    Profile("database", "ppdb###", 15, "I/O and memory heavy (higher iowait normal)"),
    Profile("data_ingest", "ppetl###", 10, "bursty I/O and CPU (Kafka/Spark/ETL)"),
    Profile("risk_analytics", "pprisk###", 8, "CPU and memory heavy batch (VaR, Monte Carlo)"),
    Profile("generic", "ppgen###", 7, "fallback"),
    Profile("conductor_mgmt", "ppcon##", 5, "job scheduling, moderate"),
)
PROFILES_BY_NAME: dict[str, Profile] = {p.name: p for p in PROFILES}
PROFILE_NAMES: tuple[str, ...] = tuple(p.name for p in PROFILES)
FALLBACK_PROFILE = "generic"
DEFAULT_FLEET_SIZE = sum(p.default_count for p in PROFILES)

#: Which profiles feed which: an incident on the left raises load on the right.
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "database": ("web_api", "data_ingest", "risk_analytics", "conductor_mgmt"),
    "conductor_mgmt": ("ml_compute",),
    "data_ingest": ("ml_compute",),
}

# Longest prefixes first so 'pprisk' is never read as a shorter prefix.
_HOSTNAME_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"^{re.escape(p.prefix)}\d+$"), p.name) for p in sorted(PROFILES, key=lambda p: -len(p.prefix))
)


def normalise_hostname(hostname: str) -> str:
    """Hostnames are case-insensitive and may come fully qualified; compare the short lower name."""
    return hostname.strip().lower()


def profile_of(hostname: str) -> str:
    """Infer a host's profile from its name (e.g. ppdb012 -> database); unknown patterns -> generic."""
    short = normalise_hostname(hostname).split(".", 1)[0]
    for rule, profile in _HOSTNAME_RULES:
        if rule.match(short):
            return profile
    return FALLBACK_PROFILE


# ---------------------------------------------------------------------------------------------
# Time grid: the model step is defined once; horizons are derived from it
# ---------------------------------------------------------------------------------------------

MODEL_STEP = timedelta(minutes=5)
STEP_MINUTES = int(MODEL_STEP.total_seconds() // 60)
STEP_NS = int(MODEL_STEP.total_seconds() * 1_000_000_000)
#: Raw data may arrive at any interval at least this long; it is resampled to MODEL_STEP.
MIN_RAW_INTERVAL = timedelta(seconds=5)
#: A forecast's history must have a sample in at least this share of the model steps of the model's
#: window (the encoder), not merely span it: two samples hours apart are no history of those hours.
MIN_HISTORY_COVERAGE = 0.5
HISTORY_COVERAGE_RULE = (
    f"a server's history must have samples in at least {MIN_HISTORY_COVERAGE:.0%} of the {STEP_MINUTES}-min "
    "steps of the model's window"
)


def steps(duration: timedelta) -> int:
    """Whole model steps in a duration; refuses durations that are not a multiple of the step."""
    n, rest = divmod(duration, MODEL_STEP)
    if rest:
        raise ValueError(f"{duration} is not a whole number of {MODEL_STEP} model steps")
    return n


HORIZONS: dict[str, int] = {
    "30min": steps(timedelta(minutes=30)),
    "1h": steps(timedelta(hours=1)),
    "8h": steps(timedelta(hours=8)),
}
#: The model forecasts this many steps ahead: the longest horizon.
PREDICTION_STEPS = max(HORIZONS.values())


def quantile_name(q: float) -> str:
    """Column name of a forecast quantile: 0.1 -> p10, 0.02 -> p2, 0.975 -> p97.5."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile {q} is not strictly between 0 and 1")
    return f"p{round(q * 100, 1):g}"


#: The quantiles every forecast publishes (API, dashboard, accuracy tables).
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
QUANTILE_NAMES: tuple[str, ...] = tuple(quantile_name(q) for q in QUANTILES)
#: The quantiles a model is trained on by default: the published ones plus tails, so risk can read the
#: probability of crossing a level from the forecast distribution (tftmon.risk).
MODEL_QUANTILES: tuple[float, ...] = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98)
if not set(QUANTILES) <= set(MODEL_QUANTILES):
    raise RuntimeError("MODEL_QUANTILES must include the published QUANTILES")


@overload
def to_utc(ts: pd.Series) -> pd.Series: ...
@overload
def to_utc(ts: pd.DatetimeIndex) -> pd.DatetimeIndex: ...
@overload
def to_utc(ts: pd.Timestamp | datetime | str) -> pd.Timestamp: ...
def to_utc(
    ts: pd.Series | pd.DatetimeIndex | pd.Timestamp | datetime | str,
) -> pd.Series | pd.DatetimeIndex | pd.Timestamp:
    """Timestamps as timezone-aware UTC: naive values are taken as UTC, aware ones converted.

    The one rule for time zones in tftmon (features, evaluation, serving and configs all call it). A
    Series of pandas datetimes skips pd.to_datetime: it would return the same values, at tens of ms a
    call on a 900-server request (it builds a cache of the unique values first).
    """
    import pandas as pd

    if isinstance(ts, pd.Series):
        out = ts if isinstance(ts.array, pd.arrays.DatetimeArray) else pd.to_datetime(ts)
        return out.dt.tz_localize("UTC") if out.dt.tz is None else out.dt.tz_convert("UTC")
    if isinstance(ts, pd.DatetimeIndex):
        return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    one = pd.Timestamp(ts)
    return one.tz_localize("UTC") if one.tzinfo is None else one.tz_convert("UTC")


# ---------------------------------------------------------------------------------------------
# The forecast table: what the model, the baselines and the risk scale exchange
# ---------------------------------------------------------------------------------------------

ORIGIN = "origin"
STEP = "step"
METRIC = "metric"
HORIZON = "horizon"
#: One row per server × origin × step × metric. Columns for further quantiles (contract.quantile_name,
#: e.g. p2, p98) may follow; risk reads every quantile present.
FORECAST_COLUMNS: tuple[str, ...] = (SERVER_NAME, PROFILE, ORIGIN, STEP, TIMESTAMP, METRIC, *QUANTILE_NAMES)

#: Real telemetry in long format (tftmon ingest: long files, and Prometheus): one row per sample, with the
#: hostname under SERVER, the contract metric's name under METRIC and its value, in the contract's unit.
SERVER = "server"
VALUE = "value"
LONG_COLUMNS: tuple[str, ...] = (TIMESTAMP, SERVER, METRIC, VALUE)


def quantile_columns(columns: Iterable[str]) -> dict[float, str]:
    """The forecast quantile columns among `columns`, by quantile level, ascending."""
    found = {}
    for name in columns:
        match = re.fullmatch(r"p(\d+(?:\.\d+)?)", name)
        if match and 0 < float(match.group(1)) < 100:
            found[float(match.group(1)) / 100] = name
    return dict(sorted(found.items()))


# ---------------------------------------------------------------------------------------------
# Probability in words: what "likely" means, everywhere tftmon says it
# ---------------------------------------------------------------------------------------------

#: The one scale of probability words (after the IPCC's likelihood scale, made disjoint): each word is
#: said of a probability at or above its lower bound and below the next word's, listed from the top.
#: Reasons, alerts and the dashboard say the word and the % together ("unlikely (20 %)"): an alert can
#: fire on an unlikely crossing, because alerts are tuned to warn early (tftmon.risk), and the word
#: must not claim more than the number.
PROBABILITY_WORDS: tuple[tuple[float, str], ...] = (
    (0.9, "very likely"),
    (0.66, "likely"),
    (0.33, "about as likely as not"),
    (0.1, "unlikely"),
    (0.0, "very unlikely"),
)
if [lower for lower, _ in PROBABILITY_WORDS] != sorted((lower for lower, _ in PROBABILITY_WORDS), reverse=True):
    raise RuntimeError("PROBABILITY_WORDS must run from the highest lower bound down")
if PROBABILITY_WORDS[-1][0] != 0.0:
    raise RuntimeError("PROBABILITY_WORDS must cover probabilities down to 0")


def probability_word(p: float) -> str:
    """The word for a probability in [0, 1]: 0.95 -> "very likely", 0.04 -> "very unlikely"."""
    if not 0.0 <= p <= 1.0:  # NaN fails too
        raise ValueError(f"probability {p} is not between 0 and 1")
    return next(word for lower, word in PROBABILITY_WORDS if p >= lower)


def probability_text(p: float) -> str:
    """How tftmon says a probability: its word and its whole % ("unlikely (20 %)"). The % is rounded down,
    as the words' bounds are, so the two always agree (65.9 % is "about as likely as not (65 %)"), and
    only a certain crossing reads 100 %; a possible one never reads 0 % ("< 1 %")."""
    word = probability_word(p)
    pct = math.floor(p * 100 + 1e-9)  # 0.29 * 100 is 28.999999999999996
    return f"{word} ({'< 1' if pct == 0 < p else pct} %)"


# ---------------------------------------------------------------------------------------------
# Fleet drift: when the fleet the model knows and the fleet that reports have grown apart
# ---------------------------------------------------------------------------------------------

DriftPriority = Literal["none", "low", "medium", "high"]
#: Priorities from least to most urgent; a drift check's exit code is the index (0 none ... 3 high).
DRIFT_PRIORITIES: tuple[DriftPriority, ...] = ("none", "low", "medium", "high")
#: Drift % = (new + retired servers) / servers known to the model. At least this % is the priority: low
#: (retrain in the next maintenance window), medium (within 24 h); above DRIFT_HIGH_PCT it is high (now).
DRIFT_LOW_PCT = 10.0
DRIFT_MEDIUM_PCT = 20.0
DRIFT_HIGH_PCT = 35.0
UnknownRateLevel = Literal["fine", "warning", "critical"]
#: Share of the service's predictions for servers the model never saw, over its rolling window: below
#: UNKNOWN_RATE_WARNING fine, up to UNKNOWN_RATE_CRITICAL a warning, above it critical.
UNKNOWN_RATE_WARNING = 0.05
UNKNOWN_RATE_CRITICAL = 0.15
#: A critical unknown-server rate raises a check's priority to at least this: that many cold-start forecasts
#: are a fleet change whatever the drift % says (e.g. servers renamed, or a fleet the registry misreports).
UNKNOWN_RATE_CRITICAL_PRIORITY: DriftPriority = "medium"
#: A server silent this long (relative to the newest sample seen) is offline; then a retirement (sunset)
#: candidate; then retired (sunset). A known server absent from the telemetry altogether counts as retired.
OFFLINE_AFTER = timedelta(hours=24)
SUNSET_CANDIDATE_AFTER = timedelta(days=7)
SUNSET_AFTER = timedelta(days=30)
#: Retraining collects at least this much history per active server; a shorter one is reported and left out
#: of training, so the server is forecast by cold start (from its profile) until it has enough.
MIN_TRAINING_HISTORY = timedelta(days=7)
#: A medium-priority drift is retrained within this long of its detection (low: the next maintenance window;
#: high: at once).
MEDIUM_DRIFT_WITHIN = timedelta(hours=24)
