"""A simulated fleet as node_exporter exposes it, for a real Prometheus: history as TSDB blocks, live over HTTP.

Every host of a FleetSimulator becomes a node_exporter: the series tftmon.data.ingest.prometheus reads, under
node_exporter's own names, labels and units, so the Prometheus source, its tests and the demo run against a
real Prometheus with a fleet of any size. History and live are one timeline: `backfill` writes [start, end)
as OpenMetrics and has promtool turn it into TSDB blocks; `LiveFleet` re-runs the same simulator from the same
start up to the wall clock, so counters read live carry on from the history's values and `rate()` across the
seam is right.

Time is the simulator's ticks. A gauge holds a tick's value until the next one; a counter grows at the tick's
rate (CPU shares, MB/s), so its increase over a model step is the mean that `resample` takes of the step. A
reboot (the simulator's uptime falling) resets counters and boot time, as on a real host; an offline host is
not there to scrape (no history, HTTP 503). A drive moves some of a host's contract metrics linearly to given
values and holds them: given at construction (`Drive`: a host already sliding into trouble when the history
ends) or live (`POST`/`DELETE /hosts/<name>/drive`), applied from the moment it is asked.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tftmon.config import SimulationConfig
from tftmon.contract import (
    COLUMNS_BY_NAME,
    CPU_IDLE,
    CPU_PARTS,
    CPU_SUM_TOLERANCE,
    DISK_USAGE,
    LOAD_AVERAGE,
    MEM_USED,
    NET_IN,
    NET_OUT,
    OFFLINE_STATE,
    STATES,
    SWAP_USED,
    UPTIME,
)
from tftmon.data.ingest.prometheus import CPU_MODES
from tftmon.data.ingest.units import BYTES_PER_MB
from tftmon.data.simulate.episodes import NO_TIME
from tftmon.data.simulate.signals import Block, Cursor, FleetSimulator

log = logging.getLogger(__name__)

JOB = "node"
#: node_exporter's port: a host's `instance` label is "<name>:9100", as if Prometheus scraped the host itself.
EXPORTER_PORT = 9100
#: The share of its contract CPU part each node_exporter mode takes (the ingest's CPU_MODES adds them back up):
#: the simulator has four parts, a kernel splits them further.
MODE_SHARE: dict[str, float] = {
    "user": 0.97, "nice": 0.03, "system": 0.82, "irq": 0.03, "softirq": 0.13, "steal": 0.02, "iowait": 1.0, "idle": 1.0,
}  # fmt: skip
#: (mode, contract part) in node_cpu_seconds_total's order.
MODES: tuple[tuple[str, str], ...] = tuple((mode, part) for part, modes in CPU_MODES.items() for mode in modes)
if set(MODE_SHARE) != {mode for mode, _ in MODES} or any(
    abs(sum(MODE_SHARE[mode] for mode in modes) - 1.0) > 1e-9 for modes in CPU_MODES.values()
):
    raise ImportError("MODE_SHARE must split each part of the ingest's CPU_MODES into its modes, adding up to 1")

GIB = 2**30
MEMORY_PER_CORE = 4 * GIB
SWAP_BYTES = 8 * GIB
ROOT_BYTES = 200 * GIB
#: ext4 keeps 5 % of a filesystem for root: free but not available, and not counted as usable by df or the ingest.
ROOT_RESERVED_BYTES = ROOT_BYTES // 20
#: Filesystems count whole 4 KiB blocks, /proc/meminfo whole kB.
FS_BLOCK = 4096
MEMINFO_UNIT = 1024
#: Loopback traffic (local clients of local services): node_exporter reports it, the ingest's query leaves it out.
LOOPBACK_MB_S = 0.2
#: Uptime of a host the simulator saw no reboot of in the month before its start (it counts only 30 days).
LONG_UPTIME = timedelta(days=60)
#: Samples per piece of backfilled text: promtool holds a piece in memory (~100 bytes a sample, so ~1 GB).
PIECE_SAMPLES = 10_000_000
#: promtool's block duration: it writes blocks of the longest it allows up to this (2 h x 3^k), so each piece of
#: history becomes one block, whatever its length.
PROMTOOL_BLOCK = "100000h"
#: Ramp of a live drive or recovery that names none.
DEFAULT_RAMP_SECONDS = 60.0
#: Metrics a drive may move: those node_exporter has a source for, but uptime (a reboot is not a level).
DRIVABLE: tuple[str, ...] = (*CPU_PARTS, MEM_USED, SWAP_USED, DISK_USAGE, NET_IN, NET_OUT, LOAD_AVERAGE)
UNAME = {
    "domainname": "(none)", "machine": "x86_64", "release": "6.1.0-28-amd64", "sysname": "Linux",
    "version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)",
}  # fmt: skip
ROOT_FS = {"device": "/dev/vda1", "fstype": "ext4", "mountpoint": "/"}
OFFLINE = STATES.index(OFFLINE_STATE)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Value columns of a host: counters first (per-core seconds of each CPU mode, bytes per interface), then gauges.
COUNTERS: tuple[str, ...] = (*(f"cpu_{mode}" for mode, _ in MODES), "rx_eth0", "tx_eth0", "rx_lo", "tx_lo")
GAUGES = ("boot", "fs_avail", "fs_free", "fs_size", "load1", "mem_available", "mem_total", "swap_free", "swap_total")
COLUMNS: tuple[str, ...] = (*COUNTERS, *GAUGES, "uname")
_COLUMN = {name: i for i, name in enumerate(COLUMNS)}
#: Metric families in exposition order: type and node_exporter's help text.
FAMILIES: dict[str, tuple[str, str]] = {
    "node_boot_time_seconds": ("gauge", "Node boot time, in unixtime."),
    "node_cpu_seconds_total": ("counter", "Seconds the CPUs spent in each mode."),
    "node_filesystem_avail_bytes": ("gauge", "Filesystem space available to non-root users in bytes."),
    "node_filesystem_free_bytes": ("gauge", "Filesystem free space in bytes."),
    "node_filesystem_size_bytes": ("gauge", "Filesystem size in bytes."),
    "node_load1": ("gauge", "1m load average."),
    "node_memory_MemAvailable_bytes": ("gauge", "Memory information field MemAvailable_bytes."),
    "node_memory_MemTotal_bytes": ("gauge", "Memory information field MemTotal_bytes."),
    "node_memory_SwapFree_bytes": ("gauge", "Memory information field SwapFree_bytes."),
    "node_memory_SwapTotal_bytes": ("gauge", "Memory information field SwapTotal_bytes."),
    "node_network_receive_bytes_total": ("counter", "Network device statistic receive_bytes."),
    "node_network_transmit_bytes_total": ("counter", "Network device statistic transmit_bytes."),
    "node_uname_info": ("gauge", "Labeled system information as provided by the uname system call."),
}


def instance(name: str) -> str:
    """The `instance` label of a simulated host: its name and node_exporter's port."""
    return f"{name}:{EXPORTER_PORT}"


