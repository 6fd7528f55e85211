"""Prometheus ingest against real daemons: Debian's prometheus scraping this host's node_exporter every second,
over a TSDB whose older hours were backfilled with promtool (tests/prometheus_stack.py). Nothing is stubbed.

Locally a missing binary skips these tests with its install command; with CI=true it fails them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from tests.prometheus_stack import backfill, node_exporter, prometheus, require_binaries, wait_for_samples
from tests.serving import free_port
from tftmon.cli import main
from tftmon.contract import (
    BACK_CLOSE_WAIT,
    COLUMNS_BY_NAME,
    CPU_PARTS,
    CPU_SUM_TOLERANCE,
    DISK_USAGE,
    METRIC,
    METRICS,
    SERVER,
    TIMESTAMP,
    VALUE,
)
from tftmon.data.ingest import prometheus as ingest_prometheus
from tftmon.data.ingest.prometheus import (
    DEFAULT_QUERIES,
    NO_SOURCE,
    PrometheusError,
    instance_host,
    query_prometheus,
    resolve_queries,
)
from tftmon.data.validate import validate_path
from tftmon.io import METADATA_FILE, read_metrics

#: History backfilled before Prometheus starts, ending this long before it does: no rate window or gauge
#: look-back (5 min) of the live range reaches into it.
BACKFILL = timedelta(hours=2)
GAP = timedelta(minutes=10)
LIVE_STEP = timedelta(seconds=1)
#: Live ranges end this long ago: a scrape still being appended could reach one CPU query and not the next.
SETTLED = timedelta(seconds=3)
#: What every host's node_exporter answers (disk only where a real filesystem is mounted: see _metrics).
ALWAYS = (*CPU_PARTS, "mem_used_pct", "swap_used_pct", "net_in_mb_s", "net_out_mb_s", "load_average", "uptime_days")
#: CLOSE_WAIT sockets of all directions, 0 where there are none (tcpstat lists only states it sees).
CLOSE_WAIT = (
    'sum by (job, instance) (node_tcp_connection_states{state="close_wait"})'
    " or on (job, instance) (0 * sum by (job, instance) (node_tcp_connection_states))"
)


@dataclass
class Stack:
    url: str
    target: str
    #: When Prometheus started scraping: the live range starts here.
    live: datetime
    #: The backfilled history.
    history: tuple[datetime, datetime]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binaries()
    tmp = tmp_path_factory.mktemp("prometheus")
    with contextlib.ExitStack() as daemons:
        target = daemons.enter_context(node_exporter(tmp))
        now = datetime.now(UTC)
        history = (now - GAP - BACKFILL, now - GAP)
        backfill(target, tmp / "tsdb", *history, interval=timedelta(seconds=15))
        live = datetime.now(UTC)
        url = daemons.enter_context(prometheus(tmp, tmp / "tsdb", [target]))
        wait_for_samples(url, 10)
        yield Stack(url, target, live, history)


def _metrics(frame: pd.DataFrame, described: dict) -> set[str]:
    found = set(frame[METRIC].unique())
    assert set(ALWAYS) <= found
    assert DISK_USAGE in found or DISK_USAGE in described["left_out"]
    return found


def _in_range(frame: pd.DataFrame) -> None:
    for metric, values in frame.groupby(METRIC)[VALUE]:
        column = COLUMNS_BY_NAME[str(metric)]
        assert column.min is None or values.min() >= column.min, metric
        assert column.max is None or values.max() <= column.max, metric


def _cpu_sums(frame: pd.DataFrame) -> pd.Series:
    cpu = frame[frame[METRIC].isin(CPU_PARTS)].pivot_table(VALUE, [SERVER, TIMESTAMP], METRIC)
    assert list(cpu.columns.sort_values()) == sorted(CPU_PARTS) and not cpu.isna().any().any()
    return cpu.sum(axis=1)


def test_live_metrics_of_this_host(stack: Stack) -> None:
    end = datetime.now(UTC) - SETTLED
    frame, described = query_prometheus(stack.url, stack.live, end, step=LIVE_STEP, progress=False)
    assert set(frame[SERVER]) == {os.uname().nodename}  # from node_uname_info, not the instance 127.0.0.1
    assert described["servers"] == {stack.target: os.uname().nodename}
    assert list(frame.columns) == [TIMESTAMP, SERVER, METRIC, VALUE] and str(frame[TIMESTAMP].dt.tz) == "UTC"
    _metrics(frame, described)
    _in_range(frame)
    assert (_cpu_sums(frame) - 100).abs().max() < CPU_SUM_TOLERANCE
    assert set(NO_SOURCE) <= set(described["left_out"])
    assert described["chunks"] == 1 and described["step_seconds"] == 1
    assert all(count == 1 for count in described["series"].values())
    # Stamped at the start of each whole step inside the range.
    assert frame[TIMESTAMP].min() >= stack.live and (frame[TIMESTAMP].astype("int64") % 1_000_000_000 == 0).all()
    json.dumps(described)


def test_long_ranges_go_in_chunks_with_the_same_answer(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    start, end = stack.history[1] - timedelta(hours=1), stack.history[1]
    step = timedelta(minutes=1)
    whole, described = query_prometheus(stack.url, start, end, step=step, progress=False)
    assert described["chunks"] == 1
    monkeypatch.setattr(ingest_prometheus, "MAX_POINTS", 7)
    chunked, described = query_prometheus(stack.url, start, end, step=step, progress=False)
    assert described["chunks"] == math.ceil(described["points_per_series"] / 7) > 1
    keys = [SERVER, METRIC, TIMESTAMP]
    assert not chunked.duplicated(keys).any()
    pd.testing.assert_frame_equal(
        whole.sort_values(keys).reset_index(drop=True), chunked.sort_values(keys).reset_index(drop=True)
    )
    assert chunked.groupby(METRIC).size().eq(described["points_per_series"]).all()  # no step lost at a seam


def test_queries_can_be_replaced_added_and_dropped(stack: Stack) -> None:
    overrides = {BACK_CLOSE_WAIT: CLOSE_WAIT, DISK_USAGE: None}
    frame, described = query_prometheus(
        stack.url, stack.live, datetime.now(UTC) - SETTLED, step=LIVE_STEP, progress=False, queries=overrides
    )
    assert BACK_CLOSE_WAIT in set(frame[METRIC]) and DISK_USAGE not in set(frame[METRIC])
    assert described["queries"][BACK_CLOSE_WAIT]["given"] and DISK_USAGE in described["left_out"]
    _in_range(frame)


def test_ingest_command_writes_a_dataset_that_validates(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "ingested"
    start, end = (t.isoformat() for t in (stack.history[1] - timedelta(hours=1), stack.history[1]))
    result = CliRunner().invoke(
        main, ["ingest", "--prometheus", stack.url, "--start", start, "--end", end, "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    report = validate_path(out, suite="telemetry", strict=True)
    assert report.success, report.to_text()
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["source"]["kind"] == "prometheus" and metadata["source"]["step_seconds"] == 300
    frame = read_metrics(out)
    assert set(frame["server_name"]) == {os.uname().nodename.lower()} and len(frame) >= 11
    assert (frame[list(CPU_PARTS)].sum(axis=1) - 100).abs().max() < CPU_SUM_TOLERANCE


@pytest.mark.parametrize(
    ("queries", "start_offset", "message"),
    [
        ({"cpu_user_pct": "rate(node_cpu_seconds_total[5m]"}, timedelta(minutes=1), "refused the query for cpu_user"),
        ({"cpu_user_pct": "no_such_metric_anywhere"}, timedelta(minutes=1), "found no series"),
        (None, timedelta(milliseconds=500), "holds no whole step"),
    ],
)
def test_bad_queries_and_ranges_say_what_to_fix(
    stack: Stack, queries: dict | None, start_offset: timedelta, message: str
) -> None:
    end = datetime.now(UTC)
    with pytest.raises(PrometheusError, match=message):
        query_prometheus(stack.url, end - start_offset, end, step=LIVE_STEP, progress=False, queries=queries)


def test_node_exporter_is_not_prometheus(stack: Stack) -> None:
    end = datetime.now(UTC)
    with pytest.raises(PrometheusError, match="not at node_exporter"):
        query_prometheus(f"http://{stack.target}", end - timedelta(hours=1), end, progress=False)


def test_unreachable_prometheus_names_the_url_and_the_check() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    end = datetime.now(UTC)
    with pytest.raises(
        PrometheusError, match=rf"cannot reach Prometheus at {re.escape(url)} .*curl {re.escape(url)}/-/ready"
    ):
        query_prometheus(url, end - timedelta(hours=1), end, progress=False)


def test_credentials_in_the_url_are_never_shown() -> None:
    end = datetime.now(UTC)
    with pytest.raises(PrometheusError) as error:
        query_prometheus(f"http://tftmon:s3cret@127.0.0.1:{free_port()}", end - timedelta(hours=1), end, progress=False)
    assert "s3cret" not in str(error.value) and "tftmon@" not in str(error.value)


def test_inputs_are_checked_before_any_request() -> None:
    url = "http://127.0.0.1:1"  # never asked
    with pytest.raises(PrometheusError, match="no time zone"):
        query_prometheus(url, datetime(2026, 1, 1), datetime(2026, 1, 2), progress=False)
    with pytest.raises(PrometheusError, match="'cpu_pct': not a contract metric"):
        resolve_queries({"cpu_pct": "node_load1"})
    with pytest.raises(PrometheusError, match="load_average"):
        resolve_queries({"load_average": ingest_prometheus.Query("node_load1", "bytes/s")})


def test_every_metric_has_a_default_query_or_a_reason() -> None:
    queries, left_out = resolve_queries(None)
    assert set(queries) == set(DEFAULT_QUERIES) and set(left_out) == set(NO_SOURCE)
    assert set(queries) | set(left_out) == set(METRICS) and not set(queries) & set(left_out)


@pytest.mark.parametrize(
    ("instance", "host"),
    [("db1.example.com:9100", "db1.example.com"), ("10.0.0.5:9100", "10.0.0.5"), ("[::1]:9100", "::1"),
     ("::1", "::1"), ("ppweb001", "ppweb001")],
)  # fmt: skip
def test_instance_host(instance: str, host: str) -> None:
    assert instance_host(instance) == host
