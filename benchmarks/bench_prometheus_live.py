"""Time the live Prometheus cycle (issue 28): pull -> forecast -> export -> Alertmanager, per fleet size.

Run: python benchmarks/bench_prometheus_live.py [--hosts 90 1000] [--repeats 10] [--hours 4] [--interval 60s]

Why: with `tftmon serve --prometheus` the service pulls every host's node_exporter metrics once per model step
instead of being fed them; the issue's speed targets are that this whole cycle costs within 10 % of one step's
forecast today at 90 hosts (the /feed path, where the windows are already filled) and fits in one model step
(300 s) at 1,000 hosts. Everything here is the real thing but the hosts: the simulated node_exporter fleet
(tftmon.data.simulate.node_exporter, at most `--max-cpus` CPUs per host to keep the series count sane) is
backfilled with promtool into Debian's Prometheus; Debian's Alertmanager takes the alerts (tests/alertmanager_stack.py).

What is timed, per fleet size:
- backfill: the fleet's history (`--hours`, longer if the repeats need it) written as TSDB blocks;
- pull, initial: `PrometheusSource.pull` of every host's encoder window at the model step, a fresh source and
  fresh windows each repeat (what a restarted service does first);
- pull, incremental: the steady state. The cycles walk through the backfilled history one model step at a time,
  each pull at `now` = the step's end + SETTLE_SECONDS as the service's loop times it, so every repeat reads one
  whole step of every host from where the last left off (same source, same windows). The same ranges are then
  read again with `query_prometheus` and the source's own arguments, to show Prometheus's share;
- cycle: pull (+ `LiveFleet.restamp`, as the pull loop does) -> forecast (`LiveFleet.refresh`) -> export (what
  `/metrics/forecasts` does for the first scrape after a forecast: labels, ages, `ForecastExporter.render`) ->
  Alertmanager (`AlertmanagerSink.sync` with each alert's scrape labels, as `_post_alerts`). Sending is
  asynchronous: the sync call is timed, and separately how long until the sink's stats show nothing pending.
  The sink is given a clock one model step further per cycle (from the wall clock), as in the service, where
  5 min pass between syncs, so every critical alert is re-posted each cycle (resend 60 s);
- forecast alone ("one step's forecast time today"): right after each cycle, a fresh `LiveFleet` forecasts the
  same windows (its `refresh`), paired with the cycle's own forecast;
- export: `render_forecasts` from the real forecasts (every series rebuilt) and a scrape with the text kept.

The model has the DEFAULT network (TrainConfig's hidden size, heads, quantiles, 3 h encoder) on the 11 metrics
node_exporter has a source for, trained for one epoch of a few batches on a small simulated fleet: forecast time
depends on the network's size and the number of hosts, not on how well it is trained. `--critical` of the hosts
have their I/O wait driven to 80 % over the hour before the timed steps, so there are critical alerts to send.

Not in the figures: the service's refresh loop polls every `refresh_seconds` (2 s), so a forecast there starts up to
2 s after its pull ends (latency, not work); here each part runs straight after the last. The history is read
from the blocks promtool wrote, not from Prometheus's in-memory head as live scrapes would be (a one-step pull
at 90 hosts measured alike from both). `--max-cpus 0` gives every host the simulator's CPU count (8-128): ten
times the series, nearly all of them node_cpu_seconds_total, which the four CPU-share queries each read.

Nothing is written into the repository (temp directories only). Torch runs on the service's thread count
(ServiceConfig.torch_threads) and the heap is frozen after loading, as the service does. The machine may be
shared: the 1-minute load is printed before and after each fleet size; CPU seconds of this process and of
Prometheus are shown beside the pull's wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make `tests` importable
from tests.alertmanager_stack import BINARIES as ALERTMANAGER_BINARIES  # noqa: E402
from tests.alertmanager_stack import INSTALL as ALERTMANAGER_INSTALL  # noqa: E402
from tests.alertmanager_stack import alertmanager, receiver  # noqa: E402
from tests.prometheus_stack import BINARIES, INSTALL, prometheus  # noqa: E402
from tftmon.config import ServiceConfig, SimulationConfig, TrainConfig  # noqa: E402
from tftmon.contract import CPU_IOWAIT, MODEL_STEP  # noqa: E402
from tftmon.data.ingest.prometheus import DEFAULT_QUERIES, query_prometheus  # noqa: E402
from tftmon.data.simulate.node_exporter import JOB, Drive, ExporterFleet, backfill  # noqa: E402
from tftmon.serve.alertmanager import AlertmanagerSink  # noqa: E402
from tftmon.serve.alerts import AlertBook  # noqa: E402
from tftmon.serve.exporter import ForecastExporter, render_forecasts  # noqa: E402
from tftmon.serve.live import LiveFleet, LiveWindows, LoadedModel, ModelSlot, UnknownTracker  # noqa: E402
from tftmon.serve.prometheus_source import SETTLE_SECONDS, PrometheusSource  # noqa: E402

#: The service's settings as `tftmon serve` starts with them (no environment overrides expected here).
CONFIG = ServiceConfig()
STEP_S = MODEL_STEP.total_seconds()
#: Steps of history before the initial pull's window, so the first step's rate() has samples behind it.
MARGIN_STEPS = 2
#: Where the driven hosts' metrics are held: I/O wait past every profile's critical level (50 % at most), which
#: even this barely trained model forecasts as critical (99 % memory it forecasts only as a warning).
DRIVEN = {CPU_IOWAIT: 80.0}
#: Waiting for the sink to deliver one sync's alert states (s): past this, the cycle is reported undelivered.
DELIVERY_TIMEOUT = 60.0


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def pct(values: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 (linear interpolation; with few repeats p99 is close to the maximum)."""
    if not values:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(np.asarray(values, dtype=float), [50, 99])
    return float(p50), float(p99)


