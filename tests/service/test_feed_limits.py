"""Issue 9, defect 5 against the real service: /feed behind its own token, the live windows' memory bound
refusing before anything is stored, and all-or-nothing batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from tests.service.conftest import FEED, FEED_TOKEN, Served
from tests.service.test_service import recent, rows
from tftmon.contract import SERVER_NAME

#: 1 MiB holds 5 full windows of the tiny model (13 steps of 5 s ticks x 15 float64 columns, twice over).
WINDOW_MIB = 1
ROOM = 5


@pytest.fixture(scope="module")
def small_service(model_store: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {**model_store["env"], "TFTMON_FEED_TOKEN": FEED_TOKEN, "TFTMON_SERVICE_MAX_LIVE_WINDOW_MIB": str(WINDOW_MIB)}
    with Served(env, Path(tmp_path_factory.mktemp("feed")) / "serve.log") as served:
        yield served


def _feed(service: Served, frame: pd.DataFrame, headers: dict[str, str] | None = FEED) -> requests.Response:
    return requests.post(f"{service.url}/feed", json={"rows": rows(frame)}, headers=headers, timeout=30)


def _live(service: Served) -> int:
    return requests.get(f"{service.url}/status", timeout=5).json()["servers_live"]


def test_feed_token_memory_bound_and_atomic_batches(small_service: Served, fleet_history: pd.DataFrame) -> None:
    names = sorted(fleet_history[SERVER_NAME].unique())
    assert len(names) > ROOM
    first = recent(fleet_history, names[:3], hours=0.5)
    for headers in (None, {"Authorization": "Bearer wrong"}):
        refused = _feed(small_service, first, headers)
        assert refused.status_code == 401 and "TFTMON_FEED_TOKEN" in refused.json()["fix"], refused.text
    assert _live(small_service) == 0

    older, newer = first[first["timestamp"] < first["timestamp"].median()], first
    assert _feed(small_service, older).status_code == 200
    assert _live(small_service) == 3

    # Three more servers do not fit the 1 MiB bound (room for 5): the batch stores nothing, not even the
    # newer rows of the three live servers in it, and says so.
    crossing = pd.concat([newer, recent(fleet_history, names[3 : 3 + ROOM - 2 + 1], hours=0.5)])
    refused = _feed(small_service, crossing)
    assert refused.status_code == 409, refused.text
    assert "nothing of this batch was stored" in refused.json()["error"] and "5 servers" in refused.json()["error"]
    assert "TFTMON_SERVICE_MAX_LIVE_WINDOW_MIB" in refused.json()["fix"]
    assert _live(small_service) == 3
    fitting = pd.concat([newer, recent(fleet_history, names[3:ROOM], hours=0.5)])
    accepted = _feed(small_service, fitting)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted"] == len(fitting) - len(older)  # the live servers' newer rows too
    assert _live(small_service) == ROOM

    status = requests.get(f"{small_service.url}/status", timeout=5).json()
    assert status["live_forecast_failures"] == 0 and status["servers_failing"] == {}
    metrics = requests.get(f"{small_service.url}/metrics", timeout=10).text
    assert "tftmon_live_forecast_failures_total 0.0" in metrics and "tftmon_live_servers_failing 0.0" in metrics
