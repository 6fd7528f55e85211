"""The live Prometheus source against a real Prometheus scraping this host's node_exporter (history backfilled
with promtool), and against servers that fail as a real one can: unreachable, slow, answering errors."""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.prometheus_stack import JOB, backfill, node_exporter, prometheus, require_binaries, wait_for_samples
from tests.serving import free_port
from tftmon.contract import CPU_PARTS, JAVA_CPU, LOAD_AVERAGE, MEM_USED, normalise_hostname
from tftmon.serve.live import LiveWindows
from tftmon.serve.prometheus_source import PrometheusSource, Shard

TARGETS = (*CPU_PARTS, MEM_USED, LOAD_AVERAGE)
ENCODER_STEPS = 12
HOST = normalise_hostname(os.uname().nodename)


@dataclass
class Stack:
    url: str
    target: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binaries()
    tmp = tmp_path_factory.mktemp("prometheus-source")
    with contextlib.ExitStack() as daemons:
        target = daemons.enter_context(node_exporter(tmp))
        now = datetime.now(UTC)
        backfill(target, tmp / "tsdb", now - timedelta(hours=3), now - timedelta(seconds=30), timedelta(seconds=15))
        # A second job scraping the same node_exporter: two series per metric for one host, as a misconfigured
        # Prometheus (or two federated ones) gives.
        copy = {"job_name": "node-copy", "static_configs": [{"targets": [target]}]}
        url = daemons.enter_context(prometheus(tmp, tmp / "tsdb", [target], scrape_configs=[copy]))
        wait_for_samples(url, 3)
        yield Stack(url, target)


def _source(url: str, **options: object) -> tuple[PrometheusSource, LiveWindows]:
    windows = LiveWindows(100, 64 << 20)
    windows.set_history_steps(ENCODER_STEPS)
    source = PrometheusSource(url, windows, **options)  # type: ignore[arg-type]
    source.use_model(TARGETS, ENCODER_STEPS)
    return source, windows


def test_first_pull_backfills_the_encoder_window_then_pulls_what_is_new(stack: Stack) -> None:
    source, windows = _source(stack.url, resolution=timedelta(seconds=5))
    pulled = source.pull(datetime.now(UTC))
    assert pulled is not None and pulled.hosts == 1 and pulled.new_hosts == 1
    (name, _, _, span), *_ = windows.servers()
    assert name == HOST and span >= ENCODER_STEPS  # forecastable at once
    assert source.targets()[HOST] == {"instance": stack.target, "job": JOB}
    status = source.status()
    assert status["pulls"] == 1 and status["failed_pulls"] == 0 and status["hosts"] == 1
    assert status["hosts_missing_metrics"] == {} and status["metrics_missing"] == []

    read_to = datetime.fromisoformat(status["read_to"])
    assert source.pull(read_to + timedelta(seconds=4)) is None  # no whole step since: nothing asked
    time.sleep(6)
    before = windows.rows_appended
    again = source.pull(datetime.now(UTC))
    assert again is not None and again.new_hosts == 0 and again.rows >= 1
    assert windows.rows_appended == before + again.rows


def test_two_jobs_scraping_one_host_are_one_server_and_counted(stack: Stack) -> None:
    source, windows = _source(stack.url, resolution=timedelta(seconds=5))
    assert source.pull(datetime.now(UTC)) is not None
    time.sleep(6)  # live samples of both jobs in the next whole 5 s steps
    assert source.pull(datetime.now(UTC)) is not None
    assert [name for name, *_ in windows.servers()] == [HOST] and source.status()["duplicate_values"] > 0
    assert source.targets()[HOST]["job"] == JOB  # the first job by name, always the same one


def test_a_model_with_a_longer_window_gets_every_host_s_window_laid_anew(stack: Stack) -> None:
    source, windows = _source(stack.url)
    assert source.pull(datetime.now(UTC)) is not None
    longer = ENCODER_STEPS + 12
    windows.set_history_steps(longer)
    source.use_model(TARGETS, longer)
    pulled = source.pull(datetime.now(UTC))
    assert pulled is not None and pulled.new_hosts == 1
    (_, _, _, span), *_ = windows.servers()
    assert span >= longer


