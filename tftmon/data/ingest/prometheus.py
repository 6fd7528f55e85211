"""Ingest from a live Prometheus: node_exporter metrics over the HTTP API into long samples.

The default PromQL lives here, not in the contract: the contract says what a metric means in any fleet,
while these queries say how one exporter (node_exporter, with its metric names and collectors) measures it,
as a mapping file does for a CSV export. Each query is data (`Query`: PromQL and the unit it answers in,
converted by the one unit table, `units.UNITS`); a caller may replace, add or drop any of them.

Time is cut into whole steps: `/api/v1/query_range` is evaluated at each step's end, over a rate window of
at least the step, and the value is stamped at the step's start, as the model's bins are labelled
(tftmon.data.resample). Long ranges go in chunks of at most MAX_POINTS evaluations per series (the
Prometheus limit is 11,000), all queries of a chunk one after another, so the CPU parts see the same samples.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from string import Template
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import pandas as pd
from tqdm import tqdm

from tftmon.contract import (
    BACK_CLOSE_WAIT,
    COLUMNS_BY_NAME,
    CPU_PARTS,
    DISK_USAGE,
    FRONT_CLOSE_WAIT,
    JAVA_CPU,
    LOAD_AVERAGE,
    MEM_USED,
    METRIC,
    METRICS,
    MODEL_STEP,
    NET_IN,
    NET_OUT,
    SERVER,
    SWAP_USED,
    TIMESTAMP,
    UPTIME,
    VALUE,
)
from tftmon.data.ingest.files import IngestError
from tftmon.data.ingest.units import resolve_unit

#: Evaluations per series and request; Prometheus refuses more than 11,000.
MAX_POINTS = 11_000
#: A rate needs two samples inside its window: below this, the window is this long, not the step.
MIN_RATE_WINDOW = timedelta(minutes=1)
#: Seconds one request may take (Prometheus's own default query timeout is 2 min).
TIMEOUT_SECONDS = 120.0
QUERY_RANGE = "/api/v1/query_range"
SERIES = "/api/v1/series"
BUILD_INFO = "/api/v1/status/buildinfo"
#: The series whose `nodename` label names each scraped host (joined on `instance`).
UNAME = "node_uname_info"
#: Stands for the rate window in a query, e.g. rate(x[$window]).
WINDOW = "window"


class PrometheusError(IngestError):
    """Prometheus could not be asked, or would not answer; the message names the URL and the fix."""


@dataclass(frozen=True)
class Query:
    """How one contract metric is read: PromQL (`$window` = the rate window) and the unit it answers in."""

    promql: str
    #: A unit name of tftmon.data.ingest.units.UNITS that the contract column accepts.
    unit: str
    #: Values past the contract's range are set to its bound (and counted): for uptime, which the contract
    #: counts only up to 30 days.
    clip: bool = False

    def render(self, window: timedelta) -> str:
        ms = round(window.total_seconds() * 1000)
        return Template(self.promql).substitute({WINDOW: f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"})


#: node_exporter's CPU modes, as the contract's four parts. Each part is its modes' share of the time of all
#: listed modes, so the parts add up to 100 at every step. nice is user work at another priority; irq and
#: softirq are kernel time; steal (time the hypervisor gave another guest while this one was runnable) goes
#: to sys, so that 100 - idle stays the share of the CPU this host did not get to idle. guest time is
#: already inside user (and node_exporter reports it in another metric).
CPU_MODES: dict[str, tuple[str, ...]] = dict(
    zip(CPU_PARTS, (("user", "nice"), ("system", "irq", "softirq", "steal"), ("iowait",), ("idle",)), strict=True)
)
_ALL_MODES = "|".join(mode for modes in CPU_MODES.values() for mode in modes)
#: Interfaces that carry no traffic of their own (loopback, container and VM plumbing, bonds and their
#: redirects): counting them would count a packet twice.
VIRTUAL_INTERFACES = "lo|veth.*|docker.*|br-.*|virbr.*|cni.*|flannel.*|cali.*|vxlan.*|tun.*|tap.*|ifb.*|bond.*"
#: Filesystems that do not fill with the host's data: memory-backed, read-only images, overlays, network shares.
VIRTUAL_FILESYSTEMS = "tmpfs|ramfs|squashfs|iso9660|overlay|nfs4?|cifs|smb3|fuse\\\\..*"
_FS = f'{{fstype!~"{VIRTUAL_FILESYSTEMS}"}}'


def _cpu_share(part: str) -> str:
    modes = "|".join(CPU_MODES[part])
    return (
        f'100 * sum by (job, instance) (rate(node_cpu_seconds_total{{mode=~"{modes}"}}[$window]))'
        f' / sum by (job, instance) (rate(node_cpu_seconds_total{{mode=~"{_ALL_MODES}"}}[$window]))'
    )


def _bytes_rate(direction: str) -> str:
    return (
        f"sum by (job, instance) (rate(node_network_{direction}_bytes_total"
        f'{{device!~"{VIRTUAL_INTERFACES}"}}[$window]))'
    )


#: The default queries for node_exporter, one per contract metric it has a source for (docs/INGEST.md).
DEFAULT_QUERIES: dict[str, Query] = {
    **{part: Query(_cpu_share(part), "%") for part in CPU_PARTS},
    # MemAvailable: what can be allocated without swapping (page cache counts as free), as `free` shows.
    MEM_USED: Query("100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)", "%"),
    # A host without swap uses 0 % of it.
    SWAP_USED: Query(
        "100 * (node_memory_SwapTotal_bytes - node_memory_SwapFree_bytes) / clamp_min(node_memory_SwapTotal_bytes, 1)",
        "%",
    ),
    # The fullest real filesystem (the one that fills first), as df counts it: root's reserve is not usable.
    DISK_USAGE: Query(
        f"max by (job, instance) (100 * (node_filesystem_size_bytes{_FS} - node_filesystem_free_bytes{_FS})"
        f" / clamp_min(node_filesystem_size_bytes{_FS} - node_filesystem_free_bytes{_FS}"
        f" + node_filesystem_avail_bytes{_FS}, 1))",
        "%",
    ),
    NET_IN: Query(_bytes_rate("receive"), "bytes/s"),
    NET_OUT: Query(_bytes_rate("transmit"), "bytes/s"),
    LOAD_AVERAGE: Query("node_load1", "load"),
    UPTIME: Query("time() - node_boot_time_seconds", "seconds", clip=True),
}

#: Contract metrics node_exporter has no source for: left out (and reported) unless a query is given.
NO_SOURCE: dict[str, str] = {
    JAVA_CPU: "node_exporter has no per-process CPU; give a query from process-exporter or a JMX exporter",
    BACK_CLOSE_WAIT: "node_exporter has no CLOSE_WAIT count per direction (its tcpstat collector, off by default, "
    "counts all CLOSE_WAIT sockets together); give a query that selects connections to back ends",
    FRONT_CLOSE_WAIT: "node_exporter has no CLOSE_WAIT count per direction (its tcpstat collector, off by default, "
    "counts all CLOSE_WAIT sockets together); give a query that selects connections from front ends",
}


def resolve_queries(overrides: Mapping[str, Query | str | None] | None) -> tuple[dict[str, Query], dict[str, str]]:
    """The queries to run (defaults, with `overrides` replacing, adding or, as None, dropping them) and the
    metrics left out with why. A query given as text answers in the column's own unit."""
    queries = dict(DEFAULT_QUERIES)
    left_out = dict(NO_SOURCE)
    for metric, given in (overrides or {}).items():
        if metric not in METRICS:
            raise PrometheusError(f"query for {metric!r}: not a contract metric; name one of {', '.join(METRICS)}")
        if given is None:
            queries.pop(metric, None)
            left_out[metric] = "left out by the caller"
            continue
        query = Query(given, resolve_unit(metric, None).name) if isinstance(given, str) else given
        try:
            resolve_unit(metric, query.unit)
        except ValueError as exc:
            raise PrometheusError(f"query for {metric}: {exc}") from None
        queries[metric] = query
        left_out.pop(metric, None)
    return {m: queries[m] for m in METRICS if m in queries}, left_out


