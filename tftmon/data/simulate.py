"""A seeded, vectorised fleet simulator: contract-shaped metrics with ground-truth states.

Design (why it is shaped like this):

* **Per-server randomness.** Every random quantity of a server derives from (seed, server id): its
  parameters and noise stream from a numpy Generator seeded that way, its episodes from a counter-based
  hash of (seed, id, slot). A server therefore behaves the same whatever else is in the fleet (drift
  scenarios keep survivors identical) and however the caller slices servers or time.
* **Episodes in slots.** Time is cut into 8 h slots (per-server phase). A slot holds at most one
  episode: a heavy_load ramp (~2 h) that may escalate to critical_issue (~30 min), then recovery; or an
  offline period. Episodes sit inside their slot with a 30 min margin, so they never overlap or flip per
  tick, and any tick's episode is found in O(1) (random access: a live feed can start at any time).
  Scheduled maintenance recurs every 14-35 days at night; episodes overlapping it are dropped.
  Time of day gives the background states: idle when activity is low, morning_spike on weekday mornings.
* **Noise** is AR(1) per metric channel with a correlation *time* (phi = exp(-dt/tau)), so 5 s and 5 min
  data look alike; scipy.signal.lfilter carries its state across blocks.
* **Blocks.** Ticks are generated in blocks of BLOCK_TICKS ticks (or one day, if shorter) aligned to
  `start`; carried state (filter state, noise stream, last reboot) lives in a per-server-subset stream,
  so batch output, `blocks()` and the live `ticks()` are the same numbers.
* **Files.** Up to one day and 2 M rows: one `metrics.parquet`; otherwise one file per UTC day
  (`metrics/date=YYYY-MM-DD/part-0.parquet`). Each file is written in row groups of server chunks sorted by
  name (rows ordered by server_name, timestamp), so memory stays bounded at any fleet size.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.signal import lfilter
from tqdm import tqdm

from tftmon.config import SimulationConfig
from tftmon.contract import (
    CONTRACT_VERSION,
    CPU_PARTS,
    DEPENDENCIES,
    INCIDENT_STATE,
    INTEGER_METRICS,
    JAVA_CPU,
    MAINTENANCE_STATE,
    METRICS,
    OFFLINE_STATE,
    PROFILE,
    PROFILE_NAMES,
    PROFILES,
    PROFILES_BY_NAME,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    STATES,
    TIMESTAMP,
    UPTIME,
    normalise_hostname,
    profile_of,
)
from tftmon.encoding import ServerMapping, server_id
from tftmon.io import MAPPING_FILE, METADATA_FILE, METRICS_DIR, METRICS_FILE, atomic_directory, write_json_atomic

# Metric and state names, unpacked from the contract (guarded below so a reordering fails loudly).
(USER, SYS, IOWAIT, IDLE, JAVA, MEM, SWAP, DISK, NET_IN, NET_OUT, BACK_CW, FRONT_CW, LOAD, UP) = METRICS
HEALTHY, IDLE_STATE, MORNING, HEAVY, CRITICAL, RECOVERY, MAINT, OFFLINE = range(len(STATES))
if (
    (USER, SYS, IOWAIT, IDLE) != CPU_PARTS
    or (JAVA, UP) != (JAVA_CPU, UPTIME)
    or {BACK_CW, FRONT_CW, UP} != set(INTEGER_METRICS)
    or (STATES[CRITICAL], STATES[MAINT], STATES[OFFLINE]) != (INCIDENT_STATE, MAINTENANCE_STATE, OFFLINE_STATE)
):
    raise ImportError("tftmon.data.simulate is out of step with the order of contract.METRICS / STATES")

#: Ticks per generation block (1 h at 5 s); shorter intervals would only add per-block overhead.
BLOCK_TICKS = 720
#: A dataset larger than this (or longer than a day) is partitioned by day.
SINGLE_FILE_MAX_ROWS = 2_000_000
#: Rows per Parquet row group / generation chunk: bounds memory whatever the fleet size.
ROWS_PER_CHUNK = 1_000_000
UPTIME_CAP_DAYS = 30
#: Float metrics are rounded like real collectors report them (and compress 2x better).
DECIMALS = 2
DICTIONARY_COLUMNS = (SERVER_NAME, SERVER_ID, PROFILE, STATE)

DAY = 86_400.0
SLOT = 8 * 3600.0  # one episode at most per slot
SLOT_MARGIN = 1800.0  # quiet time an episode keeps before its slot ends
WEEK_MINUTES = 7 * 1440
EPOCH_TO_MONDAY_MIN = 3 * 1440  # 1970-01-01 was a Thursday
NO_TIME = -1e18  # "never" for last-reboot times: uptime saturates at the cap

# Episode kinds in a slot.
NONE, INCIDENT, OUTAGE = 0, 1, 2

#: AR(1) noise channels and their correlation times (seconds); java, front_cw and load derive from them.
CHANNELS: tuple[tuple[str, float], ...] = (
    (USER, 120.0), (SYS, 120.0), (IOWAIT, 180.0), (MEM, 1200.0), (NET_IN, 90.0), (NET_OUT, 90.0), (BACK_CW, 300.0),
)


@dataclass(frozen=True)
class ProfileParams:
    """Baselines at full daytime activity, and what an incident at full intensity adds."""

    user: float
    sys: float
    iowait: float
    java_share: float
    mem: float
    net_in: float
    net_out: float
    back_cw: float
    front_cw: float
    cores: float
    night_batch: float  # activity of a nightly batch window (risk, ETL)
    burst: float  # noise multiplier
    inc_user: float
    inc_sys: float
    inc_iowait: float
    inc_mem: float  # share of the free memory taken (> 1: memory runs out whatever the baseline)
    inc_net: float  # relative rise of network traffic
    inc_back_cw: float
    inc_front_cw: float


# Incident signatures per profile, calibrated against tftmon.risk (tests/model/test_calibration.py): at full
# intensity (critical_issue) at least one key metric clearly crosses the profile's *critical* threshold,
# while the ramp's peak (FORCED_PEAK of it) mostly stays at elevated/high:
#   web_api: front CLOSE_WAIT ~700 (critical >= 500); database: iowait ~70 % and CPU saturated;
#   ml_compute / risk_analytics: memory runs out (>= 97 %) and swap >= 50 %; data_ingest / generic: CPU
#   saturated with iowait 30-45 %; conductor_mgmt: back-end CLOSE_WAIT ~250 (critical >= 200).
PROFILE_PARAMS: dict[str, ProfileParams] = {
    "web_api": ProfileParams(18, 6, 1.5, 0.6, 45, 40, 60, 4, 12, 16, 0.0, 1.0, 30, 18, 3, 0.25, 1.5, 150, 700),
    "ml_compute": ProfileParams(38, 5, 1.0, 0.8, 60, 15, 8, 1, 1, 64, 0.35, 1.2, 45, 6, 2, 1.1, 0.3, 5, 2),
    "database": ProfileParams(14, 8, 7.0, 0.05, 70, 25, 30, 2, 8, 32, 0.2, 1.0, 15, 20, 70, 0.5, 0.5, 10, 60),
    "data_ingest": ProfileParams(25, 9, 5.0, 0.85, 50, 70, 30, 3, 3, 24, 0.5, 1.8, 50, 15, 45, 0.4, 1.5, 25, 10),
    "risk_analytics": ProfileParams(35, 4, 1.5, 0.7, 55, 10, 5, 1, 1, 48, 0.9, 1.2, 40, 5, 4, 1.1, 0.3, 5, 2),
    "generic": ProfileParams(12, 5, 2.0, 0.3, 40, 8, 8, 1, 2, 8, 0.0, 1.0, 35, 10, 40, 0.4, 0.8, 15, 15),
    "conductor_mgmt": ProfileParams(15, 6, 2.0, 0.5, 45, 12, 12, 3, 4, 16, 0.3, 1.0, 25, 8, 30, 0.35, 0.8, 250, 60),
}
if set(PROFILE_PARAMS) != set(PROFILE_NAMES):
    raise ImportError("PROFILE_PARAMS must cover exactly contract.PROFILES")

# Cascade: what full upstream trouble adds to a dependant, and how much passes on per hop.
CASCADE_GAIN = 0.8
CASCADE_BACK_CW = 80.0
CASCADE_FRONT_CW = 20.0
CASCADE_IOWAIT = 4.0
CASCADE_SYS = 3.0
CASCADE_LOAD_PER_CORE = 0.3

# Incident rates (per server per week) and escalation odds.
INCIDENTS_PER_WEEK = 2.5
PROBLEM_INCIDENTS_PER_WEEK = 10.0
OUTAGES_PER_WEEK = 0.08
PROBLEM_OUTAGES_PER_WEEK = 0.3
ESCALATION = 0.5
PROBLEM_ESCALATION = 0.65

# Forced scenario paths (seconds).
FORCED_RAMP = 7200.0
FORCED_CRITICAL = 1800.0
FORCED_RECOVERY = 1800.0
#: Intensity a ramp reaches before escalating to critical (1.0): far enough below it that the ramp reads
#: as warning and the incident as critical despite the noise (also the end of the "degrading" scenario).
FORCED_PEAK = 0.7
#: Peak intensity of a ramp that does not escalate: uniform in [HEAVY_PEAK, HEAVY_PEAK + HEAVY_PEAK_SPAN].
HEAVY_PEAK = 0.4
HEAVY_PEAK_SPAN = 0.2
#: Relative noise of CLOSE_WAIT counts (sd): larger would blur a ramp's high level into critical.
CW_NOISE = 0.15
#: Swap starts filling above this memory use, this many points per point of memory: only memory that an
#: operator would already call elevated (>= 85 % on memory-heavy profiles) pushes pages out.
SWAP_KNEE = 85.0
SWAP_PER_PCT = 4.0


# ---------------------------------------------------------------------------------------------
# Fleet
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    name: str
    profile: str
    problem_child: bool

    @property
    def id(self) -> str:
        return server_id(self.name)


def _largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights`; ties go to the earlier (contract-order) profile."""
    quotas = [total * w / sum(weights) for w in weights]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def default_fleet_names(servers: int) -> list[tuple[str, str]]:
    """`servers` hosts in the default proportions (90 = the default fleet); every profile once N allows."""
    counts = _largest_remainder(servers, [p.default_count for p in PROFILES])
    if servers >= len(PROFILES):
        for i, count in enumerate(counts):
            if count == 0:
                counts[counts.index(max(counts))] -= 1
                counts[i] = 1
    return [(p.hostname(n), p.name) for p, count in zip(PROFILES, counts, strict=True) for n in range(1, count + 1)]