def test_nothing_is_pulled_before_a_model_says_what(stack: Stack) -> None:
    windows = LiveWindows(100, 64 << 20)
    source = PrometheusSource(stack.url, windows)
    assert not source.ready and source.pull(datetime.now(UTC)) is None and len(windows) == 0


def test_a_metric_prometheus_lacks_leaves_the_host_out_and_says_why(stack: Stack) -> None:
    windows = LiveWindows(100, 64 << 20)
    windows.set_history_steps(ENCODER_STEPS)
    source = PrometheusSource(stack.url, windows)
    source.use_model((*TARGETS, JAVA_CPU), ENCODER_STEPS)
    assert source.pull(datetime.now(UTC)) is not None
    status = source.status()
    assert status["hosts_missing_metrics"] == {HOST: [JAVA_CPU]}
    (missing,) = status["metrics_missing"]
    assert missing["metric"] == JAVA_CPU and "process-exporter" in missing["why"]
    assert len(windows) == 0  # a window without one of the model's metrics could not be forecast


def test_shards_split_hosts_exactly_once_and_stably() -> None:
    names = [f"ppweb{i:03d}" for i in range(500)]
    shards = [Shard.parse(f"{i}/3") for i in range(3)]
    owners = [[s for s in shards if s is not None and s.owns(name)] for name in names]
    assert all(len(o) == 1 for o in owners)
    counts = [sum(o[0] is s for o in owners) for s in shards]
    assert min(counts) > 120  # roughly even
    assert Shard.parse(None) is None and str(Shard.parse("1/3")) == "1/3"
    assert Shard(0, 1).owns("anything")


def test_a_host_outside_the_shard_is_not_pulled(stack: Stack) -> None:
    shard = next(s for s in (Shard(0, 2), Shard(1, 2)) if not s.owns(HOST))
    source, windows = _source(stack.url, shard=shard)
    assert source.pull(datetime.now(UTC)) is not None
    assert len(windows) == 0 and source.status()["hosts_outside_shard"] == 1


class _Answer(http.server.BaseHTTPRequestHandler):
    """A server that fails as a Prometheus can: `delay` seconds late, then `status` with `body`."""

    delay = 0.0
    status = 200
    body = b"{}"

    def _answer(self) -> None:
        time.sleep(self.delay)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(self.body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _failing(delay: float = 0.0, status: int = 200, body: bytes = b"{}") -> Iterator[str]:
    handler = type("Failing", (_Answer,), {"delay": delay, "status": status, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"delay": 2.0}, "did not answer its build information within 0.5 s"),
        ({"status": 503, "body": b"service unavailable"}, "without Prometheus's JSON"),
        ({"body": b'{"status": "error", "errorType": "internal", "error": "boom"}'}, "refused .*internal: boom"),
    ],
)
def test_a_failing_prometheus_is_counted_never_raised(
    fault: dict, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with _failing(**fault) as url:
        source, windows = _source(url, timeout_seconds=0.5)
        with caplog.at_level(logging.ERROR, "tftmon.serve.prometheus_source"):
            for _ in range(3):
                assert source.pull(datetime.now(UTC)) is None
    status = source.status()
    assert status["failed_pulls"] == status["consecutive_failures"] == 3 and len(windows) == 0
    assert status["last_error"] is not None
    assert re.search(message, status["last_error"]["message"]), status["last_error"]
    assert len(caplog.records) == 1  # one line per new failure, not one per pull


def test_unreachable_then_back_recovers(stack: Stack) -> None:
    source, windows = _source(f"http://127.0.0.1:{free_port()}")
    assert source.pull(datetime.now(UTC)) is None
    assert "cannot reach Prometheus" in source.status()["last_error"]["message"]
    source.url = stack.url  # Prometheus comes back (as after a restart on the same address)
    assert source.pull(datetime.now(UTC)) is not None
    status = source.status()
    assert status["last_error"] is None and status["consecutive_failures"] == 0 and len(windows) == 1
