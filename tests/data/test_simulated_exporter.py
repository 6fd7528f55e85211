"""The simulated node_exporter fleet in a real Prometheus (tests/prometheus_fleet.py): what the ingest reads back
from the backfilled history and from live scrapes is the simulator's own numbers, and drives steer a host.

Locally a missing binary skips these tests with its install command; with CI=true it fails them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus_fleet import PrometheusFleet, prometheus_fleet
from tftmon.config import SimulationConfig
from tftmon.contract import (
    CPU_PARTS,
    CPU_SUM_TOLERANCE,
    CPU_USER,
    DISK_USAGE,
    LOAD_AVERAGE,
    MEM_USED,
    METRIC,
    MODEL_STEP,
    NET_IN,
    NET_OUT,
    OFFLINE_STATE,
    SERVER,
    SERVER_NAME,
    STATE,
    SWAP_USED,
    TIMESTAMP,
    UPTIME,
    VALUE,
)
from tftmon.data.ingest.prometheus import CPU_MODES, query_prometheus
from tftmon.data.ingest.units import BYTES_PER_MB
from tftmon.data.resample import resample_to_model_step
from tftmon.data.simulate import simulate
from tftmon.data.simulate.node_exporter import MODES, ExporterFleet, LiveFleet

HOSTS = 20
HOURS = 3.0
#: Its memory climbs to RAMP_TO over the history's last RAMP_HOURS and is held there live.
RAMPED = "pprisk001"
RAMP_TO = 99.0
RAMP_HOURS = 1.0
#: Driven over HTTP.
DRIVEN = "ppweb001"
#: Live scrapes the live test waits for, from when Prometheus started.
LIVE = timedelta(seconds=30)
#: Live ranges end this long ago: a scrape not yet appended could reach one CPU query and not the next.
SETTLED = timedelta(seconds=5)
#: A live scrape is answered at most this long after Prometheus stamps it (its timeout: the 2-s scrape interval).
SCRAPE_ANSWERED_WITHIN = 2.0
#: How far past now the simulated ticks reach: the clock-driven drive test looks this far ahead.
AHEAD = timedelta(minutes=30)
RATES = (*CPU_PARTS, NET_IN, NET_OUT)
GAUGES = (MEM_USED, SWAP_USED, DISK_USAGE, LOAD_AVERAGE)
#: How far a gauge read at a step's end may be from the step's mean (the simulator's noise within 5 min).
MEAN_TOLERANCE = {MEM_USED: 2.0, SWAP_USED: 5.0, DISK_USAGE: 0.2, LOAD_AVERAGE: 2.0}
#: node_exporter's CPU counters count in 1/100 s (USER_HZ).
USER_HZ_SECONDS = 0.01


def share_bound(part: str, share: float | pd.Series, seconds: float) -> float | pd.Series:
    """The most a CPU part's share (%) read from counters grown over `seconds` can be off by their rounding: each
    counter's growth is off by at most one count, the part's modes in the numerator and every mode in the total.
    Every CPU of a simulated host shows the same per-core counters, so their errors add rather than average."""
    total = USER_HZ_SECONDS * len(MODES)
    return 100 * (USER_HZ_SECONDS * len(CPU_MODES[part]) + share / 100 * total) / (seconds - total)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFleet]:
    with prometheus_fleet(
        tmp_path_factory.mktemp("fleet"), hosts=HOSTS, hours=HOURS, ramps={RAMPED: {MEM_USED: RAMP_TO}},
        ramp_hours=RAMP_HOURS,
    ) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def simulated(fleet: PrometheusFleet) -> pd.DataFrame:
    """The simulator's own ticks from the history's start to AHEAD of now."""
    hours = (datetime.now(UTC) + AHEAD - fleet.history[0]) / timedelta(hours=1)
    return simulate(fleet.fleet.config.model_copy(update={"hours": hours}))


@pytest.fixture(scope="module")
def truth(fleet: PrometheusFleet, simulated: pd.DataFrame) -> pd.DataFrame:
    """What the fleet exposes until drives over HTTP: the simulator's ticks, RAMPED's memory ramp applied."""
    frame = simulated.copy()
    ramp_start = pd.Timestamp(fleet.history[1] - timedelta(hours=RAMP_HOURS))
    done = ((frame[TIMESTAMP] - ramp_start) / pd.Timedelta(hours=RAMP_HOURS)).clip(0, 1)
    ramped = frame[SERVER_NAME] == RAMPED
    frame.loc[ramped, MEM_USED] += done[ramped] * (RAMP_TO - frame.loc[ramped, MEM_USED])
    return frame


def _wide(frame: pd.DataFrame, hosts: list[str]) -> pd.DataFrame:
    """Long ingest samples of the simulated hosts as (server, timestamp) x metric."""
    return frame[frame[SERVER].isin(hosts)].pivot_table(VALUE, [SERVER, TIMESTAMP], METRIC)


def _disturbed(truth: pd.DataFrame) -> pd.MultiIndex:
    """(server, step) of steps whose rates see a reboot or an outage (and the step before: its window ends on it)."""
    raw = truth.sort_values([SERVER_NAME, TIMESTAMP])
    hit = (raw.groupby(SERVER_NAME)[UPTIME].diff() < 0) | (raw[STATE] == OFFLINE_STATE)
    steps = raw.loc[hit, TIMESTAMP].dt.floor("5min")
    names = raw.loc[hit, SERVER_NAME]
    return pd.MultiIndex.from_arrays(
        [pd.concat([names, names]), pd.concat([steps, steps - pd.Timedelta(minutes=5)])], names=[SERVER, TIMESTAMP]
    )


def test_history_reads_back_as_the_simulator_wrote_it(fleet: PrometheusFleet, truth: pd.DataFrame) -> None:
    start, end = fleet.history
    frame, described = query_prometheus(fleet.url, start, end, progress=False)
    assert set(described["servers"].values()) == set(fleet.instances)  # every host named by its nodename
    got = _wide(frame, fleet.hosts)
    assert set(got.index.get_level_values(SERVER)) == set(fleet.hosts)
    assert got.index.get_level_values(TIMESTAMP).min() == start
    steps = resample_to_model_step(truth).rename(columns={SERVER_NAME: SERVER}).set_index([SERVER, TIMESTAMP])
    clean = got.index.difference(_disturbed(truth))
    assert len(clean) > 0.9 * len(got)
    # Counters' rates over a step are the step's mean: CPU shares to their counters' rounding, traffic (whole
    # bytes) to 0.01 MB/s.
    off = (got.loc[clean, list(RATES)] - steps.loc[clean, list(RATES)]).abs()
    seconds = pd.Timedelta(MODEL_STEP).total_seconds()
    bound = pd.DataFrame({part: share_bound(part, steps.loc[clean, part], seconds) for part in CPU_PARTS})
    assert (off[list(CPU_PARTS)] <= bound).all().all(), (off[list(CPU_PARTS)] - bound).max()
    assert (off[[NET_IN, NET_OUT]] < 0.01).all().all(), off[[NET_IN, NET_OUT]].max()
    # Gauges are read at the step's end (the tick there) and stay near the step's mean.
    raw = truth.rename(columns={SERVER_NAME: SERVER}).set_index([SERVER, TIMESTAMP])
    ends = pd.MultiIndex.from_arrays([clean.get_level_values(0), clean.get_level_values(1) + pd.Timedelta(minutes=5)])
    at_end = (got.loc[clean, list(GAUGES)].to_numpy() - raw.loc[ends, list(GAUGES)].to_numpy()).max(axis=0)
    assert (np.abs(at_end) < 0.001).all(), dict(zip(GAUGES, at_end, strict=True))
    mean = (got.loc[clean, list(GAUGES)] - steps.loc[clean, list(GAUGES)]).abs().mean()
    assert all(mean[metric] < tolerance for metric, tolerance in MEAN_TOLERANCE.items()), mean
    assert ((got.loc[clean, UPTIME] - steps.loc[clean, UPTIME]).abs() <= 1).all()
    # The ramped host (checked with the rest: the truth has its ramp) is most of its way up when the history ends.
    assert got.loc[RAMPED, MEM_USED].iloc[-1] > 90


def test_scrape_config_names_every_host(fleet: PrometheusFleet) -> None:
    def query(promql: str) -> dict[str, float]:
        answer = httpx.get(f"{fleet.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in answer["data"]["result"]}

    assert query(f'up{{job="{fleet.job}"}}') == dict.fromkeys(fleet.instances.values(), 1.0)
    nodenames = httpx.get(f"{fleet.url}/api/v1/series", params={"match[]": "node_uname_info"}, timeout=10).json()
    assert {s["instance"]: s["nodename"] for s in nodenames["data"]} == {i: h for h, i in fleet.instances.items()}
    cpus = query('count by (instance) (node_cpu_seconds_total{mode="idle"})')
    assert all(cpus[fleet.instances[host]] == fleet.fleet.cpus[row] for row, host in enumerate(fleet.hosts))


def test_live_scrapes_carry_on_from_the_history(fleet: PrometheusFleet, truth: pd.DataFrame) -> None:
    """Across the seam and live, each rate lies within the simulator's values over its window and each gauge is
    one of its recent ticks'. Traffic is held only to half its lowest value there: Prometheus extrapolates a rate
    less where a window's samples are uneven (30 s apart in the history, seconds apart live), which CPU shares
    (ratios of counters sampled together) do not feel. Runs before the drives, which the truth does not know of."""
    time.sleep(max(0.0, (fleet.live + LIVE - datetime.now(UTC)).total_seconds()))
    step = timedelta(seconds=10)
    start, end = fleet.history[1] - timedelta(minutes=2), datetime.now(UTC) - SETTLED
    frame, described = query_prometheus(fleet.url, start, end, step=step, progress=False)
    got = _wide(frame, fleet.hosts)
    assert set(got.index.get_level_values(SERVER)) == set(fleet.hosts)
    evaluated = got.index.get_level_values(TIMESTAMP) + step
    assert evaluated.max() >= fleet.live + LIVE - step - SETTLED  # whole steps only
    cpu = got[list(CPU_PARTS)]
    unsplit = (cpu.sum(axis=1) - 100).abs() >= CPU_SUM_TOLERANCE
    assert not unsplit.any(), cpu[unsplit]
    # The ticks a window of samples ending at T meets: those in (T - window - interval, T], T's own included.
    interval = f"{fleet.fleet.interval:g}s"
    span = f"{described['rate_window_seconds'] + fleet.fleet.interval:g}s"
    raw = truth.set_index(TIMESTAMP).groupby(SERVER_NAME)[[*RATES, *GAUGES]]
    at = pd.MultiIndex.from_arrays([got.index.get_level_values(SERVER), evaluated.floor(interval)])
    low = raw.rolling(span, closed="right").min().loc[at].set_axis(got.index)
    high = raw.rolling(span, closed="right").max().loc[at].set_axis(got.index)
    # CPU seconds count in 1/100 s: over two samples 30 s apart a share is good to 0.07 points.
    slack = pd.Series({metric: 0.1 if metric in CPU_PARTS else 0.01 for metric in low.columns})
    floor = pd.Series({metric: 0.5 if metric in (NET_IN, NET_OUT) else 1.0 for metric in low.columns})
    outside = (got[low.columns] < low * floor - slack) | (got[high.columns] > high + slack)
    assert not outside.any().any(), got[outside.any(axis=1)]
    assert got.loc[RAMPED, MEM_USED].iloc[-1] > RAMP_TO - 1  # at the top of its ramp since the history's end
    # What a rate does depend on is exact: a counter's growth from the history's last sample (backfilled at its
    # timestamp) over the seam to every live scrape is the simulator's traffic in between, read when the scrape was
    # answered: at or after its timestamp, within the scrape timeout (the scrape interval) of it.
    seconds = round((datetime.now(UTC) - fleet.history[1]).total_seconds()) + 60
    answer = httpx.get(
        f"{fleet.url}/api/v1/query",
        params={"query": f'node_network_receive_bytes_total{{job="{fleet.job}",device="eth0"}}[{seconds}s]'},
        timeout=10,
    ).json()
    ticks = truth.pivot(index=TIMESTAMP, columns=SERVER_NAME, values=NET_IN) * BYTES_PER_MB
    first = ticks.index[0].timestamp()
    grown = np.vstack([np.zeros(len(ticks.columns)), np.cumsum(ticks.to_numpy() * fleet.fleet.interval, axis=0)])
    hosts = {instance: host for host, instance in fleet.instances.items()}

    def integral(at: np.ndarray, row: int) -> np.ndarray:
        k = ((at - first) // fleet.fleet.interval).astype(int)
        return grown[k, row] + ticks.to_numpy()[k, row] * (at - first - k * fleet.fleet.interval)

    seams = 0
    for series in answer["data"]["result"]:
        host = hosts[series["metric"]["instance"]]
        if host not in ticks.columns:
            continue  # this host's own node_exporter
        row = ticks.columns.get_loc(host)
        stamps, values = np.array(series["values"], dtype=float).T
        seam = int(np.searchsorted(stamps, fleet.history[1].timestamp()))
        live = stamps[seam:]
        grew = values[seam:] - values[seam - 1]
        since = integral(stamps[seam - 1 : seam], row)
        low, high = integral(live, row) - since, integral(live + SCRAPE_ANSWERED_WITHIN, row) - since
        assert ((grew >= low - 1) & (grew <= high + 1)).all(), (host, grew - low, high - low)  # whole bytes
        seams += int(stamps[seam] > fleet.live.timestamp())
    assert seams == len(fleet.hosts)


def _exposed(fleet: PrometheusFleet, host: str) -> dict[str, float]:
    """Memory used and CPU-mode counters summed over CPUs, as the host's /metrics shows them now."""
    text = httpx.get(f"{fleet.exposer}/hosts/{host}/metrics", timeout=10).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = f"cpu_{sample.labels['mode']}" if family.name == "node_cpu_seconds" else sample.name
            values[key] = values.get(key, 0.0) + sample.value
    values[MEM_USED] = 100 * (1 - values["node_memory_MemAvailable_bytes"] / values["node_memory_MemTotal_bytes"])
    return values