def _labels(labels: Mapping[str, str]) -> str:
    """Labels as the text formats write them, values escaped."""
    escaped = {
        key: value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for key, value in labels.items()
    }
    return ",".join(f'{key}="{value}"' for key, value in escaped.items())


def _host_series(name: str, cpus: int) -> list[tuple[str, str, int]]:
    """(family, rendered labels, value column) of each series of a host, in FAMILIES' order."""
    series = [
        ("node_boot_time_seconds", {}, "boot"),
        *(
            ("node_cpu_seconds_total", {"cpu": str(cpu), "mode": mode}, f"cpu_{mode}")
            for cpu in range(cpus)
            for mode, _ in MODES
        ),
        ("node_filesystem_avail_bytes", ROOT_FS, "fs_avail"),
        ("node_filesystem_free_bytes", ROOT_FS, "fs_free"),
        ("node_filesystem_size_bytes", ROOT_FS, "fs_size"),
        ("node_load1", {}, "load1"),
        ("node_memory_MemAvailable_bytes", {}, "mem_available"),
        ("node_memory_MemTotal_bytes", {}, "mem_total"),
        ("node_memory_SwapFree_bytes", {}, "swap_free"),
        ("node_memory_SwapTotal_bytes", {}, "swap_total"),
        ("node_network_receive_bytes_total", {"device": "eth0"}, "rx_eth0"),
        ("node_network_receive_bytes_total", {"device": "lo"}, "rx_lo"),
        ("node_network_transmit_bytes_total", {"device": "eth0"}, "tx_eth0"),
        ("node_network_transmit_bytes_total", {"device": "lo"}, "tx_lo"),
        ("node_uname_info", {**UNAME, "nodename": name}, "uname"),
    ]
    return [(family, _labels(labels), _COLUMN[column]) for family, labels, column in series]


def _number(given: Any) -> float:
    """A JSON number as a float; NaN for anything else (true and false included), which no range holds."""
    return float(given) if isinstance(given, int | float) and not isinstance(given, bool) else math.nan


