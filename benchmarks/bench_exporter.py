"""The forecast series' text (tftmon.serve.exporter) at 90 and 1,000 servers (target: well under 100 ms to build).

Run: `python benchmarks/bench_exporter.py [--servers 90 1000] [--repeats 30]`
Input: records shaped as LiveFleet.cache["predictions"] holds them (tests/service/test_exporter.fake_records:
every metric, horizon and quantile; no model). Timed, each `--repeats` times, p50 and p99:

- render: `render_forecasts`, all 132 series per server built from the records (a scrape after a new forecast);
- scrape: `ForecastExporter.render` with the forecast text kept (every other scrape: the forecast changes once
  per 5-min step, Prometheus scrapes every 15-60 s), only the per-server gauges rebuilt;
- prometheus_client: the same samples through its GaugeMetricFamily and generate_latest (the samples already
  in hand, so a lower bound of what building the text with it would cost);
- parse: prometheus_client's text parser over the text, a proxy for what a scrape costs the scraper.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `tests` importable
from tests.service.test_exporter import NOW, fake_records
from tftmon.serve.exporter import ForecastExporter, render_forecasts, series_per_server


def timings(call: Callable[[], object], repeats: int) -> tuple[float, float]:
    """p50 and p99 of `call`, in ms (one untimed warm-up call first)."""
    call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return 1000 * cuts[49], 1000 * cuts[98]


class Parsed:
    """The parsed families of a text, re-exposed through prometheus_client (its Collector protocol)."""

    def __init__(self, text: bytes) -> None:
        self.families = list(text_string_to_metric_families(text.decode()))

    def collect(self) -> list[Metric]:
        gauges = []
        for family in self.families:
            names = list(family.samples[0].labels)
            gauge = GaugeMetricFamily(family.name, family.documentation, labels=names)
            for sample in family.samples:
                gauge.add_metric([sample.labels[n] for n in names], sample.value)
            gauges.append(gauge)
        return gauges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[90, 1000])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for servers in args.servers:
        records = fake_records(servers)
        text = render_forecasts(records, now=NOW)
        exporter = ForecastExporter()
        registry = CollectorRegistry()
        registry.register(Parsed(text))  # type: ignore[arg-type]
        render = timings(lambda records=records: render_forecasts(records, now=NOW), args.repeats)
        scrape = timings(lambda records=records, exporter=exporter: exporter.render(records, now=NOW), args.repeats)
        client = timings(lambda registry=registry: generate_latest(registry), args.repeats)
        parse = timings(lambda text=text: sum(len(f.samples) for f in text_string_to_metric_families(text.decode())),
                        max(3, args.repeats // 5))  # fmt: skip
        samples = sum(1 for line in text.splitlines() if not line.startswith(b"#"))
        assert samples == servers * series_per_server()
        rows.append((servers, samples, len(text) / 2**20, render, scrape, client, parse))
    print(
        f"`python benchmarks/bench_exporter.py --servers {' '.join(map(str, args.servers))} --repeats {args.repeats}`"
    )
    print()
    print("| servers | series | text MiB | render p50 / p99 ms | scrape, forecast kept p50 / p99 ms "
          "| prometheus_client generate_latest p50 / p99 ms | parse p50 / p99 ms |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for servers, samples, mib, *times in rows:
        cells = " | ".join(f"{p50:.1f} / {p99:.1f}" for p50, p99 in times)
        print(f"| {servers:,} | {samples:,} | {mib:.1f} | {cells} |")


if __name__ == "__main__":
    main()