def test_drive_and_recover_over_http(fleet: PrometheusFleet, simulated: pd.DataFrame) -> None:
    state = fleet.drive(DRIVEN, {MEM_USED: 97.5, CPU_USER: 90.0}, ramp_seconds=0)
    assert state["metrics"][MEM_USED] == 97.5 and state["metrics"][CPU_USER] == 90.0
    assert abs(sum(state["metrics"][part] for part in CPU_PARTS) - 100) < CPU_SUM_TOLERANCE
    before = _exposed(fleet, DRIVEN)
    time.sleep(2.0)
    after = _exposed(fleet, DRIVEN)
    assert abs(after[MEM_USED] - 97.5) < 0.001
    grown = {mode: after[mode] - before[mode] for mode in after if mode.startswith("cpu_")}
    seconds = sum(grown.values()) / fleet.fleet.cpus[fleet.fleet.row(DRIVEN)]  # per core, as each CPU counts
    user = 100 * sum(grown[f"cpu_{mode}"] for mode in CPU_MODES[CPU_USER]) / sum(grown.values())
    assert abs(user - 90.0) <= share_bound(CPU_USER, 90.0, seconds)  # about 4 points over 2 s: the drive shows
    instance = fleet.instances[DRIVEN]
    promql = f'100 * (1 - node_memory_MemAvailable_bytes{{instance="{instance}"}} / node_memory_MemTotal_bytes)'
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        result = httpx.get(f"{fleet.url}/api/v1/query", params={"query": promql}, timeout=10).json()["data"]["result"]
        if result and abs(float(result[0]["value"][1]) - 97.5) < 0.001:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"Prometheus did not see {DRIVEN}'s driven memory: {result}")
    for host in (DRIVEN, RAMPED):
        state = fleet.recover(host, ramp_seconds=0)
        tick = pd.Timestamp(fleet.history[0]) + pd.Timedelta(
            seconds=(state["time"] - fleet.fleet.start) // fleet.fleet.interval * fleet.fleet.interval
        )
        values = simulated[(simulated[SERVER_NAME] == host) & (simulated[TIMESTAMP] == tick)].iloc[0]
        assert state["drives"] == {} and state["metrics"][MEM_USED] == pytest.approx(values[MEM_USED], abs=1e-6)
    bad = httpx.post(f"{fleet.exposer}/hosts/{DRIVEN}/drive", json={"metrics": {UPTIME: 3}}, timeout=10)
    assert bad.status_code == 400 and "cannot drive 'uptime_days'" in bad.json()["error"]
    assert httpx.get(f"{fleet.exposer}/hosts/nosuchhost/metrics", timeout=10).status_code == 404