def _checked(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Drive targets as floats; ValueError saying what a drive may name and hold."""
    if not metrics:
        raise ValueError(f"a drive names at least one metric: one of {', '.join(DRIVABLE)}")
    targets: dict[str, float] = {}
    for metric, given in metrics.items():
        if metric not in DRIVABLE:
            raise ValueError(f"cannot drive {metric!r}; drive one of {', '.join(DRIVABLE)}")
        column = COLUMNS_BY_NAME[metric]
        low = -math.inf if column.min is None else column.min
        high = math.inf if column.max is None else column.max
        value = _number(given)
        if not low <= value <= high:
            raise ValueError(f"{metric}: {given!r} is not a number from {low:g} to {high:g}")
        targets[metric] = value
    cpu = [targets[part] for part in CPU_PARTS if part in targets]
    if sum(cpu) > 100 + CPU_SUM_TOLERANCE or (len(cpu) == len(CPU_PARTS) and abs(sum(cpu) - 100) > CPU_SUM_TOLERANCE):
        raise ValueError(f"the CPU parts driven add up to {sum(cpu):g}; they must leave room in (or fill) 100 %")
    return targets


def _ramp_seconds(seconds: Any) -> float:
    value = _number(seconds)
    if not 0 <= value < math.inf:
        raise ValueError(f"ramp_seconds: {seconds!r} is not a number of seconds (0 or more)")
    return value


@dataclass(frozen=True)
class Drive:
    """Metrics of one host moved linearly from the simulator's values to `metrics` from `start` over `ramp`, then
    held until recovered: a host that is already on its way into trouble when its history ends."""

    host: str
    metrics: Mapping[str, float]
    start: datetime
    ramp: timedelta


@dataclass(frozen=True)
class _Ramp:
    """One metric of one host moving linearly from `since` over `seconds`, from `start` to `end` (None: the
    simulator's own value, moving as it moves), then held at `end`."""

    since: float
    seconds: float
    start: float | None
    end: float | None

    def apply(self, t: np.ndarray, simulated: np.ndarray) -> np.ndarray:
        done = np.ones_like(t) if self.seconds <= 0 else np.clip((t - self.since) / self.seconds, 0.0, 1.0)
        a = simulated if self.start is None else self.start
        b = simulated if self.end is None else self.end
        moved = np.where(done >= 1.0, b, a + done * (b - a))  # exactly `end` once there
        return np.where(t >= self.since, moved, simulated)

    def over(self, t: float) -> bool:
        """A recovery that has reached the simulator's values: nothing left to apply."""
        return self.end is None and t >= self.since + self.seconds


def _fill_cpu(parts: dict[str, np.ndarray], driven: set[str]) -> None:
    """Make the CPU parts add up to 100 again around the driven ones, in place: the free busy parts keep their
    simulated values, scaled down only where they no longer fit when idle is free (it takes the rest), scaled to
    fill what is left when idle is driven. Driven parts that together pass 100 are scaled down to it."""
    fixed = sum((parts[p] for p in driven), np.zeros_like(parts[CPU_IDLE]))
    over = np.divide(100.0, fixed, out=np.ones_like(fixed), where=fixed > 100.0)
    for part in driven:
        parts[part] *= over
    room = 100.0 - np.minimum(fixed, 100.0)
    free = [p for p in CPU_PARTS if p != CPU_IDLE and p not in driven]
    busy = sum((parts[p] for p in free), np.zeros_like(room))
    fits = np.divide(room, busy, out=np.zeros_like(room), where=busy > 0)
    scale = fits if CPU_IDLE in driven else np.minimum(fits, 1.0)
    for part in free:
        parts[part] *= scale
    if CPU_IDLE not in driven:
        parts[CPU_IDLE][...] = room - busy * scale


def _rates(metrics: Mapping[str, np.ndarray]) -> np.ndarray:
    """What each counter grows by per second at each tick, (hosts, COUNTERS, ticks): per-core seconds of each
    CPU mode, bytes per interface."""
    cpu = [metrics[part] * (MODE_SHARE[mode] / 100.0) for mode, part in MODES]
    loopback = np.full_like(metrics[NET_IN], LOOPBACK_MB_S * BYTES_PER_MB)
    return np.stack([*cpu, metrics[NET_IN] * BYTES_PER_MB, metrics[NET_OUT] * BYTES_PER_MB, loopback, loopback], axis=1)


def _whole(values: np.ndarray, unit: int) -> np.ndarray:
    return np.floor(values / unit) * unit


class ExporterFleet:
    """A simulated fleet as node_exporter hosts: names, hardware, series, and the drives under way from the start.

    The simulator runs as one endless period from config.start (config.hours plays no part), so history and live
    are the same numbers; a forced scenario needs scenario_start_hours to begin where it should. Each host has as
    many CPUs as the simulator's load assumes, or at most `max_cpus`: every CPU is 8 series, which is what
    backfilling costs (a 128-core host is 1,024), while the ingest's queries read only the modes' proportions.
    """

    def __init__(self, config: SimulationConfig, *, drives: Sequence[Drive] = (), max_cpus: int | None = None) -> None:
        self.config = config.model_copy(update={"hours": math.inf})
        self.simulator = FleetSimulator(self.config)
        sim = self.simulator
        self.names: list[str] = [str(name) for name in sim.names]
        self.index = {name: row for row, name in enumerate(self.names)}
        self.cores = np.rint(sim.prof["cores"] * sim.p["cores_scale"]).astype(np.int64)
        self.cpus = self.cores if max_cpus is None else np.minimum(self.cores, max(1, max_cpus))
        self.start = sim.start_ns / 1e9
        self.interval = sim.interval_s
        for drive in drives:
            self.row(drive.host)
            _checked(drive.metrics)
            if drive.start.tzinfo is None:
                raise ValueError(f"drive of {drive.host}: start {drive.start} has no time zone")
        self.drives = tuple(drives)
        self.series = [_host_series(name, int(cpus)) for name, cpus in zip(self.names, self.cpus, strict=True)]

    def row(self, name: str) -> int:
        """The host's position in `names`; KeyError naming the hosts there are."""
        try:
            return self.index[name]
        except KeyError:
            raise KeyError(f"no host {name!r}; the fleet has {', '.join(self.names)}") from None

    def columns(
        self, rows: slice | list[int], metrics: Mapping[str, np.ndarray], counters: np.ndarray, boot: np.ndarray
    ) -> np.ndarray:
        """Series values (rows, COLUMNS, ticks) in node_exporter's units and precision: CPU seconds to 1/100 s
        (USER_HZ), bytes whole (memory in kB, filesystems in 4 KiB blocks), boot time to the second."""
        cpu = len(MODES)
        out = np.empty((counters.shape[0], len(COLUMNS), counters.shape[2]))
        out[:, :cpu] = np.round(counters[:, :cpu], 2)
        out[:, cpu : len(COUNTERS)] = np.round(counters[:, cpu:])
        out[:, _COLUMN["boot"]] = np.floor(boot)
        usable = ROOT_BYTES - ROOT_RESERVED_BYTES
        avail = _whole(usable * (1 - metrics[DISK_USAGE] / 100), FS_BLOCK)
        out[:, _COLUMN["fs_avail"]] = avail
        out[:, _COLUMN["fs_free"]] = avail + ROOT_RESERVED_BYTES
        out[:, _COLUMN["fs_size"]] = ROOT_BYTES
        out[:, _COLUMN["load1"]] = metrics[LOAD_AVERAGE]
        memory = (self.cores[rows] * MEMORY_PER_CORE)[:, None]
        out[:, _COLUMN["mem_available"]] = _whole(memory * (1 - metrics[MEM_USED] / 100), MEMINFO_UNIT)
        out[:, _COLUMN["mem_total"]] = memory
        out[:, _COLUMN["swap_free"]] = _whole(SWAP_BYTES * (1 - metrics[SWAP_USED] / 100), MEMINFO_UNIT)
        out[:, _COLUMN["swap_total"]] = SWAP_BYTES
        out[:, _COLUMN["uname"]] = 1.0
        return out


@dataclass
class _Ticks:
    """A run of ticks of every host: times (s), online, driven contract metrics, counters and boot time at each."""

    times: np.ndarray  # (T,)
    online: np.ndarray  # (S, T)
    metrics: dict[str, np.ndarray]  # (S, T)
    counters: np.ndarray  # (S, COUNTERS, T)
    boot: np.ndarray  # (S, T)


class _Timeline:
    """The fleet's ticks in order from its start, drives applied and counters integrated, read in runs of any
    length; the last tick read stays at hand (undriven too) for a live drive to be applied from any moment."""

    def __init__(self, fleet: ExporterFleet) -> None:
        self.fleet = fleet
        hosts = len(fleet.names)
        self._cursor = Cursor(fleet.simulator.stream())
        self.ramps: dict[int, dict[str, _Ramp]] = {}
        for drive in fleet.drives:
            seconds = drive.ramp.total_seconds()
            self.ramps.setdefault(fleet.row(drive.host), {}).update(
                {m: _Ramp(drive.start.timestamp(), seconds, None, v) for m, v in _checked(drive.metrics).items()}
            )
        boot = fleet.simulator.episodes.initial_boot(np.arange(hosts))
        self.boot = np.where(boot > NO_TIME, boot, fleet.start - LONG_UPTIME.total_seconds())
        self.tick = -1  # the last tick read
        self._uptime = np.zeros(hosts)  # the simulator's uptime at each host's last online tick
        self._next: np.ndarray | None = None  # counters at the next tick, unless it is a reboot
        # The last tick read: undriven and driven values, online; counters as a line (anchor, rate) from then on.
        self.raw: dict[str, np.ndarray] = {}
        self.metrics: dict[str, np.ndarray] = {}
        self.online = np.ones(hosts, dtype=bool)
        self.anchor_time = fleet.start
        self.anchor = np.zeros((hosts, len(COUNTERS)))
        self.rate = np.zeros((hosts, len(COUNTERS)))

    def read(self, ticks: int) -> _Ticks:
        """The next `ticks` ticks."""
        fleet = self.fleet
        block = self._cursor.read(Block.empty(len(fleet.names), ticks))
        times = block.timestamps / 1e9
        metrics = {m: block.metrics[m].astype(np.float64) for m in DRIVABLE}
        self.raw = {m: values[:, -1].copy() for m, values in metrics.items()}
        self._drive(metrics, times)
        online = block.state != OFFLINE
        reboot = self._reboots(block.metrics[UPTIME], online)
        boot = np.maximum.accumulate(np.where(reboot, times, self.boot[:, None]), axis=1)
        rates = _rates(metrics)
        if self._next is None:  # the first tick: as if the host had run at its rates since it booted
            self._next = (times[0] - boot[:, :1]) * rates[:, :, 0]
        steps = np.concatenate([np.zeros_like(rates[:, :, :1]), rates[:, :, :-1] * fleet.interval], axis=2)
        grown = self._next[:, :, None] + np.cumsum(steps, axis=2)
        # A reboot starts every counter again from 0: take off what had grown by the latest one (grown only grows).
        counters = grown - np.maximum.accumulate(np.where(reboot[:, None, :], grown, 0.0), axis=2)
        self._next = counters[:, :, -1] + rates[:, :, -1] * fleet.interval
        self.tick += ticks
        self.boot = boot[:, -1]
        self.metrics = {m: values[:, -1] for m, values in metrics.items()}
        self.online = online[:, -1]
        self.anchor_time, self.anchor, self.rate = float(times[-1]), counters[:, :, -1], rates[:, :, -1]
        return _Ticks(times, online, metrics, counters, boot)

    def retime(self, at: float) -> None:
        """Apply the ramps as they now are to the last tick from `at` on: values change at `at`; counters keep
        what they counted until then and grow at the new rates after, so a drive never moves one back."""
        counted = self.anchor + self.rate * (at - self.anchor_time)
        metrics = {m: values[:, None].copy() for m, values in self.raw.items()}
        self._drive(metrics, np.array([at]))
        self.metrics = {m: values[:, 0] for m, values in metrics.items()}
        self.anchor_time, self.anchor, self.rate = at, counted, _rates(metrics)[:, :, 0]
        following = self.fleet.start + (self.tick + 1) * self.fleet.interval
        self._next = counted + self.rate * (following - at)

    def _drive(self, metrics: dict[str, np.ndarray], times: np.ndarray) -> None:
        """The ramps in force applied to the driven hosts' rows (in place), their CPU parts made whole again;
        recoveries that have reached the simulator are dropped."""
        for row, ramps in list(self.ramps.items()):
            for metric, ramp in ramps.items():
                metrics[metric][row] = ramp.apply(times, metrics[metric][row])
            cpu = set(ramps) & set(CPU_PARTS)
            if cpu:
                _fill_cpu({part: metrics[part][row] for part in CPU_PARTS}, cpu)
            ramps = {metric: ramp for metric, ramp in ramps.items() if not ramp.over(float(times[-1]))}
            if ramps:
                self.ramps[row] = ramps
            else:
                del self.ramps[row]

    def _reboots(self, uptime: np.ndarray, online: np.ndarray) -> np.ndarray:
        """Ticks (S, T) at which the simulator's uptime fell below its value at the host's last online tick: it
        rebooted in between (an outage ends in one)."""
        hosts, ticks = uptime.shape
        last = np.maximum.accumulate(np.where(online, np.arange(ticks), -1), axis=1)
        before = np.concatenate([np.full((hosts, 1), -1), last[:, :-1]], axis=1)
        seen = np.take_along_axis(uptime, np.maximum(before, 0), axis=1)
        previous = np.where(before >= 0, seen, self._uptime[:, None])
        ends = last[:, -1]
        self._uptime = np.where(ends >= 0, uptime[np.arange(hosts), np.maximum(ends, 0)], self._uptime)
        reboot: np.ndarray = online & (uptime < previous)
        return reboot


# ---------------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------------


def _write_ticks(out: IO[bytes], heads: list[list[tuple[bytes, int]]], values: np.ndarray, ticks: _Ticks) -> int:
    """One run of ticks as OpenMetrics lines, series by series; returns the samples written. The text of a value
    column is built once for all hosts (pyarrow) with a 0 byte where the series name goes, then stamped with
    each series' name and labels: a host's CPUs share their text."""
    shape = values.shape
    keep = np.broadcast_to(ticks.online[:, None, :], shape)
    stamps = np.broadcast_to(ticks.times, shape)[keep]
    texts = [pc.cast(pa.array(numbers), pa.large_string()) for numbers in (values[keep], stamps)]
    between = [pa.scalar(part, pa.large_string()) for part in ("\x00 ", " ", "\n", "")]  # the last: no separator
    text = pc.binary_join_element_wise(between[0], texts[0], between[1], texts[1], between[2], between[3])
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset :]
    data = memoryview(text.buffers()[2])
    counts = ticks.online.sum(axis=1)
    first = np.concatenate([[0], np.cumsum(counts * shape[1])])
    written = 0
    for row, series in enumerate(heads):
        n = int(counts[row])
        if not n:
            continue
        cache: dict[int, bytes] = {}
        for head, column in series:
            if column not in cache:
                lo = first[row] + column * n
                cache[column] = bytes(data[offsets[lo] : offsets[lo + n]])
            out.write(cache[column].replace(b"\x00", head))
        written += n * len(series)
    return written


def _heads(fleet: ExporterFleet, job: str) -> list[list[tuple[bytes, int]]]:
    """Each host's series as OpenMetrics names with labels, job and instance as a scrape labels them, and their
    value columns."""
    return [
        [(f'{family}{{{labels}{"," if labels else ""}instance="{instance(name)}",job="{job}"}}'.encode(), column)
         for family, labels, column in series]
        for name, series in zip(fleet.names, fleet.series, strict=True)
    ]  # fmt: skip


def _promtool(source: Path, storage: Path) -> subprocess.Popen[bytes]:
    """promtool turning `source` into a TSDB block under `storage`. It reads its whole input into memory, then
    once more per block it writes: one block per piece (the longest duration it allows) keeps that to twice."""
    command = ["promtool", "tsdb", "create-blocks-from", "openmetrics", f"--max-block-duration={PROMTOOL_BLOCK}"]
    return subprocess.Popen(
        [*command, str(source), str(storage)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def _finish(process: subprocess.Popen[bytes], source: Path) -> None:
    """Wait for promtool on `source`, then remove it; RuntimeError with promtool's words if it failed."""
    _, errors = process.communicate()
    source.unlink(missing_ok=True)
    if process.returncode:
        message = errors.decode(errors="replace")[-3000:]
        raise RuntimeError(f"promtool could not write blocks from {source.name}:\n{message}")


@dataclass(frozen=True)
class Backfilled:
    """What `backfill` wrote, and how long it took (writing text and promtool overlap)."""

    start: datetime
    end: datetime
    samples: int
    pieces: int
    seconds: float


def backfill(
    fleet: ExporterFleet, storage: Path, end: datetime, *, job: str = JOB, piece_samples: int = PIECE_SAMPLES
) -> Backfilled:
    """The fleet's history from its start to `end` (exclusive) as TSDB blocks under `storage`, for a Prometheus
    started on it: every online host's series at every tick, labelled as a scrape by `job` would be.

    The text goes in pieces of about `piece_samples` samples, written beside `storage` while promtool turns the
    one before into a block, each removed once converted: memory and disk stay bounded (promtool holds a whole
    piece in memory, about 100 bytes a sample) and the two halves run side by side."""
    total = math.ceil((end.timestamp() - fleet.start) / fleet.interval)
    if total <= 0:
        raise ValueError(f"history end {end.isoformat()} is not after the fleet's start {fleet.config.start}")
    began = time.perf_counter()
    storage.mkdir(parents=True, exist_ok=True)
    heads = _heads(fleet, job)
    per_tick = sum(len(series) for series in heads)
    piece_ticks = max(1, piece_samples // per_tick)
    timeline = _Timeline(fleet)
    samples = pieces = 0
    converting: tuple[subprocess.Popen[bytes], Path] | None = None
    try:
        while timeline.tick + 1 < total:
            source = storage.parent / f".{storage.name}.{pieces}.openmetrics"
            last = min(total, timeline.tick + 1 + piece_ticks)
            with source.open("wb") as out:
                while timeline.tick + 1 < last:
                    ticks = timeline.read(min(fleet.simulator.block_ticks, last - timeline.tick - 1))
                    values = fleet.columns(slice(None), ticks.metrics, ticks.counters, ticks.boot)
                    samples += _write_ticks(out, heads, values, ticks)
                out.write(b"# EOF\n")
            if converting is not None:
                _finish(*converting)
            converting = (_promtool(source, storage), source)
            pieces += 1
        if converting is not None:
            _finish(*converting)
    finally:
        if converting is not None and converting[0].poll() is None:  # failed on our side: stop promtool
            converting[0].kill()
            converting[0].wait()
        for left in storage.parent.glob(f".{storage.name}.*.openmetrics"):
            left.unlink()
    return Backfilled(fleet.config.start, end, samples, pieces, round(time.perf_counter() - began, 3))


def scrape_config(address: str, names: Sequence[str], *, job: str = JOB) -> dict[str, Any]:
    """The scrape_configs entry of the fleet served at `address` (host:port): one job, every host a target on that
    address with its own __metrics_path__ and an `instance` label as its own node_exporter would have (see
    `instance`), so the series look as if each host had been scraped itself. JSON, hence YAML too."""
    return {
        "job_name": job,
        "static_configs": [
            {"targets": [address], "labels": {"__metrics_path__": f"/hosts/{name}/metrics", "instance": instance(name)}}
            for name in names
        ],
    }


# ---------------------------------------------------------------------------------------------
# Live
# ---------------------------------------------------------------------------------------------


class LiveFleet:
    """The fleet at the wall clock, safe across threads: each request reads the simulator on to its time (never
    back; the first from the fleet's start), a host's exposition then holds gauges of the current tick and counters
    grown to that very moment. Drives and recoveries apply from the moment they are asked. `at` (epoch seconds)
    stands in for the clock."""

    def __init__(self, fleet: ExporterFleet) -> None:
        self.fleet = fleet
        self._timeline = _Timeline(fleet)
        self._lock = threading.Lock()
        self._time = fleet.start

    def _advance(self, at: float | None) -> float:
        """Read ticks up to `at` (default now); the time served, which never goes back."""
        fleet, timeline = self.fleet, self._timeline
        t = max(time.time() if at is None else at, self._time)
        tick = math.floor((t - fleet.start) / fleet.interval)
        if tick < 0:
            raise ValueError(f"the fleet starts at {fleet.config.start.isoformat()}, after the time asked")
        while timeline.tick < tick:
            timeline.read(min(tick - timeline.tick, fleet.simulator.block_ticks))
        self._time = t
        return t

    def exposition(self, name: str, at: float | None = None) -> str | None:
        """The host's /metrics text as node_exporter writes it; None while the host is offline."""
        with self._lock:
            row = self.fleet.row(name)
            t = self._advance(at)
            timeline = self._timeline
            if not timeline.online[row]:
                return None
            counters = timeline.anchor[row] + timeline.rate[row] * (t - timeline.anchor_time)
            metrics = {m: values[[row], None] for m, values in timeline.metrics.items()}
            values = self.fleet.columns([row], metrics, counters[None, :, None], timeline.boot[[row], None])
        column = values[0, :, 0].tolist()
        lines: list[str] = []
        current = ""
        for family, labels, index in self.fleet.series[row]:
            if family != current:
                kind, text = FAMILIES[family]
                lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}"]
                current = family
            lines.append(f"{family}{{{labels}}} {column[index]!r}" if labels else f"{family} {column[index]!r}")
        return "\n".join(lines) + "\n"

    def state(self, name: str, at: float | None = None) -> dict[str, Any]:
        """The host as JSON: online, its contract metrics now (as exposed), and the drives under way."""
        with self._lock:
            return self._state(self.fleet.row(name), self._advance(at))

    def drive(
        self, name: str, metrics: Mapping[str, Any], ramp_seconds: Any = DEFAULT_RAMP_SECONDS, at: float | None = None
    ) -> dict[str, Any]:
        """Move `metrics` from where they are now to the values given over `ramp_seconds`, then hold them (CPU
        parts stay whole: idle gives or takes); returns the state. ValueError for what cannot be driven."""
        targets, seconds = _checked(metrics), _ramp_seconds(ramp_seconds)
        with self._lock:
            row = self.fleet.row(name)
            t = self._advance(at)
            timeline = self._timeline
            ramps = timeline.ramps.setdefault(row, {})
            for metric, value in targets.items():
                ramps[metric] = _Ramp(t, seconds, float(timeline.metrics[metric][row]), value)
            timeline.retime(t)
            return self._state(row, t)

    def recover(self, name: str, ramp_seconds: Any = DEFAULT_RAMP_SECONDS, at: float | None = None) -> dict[str, Any]:
        """Bring every driven metric of the host back to the simulator's values over `ramp_seconds`."""
        seconds = _ramp_seconds(ramp_seconds)
        with self._lock:
            row = self.fleet.row(name)
            t = self._advance(at)
            timeline = self._timeline
            ramps = timeline.ramps.get(row, {})
            for metric in ramps:
                ramps[metric] = _Ramp(t, seconds, float(timeline.metrics[metric][row]), None)
            timeline.retime(t)
            return self._state(row, t)

    def _state(self, row: int, t: float) -> dict[str, Any]:
        timeline = self._timeline
        return {
            "host": self.fleet.names[row],
            "time": t,
            "online": bool(timeline.online[row]),
            "metrics": {m: float(values[row]) for m, values in timeline.metrics.items()},
            "drives": {
                metric: {
                    "since": ramp.since,
                    "ramp_seconds": ramp.seconds,
                    "to": "simulated" if ramp.end is None else ramp.end,
                }
                for metric, ramp in timeline.ramps.get(row, {}).items()
            },
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], live: LiveFleet) -> None:
        super().__init__(address, _Handler)
        self.live = live


class _Handler(BaseHTTPRequestHandler):
    """GET /hosts, GET /hosts/<name>/metrics, GET|POST|DELETE /hosts/<name>/drive."""

    server: _Server

    def do_GET(self) -> None:
        parts = self._parts()
        if parts == ["hosts"]:
            self._json(200, {"hosts": self.server.live.fleet.names})
        elif len(parts) == 3 and parts[0] == "hosts" and parts[2] == "metrics":
            self._answer(lambda: self.server.live.exposition(parts[1]))
        else:
            self._host_drive(parts, lambda name, body: self.server.live.state(name))

    def do_POST(self) -> None:
        live = self.server.live
        self._host_drive(
            self._parts(),
            lambda name, body: live.drive(
                name, body.get("metrics") or {}, body.get("ramp_seconds", DEFAULT_RAMP_SECONDS)
            ),
        )

    def do_DELETE(self) -> None:
        live = self.server.live
        self._host_drive(
            self._parts(), lambda name, body: live.recover(name, body.get("ramp_seconds", DEFAULT_RAMP_SECONDS))
        )

    def _parts(self) -> list[str]:
        return [part for part in urlsplit(self.path).path.split("/") if part]

    def _host_drive(self, parts: list[str], act: Any) -> None:
        if len(parts) != 3 or parts[0] != "hosts" or parts[2] != "drive":
            self._json(
                404,
                {"error": f"no {self.command} {self.path}; see GET /hosts, /hosts/<name>/metrics, /hosts/<name>/drive"},
            )
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._json(
                400,
                {"error": 'the body must be a JSON object, e.g. {"metrics": {"mem_used_pct": 99}, "ramp_seconds": 60}'},
            )
            return
        self._answer(lambda: act(parts[1], body))

    def _answer(self, act: Any) -> None:
        try:
            result = act()
        except KeyError as exc:
            self._json(404, {"error": exc.args[0]})
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
        else:
            if isinstance(result, dict):
                self._json(200, result)
            elif result is None:
                self._send(503, "text/plain; charset=utf-8", b"host offline\n")
            else:
                self._send(200, CONTENT_TYPE, result.encode())

    def _json(self, status: int, body: Any) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: Prometheus scrapes every host every few seconds."""


class Exposer:
    """The live fleet over HTTP (stdlib server, 127.0.0.1, port 0: a free one): GET /hosts/<name>/metrics for
    Prometheus, POST /hosts/<name>/drive {"metrics": {...}, "ramp_seconds": s} and DELETE /hosts/<name>/drive
    (optional {"ramp_seconds": s}) to steer a host, GET /hosts/<name>/drive for its state, GET /hosts for the
    names. As a context manager it serves from a daemon thread."""

    def __init__(self, live: LiveFleet, host: str = "127.0.0.1", port: int = 0) -> None:
        self.live = live
        self._server = _Server((host, port), live)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def __enter__(self) -> Exposer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="node-exporter-fleet", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()


def serve_forever(
    config: SimulationConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    drives: Sequence[Drive] = (),
    max_cpus: int | None = None,
) -> None:
    """Serve the fleet until interrupted: what a demo runs as its own process, after `backfill` wrote the history
    of the same config, drives and max_cpus (so live carries on from it), for a Prometheus given
    `scrape_config(address, names)` of the address logged."""
    exposer = Exposer(LiveFleet(ExporterFleet(config, drives=drives, max_cpus=max_cpus)), host, port)
    log.info("%d simulated node_exporters at %s", len(exposer.live.fleet.names), exposer.url)
    try:
        exposer.serve_forever()
    finally:
        exposer.close()
