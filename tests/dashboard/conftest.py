"""The live stack the dashboard tests read: a real `bentoml serve` with the tiny promoted model (tests/serving.py),
the real `tftmon feed` streaming a simulated fleet into it with its scenario control on, and one server fed
too little history to be forecast (warming up). Started once per session; no part of it is stubbed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, in_ci, missing_binaries_reason
from tests.serving import FEED, FEED_TOKEN, Served, free_port
from tftmon.config import SimulationConfig
from tftmon.contract import SERVER_ID, STATE

#: Servers the feeder streams (seed 3, as the tiny model's training fleet: 7 known, the rest cold starts).
SERVERS = 20
#: A server fed two ticks only: listed as warming up, never forecast.
WARMING = "ppetl950"
#: The feeder's pace: one 5-min tick (one model step, so one live forecast) per 10 s of wall clock.
SPEED = 30
#: Per-request limits large enough for the feeder's back-fill (the service suites keep theirs small).
OPEN_LIMITS = {"TFTMON_SERVICE_MAX_SERVERS_PER_REQUEST": "1000", "TFTMON_SERVICE_MAX_FEED_ROWS": "50000"}
#: What the browser tests (test_browser.py, every test using its `browser` fixture) drive, and the Debian packages.
BROWSER_BINARIES = ("chromium", "chromedriver")
BROWSER_PACKAGES = "chromium chromium-driver"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without Chromium or ChromeDriver the browser tests are skipped, outside CI, before the live stack starts
    for them, under one reason naming the packages (`-ra` folds them into one line); with CI=true they run, and
    their `browser` fixture fails."""
    reason = missing_binaries_reason(BROWSER_BINARIES, BROWSER_PACKAGES)
    if reason is None or in_ci():
        return
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass(frozen=True)
class Stack:
    service: Served
    feeder_url: str
    log_dir: Path

    @property
    def url(self) -> str:
        return self.service.url

    def get(self, path: str) -> Any:
        return requests.get(f"{self.url}{path}", timeout=30).json()


def _warming_rows() -> list[dict[str, Any]]:
    """Two recent ticks of one data_ingest server (simulated, so every contract rule holds)."""
    from tftmon.data.simulate import simulate

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=15)
    frame = simulate(SimulationConfig(fleet=[(WARMING, "data_ingest")], hours=10 / 60, start=start, seed=9))
    rows = frame.drop(columns=[STATE, SERVER_ID], errors="ignore").tail(2)
    return list(json.loads(rows.to_json(orient="records", date_format="iso")))


def wait_for(check: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g} s")
        time.sleep(0.5)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process group started with start_new_session, SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def stack(model_store: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("stack")
    env = {**model_store["env"], "TFTMON_FEED_TOKEN": FEED_TOKEN, **OPEN_LIMITS}
    service = Served(env, logs / "serve.log")
    feeder: subprocess.Popen[bytes] | None = None
    try:
        service.wait_ready()
        control = free_port()
        feeder = subprocess.Popen(
            [sys.executable, "-m", "tftmon.cli", "feed", "--url", service.url, "--servers", str(SERVERS), "--seed",
             "3", "--scenario", "degrading", "--backfill-hours", "1.5", "--speed", str(SPEED), "--control-port",
             str(control)],
            cwd=ROOT, env={**os.environ, "TFTMON_FEED_TOKEN": FEED_TOKEN}, stdout=(logs / "feed.log").open("w"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        stack = Stack(service, f"http://127.0.0.1:{control}", logs)
        feed = requests.post(f"{service.url}/feed", json={"rows": _warming_rows()}, headers=FEED, timeout=30)
        assert feed.status_code == 200, feed.text

        def ready() -> bool:
            if feeder.poll() is not None:
                raise RuntimeError(f"the feeder exited:\n{(logs / 'feed.log').read_text()[-3000:]}")
            current = stack.get("/predictions/current")
            return len(current["predictions"]) == SERVERS and any(w["server_name"] == WARMING
                                                                   for w in current["warming_up"])  # fmt: skip

        wait_for(ready, f"{SERVERS} forecasts and one warming server")
        yield stack
    finally:
        if feeder is not None:
            stop_group(feeder)
        service.stop()