def _host_number(name: str, profile: str) -> int:
    match = re.fullmatch(rf"{re.escape(PROFILES_BY_NAME[profile].prefix)}(\d+)", name)
    return int(match.group(1)) if match else 0


def load_fleet_file(path: Path) -> list[tuple[str, str | None]]:
    """Read `server_name[,profile]` lines (header and '#' comments optional; blank profile = infer)."""
    fleet: list[tuple[str, str | None]] = []
    seen: dict[str, int] = {}
    with Path(path).open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            fields = [f.strip() for f in row]
            if not fields or not fields[0] or fields[0].startswith("#"):
                continue
            if not fleet and not seen and fields[0].lower() == SERVER_NAME:
                continue
            name = normalise_hostname(fields[0])
            profile = fields[1] if len(fields) > 1 and fields[1] else None
            if profile is not None and profile not in PROFILES_BY_NAME:
                raise ValueError(
                    f"{path}:{lineno}: unknown profile {profile!r} for {name}; known: {', '.join(PROFILE_NAMES)}"
                )
            if name in seen:
                raise ValueError(f"{path}:{lineno}: duplicate server {name} (first on line {seen[name]})")
            seen[name] = lineno
            fleet.append((name, profile))
    if not fleet:
        raise ValueError(f"{path}: no servers listed")
    return fleet


def build_fleet(config: SimulationConfig) -> list[ServerSpec]:
    """The configured fleet, drift applied: base minus the last `retire_servers`, plus `add_servers` new."""
    if config.fleet is not None:
        base = [(normalise_hostname(n), p or profile_of(n)) for n, p in config.fleet]
    else:
        base = default_fleet_names(config.servers)
    names = [n for n, _ in base]
    for name, profile in base:
        if profile not in PROFILES_BY_NAME:
            raise ValueError(f"server {name}: unknown profile {profile!r}; known: {', '.join(PROFILE_NAMES)}")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate servers in fleet: {', '.join(dupes)}")
    if config.retire_servers > len(base) or len(base) - config.retire_servers + config.add_servers == 0:
        raise ValueError(f"cannot retire {config.retire_servers} of {len(base)} servers and keep a fleet")
    taken = set(names)
    added: list[tuple[str, str]] = []
    counts = _largest_remainder(config.add_servers, [p.default_count for p in PROFILES])
    for profile, count in zip(PROFILES, counts, strict=True):
        number = max((_host_number(n, profile.name) for n, p in base if p == profile.name), default=0)
        for _ in range(count):
            number += 1
            while profile.hostname(number) in taken:
                number += 1
            taken.add(profile.hostname(number))
            added.append((profile.hostname(number), profile.name))
    kept = base[: len(base) - config.retire_servers] + added
    return [
        ServerSpec(
            name, profile, bool(_uniform(_server_key(config.seed, name), 0, _T_PROBLEM) < config.problem_fraction)
        )
        for name, profile in kept
    ]


