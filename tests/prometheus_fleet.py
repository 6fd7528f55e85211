"""A simulated fleet of node_exporters in a real Prometheus, beside this host's own node_exporter.

`prometheus_fleet` backfills `hours` of the fleet's history (tftmon.data.simulate.node_exporter) and of this
host's node_exporter (tests/prometheus_stack.py) up to `end`, serves the fleet live from the same simulator,
and starts Debian's Prometheus on that TSDB scraping every host in one job (plus any scrape configs given, e.g.
a tftmon service's forecast endpoint). Everything runs on 127.0.0.1 on free ports and stops on exit.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml

from tests.prometheus_stack import JOB, backfill, node_exporter, prometheus, require_binaries
from tftmon.config import SimulationConfig
from tftmon.contract import MODEL_STEP
from tftmon.data.simulate.node_exporter import (
    DEFAULT_RAMP_SECONDS,
    Drive,
    ExporterFleet,
    Exposer,
    LiveFleet,
    instance,
    scrape_config,
)
from tftmon.data.simulate.node_exporter import backfill as backfill_fleet


@dataclass(frozen=True)
class PrometheusFleet:
    """What a test needs of the running fleet."""

    #: Prometheus's base URL.
    url: str
    #: The simulated hosts (their node_uname_info nodename), sorted.
    hosts: list[str]
    #: Each host's `instance` label, this host's node_exporter (under its nodename) included.
    instances: dict[str, str]
    #: The `job` label of every node_exporter, simulated or real.
    job: str
    #: The exposer's base URL: /hosts/<name>/metrics and /hosts/<name>/drive.
    exposer: str
    #: The backfilled history [start, end).
    history: tuple[datetime, datetime]
    #: When Prometheus started: live scrapes follow.
    live: datetime
    #: The fleet as the exposer serves it (its simulator config reproduces every value).
    fleet: ExporterFleet

    def drive(self, host: str, metrics: Mapping[str, float], ramp_seconds: float = DEFAULT_RAMP_SECONDS) -> dict:
        """Move the host's metrics to these values over the ramp and hold them; the host's state."""
        body = {"metrics": dict(metrics), "ramp_seconds": ramp_seconds}
        response = httpx.post(f"{self.exposer}/hosts/{host}/drive", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def recover(self, host: str, ramp_seconds: float = DEFAULT_RAMP_SECONDS) -> dict:
        """Bring the host's driven metrics back to the simulator's over the ramp; the host's state."""
        response = httpx.request(
            "DELETE", f"{self.exposer}/hosts/{host}/drive", json={"ramp_seconds": ramp_seconds}, timeout=10
        )
        response.raise_for_status()
        return response.json()


def _wait_for_targets(url: str, count: int, timeout: float = 60.0) -> None:
    """Until `count` node_exporters are up (scraped live) and named by node_uname_info."""
    queries = (f'count(up{{job="{JOB}"}} == 1)', "count(node_uname_info)")
    deadline = time.monotonic() + timeout
    seen: list[float] = []
    while time.monotonic() < deadline:
        seen = []
        for query in queries:
            result = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()["data"]["result"]
            seen.append(float(result[0]["value"][1]) if result else 0.0)
        if seen == [count, count]:
            return
        time.sleep(0.5)
    raise TimeoutError(
        f"Prometheus at {url}: {dict(zip(queries, seen, strict=False))} after {timeout:g} s, not {count}"
    )


@contextlib.contextmanager
def prometheus_fleet(
    tmp: Path,
    *,
    hosts: int = 20,
    hours: float = 30.0,
    end: datetime | None = None,
    interval: str = "30s",
    scrape_interval: str = "2s",
    seed: int = 42,
    max_cpus: int | None = None,
    ramps: Mapping[str, Mapping[str, float]] | None = None,
    ramp_hours: float = 2.0,
    hold_hours: float = 0.0,
    scrape_configs: Sequence[Mapping[str, Any] | str] = (),
) -> Iterator[PrometheusFleet]:
    """`hosts` simulated node_exporters and this host's, with `hours` of history up to `end` (default now) at the
    simulator's `interval`, then scraped live every `scrape_interval`.

    `ramps` names hosts whose metrics move from the simulator's values to those given over `ramp_hours` ending
    `hold_hours` before the history ends, and stay there, live too, until recovered (`PrometheusFleet.recover`).
    `max_cpus` caps each host's CPUs (8 series each; backfilling costs ~1.5 µs a sample). `scrape_configs` are more
    scrape_configs entries, as dicts or YAML text. Yields once every node_exporter is up in Prometheus."""
    require_binaries()
    end = end or datetime.now(UTC)
    start = (pd.Timestamp(end) - pd.Timedelta(hours=hours)).floor(MODEL_STEP).to_pydatetime()
    config = SimulationConfig(servers=hosts, start=start, interval=interval, seed=seed)
    ramp, hold = timedelta(hours=ramp_hours), timedelta(hours=hold_hours)
    drives = [Drive(host, dict(metrics), end - hold - ramp, ramp) for host, metrics in (ramps or {}).items()]
    fleet = ExporterFleet(config, drives=drives, max_cpus=max_cpus)
    storage = tmp / "tsdb"
    extra = [yaml.safe_load(entry) if isinstance(entry, str) else dict(entry) for entry in scrape_configs]
    with contextlib.ExitStack() as daemons:
        real = daemons.enter_context(node_exporter(tmp))
        backfill_fleet(fleet, storage, end, job=JOB)
        backfill(real, storage, start, end, interval=pd.Timedelta(interval).to_pytimedelta())
        exposer = daemons.enter_context(Exposer(LiveFleet(fleet)))
        job = scrape_config(exposer.address, fleet.names, job=JOB)
        job["static_configs"].append({"targets": [real]})
        live = datetime.now(UTC)
        url = daemons.enter_context(prometheus(tmp, storage, [], scrape_interval, [job, *extra]))
        _wait_for_targets(url, len(fleet.names) + 1)
        instances = {name: instance(name) for name in fleet.names} | {os.uname().nodename: real}
        yield PrometheusFleet(url, list(fleet.names), instances, JOB, exposer.url, (start, end), live, fleet)
