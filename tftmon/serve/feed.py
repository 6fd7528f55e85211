"""Stream simulator ticks into the service's /feed: the live demo's data source.

Ticks come from `FleetSimulator.ticks()`, the same blocks batch generation writes, so the live fleet is
the batch fleet. The feeder owns the scenario (healthy / degrading / critical), switched while it runs
through `feed_control` (applied at the next tick). It first back-fills `backfill_hours` as fast as the
service accepts (so forecasts start at once), then paces one tick per `interval / speed` of wall clock,
with data timestamps ending near the present.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd
import requests

from tftmon.config import SimulationConfig
from tftmon.contract import SERVER_ID, STATE, TIMESTAMP

if TYPE_CHECKING:
    from tftmon.data.simulate import FleetSimulator
    from tftmon.serve.feed_control import ScenarioControl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedOptions:
    url: str = "http://127.0.0.1:3000"
    #: The service's /feed bearer token (TFTMON_FEED_TOKEN).
    token: str = ""
    speed: float = 60.0
    backfill_hours: float = 6.0
    #: Rows per /feed request while back-filling (below the service's max_feed_rows).
    batch_rows: int = 5000
    #: Stop after this many live ticks after the back-fill (None = forever).
    max_ticks: int | None = None
    timeout: float = 60.0


def live_config(servers: int, scenario: str, interval: str, backfill_hours: float, seed: int) -> SimulationConfig:
    """An endless simulation that starts `backfill_hours` ago; the scenario path begins after the back-fill."""
    step = pd.Timedelta(interval)
    start = (pd.Timestamp(datetime.now(UTC)) - pd.Timedelta(hours=backfill_hours)).floor(step)
    return SimulationConfig(
        servers=servers, hours=math.inf, interval=interval, seed=seed, start=start, scenario=scenario,
        scenario_start_hours=backfill_hours + 0.25,
    )  # fmt: skip


def _rows(tick: pd.DataFrame) -> list[dict]:
    """A tick as /feed rows: the simulator's ground truth (`state`) and derived ids never leave it."""
    clean = tick.drop(columns=[STATE, SERVER_ID], errors="ignore")
    return json.loads(clean.to_json(orient="records", date_format="iso"))


def _post(session: requests.Session, options: FeedOptions, rows: list[dict]) -> None:
    """POST rows; retry while the service is unreachable, stop on a 4xx (the data would never pass)."""
    delay = 1.0
    while True:
        try:
            response = session.post(f"{options.url}/feed", json={"rows": rows}, timeout=options.timeout)
        except requests.RequestException as exc:
            log.warning("service unreachable (%s); retrying in %.0f s", exc.__class__.__name__, delay)
        else:
            if response.status_code < 400:
                return
            if response.status_code < 500:
                raise RuntimeError(f"/feed refused the ticks ({response.status_code}): {response.text[:500]}")
            log.warning("/feed answered %s; retrying in %.0f s", response.status_code, delay)
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


def _batches(ticks: Iterator[pd.DataFrame], until: datetime, batch_rows: int) -> Iterator[list[dict]]:
    """Ticks up to `until`, grouped into requests of about batch_rows rows."""
    batch: list[dict] = []
    for tick in ticks:
        batch.extend(_rows(tick))
        if len(batch) >= batch_rows or tick["timestamp"].iloc[0] >= until:
            yield batch
            batch = []
        if tick["timestamp"].iloc[0] >= until:
            return
    if batch:
        yield batch


def steered(sim: FleetSimulator, control: ScenarioControl | None) -> Iterator[pd.DataFrame]:
    """`sim.ticks()`, switching the scenario before the next tick whenever `control` asks for another."""
    ticks = sim.ticks()
    step = pd.Timedelta(sim.config.interval)
    at = pd.Timestamp(sim.config.start)
    while True:
        wanted = None if control is None else control.take()
        if wanted is not None and control is not None:
            sim.switch_scenario(wanted, at)
            control.applied(wanted, at)
            log.info("scenario %s from data time %s", wanted, at.isoformat())
        tick = next(ticks, None)
        if tick is None:
            return
        yield tick
        at = tick[TIMESTAMP].iloc[0] + step


def run(config: SimulationConfig, options: FeedOptions, control: ScenarioControl | None = None) -> int:
    """Back-fill, then stream paced ticks (max_ticks of them, after the back-fill); returns ticks sent.
    `control`, when given, switches the scenario from the next tick on."""
    from tftmon.data.simulate import FleetSimulator

    sim = FleetSimulator(config)
    if control is not None:
        control.applied(config.scenario, pd.Timestamp(config.start))
    ticks = steered(sim, control)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {options.token}"
    backfilled = 0
    now = pd.Timestamp(datetime.now(UTC))
    for rows in _batches(ticks, now - pd.Timedelta(config.interval), options.batch_rows):
        _post(session, options, rows)
        backfilled += len({r["timestamp"] for r in rows})
    log.info("back-filled %d ticks; streaming at %gx", backfilled, options.speed)
    pause = config.interval / timedelta(seconds=1) / options.speed
    next_at = time.monotonic()
    streamed = 0
    for tick in ticks:
        if options.max_ticks is not None and streamed >= options.max_ticks:
            break
        _post(session, options, _rows(tick))
        streamed += 1
        next_at += pause
        time.sleep(max(0.0, next_at - time.monotonic()))
    return backfilled + streamed
