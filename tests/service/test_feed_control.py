"""The feeder's scenario control over real HTTP: GET/POST /scenario, clean errors on bad bodies, and a
switch that changes the forced scenario of the very next tick while the normal signal carries on exactly
(the switched stream is the one a simulator configured that way from the start would have produced)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pandas as pd
import pytest
import requests
from click.testing import CliRunner

from tests.service.conftest import FEED_TOKEN, Served
from tftmon.cli import main
from tftmon.config import SimulationConfig
from tftmon.contract import SERVER_NAME, STATE, TIMESTAMP
from tftmon.data.simulate import FleetSimulator
from tftmon.serve.feed import steered
from tftmon.serve.feed_control import SCENARIOS, ControlOptions, ControlServer, ScenarioControl

START = pd.Timestamp("2026-03-02T00:00Z")
#: An endless degrading feed whose forced path is far in the future (so a switch is what starts one).
LIVE = SimulationConfig(servers=12, hours=math.inf, interval="5min", seed=5, start=START, scenario="degrading",
                        scenario_start_hours=400)  # fmt: skip
FORCED = {"heavy_load", "critical_issue", "recovery"}


@pytest.fixture
def control() -> Iterator[tuple[ScenarioControl, str]]:
    state = ScenarioControl("degrading")
    with ControlServer(state, ControlOptions(port=0)) as server:
        yield state, server.url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _iso_utc(text: str) -> datetime:
    assert text.endswith("Z"), text
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    return moment


def test_get_answers_the_scenario_in_force(control: tuple[ScenarioControl, str]) -> None:
    _, url = control
    before = datetime.now(UTC)
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["scenario"] == "degrading"
    assert _iso_utc(body["since"]) <= before
    assert body["choices"] == list(SCENARIOS)


def test_post_switches_and_answers_the_same_shape(control: tuple[ScenarioControl, str]) -> None:
    state, url = control
    asked = datetime.now(UTC)
    response = requests.post(url, json={"scenario": "critical"}, timeout=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == set(requests.get(url, timeout=5).json())
    assert body["scenario"] == "critical"
    assert _iso_utc(body["since"]) >= asked
    assert body["applies_from"] is None  # until the feed reaches its next tick
    assert state.take() == "critical" and state.take() is None  # handed to the feed loop once
    state.applied("critical", pd.Timestamp("2026-03-02T10:05Z"))
    assert requests.get(url, timeout=5).json()["applies_from"] == "2026-03-02T10:05:00Z"
    # Asking again for the scenario in force changes nothing.
    again = requests.post(url, json={"scenario": "critical"}, timeout=5).json()
    assert again["since"] == body["since"] and state.take() is None


@pytest.mark.parametrize(
    ("data", "status", "says"),
    [
        (b"{not json", 400, "not JSON"),
        (b"", 400, "empty"),
        (b'["critical"]', 422, "JSON object"),
        (b"{}", 422, "`scenario` is missing"),
        (b'{"scenario": "meltdown"}', 422, "`scenario` is 'meltdown', not one of normal, healthy, degrading, critical"),
        (b'{"scenario": 3}', 422, "`scenario` is 3"),
        (b'{"scenario": "critical", "servers": 4}', 422, "unknown field(s) 'servers'"),
        (b"x" * 5000, 413, "at most 4096 bytes"),
    ],
)
def test_a_bad_body_gets_a_clean_error(
    control: tuple[ScenarioControl, str], data: bytes, status: int, says: str
) -> None:
    state, url = control
    response = requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "fix"}
    assert says in body["error"]
    assert "scenario" in body["fix"] and all(name in body["fix"] for name in ("healthy", "degrading", "critical"))
    assert state.take() is None and requests.get(url, timeout=5).json()["scenario"] == "degrading"


def test_other_paths_and_methods_are_refused_in_json(control: tuple[ScenarioControl, str]) -> None:
    _, url = control
    base = url.removesuffix("/scenario")
    missing = requests.get(f"{base}/nothing", timeout=5)
    assert missing.status_code == 404 and "/scenario" in missing.json()["fix"]
    put = requests.put(url, json={"scenario": "critical"}, timeout=5)
    assert put.status_code == 405 and put.headers["Allow"] == "GET, POST" and put.json()["error"]


def _take(ticks: Iterator[pd.DataFrame], n: int) -> pd.DataFrame:
    return pd.concat([next(ticks) for _ in range(n)], ignore_index=True)


def _reference(config: SimulationConfig, n: int) -> pd.DataFrame:
    return _take(FleetSimulator(config).ticks(), n)


def test_a_switch_changes_the_forced_scenario_from_the_next_tick(control: tuple[ScenarioControl, str]) -> None:
    """POST critical mid-block: ticks before are untouched, ticks after are exactly those of a simulator
    configured with critical starting at that tick (noise, maintenance, reboots carry on), and the forced
    servers ramp from there."""
    state, url = control
    sim = FleetSimulator(LIVE)
    ticks = steered(sim, state)
    before = _take(ticks, 40)  # inside the first (1-day) block
    assert requests.post(url, json={"scenario": "critical"}, timeout=5).status_code == 200
    after = _take(ticks, 40)
    at = before[TIMESTAMP].max() + pd.Timedelta(minutes=5)
    assert after[TIMESTAMP].min() == at
    assert requests.get(url, timeout=5).json()["applies_from"] == at.isoformat().replace("+00:00", "Z")
    assert sim.config.scenario == "critical" and sim.config.scenario_start_hours == pytest.approx(40 * 5 / 60)

    reference = _reference(LIVE.model_copy(update={"scenario": "critical", "scenario_start_hours": 40 * 5 / 60}), 80)
    unswitched = _reference(LIVE, 40)
    pd.testing.assert_frame_equal(before, unswitched)
    pd.testing.assert_frame_equal(after, reference.iloc[len(before) :].reset_index(drop=True))
    ramping = after[(after[TIMESTAMP] > at) & (after[STATE] == "heavy_load")][SERVER_NAME].nunique()
    assert ramping >= round(LIVE.scenario_fraction * LIVE.servers)  # the forced share ramps from the switch


def test_healthy_takes_the_forced_servers_off_their_path_at_once(control: tuple[ScenarioControl, str]) -> None:
    state, url = control
    config = LIVE.model_copy(update={"scenario_start_hours": 1.0})
    ticks = steered(FleetSimulator(config), state)
    before = _take(ticks, 30)  # 1.5 h into the ramp that starts at 1 h
    forced = set(before[(before[TIMESTAMP] == before[TIMESTAMP].max()) & (before[STATE] == "heavy_load")][SERVER_NAME])
    assert len(forced) >= 3
    requests.post(url, json={"scenario": "healthy"}, timeout=5).raise_for_status()
    after = _take(ticks, 24)
    assert not after[after[SERVER_NAME].isin(forced)][STATE].isin(FORCED | {"offline"}).any()


def test_degrading_to_critical_mid_ramp_carries_the_ramp_on(control: tuple[ScenarioControl, str]) -> None:
    """Switching between the forced scenarios during the ramp never cuts it back to zero."""
    state, url = control
    config = LIVE.model_copy(update={"scenario_start_hours": 1.0})
    sim = FleetSimulator(config)
    ticks = steered(sim, state)
    before = _take(ticks, 30)
    requests.post(url, json={"scenario": "critical"}, timeout=5).raise_for_status()
    after = _take(ticks, 30)
    assert sim.config.scenario_start_hours == 1.0  # the same path, now ending in critical_issue
    forced = set(before[(before[TIMESTAMP] == before[TIMESTAMP].max()) & (before[STATE] == "heavy_load")][SERVER_NAME])
    first = after[after[TIMESTAMP] == after[TIMESTAMP].min()]
    assert set(first[first[STATE] == "heavy_load"][SERVER_NAME]) >= forced
    assert set(after[after[STATE] == "critical_issue"][SERVER_NAME]) >= forced  # the ramp's end is 3 h in


def test_feed_refuses_a_busy_control_port_in_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            main, ["feed", "--url", "http://127.0.0.1:9", "--token", "t", "--control-port", str(port)]
        )
    assert result.exit_code == 1
    assert f"cannot serve the scenario control on 127.0.0.1:{port}" in result.output
    assert "--control-port 0" in result.output and "Traceback" not in result.output


def test_tftmon_feed_switches_scenario_over_http_while_it_streams(service: Served) -> None:
    """The real command against the real service: its control answers while it feeds, a POST applies at
    the next tick, and the feed goes on to its end."""
    port = _free_port()
    feeder = subprocess.Popen(
        [sys.executable, "-m", "tftmon.cli", "feed", "--url", service.url, "--servers", "4", "--scenario",
         "degrading", "--backfill-hours", "0.5", "--ticks", "40", "--speed", "1500", "--control-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TFTMON_FEED_TOKEN": FEED_TOKEN},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/scenario"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url, timeout=2).json()["scenario"] == "degrading":
                    break
            except requests.RequestException:
                pass
            assert feeder.poll() is None, feeder.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the control API never answered"
            time.sleep(0.1)
        switched = requests.post(url, json={"scenario": "critical"}, timeout=5)
        assert switched.status_code == 200 and switched.json()["scenario"] == "critical"
        out, err = feeder.communicate(timeout=120)
    finally:
        if feeder.poll() is None:
            feeder.kill()
            feeder.wait()
    assert feeder.returncode == 0, err[-2000:]
    assert "scenario critical from data time" in err, err[-2000:]
    assert "for 4 servers" in out
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)  # the control API closed with the feed
