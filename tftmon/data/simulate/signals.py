"""Metric signals, and the FleetSimulator that composes fleet, episodes and signals into contract rows.

Noise is AR(1) with a correlation *time* (phi = exp(-dt/tau)), so 5 s and 5 min data look alike. Ticks
come in blocks aligned to `start`, their carried state (filter state, noise stream, last reboot) in a
per-server-subset stream, so batch output, `blocks()` and the live `ticks()` are the same numbers however
servers and time are sliced.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.signal import lfilter

from tftmon.config import Scenario, SimulationConfig
from tftmon.contract import (
    CPU_PARTS,
    INTEGER_METRICS,
    JAVA_CPU,
    METRICS,
    PROFILE,
    PROFILE_NAMES,
    PROFILES,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    STATES,
    TIMESTAMP,
    UPTIME,
)
from tftmon.data.simulate.episodes import (
    DAY,
    HEALTHY,
    IDLE_STATE,
    MAINT,
    MORNING,
    NO_TIME,
    OFFLINE,
    SLOT,
    UPTIME_CAP_DAYS,
    Episodes,
    EpisodeTicks,
)
from tftmon.data.simulate.fleet import MASK64, assign_upstreams, build_fleet, closure, depths, server_key
from tftmon.encoding import server_id

# Metric names, unpacked from the contract (guarded so a reordering fails loudly).
(USER, SYS, IOWAIT, IDLE, JAVA, MEM, SWAP, DISK, NET_IN, NET_OUT, BACK_CW, FRONT_CW, LOAD, UP) = METRICS
if (
    (USER, SYS, IOWAIT, IDLE) != CPU_PARTS
    or (JAVA, UP) != (JAVA_CPU, UPTIME)
    or {BACK_CW, FRONT_CW, UP} != set(INTEGER_METRICS)
):
    raise ImportError("tftmon.data.simulate is out of step with the order of contract.METRICS")

#: Ticks per generation block (1 h at 5 s); shorter intervals would only add per-block overhead.
BLOCK_TICKS = 720
#: Float metrics are rounded like real collectors report them (and compress 2x better).
DECIMALS = 2
WEEK_MINUTES = 7 * 1440
EPOCH_TO_MONDAY_MIN = 3 * 1440  # 1970-01-01 was a Thursday

#: AR(1) noise channels and their correlation times (seconds); java, front_cw and load derive from them.
CHANNELS: tuple[tuple[str, float], ...] = (
    (USER, 120.0),
    (SYS, 120.0),
    (IOWAIT, 180.0),
    (MEM, 1200.0),
    (NET_IN, 90.0),
    (NET_OUT, 90.0),
    (BACK_CW, 300.0),
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

#: Relative noise of CLOSE_WAIT counts (sd): larger would blur a ramp's high level into critical.
CW_NOISE = 0.15
#: Swap starts filling above this memory use, this many points per point of memory: only memory that an
#: operator would already call elevated (>= 85 % on memory-heavy profiles) pushes pages out.
SWAP_KNEE = 85.0
SWAP_PER_PCT = 4.0


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
        states[i] = np.where(weekday & (hour >= 8) & (hour < 10), MORNING, np.where(act < 0.42, IDLE_STATE, HEALTHY))
    return acts, states


_ACTIVITY, _BACKGROUND = _week_tables()
# Two weeks back to back, flattened: a block (at most a day) never needs a modulo inside it.
_ACTIVITY2 = np.concatenate([_ACTIVITY, _ACTIVITY], axis=1).ravel()
_BACKGROUND2 = np.concatenate([_BACKGROUND, _BACKGROUND], axis=1).ravel()
_PROFILES = pa.array(PROFILE_NAMES, pa.string())
_STATES = pa.array(STATES, pa.string())


# ---------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------


def _server_params(seed: int, name: str) -> dict[str, float | np.ndarray]:
    """A server's own random character, a function of (seed, name) only."""
    rng = np.random.default_rng([seed & MASK64, int(server_id(name), 16), 0])
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
class Block:
    """Generated data for a subset of servers over a run of ticks: (servers, ticks) arrays."""

    timestamps: np.ndarray  # (T,) int64 ns
    state: np.ndarray  # (S, T) int8 codes into STATES
    metrics: dict[str, np.ndarray]  # (S, T) float64 / int64

    @classmethod
    def empty(cls, servers: int, ticks: int) -> Block:
        return cls(
            np.empty(ticks, dtype=np.int64),
            np.empty((servers, ticks), dtype=np.int8),
            {m: np.empty((servers, ticks), dtype=np.int64 if m in INTEGER_METRICS else np.float64) for m in METRICS},
        )

    @property
    def ticks(self) -> int:
        return len(self.timestamps)

    def slice(self, a: int, b: int) -> Block:
        return Block(self.timestamps[a:b], self.state[:, a:b], {k: v[:, a:b] for k, v in self.metrics.items()})

    def reshaped(self, servers: int, ticks: int) -> Block:
        """A contiguous (servers, ticks) block on the front of this one's memory (which must be contiguous)."""
        size = servers * ticks
        return Block(
            self.timestamps[:ticks],
            self.state.reshape(-1)[:size].reshape(servers, ticks),
            {k: v.reshape(-1)[:size].reshape(servers, ticks) for k, v in self.metrics.items()},
        )

    def put(self, at: int, block: Block) -> None:
        """Copy `block` (same servers) into ticks at, at + block.ticks."""
        end = at + block.ticks
        self.timestamps[at:end] = block.timestamps
        self.state[:, at:end] = block.state
        for name, values in block.metrics.items():
            self.metrics[name][:, at:end] = values


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
        seed = config.seed
        self.key = np.array([server_key(seed, s.name) for s in self.fleet], dtype=np.uint64)
        params = [_server_params(seed, s.name) for s in self.fleet]
        self.p = {k: np.array([ps[k] for ps in params]) for k in params[0]}
        self.pidx = np.array([PROFILE_NAMES.index(s.profile) for s in self.fleet])
        table = [PROFILE_PARAMS[s.profile] for s in self.fleet]
        self.prof = {f.name: np.array([getattr(t, f.name) for t in table], dtype=float) for f in fields(ProfileParams)}
        self.problem = np.array([s.problem_child for s in self.fleet])
        self.episodes = self._episodes(config)
        self.quiet = self.episodes.quiet
        self.shift_min = self.p["shift"].astype(np.int64)
        self.upstreams = assign_upstreams(self.fleet, self.pidx, self.key)
        self.depth = depths(self.upstreams)
        self.phi = np.array([math.exp(-self.interval_s / tau) for _, tau in CHANNELS])

    def _episodes(self, config: SimulationConfig) -> Episodes:
        return Episodes(config, self.key, self.p, self.problem, self.start_ns, self.n_ticks, self.interval_s)

    def switch_scenario(self, scenario: Scenario, at: pd.Timestamp) -> None:
        """Follow `scenario` from data time `at` on: a live feed's scenario control. `ticks()` applies it from
        its next tick, even inside a block it already computed.

        The forced path starts at `at`, except that a forced path under way carries on where it is when the
        switch is to the same scenario, or between degrading and critical during its ramp (both ramp alike),
        so a ramp is never cut back to zero. Only the episodes change: noise, maintenance and reboots carry on
        as they were. They are aligned to `start`, not absolutely in time, so a simulator rebuilt to start at
        `at` would not continue them: the noise would restart from its initial state."""
        old = self.episodes
        t = pd.Timestamp(at).value / 1e9
        forced = scenario in ("degrading", "critical")
        same = scenario == self.config.scenario
        ramping = old.forced_start <= t < old.forced_ramp_end  # False while there is no forced path (NaN)
        keep = forced and bool(old.forced.any()) and (ramping or (same and t < old.forced_end))
        if same and (keep or not forced):
            return
        begin = old.forced_start if keep else t
        hours = max(0.0, (begin - self.start_ns / 1e9) / 3600)
        config = self.config.model_copy(update={"scenario": scenario, "scenario_start_hours": hours})
        self.config = config
        self.episodes = self._episodes(config)
        self.quiet = self.episodes.quiet

    # -- streams --------------------------------------------------------------------------------

    def stream(self, idx: np.ndarray | None = None) -> Iterator[Block]:
        """Blocks for the servers `idx` (indices into self.fleet), from `start` on, with fresh state."""
        idx = np.arange(len(self.fleet)) if idx is None else np.unique(np.asarray(idx, dtype=np.int64))
        last_boot = self.episodes.initial_boot(idx)
        near = closure(self.upstreams, idx)
        for (lo, hi), noise in zip(self._spans(), self._noise(idx), strict=True):
            ts = self.start_ns + np.arange(lo, hi, dtype=np.int64) * self.interval_ns
            block, last_boot = self._block(idx, near, ts, noise, last_boot)
            yield block

    def _spans(self) -> Iterator[tuple[int, int]]:
        """(first, end) tick of each block."""
        lo = 0
        while self.n_ticks is None or lo < self.n_ticks:
            hi = lo + self.block_ticks if self.n_ticks is None else min(lo + self.block_ticks, self.n_ticks)
            yield lo, hi
            lo = hi

    def _noise(self, idx: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        """AR(1) noise per channel and block, with a correlation time: y = phi y[-1] + sqrt(1 - phi^2) e,
        the filter state carried across blocks; each server draws from its own stream."""
        rngs = [np.random.Generator(np.random.SFC64([self.config.seed & MASK64, int(self.ids[i], 16), 1])) for i in idx]
        zi = self.p["z0"][idx] * self.phi  # stationary start: zi = phi * y[-1]
        draws = np.empty((len(idx), self.block_ticks, len(CHANNELS)))
        for lo, hi in self._spans():
            # Time-major draws: a block cut short by the end of the period sees a prefix of the same numbers.
            if draws.shape[1] != hi - lo:
                draws = np.empty((len(idx), hi - lo, len(CHANNELS)))
            for row, rng in enumerate(rngs):
                rng.standard_normal(out=draws[row])
            noise: dict[str, np.ndarray] = {}
            for c, (name, _) in enumerate(CHANNELS):
                phi = self.phi[c]
                y, z = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], draws[:, :, c], axis=-1, zi=zi[:, c : c + 1])
                noise[name] = y
                zi[:, c] = z[:, 0]
            yield noise

    def _block(
        self,
        idx: np.ndarray,
        near: np.ndarray,
        ts: np.ndarray,
        n: dict[str, np.ndarray],
        last_boot: np.ndarray,
        episodes: Episodes | None = None,
    ) -> tuple[Block, np.ndarray]:
        """One block: a cheap path for every server, then the few rows with an episode, an upstream in
        trouble or maintenance recomputed in full (most server-blocks are quiet). `near` is idx plus its
        upstreams (their episodes cascade down); `n` the block's noise per channel; `episodes` those of
        the scenario in force (default: the current ones)."""
        if episodes is None:
            episodes = self.episodes
        t = ts / 1e9
        tt = t[None, :]
        t0, t1 = float(t[0]), float(t[-1])
        ep = episodes.at(near, t)
        cascade_rows, cascade = self._cascade(near, ep, len(t))

        minute = np.floor(t / 60.0).astype(np.int64)
        week = (minute[0] + self.shift_min[idx] + EPOCH_TO_MONDAY_MIN) % WEEK_MINUTES
        flat = (self.pidx[idx] * 2 * WEEK_MINUTES + week)[:, None] + (minute - minute[0])[None, :]
        act = np.take(_ACTIVITY2, flat)
        state = np.take(_BACKGROUND2, flat)

        ms, me, last_maint = episodes.recent_maintenance(idx, t0, t1)
        boot = np.maximum(last_boot, np.where(me <= t0, me, NO_TIME)[:, 0])

        metrics = self._metrics(idx, act, n, last_maint, tt)
        up = tt - boot[:, None]
        up /= DAY
        metrics[UP] = np.minimum(up, UPTIME_CAP_DAYS, out=up).astype(np.int64)

        # Rows (positions in idx) that need the full treatment.
        ep_pos = np.searchsorted(idx, near[ep.rows])
        own = np.isin(near[ep.rows], idx)
        c_own = np.isin(near[cascade_rows], idx)
        c_pos = np.searchsorted(idx, near[cascade_rows[c_own]])
        maint_rows = np.flatnonzero((ms[:, 0] <= t1) & (me[:, 0] > t0))
        hot = np.union1d(np.union1d(ep_pos[own], c_pos), maint_rows)
        if len(hot):
            h = idx[hot]
            inc = np.zeros((len(hot), len(t)))
            ep_state = np.full((len(hot), len(t)), -1)
            outage = np.zeros((len(hot), len(t)), dtype=bool)
            outage_end = np.full((len(hot), len(t)), NO_TIME)
            at = np.searchsorted(hot, ep_pos[own])
            inc[at] = ep.intensity[own]
            ep_state[at] = ep.state[own]
            outage[at] = ep.outage[own]
            outage_end[at] = ep.outage_end[own]
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
        return Block(ts, state, metrics), boot

    def _cascade(self, near: np.ndarray, ep: EpisodeTicks, ticks: int) -> tuple[np.ndarray, np.ndarray]:
        """Trouble flowing down DEPENDENCIES: each hop passes on CASCADE_GAIN of upstream's own + inherited.

        Returns the rows of `near` touched and their (R, T) cascade intensity."""
        troubled = np.zeros(len(near), dtype=bool)
        troubled[ep.rows] = True
        total = np.zeros((len(near) + 1, ticks))  # last row: no upstream
        total[ep.rows] = ep.intensity
        ups = self.upstreams[near]
        local = np.where(ups >= 0, np.searchsorted(near, ups), len(near))
        depth = self.depth[near]
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
        self,
        idx: np.ndarray,
        act: np.ndarray,
        n: dict[str, np.ndarray],
        last_maint: np.ndarray,
        tt: np.ndarray,
        inc: np.ndarray | None = None,
        cas: np.ndarray | None = None,
        in_maint: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Metric values from activity and noise; plus, for the rows that have them, own incident
        intensity `inc`, upstream cascade `cas` and maintenance (None: all zero, the cheap common path).

        In-place arithmetic keeps temporaries few; each value is the same expression, evaluated in the
        same order, as the plain formula in the comment beside it."""
        pr = {k: v[idx][:, None] for k, v in self.prof.items()}
        sp = {k: v[idx][:, None] for k, v in self.p.items() if k != "z0"}
        burst = pr["burst"]
        if in_maint is not None:
            act = np.where(in_maint, 0.08, act)
        cpu = sp["cpu_scale"]
        user = pr["user"] * cpu * act
        sys = pr["sys"] * cpu * act
        iowait = act * 0.5  # iowait * (0.5 + 0.5 * act)
        iowait += 0.5
        iowait *= pr["iowait"]
        mem = act - 0.7  # mem + mem_offset + 8 * (act - 0.7)
        mem *= 8.0
        mem += pr["mem"] + sp["mem_offset"]
        traffic = sp["net_scale"] * act
        back = pr["back_cw"] * act
        front = pr["front_cw"] * act
        disk = tt - last_maint  # disk_base + disk_rate * (tt - last_maint) / DAY
        disk *= sp["disk_rate"]
        disk /= DAY
        disk += sp["disk_base"]
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
        tmp = np.empty_like(user)
        for x, gain, channel in ((user, 0.12, USER), (sys, 0.12, SYS), (iowait, 0.25, IOWAIT)):
            np.multiply(n[channel], gain * burst, out=tmp)  # x *= 1 + gain * burst * noise
            tmp += 1
            x *= tmp
            np.maximum(x, 0.0, out=x)
        busy = user + sys
        busy += iowait
        if busy.max(initial=0.0) > 99.5:
            scale = np.minimum(99.5 / busy, 1.0)
            user *= scale
            sys *= scale
            iowait *= scale
        for x in (user, sys, iowait):
            np.round(x, DECIMALS, out=x)
        user_sys = user + sys
        idle = user_sys + iowait  # 100 - (user + sys + iowait)
        np.subtract(100.0, idle, out=idle)
        share = pr["java_share"] * sp["java_scale"]
        java = user_sys * (share if in_maint is None else np.where(in_maint, 0.0, share))
        np.minimum(np.round(java, DECIMALS, out=java), user_sys, out=java)
        np.multiply(n[MEM], 2.5, out=tmp)
        mem += tmp
        np.clip(mem, 2.0, 99.5, out=mem)
        swap = mem - SWAP_KNEE  # min(swap_base + SWAP_PER_PCT * max(mem - SWAP_KNEE, 0), 100)
        np.maximum(swap, 0.0, out=swap)
        swap *= SWAP_PER_PCT
        swap += sp["swap_base"]
        np.minimum(swap, 100.0, out=swap)
        np.multiply(n[MEM], 0.3, out=tmp)
        disk += tmp
        np.clip(disk, 1.0, 97.0, out=disk)
        net_in = pr["net_in"] * traffic
        net_out = pr["net_out"] * traffic
        for x, channel in ((net_in, NET_IN), (net_out, NET_OUT)):
            np.multiply(n[channel], 0.2 * burst, out=tmp)  # x *= max(1 + 0.2 * burst * noise, 0.05)
            tmp += 1
            x *= np.maximum(tmp, 0.05, out=tmp)
        np.multiply(n[BACK_CW], CW_NOISE, out=tmp)  # rint(max(back * (1 + CW_NOISE * noise), 0))
        tmp += 1
        tmp *= back
        back_cw = np.rint(np.maximum(tmp, 0.0, out=tmp), out=tmp).astype(np.int64)
        np.add(n[BACK_CW], n[NET_IN], out=tmp)  # rint(max(front * (1 + CW_NOISE * (n1 + n2) / sqrt 2), 0))
        tmp *= CW_NOISE
        tmp /= math.sqrt(2)
        tmp += 1
        tmp *= front
        front_cw = np.rint(np.maximum(tmp, 0.0, out=tmp), out=tmp).astype(np.int64)
        cores = pr["cores"] * sp["cores_scale"]
        load = user_sys * 0.01  # cores * ((user + sys) * 0.01 + 0.012 * iowait)
        load += np.multiply(iowait, 0.012, out=tmp)
        load *= cores
        if cas is not None:
            load += CASCADE_LOAD_PER_CORE * cores * cas
        for x in (mem, swap, disk, net_in, net_out, load):
            np.round(x, DECIMALS, out=x)
        return {
            USER: user,
            SYS: sys,
            IOWAIT: iowait,
            IDLE: idle,
            JAVA: java,
            MEM: mem,
            SWAP: swap,
            DISK: disk,
            NET_IN: net_in,
            NET_OUT: net_out,
            BACK_CW: back_cw,
            FRONT_CW: front_cw,
            LOAD: load,
        }

    # -- public views ---------------------------------------------------------------------------

    def table(self, block: Block, first: int = 0, decode: bool = False) -> pa.Table:
        """Arrow table of a block of servers first, first + 1, ..., rows ordered by (server_name,
        timestamp); strings dictionary-encoded unless `decode` (Parquet stores them as plain strings either
        way). Numeric columns are views of the block's arrays where these are contiguous."""
        s, t = block.state.shape
        servers = slice(first, first + s)
        rows = np.repeat(np.arange(s, dtype=np.int32), t)
        timestamps = pa.array(block.timestamps, type=pa.timestamp("ns", tz="UTC"))
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            TIMESTAMP: pa.chunked_array([timestamps] * s, type=timestamps.type),
            SERVER_NAME: pa.DictionaryArray.from_arrays(rows, pa.array(self.names[servers].tolist(), pa.string())),
            SERVER_ID: pa.DictionaryArray.from_arrays(rows, pa.array(self.ids[servers].tolist(), pa.string())),
            PROFILE: pa.DictionaryArray.from_arrays(np.repeat(self.pidx[servers].astype(np.int32), t), _PROFILES),
            STATE: pa.DictionaryArray.from_arrays(block.state.ravel(), _STATES),
        }
        if decode:
            columns = {k: v.dictionary_decode() if isinstance(v, pa.DictionaryArray) else v for k, v in columns.items()}
        for name in METRICS:
            columns[name] = pa.array(block.metrics[name].ravel())
        return pa.table(columns)

    def frame(self, block: Block) -> pd.DataFrame:
        """A block of all servers as a contract frame."""
        return self.table(block, decode=True).to_pandas()

    def blocks(self) -> Iterator[pd.DataFrame]:
        """The dataset one block at a time (all servers, rows by server_name then timestamp)."""
        for block in self.stream():
            yield self.frame(block)

    def ticks(self) -> Iterator[pd.DataFrame]:
        """One frame per tick for a live feed, sliced from the very blocks batch generation uses.

        A `switch_scenario` between two ticks recomputes the rest of the current block with the new
        episodes, from the same noise and the reboots up to that tick, so it applies from the next tick."""
        idx = np.arange(len(self.fleet))
        last_boot = self.episodes.initial_boot(idx)
        near = closure(self.upstreams, idx)
        for (lo, hi), noise in zip(self._spans(), self._noise(idx), strict=True):
            ts = self.start_ns + np.arange(lo, hi, dtype=np.int64) * self.interval_ns
            boot, episodes = last_boot, self.episodes
            block, last_boot = self._block(idx, near, ts, noise, boot, episodes)
            i = 0
            while i < block.ticks:
                if self.episodes is not episodes:
                    if i:  # the reboots of the ticks already sent, under the episodes they were sent with
                        _, boot = self._block(
                            idx, near, ts[:i], {k: v[:, :i] for k, v in noise.items()}, boot, episodes
                        )
                        ts, noise = ts[i:], {k: v[:, i:] for k, v in noise.items()}
                    episodes = self.episodes
                    block, last_boot = self._block(idx, near, ts, noise, boot, episodes)
                    i = 0
                yield self.frame(block.slice(i, i + 1))
                i += 1


class Cursor:
    """Reads a block stream into caller-owned blocks of any length, keeping the unread rest of a block."""

    def __init__(self, blocks: Iterator[Block]) -> None:
        self._blocks = blocks
        self._rest: Block | None = None

    def read(self, out: Block) -> Block:
        """Fill `out` with the next out.ticks ticks (of the same servers); returns it."""
        at = 0
        while at < out.ticks:
            block = self._rest if self._rest is not None else next(self._blocks)
            self._rest = None
            count = out.ticks - at
            if block.ticks > count:
                self._rest = block.slice(count, block.ticks)
                block = block.slice(0, count)
            out.put(at, block)
            at += block.ticks
        return out


def simulate(config: SimulationConfig) -> pd.DataFrame:
    """The whole period in memory (small configs: tests, demos), rows by server_name then timestamp."""
    sim = FleetSimulator(config)
    if sim.n_ticks is None:
        raise ValueError("simulate() needs a finite period; use FleetSimulator(config).ticks() for a live feed")
    return sim.frame(Cursor(sim.stream()).read(Block.empty(len(sim.fleet), sim.n_ticks)))