def test_a_drive_ramps_holds_and_recovers(fleet: PrometheusFleet, simulated: pd.DataFrame) -> None:
    """On the clock a LiveFleet is given: linear from where the metric was, held, back to the simulator."""
    live = LiveFleet(fleet.fleet)
    host = simulated[simulated[SERVER_NAME] == DRIVEN].set_index(TIMESTAMP)

    def tick(at: float) -> pd.Series:
        return host.loc[pd.Timestamp(at // fleet.fleet.interval * fleet.fleet.interval, unit="s", tz="UTC")]

    t0 = time.time()
    start = live.drive(DRIVEN, {MEM_USED: 99.0, "cpu_idle_pct": 5.0}, ramp_seconds=600, at=t0)["metrics"]
    assert start[MEM_USED] == pytest.approx(tick(t0)[MEM_USED])  # nothing moves at the drive's own moment
    half = live.state(DRIVEN, at=t0 + 300)["metrics"]
    done = (t0 + 300) // fleet.fleet.interval * fleet.fleet.interval
    share = (done - t0) / 600
    assert half[MEM_USED] == pytest.approx(start[MEM_USED] + share * (99.0 - start[MEM_USED]), abs=1e-3)
    held = live.state(DRIVEN, at=t0 + 700)["metrics"]
    assert held[MEM_USED] == 99.0 and held["cpu_idle_pct"] == pytest.approx(5.0)
    assert sum(held[part] for part in CPU_PARTS) == pytest.approx(100.0)
    live.recover(DRIVEN, ramp_seconds=120, at=t0 + 700)
    back = live.state(DRIVEN, at=t0 + 900)
    assert back["drives"] == {}
    assert back["metrics"][MEM_USED] == pytest.approx(tick(t0 + 900)[MEM_USED])
    assert back["metrics"][CPU_USER] == pytest.approx(tick(t0 + 900)[CPU_USER])


def test_an_outage_answers_nothing_and_ends_in_a_reboot() -> None:
    """ppweb005 is offline on 2026-01-05 from about 07:45 to 09:15 (seed 42): no exposition then, and after it
    the boot time has moved on and every counter has started again from 0, as on a real host."""
    live = LiveFleet(ExporterFleet(SimulationConfig(fleet=[("ppweb005", None)], interval="30s")))

    def at(hour: int, minute: int) -> float:
        return datetime(2026, 1, 5, hour, minute, tzinfo=UTC).timestamp()

    def exposed(when: float) -> dict[str, float]:
        text = live.exposition("ppweb005", at=when)
        assert text is not None
        families = text_string_to_metric_families(text)
        return {f"{s.name}{sorted(s.labels.items())}": s.value for family in families for s in family.samples}

    before = exposed(at(7, 30))
    assert live.exposition("ppweb005", at=at(8, 30)) is None
    after = exposed(at(9, 30))
    boot = "node_boot_time_seconds[]"
    assert at(9, 10) <= after[boot] <= at(9, 20) and before[boot] < at(0, 0)
    counters = [key for key in after if "_total" in key]
    assert counters and all(after[key] < before[key] for key in counters if "idle" in key or "eth0" in key)
    idle = "node_cpu_seconds_total[('cpu', '0'), ('mode', 'idle')]"
    assert after[idle] <= at(9, 30) - after[boot]  # at most one second a second since it booted
