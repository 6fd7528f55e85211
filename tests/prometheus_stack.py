"""Real Prometheus and node_exporter daemons (Debian's binaries) for the Prometheus ingest test and benchmark.

Both run on 127.0.0.1 on free ports, with explicit flags, a temp config and a temp TSDB (the Debian
package's systemd units and /etc files play no part), each in its own process group, stopped on exit.
History Prometheus never scraped is backfilled with promtool: this host's node_exporter is scraped once
(parsed by prometheus_client) and its series are carried back in time, counters growing at the rate they
grew since boot and the load and available memory wandering, so queries over hours or a day have data.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.dashboard.conftest import stop_group
from tests.serving import free_port
from tftmon.data.ingest.prometheus import DEFAULT_QUERIES

BINARIES = ("prometheus", "promtool", "prometheus-node-exporter")
INSTALL = "apt-get install -y prometheus prometheus-node-exporter"
JOB = "node"
#: Gauges that wander in backfilled history (the rest keep their scraped value: sizes, totals, boot time).
WANDERING = ("node_load1", "node_memory_MemAvailable_bytes")
#: The node_exporter series the default queries read: all a backfill needs.
FAMILIES = frozenset(re.findall(r"\bnode_\w+", " ".join(q.promql for q in DEFAULT_QUERIES.values()))) | {
    "node_uname_info"
}


def require_binaries(binaries: tuple[str, ...] = BINARIES, install: str = INSTALL) -> None:
    """Skip (fail with CI=true) when a Debian binary is missing, naming the install command."""
    missing = [name for name in binaries if shutil.which(name) is None]
    if missing:
        message = f"{', '.join(missing)} not installed: {install} (.ci/run installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def start_daemon(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`command` in its own process group (for stop_group), its output into `log`."""
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_up(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0, auth: tuple[str, str] | None = None
) -> None:
    """Until `url` answers 200 (asked with basic `auth`, if given); a daemon that exits or never answers fails
    with the tail of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2, auth=auth).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up in {timeout:g} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def node_exporter(tmp: Path) -> Iterator[str]:
    """node_exporter on a free port (tcpstat collector on); yields its target (host:port)."""
    target = f"127.0.0.1:{free_port()}"
    textfiles = tmp / "textfile"
    textfiles.mkdir(parents=True, exist_ok=True)
    log = tmp / "node_exporter.log"
    process = start_daemon(
        [
            "prometheus-node-exporter",
            f"--web.listen-address={target}",
            f"--collector.textfile.directory={textfiles}",
            "--collector.tcpstat",  # CLOSE_WAIT counts, for a query given in place of a default
        ],
        log,
    )
    try:
        wait_until_up(f"http://{target}/metrics", process, log)
        yield target
    finally:
        stop_group(process)


@contextlib.contextmanager
def prometheus(
    tmp: Path, storage: Path, targets: list[str], scrape_interval: str = "1s", scrape_configs: list[dict] | None = None
) -> Iterator[str]:
    """Prometheus on a free port over the TSDB at `storage`, scraping `targets` as job JOB (none: no such job)
    and the `scrape_configs` entries given; yields its URL."""
    config = tmp / "prometheus.yml"
    jobs = [{"job_name": JOB, "static_configs": [{"targets": targets}]}] if targets else []
    config.write_text(
        f"global: {{scrape_interval: {scrape_interval}, evaluation_interval: {scrape_interval}}}\n"
        + "scrape_configs:\n"
        + "".join(f"  - {json.dumps(entry)}\n" for entry in [*jobs, *(scrape_configs or [])])
    )
    address = f"127.0.0.1:{free_port()}"
    log = tmp / "prometheus.log"
    process = start_daemon(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={storage}",
         f"--web.listen-address={address}", "--storage.tsdb.retention.time=60d", "--log.level=warn"],
        log,
    )  # fmt: skip
    try:
        wait_until_up(f"http://{address}/-/ready", process, log)
        yield f"http://{address}"
    finally:
        stop_group(process)


def wait_for_samples(url: str, count: int, timeout: float = 60.0) -> None:
    """Until Prometheus holds `count` samples of node_load1 from the last minute."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/api/v1/query", params={"query": "count_over_time(node_load1[1m])"}).json()
        result = answer["data"]["result"]
        if result and float(result[0]["value"][1]) >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"Prometheus at {url} has not scraped {count} samples in {timeout:g} s")


@dataclass
class _Series:
    name: str
    labels: dict[str, str]
    value: float


def scrape(target: str) -> list[_Series]:
    """The node_exporter series the default queries read, as scraped now."""
    text = httpx.get(f"http://{target}/metrics", timeout=10).text
    return [
        _Series(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in FAMILIES
    ]


def _history(
    series: _Series, times: np.ndarray, since_boot: float, boot: float, rng: np.random.Generator
) -> np.ndarray:
    """A series' values at `times` (s): counters grow at their average rate since the host booted `since_boot`
    seconds ago (±50 % per interval, from 0), wandering gauges move up to ±20 % around their value, the rest
    hold it; boot time is the backfill's `boot`."""
    if series.name == "node_boot_time_seconds":
        return np.full(len(times), boot)
    if series.name.endswith("_total"):
        rate = series.value / max(since_boot, 1.0)
        steps = np.diff(times, prepend=times[0]) * rate * rng.uniform(0.5, 1.5, len(times))
        return np.cumsum(steps)
    if series.name in WANDERING:
        walk = np.clip(np.cumsum(rng.normal(0, 0.01, len(times))), -0.2, 0.2)
        return series.value * (1 + walk)
    return np.full(len(times), series.value)


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def backfill(target: str, storage: Path, start: datetime, end: datetime, interval: timedelta, seed: int = 0) -> int:
    """Write this host's node_exporter series (scraped once from `target`) over [start, end) every `interval`
    into TSDB blocks under `storage` with promtool, labelled as Prometheus would scrape them; returns samples."""
    scraped = scrape(target)
    booted = next(s.value for s in scraped if s.name == "node_boot_time_seconds")
    boot = min(booted, start.timestamp() - 86_400)
    times = np.arange(start.timestamp(), end.timestamp(), interval.total_seconds())
    rng = np.random.default_rng(seed)
    memory_total = next((s.value for s in scraped if s.name == "node_memory_MemTotal_bytes"), np.inf)
    lines = []
    for series in sorted(scraped, key=lambda s: s.name):
        values = _history(series, times, time.time() - booted, boot, rng)
        if series.name == "node_memory_MemAvailable_bytes":
            values = np.minimum(values, memory_total)
        labels = series.labels | {"job": JOB, "instance": target}
        head = series.name + "{" + ",".join(f'{k}="{_escaped(v)}"' for k, v in sorted(labels.items())) + "}"
        lines.extend(f"{head} {v!r} {t:.3f}" for v, t in zip(values.tolist(), times.tolist(), strict=True))
    source = storage.parent / "backfill.om"
    source.write_text("\n".join(lines) + "\n# EOF\n")
    storage.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(storage)],
        check=True,
        capture_output=True,
    )
    source.unlink()
    return len(lines)
