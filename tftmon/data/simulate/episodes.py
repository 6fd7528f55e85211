"""Episodes: when a server ramps into trouble, is critical, recovers, is in maintenance or offline.

Each 8 h slot (per-server phase) holds at most one episode, drawn from a hash of (seed, server, slot), so
episodes never overlap or flip per tick and any tick's episode is found in O(1): a live feed can start at
any time, and a server's episodes do not depend on the rest of the fleet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tftmon.config import SimulationConfig
from tftmon.contract import INCIDENT_STATE, MAINTENANCE_STATE, OFFLINE_STATE, STATES
from tftmon.data.simulate.fleet import (
    T_CRIT,
    T_ESC,
    T_KIND,
    T_MDUR,
    T_MJIT,
    T_OFF,
    T_PEAK,
    T_POS,
    T_RAMP,
    T_REC,
    T_SCENARIO,
    uniform,
)

# State codes (indices into contract.STATES; guarded so a reordering fails loudly).
HEALTHY, IDLE_STATE, MORNING, HEAVY, CRITICAL, RECOVERY, MAINT, OFFLINE = range(len(STATES))
if (STATES[CRITICAL], STATES[MAINT], STATES[OFFLINE]) != (INCIDENT_STATE, MAINTENANCE_STATE, OFFLINE_STATE):
    raise ImportError("tftmon.data.simulate is out of step with the order of contract.STATES")

DAY = 86_400.0
SLOT = 8 * 3600.0  # one episode at most per slot
SLOT_MARGIN = 1800.0  # quiet time an episode keeps before its slot ends
NO_TIME = -1e18  # "never" for reboot times: uptime saturates at the cap
UPTIME_CAP_DAYS = 30

# Episode kinds in a slot.
NONE, INCIDENT, OUTAGE = 0, 1, 2

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


@dataclass(frozen=True)
class EpisodeTicks:
    """Own episodes over a run of ticks, for the rows (positions in the servers asked) that have one."""

    rows: np.ndarray  # (R,)
    intensity: np.ndarray  # (R, T) 0..1: what the incident adds, at full strength in critical_issue
    state: np.ndarray  # (R, T) state code, -1 where no episode
    outage: np.ndarray  # (R, T) offline
    outage_end: np.ndarray  # (R, T) end of an outage already over (a reboot), else NO_TIME


class Episodes:
    """The episodes of a fleet, and its forced scenario.

    A slot holds a heavy_load ramp (~2 h) that may escalate to critical_issue (~30 min), then recovery; or
    an offline period; either keeps SLOT_MARGIN of quiet before its slot ends. Scheduled maintenance recurs
    every 14-35 days at night; episodes overlapping it, or a forced scenario's path, are dropped."""

    def __init__(
        self,
        config: SimulationConfig,
        key: np.ndarray,
        params: dict[str, np.ndarray],
        problem: np.ndarray,
        start_ns: int,
        n_ticks: int | None,
        interval_s: float,
    ) -> None:
        self.key = key
        self.start = start_ns / 1e9
        self.phase = params["phase"]
        self.maint_period = params["maint_period"]
        self.maint_offset = params["maint_offset"]
        self.maint_hour = params["maint_hour"]
        week = 7 * DAY / SLOT
        self.p_incident = np.minimum(
            0.9, np.where(problem, PROBLEM_INCIDENTS_PER_WEEK, INCIDENTS_PER_WEEK) * params["rate_scale"] / week
        )
        self.p_outage = np.where(problem, PROBLEM_OUTAGES_PER_WEEK, OUTAGES_PER_WEEK) / week
        self.p_escalate = np.where(problem, PROBLEM_ESCALATION, ESCALATION)
        n = len(key)
        self.forced = np.zeros(n, dtype=bool)
        self.quiet = np.zeros(n, dtype=bool)  # kept free of incidents and outages
        self.forced_start = self.forced_ramp_end = self.forced_crit_end = self.forced_end = math.nan
        self.forced_peak = FORCED_PEAK
        self._scenario(config, n_ticks, interval_s)

    def _scenario(self, config: SimulationConfig, n_ticks: int | None, interval_s: float) -> None:
        """Choose the scenario's servers (lowest hash ranks) and the window of their forced path."""
        if config.scenario == "normal" or config.scenario_fraction == 0:
            return
        count = max(1, round(config.scenario_fraction * len(self.key)))
        chosen = np.argsort(uniform(self.key, 0, T_SCENARIO), kind="stable")[:count]
        if config.scenario == "healthy":
            self.quiet[chosen] = True
            return
        self.forced[chosen] = True
        critical = FORCED_CRITICAL if config.scenario == "critical" else 0.0
        if config.scenario_start_hours is not None:
            begin = self.start + config.scenario_start_hours * 3600
        elif n_ticks is None:
            begin = self.start
        else:
            begin = self.start + n_ticks * interval_s - FORCED_RAMP - critical
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
        blocked: np.ndarray = self.forced[idx][:, None] & (a < hi) & (b > lo)
        return blocked

    def maintenance(self, idx: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start/end of the latest scheduled maintenance on or before `day` ((S, K) epoch seconds)."""
        period = self.maint_period[idx][:, None]
        occurrence = np.floor_divide(day - self.maint_offset[idx][:, None], period)
        mday = occurrence * period + self.maint_offset[idx][:, None]
        key = self.key[idx][:, None]
        begin = mday * DAY + self.maint_hour[idx][:, None] + (uniform(key, occurrence, T_MJIT) - 0.5) * 3600
        end = begin + (30 + 90 * uniform(key, occurrence, T_MDUR)) * 60
        gone = self._blocked(idx, begin, end)
        return np.where(gone, np.nan, begin), np.where(gone, np.nan, end)

    def recent_maintenance(self, idx: np.ndarray, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For ticks t0..t1 (at most a day): start and end ((S, 1)) of the maintenance of t1's day, and the
        end of the last one before t0 (disks are cleaned then; a month back when there is none)."""
        day = np.full((len(idx), 1), np.floor(t1 / DAY))
        ms, me = self.maintenance(idx, day)
        _, previous = self.maintenance(idx, day - self.maint_period[idx][:, None])
        last = np.where(t0 >= me, me, previous)
        return ms, me, np.where(np.isnan(last), (day - UPTIME_CAP_DAYS) * DAY, last)

    def _slots(self, idx: np.ndarray, t_first: float, t_last: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Episodes of the slots covering [t_first, t_last]: first slot index (S,) and (S, K) fields."""
        phase = self.phase[idx]
        kmin = np.floor((t_first - phase) / SLOT).astype(np.int64)
        kmax = np.floor((t_last - phase) / SLOT).astype(np.int64)
        ks = kmin[:, None] + np.arange(int((kmax - kmin).max()) + 1)
        key = self.key[idx][:, None]

        def u(tag: int) -> np.ndarray:
            return uniform(key, ks, tag)

        slot_start = ks * SLOT + phase[:, None]
        p_inc = self.p_incident[idx][:, None]
        draw = u(T_KIND)
        kind = np.where(draw < p_inc, INCIDENT, np.where(draw < p_inc + self.p_outage[idx][:, None], OUTAGE, NONE))
        escalate = u(T_ESC) < self.p_escalate[idx][:, None]
        ramp = np.where(escalate, 75 + 90 * u(T_RAMP), 40 + 110 * u(T_RAMP)) * 60
        crit = np.where(escalate, (15 + 35 * u(T_CRIT)) * 60, 0.0)
        rec = (15 + 30 * u(T_REC)) * 60
        total = np.where(kind == OUTAGE, (10 + 170 * u(T_OFF) ** 2) * 60, ramp + crit + rec)
        begin = slot_start + u(T_POS) * (SLOT - SLOT_MARGIN - total)
        end = begin + total
        ms, me = self.maintenance(idx, np.floor((slot_start + SLOT) / DAY))
        clash = (begin < me + SLOT_MARGIN) & (end > ms - SLOT_MARGIN)
        kind = np.where(clash | self._blocked(idx, begin, end) | self.quiet[idx][:, None], NONE, kind)
        ramp_end = np.where(kind == OUTAGE, begin, begin + ramp)
        fields = {
            "kind": kind,
            "begin": begin,
            "ramp_end": ramp_end,
            "crit_end": ramp_end + np.where(kind == OUTAGE, 0.0, crit),
            "end": end,
            "peak": np.where(escalate, FORCED_PEAK, HEAVY_PEAK + HEAVY_PEAK_SPAN * u(T_PEAK)),
            "top": np.where(escalate, 1.0, HEAVY_PEAK + HEAVY_PEAK_SPAN * u(T_PEAK)),
        }
        return kmin, fields

    def at(self, idx: np.ndarray, t: np.ndarray) -> EpisodeTicks:
        """Own episodes of the servers idx over ticks t (epoch seconds), computed only for the rows that
        have one."""
        t0, t1 = float(t[0]), float(t[-1])
        kmin, slots = self._slots(idx, t0, t1)
        hit = (slots["kind"] != NONE) & (slots["begin"] <= t1) & (slots["end"] >= t0 - SLOT_MARGIN)
        forced = self.forced[idx]
        if forced.any():
            forced = forced & (self.forced_start <= t1) & (self.forced_end >= t0)
        rows = np.flatnonzero(hit.any(axis=1) | forced)
        k = slots["kind"].shape[1]
        tt = t[None, :]
        local = np.floor((tt - self.phase[idx[rows]][:, None]) / SLOT).astype(np.int64) - kmin[rows, None]
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
        return EpisodeTicks(rows, intensity, state, outage, outage_end)

    def initial_boot(self, idx: np.ndarray) -> np.ndarray:
        """Last reboot before the start: latest maintenance or outage end in the preceding month."""
        start = self.start
        day = np.full((len(idx), 1), np.floor(start / DAY))
        _, me = self.maintenance(idx, day)
        _, previous = self.maintenance(idx, day - self.maint_period[idx][:, None])
        prev = np.where(me < start, me, previous)
        boot = np.where(np.isnan(prev), NO_TIME, prev)[:, 0]
        _, slots = self._slots(idx, start - (UPTIME_CAP_DAYS + 1) * DAY, start - 1)
        ends = np.where((slots["kind"] == OUTAGE) & (slots["end"] < start), slots["end"], NO_TIME)
        last: np.ndarray = np.maximum(boot, ends.max(axis=1))
        return last