def redacted(url: str) -> str:
    """The URL without user and password, for messages and metadata."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=netloc + (f":{parts.port}" if parts.port else "")))


def instance_host(instance: str) -> str:
    """The host part of a scrape target's `instance` label: host:port, [v6]:port, or a bare host."""
    if instance.count(":") > 1 and not instance.startswith("["):
        return instance  # a bare IPv6 address: no port to strip
    try:
        return urlsplit(f"//{instance}").hostname or instance
    except ValueError:  # e.g. an unclosed [
        return instance


class _Api:
    """The Prometheus HTTP API at one base URL; every failure a PrometheusError naming the URL and the fix."""

    def __init__(self, url: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self.shown = redacted(self.url)
        self.timeout = timeout
        self.client = httpx.Client(timeout=timeout, follow_redirects=True)

    def close(self) -> None:
        self.client.close()

    def call(self, path: str, params: dict[str, str], what: str, fix: str) -> Any:
        """The JSON answer's `data` of `path`: POSTed as a form when it has parameters (a long query has no
        URL-length limit that way), else a GET (status endpoints take nothing else)."""
        try:
            response = self.client.post(self.url + path, data=params) if params else self.client.get(self.url + path)
        except httpx.TimeoutException:
            raise PrometheusError(
                f"Prometheus at {self.shown} did not answer {what} within {self.timeout:g} s; {fix}"
            ) from None
        except httpx.HTTPError as exc:
            raise PrometheusError(
                f"cannot reach Prometheus at {self.shown} ({exc}); check the URL (e.g. http://host:9090) and that "
                f"Prometheus runs: curl {self.shown}/-/ready"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            raise PrometheusError(
                f"{self.shown}{path} answered HTTP {response.status_code} without Prometheus's JSON; point "
                "--prometheus at the Prometheus server (port 9090 by default), not at node_exporter or a dashboard"
            )
        if body["status"] != "success":
            raise PrometheusError(
                f"Prometheus at {self.shown} refused {what}: {body.get('errorType', 'error')}: "
                f"{body.get('error', 'no reason given')}; {fix}"
            )
        return body.get("data")


def _steps(start: datetime, end: datetime, step: timedelta) -> tuple[int, int, int]:
    """The first and last step start (ms since the epoch, on the step's grid) and the step (ms) of the whole
    steps inside [start, end]."""
    for name, when in (("start", start), ("end", end)):
        if when.tzinfo is None:
            raise PrometheusError(f"{name} {when.isoformat()} has no time zone; give it with an offset or Z (UTC)")
    step_ms = round(step.total_seconds() * 1000)
    if step_ms <= 0:
        raise PrometheusError(f"step {step} is not positive; use the model step ({MODEL_STEP}) or a shorter one")
    first = math.ceil(start.timestamp() * 1000 / step_ms) * step_ms
    last = math.floor(end.timestamp() * 1000 / step_ms) * step_ms - step_ms
    if last < first:
        raise PrometheusError(
            f"the range {start.isoformat()} to {end.isoformat()} holds no whole step of {step}; give a longer range"
        )
    return first, last, step_ms


def _server_names(api: _Api, first_ms: int, end_ms: int) -> dict[str, str]:
    """instance -> nodename of node_uname_info in the range (instances without it are named by their host)."""
    data = api.call(
        SERIES,
        {"match[]": UNAME, "start": f"{first_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}"},
        f"the series of {UNAME}",
        "check that Prometheus scrapes node_exporter",
    )
    names: dict[str, str] = {}
    for labels in sorted(data or [], key=lambda labels: str(labels.get("nodename", ""))):
        if "instance" in labels and labels.get("nodename"):
            names[labels["instance"]] = labels["nodename"]
    return names


def _matrix(data: Any, api: _Api, what: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        kind = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise PrometheusError(f"Prometheus at {api.shown} answered {what} with a {kind}, not a range (matrix)")
    return list(data.get("result") or [])


@dataclass
class _Series:
    """One answered series: its metric, scrape target (instance and job) and samples (step starts in ms, raw
    values)."""

    metric: str
    instance: str
    job: str | None
    stamps: np.ndarray
    values: np.ndarray


def _fetch(
    api: _Api, rendered: dict[str, str], chunks: list[tuple[int, int]], step_ms: int, given: set[str], progress: bool
) -> tuple[list[_Series], dict[str, int], dict[str, int]]:
    """Every query over every chunk: the series answered, distinct series per metric, and series per metric
    without an `instance` label (they name no host, so they are left out)."""
    found: list[_Series] = []
    distinct: dict[str, set[frozenset[tuple[str, str]]]] = {metric: set() for metric in rendered}
    unnamed: dict[str, int] = {}
    with tqdm(total=len(chunks) * len(rendered), desc="prometheus", unit="query", disable=not progress) as bar:
        for first, last in chunks:
            # Evaluated at each step's end, stamped at its start.
            params = {
                "start": f"{(first + step_ms) / 1000:.3f}",
                "end": f"{(last + step_ms) / 1000:.3f}",
                "step": f"{step_ms / 1000:.3f}",
            }
            for metric, promql in rendered.items():
                fix = (
                    "fix the query you gave"
                    if metric in given
                    else "query a shorter range per call (--start/--end), or raise the server's --query.max-samples"
                )
                what = f"the query for {metric} ({promql})"
                for series in _matrix(api.call(QUERY_RANGE, {"query": promql, **params}, what, fix), api, what):
                    labels = series.get("metric") or {}
                    if "instance" not in labels:
                        unnamed[metric] = unnamed.get(metric, 0) + 1
                        continue
                    distinct[metric].add(frozenset(labels.items()))
                    values = np.asarray(series.get("values") or [], dtype=object).reshape(-1, 2)
                    stamps = np.round(values[:, 0].astype(np.float64) * 1000).astype(np.int64) - step_ms
                    found.append(
                        _Series(metric, labels["instance"], labels.get("job"), stamps, values[:, 1].astype(np.float64))
                    )
                bar.update()
    return found, {metric: len(seen) for metric, seen in distinct.items()}, unnamed


def _long_frame(
    found: list[_Series], chosen: dict[str, Query], servers: dict[str, str]
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """The series as long samples in contract units; counts per metric of samples kept, of non-finite values
    left out (NaN from 0/0, Inf) and of values clipped to the contract's range."""
    counts: dict[str, dict[str, int]] = {"samples": {}, "non_finite": {}, "clipped": {}}
    frames = []
    for metric, query in chosen.items():
        mine = [s for s in found if s.metric == metric]
        if not mine:
            continue
        stamps = np.concatenate([s.stamps for s in mine])
        values = np.concatenate([s.values for s in mine])
        names = np.repeat(
            np.asarray([servers.get(s.instance) or instance_host(s.instance) for s in mine], dtype=object),
            [len(s.stamps) for s in mine],
        )
        finite = np.isfinite(values)
        if not finite.all():
            counts["non_finite"][metric] = int((~finite).sum())
            stamps, values, names = stamps[finite], values[finite], names[finite]
        values = np.asarray(resolve_unit(metric, query.unit).convert(values), dtype=np.float64)
        if query.clip:
            column = COLUMNS_BY_NAME[metric]
            low = -np.inf if column.min is None else column.min
            high = np.inf if column.max is None else column.max
            outside = int(((values < low) | (values > high)).sum())
            if outside:
                counts["clipped"][metric] = outside
                values = np.clip(values, low, high)
        counts["samples"][metric] = len(values)
        frames.append(
            pd.DataFrame(
                {
                    TIMESTAMP: pd.to_datetime(stamps * 1_000_000, unit="ns", utc=True),
                    SERVER: names,
                    METRIC: metric,
                    VALUE: values,
                }
            )
        )
    return pd.concat(frames, ignore_index=True), counts


def _targets(found: list[_Series], names: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each server's instance and job (the first seen, by instance then job, when several targets scrape it)."""
    targets: dict[str, dict[str, str]] = {}
    for s in sorted(found, key=lambda s: (s.instance, s.job or "")):
        server = names.get(s.instance) or instance_host(s.instance)
        targets.setdefault(server, {"instance": s.instance, **({"job": s.job} if s.job else {})})
    return targets


def query_prometheus(
    url: str,
    start: datetime,
    end: datetime,
    *,
    step: timedelta = MODEL_STEP,
    progress: bool = True,
    queries: Mapping[str, Query | str | None] | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """node_exporter's metrics of every host the Prometheus at `url` scrapes, in the whole steps of [start, end].

    Returns long samples (timestamp UTC, server: the host's nodename from node_uname_info, else its instance's
    host; metric: a contract name; value: in the contract's unit) and a JSON-able description of the source:
    queries, range, chunks, series and samples per metric, each instance's server, each server's scrape target
    (`targets`: the instance and job its series carry, so what is written back joins them) and every metric
    left out and why. `queries` replaces, adds or (None) drops DEFAULT_QUERIES entries per contract metric; a
    query given there that finds nothing is an error, a default one is left out and reported. `timeout` bounds
    each request (seconds).
    """
    started = time.perf_counter()
    chosen, left_out = resolve_queries(queries)
    first_ms, last_ms, step_ms = _steps(start, end, step)
    window = max(timedelta(milliseconds=step_ms), MIN_RATE_WINDOW)
    rendered = {metric: query.render(window) for metric, query in chosen.items()}
    span = MAX_POINTS * step_ms
    chunks = [(a, min(a + span - step_ms, last_ms)) for a in range(first_ms, last_ms + 1, span)]
    given = set(queries or {}) & set(chosen)
    api = _Api(url, timeout)
    try:
        build = api.call(BUILD_INFO, {}, "its build information", "check the URL")
        names = _server_names(api, first_ms, last_ms + step_ms)
        found, series, unnamed = _fetch(api, rendered, chunks, step_ms, given, progress)
    finally:
        api.close()
    empty = [metric for metric in chosen if not series[metric]]
    if empty and set(empty) & given:
        missing = sorted(set(empty) & given)
        raise PrometheusError(
            f"Prometheus at {api.shown}: the query you gave for {', '.join(missing)} found no series with an instance "
            f"label between {start.isoformat()} and {end.isoformat()}; try it in Prometheus's graph page and fix it"
        )
    if len(empty) == len(chosen):
        raise PrometheusError(
            f"Prometheus at {api.shown} has no node_exporter data between {start.isoformat()} and {end.isoformat()}; "
            'check the range and that it scrapes node_exporter (the query up{job=~".*node.*"} shows its targets)'
        )
    for metric in empty:
        left_out[metric] = "the query found no series in the range (is node_exporter's collector for it enabled?)"
    frame, counts = _long_frame(found, chosen, names)
    instances = sorted({s.instance for s in found})
    description = {
        "kind": "prometheus",
        "url": api.shown,
        "prometheus_version": (build or {}).get("version"),
        "api": QUERY_RANGE,
        "requested": {"start": start.isoformat(), "end": end.isoformat()},
        "start": pd.Timestamp(first_ms, unit="ms", tz="UTC").isoformat(),
        "end": pd.Timestamp(last_ms + step_ms, unit="ms", tz="UTC").isoformat(),
        "step_seconds": step_ms / 1000,
        "rate_window_seconds": window.total_seconds(),
        "stamped": "each value at the start of the step it describes (evaluated at the step's end)",
        "points_per_series": (last_ms - first_ms) // step_ms + 1,
        "chunks": len(chunks),
        "max_points_per_chunk": MAX_POINTS,
        "queries": {
            metric: {"promql": rendered[metric], "unit": chosen[metric].unit, "given": metric in given}
            for metric in chosen
        },
        "series": {metric: count for metric, count in series.items() if count},
        **counts,
        "series_without_instance": unnamed,
        "servers": {instance: names.get(instance) or instance_host(instance) for instance in instances},
        "servers_named_by_instance": [instance for instance in instances if instance not in names],
        "targets": _targets(found, names),
        "left_out": {metric: left_out[metric] for metric in METRICS if metric in left_out},
        "seconds": round(time.perf_counter() - started, 3),
    }
    return frame, description