# ---------------------------------------------------------------------------------------------
# Counter-based randomness (splitmix64): random access by (seed, server, counter)
# ---------------------------------------------------------------------------------------------

_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1
(_T_PROBLEM, _T_SCENARIO, _T_KIND, _T_ESC, _T_RAMP, _T_CRIT, _T_REC, _T_OFF, _T_POS, _T_PEAK,
 _T_MJIT, _T_MDUR, _T_UP) = range(1, 14)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x + _GOLD
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _server_key(seed: int, name: str) -> np.uint64:
    with np.errstate(over="ignore"):
        return _mix(np.array([(seed & _MASK64) ^ int(server_id(name), 16)], dtype=np.uint64))[0]


def _uniform(key: np.ndarray | np.uint64, counter: np.ndarray | int, tag: int) -> np.ndarray:
    """Uniform [0, 1) floats, a pure function of (key, counter, tag)."""
    with np.errstate(over="ignore"):
        c = np.asarray(counter).astype(np.uint64) * _GOLD
        h = _mix(_mix(np.asarray(key, dtype=np.uint64) ^ c) + np.uint64(tag))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


# ---------------------------------------------------------------------------------------------
# Time-of-week activity and background states
# ---------------------------------------------------------------------------------------------


def _week_tables() -> tuple[np.ndarray, np.ndarray]:
    """Activity (profiles x minute of week, Monday 00:00 first) and the background state it implies."""
    minute = np.arange(WEEK_MINUTES)
    hour = (minute % 1440) / 60.0
    weekday = (minute // 1440) < 5
    business = 1 / (1 + np.exp(-(hour - 7.5) / 0.6)) / (1 + np.exp(-(19 - hour) / 0.9))
    spike = np.where(weekday, 0.45 * np.exp(-(((hour - 9.0) / 0.7) ** 2)), 0.0)
    night = np.exp(-(((hour - 2.5) / 1.5) ** 2))
    acts = np.empty((len(PROFILES), WEEK_MINUTES))
    states = np.empty((len(PROFILES), WEEK_MINUTES), dtype=np.int8)
    for i, profile in enumerate(PROFILES):
        act = 0.3 + 0.7 * business * np.where(weekday, 1.0, 0.55) + spike
        act = act + PROFILE_PARAMS[profile.name].night_batch * night
        acts[i] = act
        states[i] = np.where(
            weekday & (hour >= 8) & (hour < 10), MORNING, np.where(act < 0.42, IDLE_STATE, HEALTHY)
        )
    return acts, states


_ACTIVITY, _BACKGROUND = _week_tables()
# Two weeks back to back, flattened: a block (at most a day) never needs a modulo inside it.
_ACTIVITY2 = np.concatenate([_ACTIVITY, _ACTIVITY], axis=1).ravel()
_BACKGROUND2 = np.concatenate([_BACKGROUND, _BACKGROUND], axis=1).ravel()


# ---------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------


def _server_params(seed: int, name: str) -> dict[str, float | np.ndarray]:
    """A server's own random character, a function of (seed, name) only."""
    rng = np.random.default_rng([seed & _MASK64, int(server_id(name), 16), 0])
    return {
        "cpu_scale": rng.uniform(0.8, 1.2),
        "mem_offset": rng.normal(0.0, 6.0),
        "net_scale": rng.lognormal(0.0, 0.25),
        "cw_scale": rng.uniform(0.7, 1.3),
        "cores_scale": rng.choice([0.5, 1.0, 1.0, 2.0]),
        "disk_base": rng.uniform(15.0, 55.0),
        "disk_rate": rng.uniform(0.2, 1.2),
        "swap_base": rng.uniform(0.0, 3.0),
        "shift": float(rng.integers(-40, 41)),  # minutes
        "java_scale": rng.uniform(0.85, 1.15),
        "phase": rng.uniform(0.0, SLOT),
        "rate_scale": rng.lognormal(0.0, 0.35),
        "maint_period": float(rng.choice([14, 21, 28, 35])),
        "maint_offset": float(rng.integers(0, 35)),
        "maint_hour": rng.uniform(1.0, 3.5) * 3600.0,
        "z0": rng.standard_normal(len(CHANNELS)),
    }


@dataclass
class _Block:
    """One block of generated data for a subset of servers: (servers, ticks) arrays."""

    timestamps: np.ndarray  # (T,) int64 ns
    state: np.ndarray  # (S, T) int8 codes into STATES
    metrics: dict[str, np.ndarray]  # (S, T) float64 / int64

    @property
    def ticks(self) -> int:
        return len(self.timestamps)

    def slice(self, a: int, b: int) -> _Block:
        return _Block(self.timestamps[a:b], self.state[:, a:b], {k: v[:, a:b] for k, v in self.metrics.items()})

    @staticmethod
    def concat(parts: list[_Block]) -> _Block:
        if len(parts) == 1:
            return parts[0]
        return _Block(
            np.concatenate([p.timestamps for p in parts]),
            np.concatenate([p.state for p in parts], axis=1),
            {k: np.concatenate([p.metrics[k] for p in parts], axis=1) for k in parts[0].metrics},
        )


class FleetSimulator:
    """Generates a configured fleet in absolutely aligned blocks; batch, blocks and ticks share the code."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.fleet = sorted(build_fleet(config), key=lambda s: s.name)
        self.names = np.array([s.name for s in self.fleet], dtype=object)
        self.ids = np.array([s.id for s in self.fleet], dtype=object)
        self.interval_s = config.interval.total_seconds()
        self.interval_ns = round(self.interval_s * 1e9)
        self.start_ns = pd.Timestamp(config.start).value
        self.n_ticks: int | None = config.ticks if math.isfinite(config.hours) else None
        self.block_ticks = max(1, min(BLOCK_TICKS, int(DAY // self.interval_s)))
        n = len(self.fleet)
        seed = config.seed
        self.key = np.array([_server_key(seed, s.name) for s in self.fleet], dtype=np.uint64)
        params = [_server_params(seed, s.name) for s in self.fleet]
        self.p = {k: np.array([ps[k] for ps in params]) for k in params[0]}
        self.pidx = np.array([PROFILE_NAMES.index(s.profile) for s in self.fleet])
        table = [PROFILE_PARAMS[s.profile] for s in self.fleet]
        self.prof = {f: np.array([getattr(t, f) for t in table], dtype=float) for f in ProfileParams.__annotations__}
        problem = np.array([s.problem_child for s in self.fleet])
        week = 7 * DAY / SLOT
        self.p_incident = np.minimum(
            0.9, np.where(problem, PROBLEM_INCIDENTS_PER_WEEK, INCIDENTS_PER_WEEK) * self.p["rate_scale"] / week
        )
        self.p_outage = np.where(problem, PROBLEM_OUTAGES_PER_WEEK, OUTAGES_PER_WEEK) / week
        self.p_escalate = np.where(problem, PROBLEM_ESCALATION, ESCALATION)
        self.shift_min = self.p["shift"].astype(np.int64)
        self.upstreams = self._assign_upstreams()
        self.depth = self._depths()
        self._forced(n)
        dt = self.interval_s
        self.phi = np.array([math.exp(-dt / tau) for _, tau in CHANNELS])

    # -- structure ------------------------------------------------------------------------------

    def _assign_upstreams(self) -> np.ndarray:
        """Each dependant hangs off one server per upstream profile, chosen by rendezvous hashing so
        adding or retiring servers only moves the dependants of the servers that changed."""
        n = len(self.fleet)
        ups = np.full((n, 2), -1, dtype=np.int64)
        by_profile = {p: np.flatnonzero(self.pidx == PROFILE_NAMES.index(p)) for p in PROFILE_NAMES}
        for i, spec in enumerate(self.fleet):
            sources = [u for u, deps in DEPENDENCIES.items() if spec.profile in deps and len(by_profile[u])]
            for slot, upstream in enumerate(sources[:2]):
                cand = by_profile[upstream]
                with np.errstate(over="ignore"):
                    score = _mix(self.key[cand] ^ (self.key[i] * _GOLD))
                ups[i, slot] = cand[int(np.argmax(score))]
        return ups

    def _depths(self) -> np.ndarray:
        depth = np.zeros(len(self.fleet), dtype=np.int64)
        for _ in range(len(PROFILES)):
            up = np.where(self.upstreams >= 0, depth[self.upstreams] + 1, 0)
            depth = np.maximum(depth, up.max(axis=1))
        return depth

    def _forced(self, n: int) -> None:
        """Choose the scenario's servers (lowest hash ranks) and the window of their forced path."""
        cfg = self.config
        self.forced = np.zeros(n, dtype=bool)
        self.quiet = np.zeros(n, dtype=bool)  # kept free of incidents and outages
        self.forced_start = math.nan
        if cfg.scenario == "normal" or cfg.scenario_fraction == 0:
            return
        count = max(1, round(cfg.scenario_fraction * n))
        chosen = np.argsort(_uniform(self.key, 0, _T_SCENARIO), kind="stable")[:count]
        if cfg.scenario == "healthy":
            self.quiet[chosen] = True
            return
        self.forced[chosen] = True
        critical = FORCED_CRITICAL if cfg.scenario == "critical" else 0.0
        start = self.start_ns / 1e9
        if cfg.scenario_start_hours is not None:
            begin = start + cfg.scenario_start_hours * 3600
        elif self.n_ticks is None:
            begin = start
        else:
            begin = start + self.n_ticks * self.interval_s - FORCED_RAMP - critical
        self.forced_start = begin
        self.forced_ramp_end = begin + FORCED_RAMP
        self.forced_crit_end = self.forced_ramp_end + critical
        self.forced_end = self.forced_crit_end + FORCED_RECOVERY
        self.forced_peak = 1.0 if critical else FORCED_PEAK

    def _blocked(self, idx: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """True where [a, b) of server idx collides with its forced window (with a margin)."""
        if not self.forced[idx].any():
            return np.zeros(np.broadcast_shapes(a.shape, idx[:, None].shape), dtype=bool)
        lo, hi = self.forced_start - SLOT_MARGIN, self.forced_end + SLOT_MARGIN
        return self.forced[idx][:, None] & (a < hi) & (b > lo)

    # -- episodes -------------------------------------------------------------------------------

    def _maintenance(self, idx: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start/end of the latest scheduled maintenance on or before `day` ((S, K) epoch seconds)."""
        period = self.p["maint_period"][idx][:, None]
        occurrence = np.floor_divide(day - self.p["maint_offset"][idx][:, None], period)
        mday = occurrence * period + self.p["maint_offset"][idx][:, None]
        key = self.key[idx][:, None]
        begin = mday * DAY + self.p["maint_hour"][idx][:, None] + (_uniform(key, occurrence, _T_MJIT) - 0.5) * 3600
        end = begin + (30 + 90 * _uniform(key, occurrence, _T_MDUR)) * 60
        gone = self._blocked(idx, begin, end)
        return np.where(gone, np.nan, begin), np.where(gone, np.nan, end)

    def _slots(self, idx: np.ndarray, t_first: float, t_last: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Episodes of the slots covering [t_first, t_last]: first slot index (S,) and (S, K) fields."""
        phase = self.p["phase"][idx]
        kmin = np.floor((t_first - phase) / SLOT).astype(np.int64)
        kmax = np.floor((t_last - phase) / SLOT).astype(np.int64)
        ks = kmin[:, None] + np.arange(int((kmax - kmin).max()) + 1)
        key = self.key[idx][:, None]

        def u(tag: int) -> np.ndarray:
            return _uniform(key, ks, tag)

        slot_start = ks * SLOT + phase[:, None]
        p_inc = self.p_incident[idx][:, None]
        draw = u(_T_KIND)
        kind = np.where(draw < p_inc, INCIDENT, np.where(draw < p_inc + self.p_outage[idx][:, None], OUTAGE, NONE))
        escalate = u(_T_ESC) < self.p_escalate[idx][:, None]
        ramp = np.where(escalate, 75 + 90 * u(_T_RAMP), 40 + 110 * u(_T_RAMP)) * 60
        crit = np.where(escalate, (15 + 35 * u(_T_CRIT)) * 60, 0.0)
        rec = (15 + 30 * u(_T_REC)) * 60
        total = np.where(kind == OUTAGE, (10 + 170 * u(_T_OFF) ** 2) * 60, ramp + crit + rec)
        begin = slot_start + u(_T_POS) * (SLOT - SLOT_MARGIN - total)
        end = begin + total
        ms, me = self._maintenance(idx, np.floor((slot_start + SLOT) / DAY))
        clash = (begin < me + SLOT_MARGIN) & (end > ms - SLOT_MARGIN)
        kind = np.where(clash | self._blocked(idx, begin, end) | self.quiet[idx][:, None], NONE, kind)
        ramp_end = np.where(kind == OUTAGE, begin, begin + ramp)
        fields = {
            "kind": kind,
            "begin": begin,
            "ramp_end": ramp_end,
            "crit_end": ramp_end + np.where(kind == OUTAGE, 0.0, crit),
            "end": end,
            "peak": np.where(escalate, FORCED_PEAK, HEAVY_PEAK + HEAVY_PEAK_SPAN * u(_T_PEAK)),
            "top": np.where(escalate, 1.0, HEAVY_PEAK + HEAVY_PEAK_SPAN * u(_T_PEAK)),
        }
        return kmin, fields

    def _episodes(self, idx: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Own episodes of the servers idx over ticks t, computed only for the rows that have one.

        Returns `rows` (positions in idx) and, for those rows, (R, T) intensity, episode state (-1 where
        none), outage mask and outage end (a reboot, once past)."""
        t0, t1 = float(t[0]), float(t[-1])
        kmin, slots = self._slots(idx, t0, t1)
        hit = (slots["kind"] != NONE) & (slots["begin"] <= t1) & (slots["end"] >= t0 - SLOT_MARGIN)
        forced = self.forced[idx]
        if forced.any():
            forced = forced & (self.forced_start <= t1) & (self.forced_end >= t0)
        rows = np.flatnonzero(hit.any(axis=1) | forced)
        k = slots["kind"].shape[1]
        tt = t[None, :]
        local = np.floor((tt - self.p["phase"][idx[rows]][:, None]) / SLOT).astype(np.int64) - kmin[rows, None]
        flat = local + (rows * k)[:, None]
        g = {name: np.take(v, flat) for name, v in slots.items()}
        incident = g["kind"] == INCIDENT
        ramp = incident & (tt >= g["begin"]) & (tt < g["ramp_end"])
        crit = incident & (tt >= g["ramp_end"]) & (tt < g["crit_end"])
        rec = incident & (tt >= g["crit_end"]) & (tt < g["end"])
        outage = (g["kind"] == OUTAGE) & (tt >= g["begin"]) & (tt < g["end"])
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.clip((tt - g["begin"]) / (g["ramp_end"] - g["begin"]), 0.0, 1.0)
            y = np.clip((tt - g["crit_end"]) / (g["end"] - g["crit_end"]), 0.0, 1.0)
        intensity = np.where(ramp, g["peak"] * x**1.5, 0.0)
        intensity = np.where(crit, 1.0, intensity)
        intensity = np.where(rec, g["top"] * (1 - y) ** 2, intensity)
        outage_end = np.where((g["kind"] == OUTAGE) & (tt >= g["end"]), g["end"], NO_TIME)
        f = forced[rows][:, None]
        if f.any():
            fx = np.clip((tt - self.forced_start) / FORCED_RAMP, 0.0, 1.0)
            fy = np.clip((tt - self.forced_crit_end) / FORCED_RECOVERY, 0.0, 1.0)
            f_ramp = f & (tt >= self.forced_start) & (tt < self.forced_ramp_end)
            f_crit = f & (tt >= self.forced_ramp_end) & (tt < self.forced_crit_end)
            f_rec = f & (tt >= self.forced_crit_end) & (tt < self.forced_end)
            intensity = np.where(f_ramp, FORCED_PEAK * fx**1.5, intensity)
            intensity = np.where(f_crit, 1.0, intensity)
            intensity = np.where(f_rec, self.forced_peak * (1 - fy) ** 2, intensity)
            ramp, crit, rec = ramp | f_ramp, crit | f_crit, rec | f_rec
        state = np.where(ramp, HEAVY, -1)
        state = np.where(crit, CRITICAL, state)
        state = np.where(rec, RECOVERY, state)
        state = np.where(outage, OFFLINE, state)
        return {"rows": rows, "intensity": intensity, "state": state, "outage": outage, "outage_end": outage_end}

    def _closure(self, idx: np.ndarray) -> np.ndarray:
        """idx plus every server upstream of it (transitively), sorted."""
        need = set(idx.tolist())
        frontier = idx
        while len(frontier):
            ups = self.upstreams[frontier].ravel()
            new = [u for u in ups.tolist() if u >= 0 and u not in need]
            need.update(new)
            frontier = np.array(new, dtype=np.int64)
        return np.array(sorted(need), dtype=np.int64)

    # -- streams --------------------------------------------------------------------------------

    def stream(self, idx: np.ndarray | None = None) -> Iterator[_Block]:
        """Blocks for the servers `idx` (indices into self.fleet), from `start` on, with fresh state."""
        idx = np.arange(len(self.fleet)) if idx is None else np.unique(np.asarray(idx, dtype=np.int64))
        rngs = [np.random.Generator(np.random.SFC64([self.config.seed & _MASK64, int(self.ids[i], 16), 1]))
                for i in idx]
        zi = self.p["z0"][idx] * self.phi  # stationary start: zi = phi * y[-1]
        last_boot = self._initial_boot(idx)
        closure = self._closure(idx)
        pos = np.searchsorted(closure, idx)
        b = 0
        while self.n_ticks is None or b * self.block_ticks < self.n_ticks:
            lo = b * self.block_ticks
            hi = lo + self.block_ticks if self.n_ticks is None else min(lo + self.block_ticks, self.n_ticks)
            ts = self.start_ns + np.arange(lo, hi, dtype=np.int64) * self.interval_ns
            # Time-major draws: a block cut short by the end of the period sees a prefix of the same numbers.
            noise = np.empty((len(idx), hi - lo, len(CHANNELS)))
            for row, rng in enumerate(rngs):
                rng.standard_normal(out=noise[row])
            block, zi, last_boot = self._block(idx, closure, pos, ts, noise, zi, last_boot)
            yield block
            b += 1

    def _initial_boot(self, idx: np.ndarray) -> np.ndarray:
        """Last reboot before `start`: latest maintenance or outage end in the preceding month."""
        start = self.start_ns / 1e9
        day = np.full((len(idx), 1), np.floor(start / DAY))
        _, me = self._maintenance(idx, day)
        _, previous = self._maintenance(idx, day - self.p["maint_period"][idx][:, None])
        prev = np.where(me < start, me, previous)
        boot = np.where(np.isnan(prev), NO_TIME, prev)[:, 0]
        _, slots = self._slots(idx, start - (UPTIME_CAP_DAYS + 1) * DAY, start - 1)
        ends = np.where((slots["kind"] == OUTAGE) & (slots["end"] < start), slots["end"], NO_TIME)
        return np.maximum(boot, ends.max(axis=1))

    def _block(
        self, idx: np.ndarray, closure: np.ndarray, pos: np.ndarray, ts: np.ndarray, noise: np.ndarray,
        zi: np.ndarray, last_boot: np.ndarray,
    ) -> tuple[_Block, np.ndarray, np.ndarray]:
        """One block: a cheap path for every server, then the few rows with an episode, an upstream in
        trouble or maintenance recomputed in full (most server-blocks are quiet)."""
        t = ts / 1e9
        tt = t[None, :]
        t0, t1 = float(t[0]), float(t[-1])
        ep = self._episodes(closure, t)
        cascade_rows, cascade = self._cascade(closure, ep, len(t))

        # AR(1) noise with a correlation time: y = phi y[-1] + sqrt(1 - phi^2) e.
        n: dict[str, np.ndarray] = {}
        zf = np.empty_like(zi)
        for c, (name, _) in enumerate(CHANNELS):
            phi = self.phi[c]
            y, z = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], noise[:, :, c], axis=-1, zi=zi[:, c : c + 1])
            n[name] = y
            zf[:, c] = z[:, 0]

        minute = np.floor(t / 60.0).astype(np.int64)
        week = (minute[0] + self.shift_min[idx] + EPOCH_TO_MONDAY_MIN) % WEEK_MINUTES
        flat = (self.pidx[idx] * 2 * WEEK_MINUTES + week)[:, None] + (minute - minute[0])[None, :]
        act = np.take(_ACTIVITY2, flat)
        state = np.take(_BACKGROUND2, flat)

        day = np.full((len(idx), 1), np.floor(t1 / DAY))
        ms, me = self._maintenance(idx, day)
        _, previous = self._maintenance(idx, day - self.p["maint_period"][idx][:, None])
        last_maint = np.where(t0 >= me, me, previous)
        last_maint = np.where(np.isnan(last_maint), (day - UPTIME_CAP_DAYS) * DAY, last_maint)
        boot = np.maximum(last_boot, np.where(me <= t0, me, NO_TIME)[:, 0])

        metrics = self._metrics(idx, act, n, last_maint, tt)
        metrics[UP] = np.minimum((tt - boot[:, None]) / DAY, UPTIME_CAP_DAYS).astype(np.int64)

        # Rows (positions in idx) that need the full treatment.
        ep_pos = np.searchsorted(idx, closure[ep["rows"]])
        own = np.isin(closure[ep["rows"]], idx)
        c_own = np.isin(closure[cascade_rows], idx)
        c_pos = np.searchsorted(idx, closure[cascade_rows[c_own]])
        maint_rows = np.flatnonzero((ms[:, 0] <= t1) & (me[:, 0] > t0))
        hot = np.union1d(np.union1d(ep_pos[own], c_pos), maint_rows)
        if len(hot):
            h = idx[hot]
            inc = np.zeros((len(hot), len(t)))
            ep_state = np.full((len(hot), len(t)), -1)
            outage = np.zeros((len(hot), len(t)), dtype=bool)
            outage_end = np.full((len(hot), len(t)), NO_TIME)
            at = np.searchsorted(hot, ep_pos[own])
            inc[at] = ep["intensity"][own]
            ep_state[at] = ep["state"][own]
            outage[at] = ep["outage"][own]
            outage_end[at] = ep["outage_end"][own]
            cas = np.zeros((len(hot), len(t)))
            cas[np.searchsorted(hot, c_pos)] = cascade[c_own]
            in_maint = (tt >= ms[hot]) & (tt < me[hot])
            lm = np.where(tt >= me[hot], me[hot], last_maint[hot])
            sub = self._metrics(h, act[hot], {k: v[hot] for k, v in n.items()}, lm, tt, inc, cas, in_maint)
            boots = np.maximum(np.where(tt >= me[hot], me[hot], NO_TIME), outage_end)
            boots[:, 0] = np.maximum(boots[:, 0], last_boot[hot])
            boots = np.maximum.accumulate(boots, axis=1)
            sub[UP] = np.minimum(np.floor((tt - boots) / DAY), UPTIME_CAP_DAYS).astype(np.int64)
            boot[hot] = boots[:, -1]
            if outage.any():
                for name, values in sub.items():
                    values[outage] = 100.0 if name == IDLE else 0
            for name, values in sub.items():
                metrics[name][hot] = values
            st = np.where(in_maint, MAINT, state[hot])
            state[hot] = np.where(ep_state >= 0, ep_state, st)
            state[hot] = np.where(outage, OFFLINE, state[hot])
        return _Block(ts, state, metrics), zf, boot

    def _cascade(self, closure: np.ndarray, ep: dict[str, np.ndarray], ticks: int) -> tuple[np.ndarray, np.ndarray]:
        """Trouble flowing down DEPENDENCIES: each hop passes on CASCADE_GAIN of upstream's own + inherited.

        Returns the closure rows touched and their (R, T) cascade intensity."""
        troubled = np.zeros(len(closure), dtype=bool)
        troubled[ep["rows"]] = True
        total = np.zeros((len(closure) + 1, ticks))  # last row: no upstream
        total[ep["rows"]] = ep["intensity"]
        ups = self.upstreams[closure]
        local = np.where(ups >= 0, np.searchsorted(closure, ups), len(closure))
        depth = self.depth[closure]
        own = total[:-1].copy()
        touched: list[np.ndarray] = []
        cascades: list[np.ndarray] = []
        for level in range(1, int(depth.max(initial=0)) + 1):
            upstream_trouble = np.append(troubled, False)[local].any(axis=1)
            rows = np.flatnonzero((depth == level) & upstream_trouble)
            if not len(rows):
                continue
            cascade = CASCADE_GAIN * total[local[rows]].max(axis=1)
            total[rows] = own[rows] + cascade
            troubled[rows] = True
            touched.append(rows)
            cascades.append(cascade)
        if not touched:
            return np.zeros(0, dtype=np.int64), np.zeros((0, ticks))
        return np.concatenate(touched), np.vstack(cascades)

    def _metrics(
        self, idx: np.ndarray, act: np.ndarray, n: dict[str, np.ndarray], last_maint: np.ndarray,
        tt: np.ndarray, inc: np.ndarray | None = None, cas: np.ndarray | None = None,
        in_maint: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Metric values from activity and noise; plus, for the rows that have them, own incident
        intensity `inc`, upstream cascade `cas` and maintenance (None: all zero, the cheap common path)."""
        pr = {k: v[idx][:, None] for k, v in self.prof.items()}
        sp = {k: v[idx][:, None] for k, v in self.p.items() if k != "z0"}
        burst = pr["burst"]
        if in_maint is not None:
            act = np.where(in_maint, 0.08, act)
        cpu = sp["cpu_scale"]
        user = pr["user"] * cpu * act
        sys = pr["sys"] * cpu * act
        iowait = pr["iowait"] * (0.5 + 0.5 * act)
        mem = pr["mem"] + sp["mem_offset"] + 8.0 * (act - 0.7)
        traffic = sp["net_scale"] * act
        back = pr["back_cw"] * act
        front = pr["front_cw"] * act
        disk = sp["disk_base"] + sp["disk_rate"] * (tt - last_maint) / DAY
        if inc is not None and cas is not None and in_maint is not None:
            user += pr["inc_user"] * inc
            sys += pr["inc_sys"] * inc + CASCADE_SYS * cas
            iowait += pr["inc_iowait"] * inc + CASCADE_IOWAIT * cas + 5.0 * in_maint
            mem += pr["inc_mem"] * inc * (100.0 - mem)
            traffic *= 1 + pr["inc_net"] * inc
            open_cw = ~in_maint
            back = (back + pr["inc_back_cw"] * inc + CASCADE_BACK_CW * cas) * open_cw
            front = (front + pr["inc_front_cw"] * inc + CASCADE_FRONT_CW * cas) * open_cw
            disk += 3.0 * inc
        user *= 1 + 0.12 * burst * n[USER]
        sys *= 1 + 0.12 * burst * n[SYS]
        iowait *= 1 + 0.25 * burst * n[IOWAIT]
        for x in (user, sys, iowait):
            np.maximum(x, 0.0, out=x)
        busy = user + sys + iowait
        if busy.max(initial=0.0) > 99.5:
            scale = np.minimum(99.5 / busy, 1.0)
            user *= scale
            sys *= scale
            iowait *= scale
        for x in (user, sys, iowait):
            np.round(x, DECIMALS, out=x)
        idle = 100.0 - (user + sys + iowait)
        share = pr["java_share"] * sp["java_scale"]
        java = (user + sys) * (share if in_maint is None else np.where(in_maint, 0.0, share))
        np.minimum(np.round(java, DECIMALS, out=java), user + sys, out=java)
        mem += 2.5 * n[MEM]
        np.clip(mem, 2.0, 99.5, out=mem)
        swap = np.minimum(sp["swap_base"] + SWAP_PER_PCT * np.maximum(mem - SWAP_KNEE, 0.0), 100.0)
        disk += 0.3 * n[MEM]
        np.clip(disk, 1.0, 97.0, out=disk)
        net_in = pr["net_in"] * traffic * np.maximum(1 + 0.2 * burst * n[NET_IN], 0.05)
        net_out = pr["net_out"] * traffic * np.maximum(1 + 0.2 * burst * n[NET_OUT], 0.05)
        back_cw = np.rint(np.maximum(back * (1 + CW_NOISE * n[BACK_CW]), 0.0)).astype(np.int64)
        front_noise = 1 + CW_NOISE * (n[BACK_CW] + n[NET_IN]) / math.sqrt(2)
        front_cw = np.rint(np.maximum(front * front_noise, 0.0)).astype(np.int64)
        cores = pr["cores"] * sp["cores_scale"]
        load = cores * ((user + sys) * 0.01 + 0.012 * iowait)
        if cas is not None:
            load += CASCADE_LOAD_PER_CORE * cores * cas
        for x in (mem, swap, disk, net_in, net_out, load):
            np.round(x, DECIMALS, out=x)
        return {
            USER: user, SYS: sys, IOWAIT: iowait, IDLE: idle, JAVA: java, MEM: mem, SWAP: swap, DISK: disk,
            NET_IN: net_in, NET_OUT: net_out, BACK_CW: back_cw, FRONT_CW: front_cw, LOAD: load,
        }

    # -- public views ---------------------------------------------------------------------------

    def table(self, block: _Block, idx: np.ndarray | None = None, decode: bool = False) -> pa.Table:
        """Arrow table of a block, rows ordered by (server_name, timestamp); strings dictionary-encoded
        unless `decode` (Parquet stores them as plain strings either way)."""
        idx = np.arange(len(self.fleet)) if idx is None else idx
        s, t = block.state.shape
        rows = np.repeat(np.arange(s, dtype=np.int32), t)
        columns: dict[str, pa.Array] = {
            TIMESTAMP: pa.array(np.tile(block.timestamps, s), type=pa.timestamp("ns", tz="UTC")),
            SERVER_NAME: pa.DictionaryArray.from_arrays(rows, pa.array(self.names[idx].tolist(), pa.string())),
            SERVER_ID: pa.DictionaryArray.from_arrays(rows, pa.array(self.ids[idx].tolist(), pa.string())),
            PROFILE: pa.DictionaryArray.from_arrays(
                self.pidx[idx].astype(np.int32)[rows], pa.array(list(PROFILE_NAMES), pa.string())
            ),
            STATE: pa.DictionaryArray.from_arrays(block.state.ravel().astype(np.int32), pa.array(STATES, pa.string())),
        }
        if decode:
            columns = {k: v.dictionary_decode() if isinstance(v, pa.DictionaryArray) else v for k, v in columns.items()}
        for name in METRICS:
            columns[name] = pa.array(block.metrics[name].ravel())
        return pa.table(columns)

    def frame(self, block: _Block, idx: np.ndarray | None = None) -> pd.DataFrame:
        return self.table(block, idx, decode=True).to_pandas()

    def blocks(self) -> Iterator[pd.DataFrame]:
        """The dataset one block at a time (all servers, rows by server_name then timestamp)."""
        for block in self.stream():
            yield self.frame(block)

    def ticks(self) -> Iterator[pd.DataFrame]:
        """One frame per tick for a live feed, sliced from the very blocks batch generation uses."""
        for block in self.stream():
            for i in range(block.ticks):
                yield self.frame(block.slice(i, i + 1))


class _Cursor:
    """Reads arbitrary tick counts from a block stream, keeping the unread rest of a block."""

    def __init__(self, blocks: Iterator[_Block]) -> None:
        self._blocks = blocks
        self._rest: _Block | None = None

    def take(self, count: int) -> _Block:
        parts: list[_Block] = []
        while count > 0:
            block = self._rest if self._rest is not None else next(self._blocks)
            self._rest = None
            if block.ticks > count:
                self._rest = block.slice(count, block.ticks)
                block = block.slice(0, count)
            parts.append(block)
            count -= block.ticks
        return _Block.concat(parts)


def simulate(config: SimulationConfig) -> pd.DataFrame:
    """The whole period in memory (small configs: tests, demos), rows by server_name then timestamp."""
    sim = FleetSimulator(config)
    if sim.n_ticks is None:
        raise ValueError("simulate() needs a finite period; use FleetSimulator(config).ticks() for a live feed")
    return sim.frame(_Cursor(sim.stream()).take(sim.n_ticks))


def _units(sim: FleetSimulator) -> list[tuple[str | None, int, int]]:
    """(date label or None for a single file, first tick, end tick) of each output file."""
    n = sim.n_ticks or 0
    if n * len(sim.fleet) <= SINGLE_FILE_MAX_ROWS and n * sim.interval_s <= DAY:
        return [(None, 0, n)]
    units = []
    first = pd.Timestamp(sim.start_ns, tz="UTC").normalize()
    lo = 0
    while lo < n:
        day = first + pd.Timedelta(days=len(units))
        next_ns = (day + pd.Timedelta(days=1)).value
        hi = min(n, max(lo, -(-(next_ns - sim.start_ns) // sim.interval_ns)))
        units.append((day.strftime("%Y-%m-%d"), lo, hi))
        lo = hi
    return [u for u in units if u[2] > u[1]]


class _ParquetSink:
    """Encodes and writes Parquet on a worker thread (pyarrow releases the GIL), so writing one chunk
    overlaps simulating the next; at most one table waits, which bounds memory."""

    def __init__(self, schema: pa.Schema) -> None:
        self._schema = schema
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet")
        self._pending: Future[None] | None = None
        self._writer: pq.ParquetWriter | None = None

    def _submit(self, fn: Callable[..., None], *args: object) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raises a failed write here
        self._pending = self._pool.submit(fn, *args)

    def _open(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(
            path, self._schema, store_schema=False, compression="snappy",
            use_dictionary=list(DICTIONARY_COLUMNS), write_statistics=[TIMESTAMP, SERVER_NAME],
        )

    def _write(self, table: pa.Table) -> None:
        assert self._writer is not None
        self._writer.write_table(table, row_group_size=table.num_rows)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def open(self, path: Path) -> None:
        self._submit(self._open, path)

    def write(self, table: pa.Table) -> None:
        self._submit(self._write, table)

    def close_file(self) -> None:
        self._submit(self._close)

    def __enter__(self) -> _ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._pending is not None and exc[0] is None:
                self._pending.result()
        finally:
            self._pool.shutdown(wait=True)
            self._close()


def write_dataset(config: SimulationConfig, out: Path, progress: bool = True) -> dict:
    """Simulate `config` into `out` atomically: Parquet, metrics_metadata.json and server_mapping.json.

    Files: one `metrics.parquet` when the period is at most a day and SINGLE_FILE_MAX_ROWS rows, else
    `metrics/date=YYYY-MM-DD/part-0.parquet` per UTC day. Row groups are chunks of servers (about
    ROWS_PER_CHUNK rows), rows ordered by (server_name, timestamp)."""
    sim = FleetSimulator(config)
    if sim.n_ticks is None:
        raise ValueError("write_dataset needs a finite period (hours)")
    if sim.n_ticks == 0:
        raise ValueError(f"{config.hours} h is shorter than one {config.interval} interval")
    units = _units(sim)
    longest = max(b - a for _, a, b in units)
    per_chunk = max(1, ROWS_PER_CHUNK // longest)
    chunks = [np.arange(i, min(i + per_chunk, len(sim.fleet))) for i in range(0, len(sim.fleet), per_chunk)]
    cursors = [_Cursor(sim.stream(c)) for c in chunks]
    counts = np.zeros(len(STATES), dtype=np.int64)
    files: list[str] = []
    out = Path(out)
    schema = sim.table(_Cursor(sim.stream(chunks[0][:1])).take(1), chunks[0][:1]).schema
    with (
        tqdm(total=sim.n_ticks * len(sim.fleet), unit="row", unit_scale=True, disable=not progress,
             desc="simulate") as bar,
        atomic_directory(out) as tmp,
    ):
        with _ParquetSink(schema) as sink:
            for label, a, b in units:
                rel = Path(METRICS_FILE) if label is None else Path(METRICS_DIR) / f"date={label}" / "part-0.parquet"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                sink.open(tmp / rel)
                for chunk, cursor in zip(chunks, cursors, strict=True):
                    block = cursor.take(b - a)
                    sink.write(sim.table(block, chunk))
                    counts += np.bincount(block.state.ravel(), minlength=len(STATES))
                    bar.update(block.state.size)
                sink.close_file()
                files.append(rel.as_posix())
        ServerMapping.from_names(s.name for s in sim.fleet).save(tmp / MAPPING_FILE)
        metadata = _metadata(sim, files, counts)
        write_json_atomic(tmp / METADATA_FILE, metadata)
    return metadata


def _metadata(sim: FleetSimulator, files: list[str], counts: np.ndarray) -> dict:
    cfg = sim.config
    start = datetime.fromtimestamp(sim.start_ns / 1e9, tz=UTC)
    n = sim.n_ticks or 0
    return {
        "contract_version": CONTRACT_VERSION,
        "generator": "tftmon.data.simulate",
        "seed": cfg.seed,
        "interval_seconds": sim.interval_s,
        "start": start.isoformat(),
        "end": (start + timedelta(seconds=(n - 1) * sim.interval_s)).isoformat(),
        "ticks": n,
        "rows": int(counts.sum()),
        "config": cfg.model_dump(mode="json"),
        "fleet": [
            {"server_name": s.name, "server_id": s.id, "profile": s.profile, "problem_child": s.problem_child}
            for s in sim.fleet
        ],
        "state_counts": {state: int(c) for state, c in zip(STATES, counts, strict=True)},
        "files": files,
    }
