"""Contract-shaped synthetic frames for tests and benchmarks, built with numpy: no simulator, no files.

One builder per shape, so a contract change is made here once:

- `fleet_frame`: every metric of a few servers from a `Signal` (a sine of the clock, a daily + weekly
  pattern, or uniform noise) at any interval: features, training and resampling.
- `contract_frame`: a frame obeying every contract rule (ranges, dtypes, CPU split = 100, java <= user+sys,
  SHA-256 ids, time-major order): validation, at any size.
- `paths_frame`: named servers at the 5-min step, each metric a constant unless a path is given: hand-made
  cases (baselines, live windows).

Benchmarks run as scripts from the repository root; they put the root on `sys.path` to import this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from tftmon.contract import (
    COLUMNS,
    CPU_PARTS,
    INTEGER_METRICS,
    JAVA_CPU,
    JAVA_CPU_BOUND,
    METRIC_COLUMNS,
    METRICS,
    MODEL_STEP,
    PROFILE,
    PROFILES,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    STATES,
    TIMESTAMP,
    profile_of,
)
from tftmon.encoding import server_id

START = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday
#: Upper bound drawn for metrics the contract leaves open (MB/s, counts, load).
OPEN_MAX = 50

#: (rng, server index, metric index, hours since start) -> that metric's values for that server.
Signal = Callable[[np.random.Generator, int, int, np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Hosts
# ---------------------------------------------------------------------------------------------


def hosts(servers: int, *, number_per_profile: bool = False) -> list[tuple[str, str]]:
    """`servers` (hostname, profile) pairs cycling through the profiles, numbered across the fleet
    (ppweb001, ppdb002, …) or, with `number_per_profile`, within each profile (ppweb001, ppdb001, …)."""
    n = len(PROFILES)
    if number_per_profile:
        return [(PROFILES[i % n].hostname(i // n + 1), PROFILES[i % n].name) for i in range(servers)]
    return [(PROFILES[i % n].hostname(i + 1), PROFILES[i % n].name) for i in range(servers)]


def default_fleet_hosts() -> list[tuple[str, str]]:
    """The simulator's default fleet: each profile's default count of servers, profile by profile."""
    return [(p.hostname(i + 1), p.name) for p in PROFILES for i in range(p.default_count)]


def _strings(values: Sequence[str], codes: np.ndarray) -> pd.Series:
    """values[codes] as a pandas str column, built in Arrow (a Python loop over 10 M rows takes minutes)."""
    return pd.Series(pa.array(list(values)).take(pa.array(codes)).to_pandas())


# ---------------------------------------------------------------------------------------------
# Signals for fleet_frame
# ---------------------------------------------------------------------------------------------


def sine(period_hours: float = 2.0, noise: float = 0.5) -> Signal:
    """Every metric a phase-shifted sine of the clock plus a little noise: its future is known."""

    def signal(rng: np.random.Generator, server: int, metric: int, hours: np.ndarray) -> np.ndarray:
        phase = 2 * np.pi * (hours / period_hours)
        return 40 + 5 * server + 25 * np.sin(phase + 0.3 * metric) + rng.normal(0, noise, len(hours))

    return signal


def daily(noise: float = 2.0) -> Signal:
    """A daily and a weekly pattern plus noise, clipped to 0–100."""

    def signal(rng: np.random.Generator, server: int, metric: int, hours: np.ndarray) -> np.ndarray:
        pattern = 20 * np.sin(2 * np.pi * hours / 24 + 0.2 * metric) + 5 * np.sin(2 * np.pi * hours / 168)
        return np.clip(40 + pattern + rng.normal(0, noise, len(hours)), 0, 100)

    return signal


def uniform(signal_max: float = 100.0, count_max: int = 30) -> Signal:
    """Noise: uniform 0–`signal_max`, integer metrics 0–`count_max` (exclusive)."""

    def signal(rng: np.random.Generator, server: int, metric: int, hours: np.ndarray) -> np.ndarray:
        if METRICS[metric] in INTEGER_METRICS:
            return rng.integers(0, count_max, len(hours)).astype(np.int64)
        return rng.uniform(0, signal_max, len(hours))

    return signal


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


def fleet_frame(
    servers: int = 5,
    span: timedelta | str = "1D",
    interval: str = "5min",
    *,
    signal: Signal | None = None,
    seed: int = 0,
    start: pd.Timestamp = START,
    time_major: bool = False,
) -> pd.DataFrame:
    """Every metric of `servers` healthy servers (`hosts(servers)`) over [start, start + span) at `interval`.

    Values come from `signal` (default: `sine()`), drawn server by server, metric by metric from one
    `default_rng(seed)`; integer metrics are rounded. Rows are server by server, or with `time_major`
    sorted by time then server like a live feed.
    """
    signal = signal or sine()
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, start + pd.Timedelta(span), freq=interval, inclusive="left")
    hours = ((ts - start) / pd.Timedelta(hours=1)).to_numpy(dtype=float)
    frames = []
    for i, (name, profile) in enumerate(hosts(servers)):
        data: dict[str, object] = {TIMESTAMP: ts, SERVER_NAME: name, PROFILE: profile, STATE: "healthy"}
        for j, metric in enumerate(METRICS):
            value = signal(rng, i, j, hours)
            data[metric] = np.round(value).astype(np.int64) if metric in INTEGER_METRICS else value
        frames.append(pd.DataFrame(data))
    frame = pd.concat(frames, ignore_index=True)
    if time_major:
        frame = frame.sort_values([TIMESTAMP, SERVER_NAME], kind="stable").reset_index(drop=True)
    return frame


def contract_frame(
    servers: int | Sequence[tuple[str, str]] = 6,
    steps: int = 40,
    *,
    rows: int | None = None,
    seed: int = 0,
    state: bool = True,
    start: pd.Timestamp = START,
) -> pd.DataFrame:
    """A frame obeying every contract rule: ranges, dtypes, CPU split = 100, java <= user+sys, ids, order.

    `servers`: a count (`hosts(n, number_per_profile=True)`) or (hostname, profile) pairs. Time-major,
    `steps` model steps, or the first `rows` rows of as many steps as they need. Without `state`, a
    telemetry frame (no `state` column).
    """
    fleet = hosts(servers, number_per_profile=True) if isinstance(servers, int) else list(servers)
    n_servers = len(fleet)
    if rows is not None:
        steps = -(-rows // n_servers)
    n = n_servers * steps if rows is None else rows
    rng = np.random.default_rng(seed)
    server = np.tile(np.arange(n_servers), steps)[:n]
    times = pd.date_range(start, periods=steps, freq=MODEL_STEP).repeat(n_servers)[:n]
    data: dict[str, object] = {
        TIMESTAMP: times,
        SERVER_NAME: _strings([h for h, _ in fleet], server),
        SERVER_ID: _strings([server_id(h) for h, _ in fleet], server),
        PROFILE: _strings([p for _, p in fleet], server),
        STATE: _strings(STATES, rng.integers(0, len(STATES), n)),
    }
    split = rng.dirichlet([4, 2, 1, 8], size=n) * 100
    split[:, -1] = 100 - split[:, :-1].sum(axis=1)
    data.update({name: split[:, i] for i, name in enumerate(CPU_PARTS)})
    for col in METRIC_COLUMNS:
        if col.name in data:
            continue
        high = OPEN_MAX if col.max is None else col.max
        if col.name == JAVA_CPU:
            data[col.name] = sum(np.asarray(data[c]) for c in JAVA_CPU_BOUND) * rng.random(n)
        elif col.type == "int":
            data[col.name] = rng.integers(int(col.min or 0), int(high) + 1, n, dtype=np.int64)
        else:
            data[col.name] = rng.uniform(col.min or 0.0, high, n)
    frame = pd.DataFrame(data)[[c.name for c in COLUMNS]]
    return frame if state else frame.drop(columns=STATE)


def paths_frame(
    servers: Mapping[str, Mapping[str, np.ndarray]] | Sequence[str],
    steps: int,
    *,
    start: pd.Timestamp | str = START,
    every: timedelta | str = MODEL_STEP,
    default: float = 10.0,
    state: np.ndarray | str | None = "healthy",
    profile: bool = True,
) -> pd.DataFrame:
    """Named servers, `steps` rows each from `start` every `every`: each metric `default` unless the
    server's mapping gives its path. Without `profile` / with `state=None`, those columns are left out."""
    paths: Mapping[str, Mapping[str, np.ndarray]] = (
        servers if isinstance(servers, Mapping) else {name: {} for name in servers}
    )
    parts = []
    for name, given in paths.items():
        frame = pd.DataFrame(
            {TIMESTAMP: pd.date_range(pd.Timestamp(start), periods=steps, freq=every, tz="UTC"), SERVER_NAME: name}
        )
        if profile:
            frame[PROFILE] = profile_of(name)
        if state is not None:
            frame[STATE] = state
        for metric in METRICS:
            frame[metric] = given.get(metric, np.full(steps, default))
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)