def cell(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    p50, p99 = pct(values)
    return f"{p50 * scale:.{digits}f} / {p99 * scale:.{digits}f}"


def child_cpu(command: str) -> float:
    """CPU seconds (user + system) of this process's children named `command` (Prometheus: 'prometheus')."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            if comm == command and int(fields[1]) == os.getpid():
                total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@dataclass
class Clock:
    """Wall seconds, this process's CPU seconds and Prometheus's CPU seconds of one timed call."""

    wall: float = 0.0
    cpu: float = 0.0
    prometheus: float = 0.0


@contextlib.contextmanager
def timed() -> Iterator[Clock]:
    clock = Clock()
    wall, cpu, prom = time.perf_counter(), time.process_time(), child_cpu("prometheus")
    yield clock
    clock.wall = time.perf_counter() - wall
    clock.cpu = time.process_time() - cpu
    clock.prometheus = child_cpu("prometheus") - prom


def load() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


def train_model(servers: int, hours: float, batches: int, seed: int) -> tuple[LoadedModel, dict[str, Any]]:
    """The default network on node_exporter's 11 metrics, trained for one epoch of `batches` batches."""
    from tftmon.data.simulate import simulate
    from tftmon.model.train import fit

    config = TrainConfig(
        targets=list(DEFAULT_QUERIES), max_epochs=1, max_batches_per_epoch=batches, max_val_batches=1,
        progress_bar=False, accelerator="cpu", devices=1, seed=seed,
    )  # fmt: skip
    data = simulate(SimulationConfig(servers=servers, hours=hours, seed=seed))
    started = time.perf_counter()
    model, _ = fit(data, config)
    seconds = time.perf_counter() - started
    net = config.model
    facts = {
        "hidden": net.hidden_size,
        "heads": net.attention_head_size,
        "continuous": net.hidden_continuous_size,
        "lstm_layers": net.lstm_layers,
        "quantiles": len(net.quantiles),
        "encoder_hours": config.encoder_hours,
        "targets": len(model.config.targets),
        "parameters": sum(p.numel() for p in model.network.parameters()),
        "train_seconds": seconds,
        "train": f"{servers} servers x {hours:g} h, 1 epoch x {batches} batches of {config.batch_size}",
    }
    return LoadedModel("bench", model, datetime.now(UTC)), facts


# ---------------------------------------------------------------------------------------------
# One fleet size
# ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    hosts: int
    series: int = 0
    samples: int = 0
    history: str = ""
    backfill_s: float = 0.0
    prometheus_start_s: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0
    initial_rows: int = 0
    step_rows: int = 0
    initial: list[Clock] = field(default_factory=list)
    initial_query: list[float] = field(default_factory=list)
    restart_forecast_s: float = 0.0
    pull: list[Clock] = field(default_factory=list)
    step_query: list[float] = field(default_factory=list)
    forecast: list[float] = field(default_factory=list)
    export: list[float] = field(default_factory=list)
    sync: list[float] = field(default_factory=list)
    delivered: list[float] = field(default_factory=list)
    posted: list[int] = field(default_factory=list)
    critical: list[int] = field(default_factory=list)
    alone: list[float] = field(default_factory=list)
    undelivered: int = 0
    render: list[float] = field(default_factory=list)
    scrape: list[float] = field(default_factory=list)
    body_bytes: int = 0
    body_series: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def cycle(self) -> list[float]:
        return [p.wall + f + e + s for p, f, e, s in zip(self.pull, self.forecast, self.export, self.sync, strict=True)]


def critical_hosts(hosts: int, share: float, seed: int) -> list[str]:
    """Every k-th host by name (at least one), driven to critical I/O wait."""
    from tftmon.data.simulate import build_fleet

    names = sorted(s.name for s in build_fleet(SimulationConfig(servers=hosts, seed=seed)))
    count = max(1, round(hosts * share)) if share > 0 else 0
    return names[:: max(1, len(names) // count)][:count] if count else []


def new_live(slot: ModelSlot, windows: LiveWindows) -> LiveFleet:
    """A LiveFleet as the service builds one."""
    return LiveFleet(
        slot,
        windows,
        AlertBook(CONFIG.alert_history, CONFIG.resolve_after),
        UnknownTracker(CONFIG.unknown_rate_window_seconds, CONFIG.max_unknown_names),
        CONFIG.forecast_every_seconds or STEP_S,
        summaries=CONFIG.fleet_history,
        stale_after_seconds=CONFIG.stale_after_seconds,
    )


def new_source(url: str, loaded: LoadedModel) -> tuple[PrometheusSource, LiveWindows]:
    """A source and its windows as the service has them after installing the model."""
    windows = LiveWindows(CONFIG.max_live_servers, CONFIG.max_live_window_mib << 20)
    windows.set_encoder_steps(loaded.encoder_steps)
    source = PrometheusSource(url, windows, resolution=MODEL_STEP, timeout_seconds=CONFIG.prometheus_timeout_seconds)
    source.use_model(loaded.targets, loaded.encoder_steps)
    return source, windows


def export(live: LiveFleet, source: PrometheusSource, exporter: ForecastExporter, now: datetime) -> bytes:
    """What the /metrics/forecasts handler does."""
    predictions = live.cache["predictions"]
    labels = source.targets()
    return exporter.render(predictions, labels, live.ages(now))


def post_alerts(live: LiveFleet, source: PrometheusSource, sink: AlertmanagerSink, now: datetime) -> None:
    """What the service's _post_alerts does."""
    targets = source.targets()
    labelled = [{**alert, "labels": targets.get(alert["server_name"], {})} for alert in live.alerts.active.values()]
    sink.sync(labelled, now)


def delivered(sink: AlertmanagerSink, since: float) -> float | None:
    """Seconds from `since` (perf_counter) until nothing is pending; None past DELIVERY_TIMEOUT."""
    deadline = since + DELIVERY_TIMEOUT
    while time.perf_counter() < deadline:
        if all(stats["pending"] == 0 for stats in sink.stats().values()):
            return time.perf_counter() - since
        time.sleep(0.002)
    return None


def sent(sink: AlertmanagerSink) -> int:
    return sum(stats["posted"] + stats["failed"] for stats in sink.stats().values())


def measure(hosts: int, loaded: LoadedModel, slot: ModelSlot, args: argparse.Namespace, tmp: Path) -> Result:
    """Backfill, start Prometheus and Alertmanager, then every timing of one fleet size."""
    result = Result(hosts, load_before=load())
    encoder = loaded.encoder_steps
    end = pd.Timestamp(datetime.now(UTC)).floor(MODEL_STEP).to_pydatetime()
    cycles_from = end - (args.repeats + 1) * MODEL_STEP  # the initial pull's step end; the cycles follow it
    need = (encoder + 1 + MARGIN_STEPS + args.repeats + 1) * MODEL_STEP
    history = max(pd.Timedelta(hours=args.hours).to_pytimedelta(), need)
    start = (pd.Timestamp(end - history)).floor(MODEL_STEP).to_pydatetime()
    hours, minutes = divmod(round((end - start).total_seconds() / 60), 60)
    result.history = f"{hours} h{f' {minutes} min' if minutes else ''} at {args.interval}"
    driven = critical_hosts(hosts, args.critical, args.seed)
    drives = [Drive(h, DRIVEN, cycles_from - timedelta(hours=1), timedelta(minutes=30)) for h in driven]
    fleet = ExporterFleet(
        SimulationConfig(servers=hosts, start=start, interval=args.interval, seed=args.seed),
        drives=drives,
        max_cpus=args.max_cpus or None,
    )
    result.series = sum(len(series) for series in fleet.series)
    filled = backfill(fleet, tmp / "tsdb", end, job=JOB)
    result.samples, result.backfill_s = filled.samples, filled.seconds
    print(
        f"  {hosts} hosts: backfilled {filled.samples:,} samples of {result.series:,} series ({result.history}) "
        f"in {filled.seconds:.1f} s",
        flush=True,
    )
    with contextlib.ExitStack() as daemons:
        started = time.perf_counter()
        url = daemons.enter_context(prometheus(tmp, tmp / "tsdb", [], "60s", []))
        result.prometheus_start_s = time.perf_counter() - started
        hook = daemons.enter_context(receiver())
        am = daemons.enter_context(alertmanager(tmp / "alertmanager", hook.url))
        sink = AlertmanagerSink(
            [am],
            service_url=f"http://{CONFIG.host}:{CONFIG.port}/alerts/active",
            resend_seconds=CONFIG.alertmanager_resend_seconds,
            evaluation_seconds=STEP_S,
        )
        daemons.callback(sink.close)
        settle = timedelta(seconds=SETTLE_SECONDS)
        first_now = cycles_from + settle

        # 1. The initial (back-fill) pull, a fresh source each time.
        unread = {m: None for m in DEFAULT_QUERIES if m not in loaded.targets}
        for _ in range(args.repeats):
            source, windows = new_source(url, loaded)
            with timed() as clock:
                pulled = source.pull(first_now)
            if pulled is None or not pulled.rows:
                raise RuntimeError(f"the initial pull read nothing: {source.status()}")
            result.initial.append(clock)
            result.initial_rows = pulled.rows
            started = time.perf_counter()
            query_prometheus(
                url, first_now - MODEL_STEP * (encoder + 1), first_now, step=MODEL_STEP, progress=False,
                queries=unread, timeout=CONFIG.prometheus_timeout_seconds,
            )  # fmt: skip
            result.initial_query.append(time.perf_counter() - started)
        status = source.status()
        if status["hosts_missing_metrics"] or status["metrics_missing"]:
            result.notes.append(f"hosts missing metrics: {len(status['hosts_missing_metrics'])}")

        # 2. A restart's first forecast, then the cycles, one model step of history each.
        live = new_live(slot, windows)
        exporter = ForecastExporter()
        started = time.perf_counter()
        if not live.refresh():
            raise RuntimeError("the first forecast after the back-fill did not run")
        result.restart_forecast_s = time.perf_counter() - started
        wall = datetime.now(UTC)
        export(live, source, exporter, first_now)
        post_alerts(live, source, sink, wall)
        delivered(sink, time.perf_counter())
        ranges = []
        for i in range(1, args.repeats + 1):
            now = first_now + i * MODEL_STEP
            read_from = datetime.fromisoformat(source.status()["read_to"])
            with timed() as clock:
                pulled = source.pull(now)
                live.restamp(now)
            if pulled is None or not pulled.rows:
                raise RuntimeError(f"the pull of step {i} read nothing: {source.status()}")
            ranges.append((read_from, now))
            result.pull.append(clock)
            result.step_rows = pulled.rows
            started = time.perf_counter()
            if not live.refresh():
                raise RuntimeError(f"step {i} was not forecast")
            result.forecast.append(time.perf_counter() - started)
            started = time.perf_counter()
            body = export(live, source, exporter, now)
            result.export.append(time.perf_counter() - started)
            before = sent(sink)
            started = time.perf_counter()
            post_alerts(live, source, sink, wall + i * MODEL_STEP)
            result.sync.append(time.perf_counter() - started)
            took = delivered(sink, started)
            if took is None:
                result.undelivered += 1
            result.posted.append(sent(sink) - before)
            if result.posted[-1]:
                result.delivered.append(took if took is not None else DELIVERY_TIMEOUT)
            result.critical.append(live.alerts.counts()["critical"])
            started = time.perf_counter()  # the same windows, forecast alone: the /feed path's cost
            if not new_live(slot, windows).refresh():
                raise RuntimeError("the forecast alone did not run")
            result.alone.append(time.perf_counter() - started)
            print(
                f"    step {i}: cycle {result.cycle[-1]:.2f} s (pull {clock.wall:.2f}, forecast "
                f"{result.forecast[-1]:.2f}), forecast alone {result.alone[-1]:.2f} s",
                flush=True,
            )
        for read_from, now in ranges:  # Prometheus's share of the incremental pulls: the same ranges again
            started = time.perf_counter()
            query_prometheus(
                url, read_from, now, step=MODEL_STEP, progress=False, queries=unread,
                timeout=CONFIG.prometheus_timeout_seconds,
            )  # fmt: skip
            result.step_query.append(time.perf_counter() - started)

        # 3. The exported text from the real forecasts.
        predictions = live.cache["predictions"]
        labels = source.targets()
        ages = live.ages(now)
        result.body_bytes = len(body)
        result.body_series = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
        for _ in range(args.repeats):
            started = time.perf_counter()
            render_forecasts(predictions, labels, ages, now=now)
            result.render.append(time.perf_counter() - started)
            started = time.perf_counter()
            export(live, source, exporter, now)
            result.scrape.append(time.perf_counter() - started)
    result.load_after = load()
    return result


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def verdict(value: float, limit: float) -> str:
    """Met or missed, and by how many seconds."""
    if value <= limit:
        return f"**met** by {limit - value:.2f} s"
    return f"**missed** by {value - limit:.2f} s"


def report(results: list[Result], facts: dict[str, Any], args: argparse.Namespace, command: str) -> None:
    print(f"\n`{command}`\n")
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, torch threads {CONFIG.torch_threads}. Model: "
        f"hidden {facts['hidden']}, {facts['heads']} heads, continuous {facts['continuous']}, {facts['quantiles']} "
        f"quantiles, {facts['encoder_hours']:g} h encoder, {facts['targets']} targets, {facts['parameters']:,} "
        f"parameters; trained {facts['train']} in {facts['train_seconds']:.0f} s (forecast time depends on the "
        f"network's size, not its training). p50 / p99 over {args.repeats} repeats.\n"
    )
    cpus = args.max_cpus or "all"
    print(f"| hosts | series (max CPUs {cpus}) | samples | history | backfill s | Prometheus start s | "
          "load before → after |")  # fmt: skip
    print("|---:|---:|---:|---|---:|---:|---|")
    for r in results:
        print(
            f"| {r.hosts:,} | {r.series:,} | {r.samples:,} | {r.history} | {r.backfill_s:.1f} | "
            f"{r.prometheus_start_s:.1f} | {r.load_before:.2f} → {r.load_after:.2f} |"
        )
    print("\n**Pull** (`PrometheusSource.pull`, wall p50 / p99 s; CPU p50 s of this process and of Prometheus)\n")
    print("| hosts | pull | steps | rows appended | wall p50 / p99 s | "
          "`query_prometheus` alone, same ranges, p50 / p99 s | CPU here | CPU Prometheus |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for name, steps, rows, clocks, query in (
            ("initial (encoder window)", f"{facts['encoder_steps']}", r.initial_rows, r.initial, r.initial_query),
            ("incremental (one step)", "1", r.step_rows, r.pull, r.step_query),
        ):
            print(
                f"| {r.hosts:,} | {name} | {steps} | {rows:,} | {cell([c.wall for c in clocks], digits=3)} | "
                f"{cell(query, digits=3)} | {pct([c.cpu for c in clocks])[0]:.3f} | "
                f"{pct([c.prometheus for c in clocks])[0]:.3f} |"
            )
    print("\n**Cycle** (p50 / p99 s; the incremental pull includes `LiveFleet.restamp`)\n")
    print("| hosts | pull | forecast | export | Alertmanager sync | **cycle** | forecast alone (/feed today) | "
          "cycle ÷ forecast alone (p50) | restart: initial pull + first forecast |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = pct(r.cycle)[0] / pct(r.alone)[0]
        print(
            f"| {r.hosts:,} | {cell([c.wall for c in r.pull], digits=3)} | {cell(r.forecast)} | "
            f"{cell(r.export, digits=3)} | {cell(r.sync, 1000, 1)} ms | **{cell(r.cycle)}** | {cell(r.alone)} | "
            f"{ratio:.2f} | {pct([c.wall for c in r.initial])[0]:.2f} + {r.restart_forecast_s:.2f} |"
        )
    print("\n| hosts | critical alerts | alert states posted per cycle | delivered after sync p50 / p99 ms | "
          "undelivered syncs |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.hosts:,} | {int(np.median(r.critical))} | {int(np.median(r.posted))} | "
            f"{cell(r.delivered, 1000, 1)} | {r.undelivered} |"
        )
    print("\n**Targets**\n")
    print("| hosts | cycle p50 s | forecast alone p50 s | cycle − forecast alone | "
          "cycle ≤ 1.1 × forecast alone (p50) | cycle ≤ one model step, 300 s (p99) |")  # fmt: skip
    print("|---:|---:|---:|---:|---|---|")
    for r in results:
        (cycle, cycle99), alone = pct(r.cycle), pct(r.alone)[0]
        print(
            f"| {r.hosts:,} | {cycle:.2f} | {alone:.2f} | {cycle - alone:+.2f} s ({(cycle - alone) / alone:+.0%}) | "
            f"{verdict(cycle, 1.1 * alone)} | {verdict(cycle99, STEP_S)} ({cycle99 / STEP_S:.1%} of the step) |"
        )
    print("\n**Export** (`/metrics/forecasts` from the real forecasts)\n")
    print("| hosts | series | body MiB | `render_forecasts` p50 / p99 ms | scrape, forecast text kept p50 / p99 ms |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.hosts:,} | {r.body_series:,} | {r.body_bytes / 2**20:.2f} | {cell(r.render, 1000, 1)} | "
            f"{cell(r.scrape, 1000, 1)} |"
        )
    for r in results:
        for note in r.notes:
            print(f"\nNote ({r.hosts} hosts): {note}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )  # fmt: skip
    parser.add_argument("--hosts", type=int, nargs="+", default=[90, 1000], help="fleet sizes, each measured in turn")
    parser.add_argument("--repeats", type=int, default=10, help="initial pulls, cycles and renders per fleet size")
    parser.add_argument("--hours", type=float, default=4.0, help="history backfilled (longer if the repeats need it)")
    parser.add_argument("--interval", default="60s", help="the simulated scrape interval of the history")
    parser.add_argument(
        "--max-cpus", type=int, default=2, help="CPUs per host at most (8 series each; 0: the simulator's 8-128)"
    )
    parser.add_argument("--critical", type=float, default=0.02, help="share of hosts driven to critical I/O wait")
    parser.add_argument("--train-servers", type=int, default=12, help="servers of the model's training fleet")
    parser.add_argument("--train-hours", type=float, default=72.0, help="hours of the model's training fleet")
    parser.add_argument("--train-batches", type=int, default=4, help="batches of the model's one epoch")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats must be at least 2")
    missing = [name for name in (*BINARIES, *ALERTMANAGER_BINARIES) if shutil.which(name) is None]
    if missing:
        sys.exit(f"{', '.join(missing)} not installed: {INSTALL}; {ALERTMANAGER_INSTALL}")
    command = (
        f"python benchmarks/bench_prometheus_live.py --hosts {' '.join(map(str, args.hosts))} --repeats "
        f"{args.repeats} --hours {args.hours:g} --interval {args.interval} --max-cpus {args.max_cpus} --critical "
        f"{args.critical:g} --train-servers {args.train_servers} --train-hours {args.train_hours:g} --train-batches "
        f"{args.train_batches} --seed {args.seed}"
    )
    import torch

    torch.set_num_threads(CONFIG.torch_threads)
    print(f"load {load():.2f}: training the model ...", flush=True)
    loaded, facts = train_model(args.train_servers, args.train_hours, args.train_batches, args.seed)
    facts["encoder_steps"] = loaded.encoder_steps
    slot = ModelSlot(lambda: loaded)
    slot.reload()  # the smoke test, as the service's
    gc.collect()
    gc.freeze()  # as the service's _freeze_heap after a model is installed
    results = []
    for hosts in args.hosts:
        with tempfile.TemporaryDirectory(prefix="bench-prometheus-live-") as tmp:
            results.append(measure(hosts, loaded, slot, args, Path(tmp)))
    report(results, facts, args, command)


if __name__ == "__main__":
    main()
