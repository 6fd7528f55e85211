"""Prometheus as a live source: every host's node_exporter metrics pulled into the service's live windows.

The pull asks a Prometheus-compatible HTTP API for the steps since the last pull with ingest's own queries,
host naming and unit conversion (`query_prometheus`), makes rows with ingest's own first step
(`tidy.wide_rows`) and appends them to the windows; the service's loop forecasts them as it does /feed rows,
binned by the one resampling. At the model step (the default) a pull reads exactly what `tftmon ingest
--prometheus` would, so the model sees live what it was trained on.

A host seen for the first time gets its encoder window back-filled from Prometheus's history in the same pull,
so it is forecast at once. At start every host is new: a restarted service is forecasting again after its
first pull, nothing of its state having been lost with the process. A failed pull (unreachable, slow, an error
answer) changes no window: it is counted and reported, and the hosts' last forecasts age until they are stale.
With a shard, the replica keeps only its hosts (a stable hash of the name), so N replicas cover a fleet once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from tftmon.contract import MODEL_STEP, SERVER, SERVER_NAME, TIMESTAMP, VALUE, normalise_hostname
from tftmon.data.ingest.prometheus import DEFAULT_QUERIES, PrometheusError, query_prometheus, redacted
from tftmon.data.ingest.tidy import wide_rows
from tftmon.encoding import server_id
from tftmon.serve.live import LiveWindows

log = logging.getLogger(__name__)

#: Seconds after a step closes before it is pulled: a scrape stamped just before the boundary is stored by then.
SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class Shard:
    """The hosts of replica `index` of `count`: those whose stable id (SHA-256 of the normalised name) falls
    in this bucket. Stable across restarts, machines and Python versions (unlike hash())."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str | None) -> Shard | None:
        """ "i/N" (0 <= i < N), as ServiceConfig.shard has checked it; None: every host."""
        if text is None:
            return None
        index, count = (int(part) for part in text.split("/"))
        return cls(index, count)

    def owns(self, server: str) -> bool:
        return int(server_id(server), 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Pulled:
    """What one pull brought: rows appended, hosts seen (in the shard), those back-filled, seconds taken."""

    rows: int
    hosts: int
    new_hosts: int
    seconds: float


class PrometheusSource:
    """Pulls node_exporter metrics of every host (of its shard) into `windows`; safe to call from one thread
    while another reads `status()`."""

    def __init__(
        self,
        url: str,
        windows: LiveWindows,
        *,
        resolution: timedelta = MODEL_STEP,
        timeout_seconds: float = 30.0,
        shard: Shard | None = None,
    ) -> None:
        self.url = url
        self.windows = windows
        self.resolution = resolution
        self.timeout = timeout_seconds
        self.shard = shard
        self._targets: tuple[str, ...] = ()
        self._history_steps = 0
        #: The end of the last step read: the next pull starts there.
        self._read_to: datetime | None = None
        #: Each host's scrape target labels (instance, job), for the exported series and alerts.
        self.labels: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {
            "url": redacted(url), "shard": None if shard is None else str(shard), "pulls": 0, "failed_pulls": 0,
            "consecutive_failures": 0, "last_pull_at": None, "last_success_at": None, "last_pull_seconds": None,
            "last_error": None, "hosts": 0, "hosts_outside_shard": 0, "hosts_backfilled": 0, "rows_appended": 0,
            "hosts_missing_metrics": {}, "metrics_missing": [], "duplicate_values": 0, "non_finite_values": 0,
            "hosts_refused": [],
        }  # fmt: skip

    def use_model(self, targets: tuple[str, ...], history_steps: int) -> None:
        """Pull what the loaded model reads: its metrics, and a window one step longer than the history a forecast
        reads (its encoder and seasonal lags). A model that reads other metrics or another window makes the next
        pull lay down every host's window anew."""
        if targets != self._targets or history_steps + 1 != self._history_steps:
            self._read_to = None
            self._targets, self._history_steps = targets, history_steps + 1

    @property
    def ready(self) -> bool:
        """A model told the source what to pull."""
        return bool(self._targets)

    def next_pull_in(self, now: datetime, every_seconds: float | None) -> float:
        """Seconds until the next pull: `every_seconds` after now, or (None) just after the next step closes."""
        if every_seconds is not None:
            return every_seconds
        into_step = now.timestamp() % MODEL_STEP.total_seconds()
        return MODEL_STEP.total_seconds() - into_step + SETTLE_SECONDS

    def run(
        self,
        stop: threading.Event,
        wake: threading.Event,
        every_seconds: float | None,
        idle_seconds: float,
        after: Callable[[], None],
    ) -> None:
        """Pull at once, then once per model step just after it closes (or every `every_seconds`), calling
        `after` each time (the service re-ages its forecasts), until `stop`; `wake` pulls now (a model was
        installed). Until a model says what to pull, it looks again every `idle_seconds`."""
        wait = 0.0
        while not stop.is_set():
            wake.wait(wait)
            wake.clear()
            if stop.is_set():
                return
            try:
                self.pull(datetime.now(UTC))
                after()
            except Exception:  # keep the loop alive; the next pull retries
                log.exception("Prometheus pull failed")
            wait = self.next_pull_in(datetime.now(UTC), every_seconds) if self.ready else idle_seconds

    def pull(self, now: datetime) -> Pulled | None:
        """One pull up to `now`; None when there was nothing to pull yet (no model, or no whole step since the
        last). Never raises for Prometheus's faults: they are counted and kept in status()."""
        if not self._targets:
            return None
        history = MODEL_STEP * self._history_steps
        start = now - history if self._read_to is None else max(self._read_to, now - history)
        step = MODEL_STEP if self._read_to is None else self.resolution
        if now - start < step:
            return None
        started = time.perf_counter()
        try:
            rows, hosts, new = self._pull(start, now, step, history)
        except PrometheusError as exc:
            self._failed(str(exc), now, time.perf_counter() - started)
            return None
        pulled = Pulled(rows, hosts, new, time.perf_counter() - started)
        self._succeeded(now, pulled)
        return pulled

    def _pull(self, start: datetime, now: datetime, step: timedelta, history: timedelta) -> tuple[int, int, int]:
        """Rows appended, hosts seen and hosts back-filled."""
        frame, described = self._query(start, now, step)
        end = pd.Timestamp(described["end"]).to_pydatetime()
        rows, duplicates = self._rows(frame)
        backfilled = 0
        if self._read_to is not None and len(rows):
            known = {name for name, *_ in self.windows.servers()}
            new = sorted(set(rows[SERVER_NAME].astype(str)) - known)
            if new:  # their encoder window, read before the new rows so the windows take them oldest first
                earlier, _ = self._query(now - history, start, MODEL_STEP)
                old_rows, more = self._rows(earlier[earlier[SERVER].map(normalise_hostname).isin(new)])
                rows, duplicates = pd.concat([old_rows, rows], ignore_index=True), duplicates + more
                backfilled = len(new)
        hosts = set(rows[SERVER_NAME].astype(str)) if len(rows) else set()
        if self._read_to is None:
            backfilled = len(hosts)
        missing = self._missing(rows, described)
        complete = rows[~rows[SERVER_NAME].astype(str).isin(set(missing))] if missing else rows
        if self._read_to is None:  # whole windows: what the windows hold of these hosts is replaced
            self.windows.forget(hosts)
        result = self.windows.append(complete) if len(complete) else None
        self._read_to = end
        with self._lock:
            self.labels.update(
                {normalise_hostname(server): labels for server, labels in described.get("targets", {}).items()}
            )
            self._status.update(
                hosts=len(hosts),
                hosts_outside_shard=len(described.get("targets", {})) - len(hosts),
                hosts_missing_metrics=missing,
                duplicate_values=duplicates,
                non_finite_values=sum(described.get("non_finite", {}).values()),
                hosts_refused=[] if result is None else result.refused_servers[:20],
            )
            self._status["rows_appended"] += 0 if result is None else result.accepted
        return 0 if result is None else result.accepted, len(hosts), backfilled

    def _query(self, start: datetime, end: datetime, step: timedelta) -> tuple[pd.DataFrame, dict[str, Any]]:
        unread: dict[str, str | None] = {m: None for m in DEFAULT_QUERIES if m not in self._targets}
        frame, described = query_prometheus(
            self.url, start, end, step=step, progress=False, queries=unread, timeout=self.timeout
        )
        if self.shard is not None:
            names = frame[SERVER].map(normalise_hostname)
            owned = {name: self.shard.owns(name) for name in names.unique()}
            frame = frame[names.map(owned).to_numpy(dtype=bool)]
        return frame, described

    @staticmethod
    def _rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        """Rows of (timestamp, server_name, metrics) from long samples, and the duplicate values merged."""
        if not len(frame):
            return pd.DataFrame(columns=[TIMESTAMP, SERVER_NAME]), 0
        rows, duplicates = wide_rows(frame, frame[VALUE].to_numpy(dtype=np.float64), "last")
        rows[SERVER_NAME] = rows[SERVER_NAME].astype(str)
        return rows, int(duplicates["values"])

    def _missing(self, rows: pd.DataFrame, described: dict[str, Any]) -> dict[str, list[str]]:
        """Hosts that lack a metric the model forecasts in this pull (they are left out: a window with a hole
        would fail its forecast), and the model's metrics no host has (a query that finds nothing)."""
        absent = [m for m in self._targets if m not in rows.columns]
        self._status["metrics_missing"] = [
            {"metric": m, "why": described.get("left_out", {}).get(m, "no series in the pulled range")} for m in absent
        ]
        if not len(rows):
            return {}
        present = [m for m in self._targets if m in rows.columns]
        have = rows.groupby(SERVER_NAME, sort=True)[present].count() if present else pd.DataFrame()
        missing: dict[str, list[str]] = {}
        for server, counts in have.iterrows():
            lacks = [m for m in present if counts[m] == 0] + absent
            if lacks:
                missing[str(server)] = lacks
        if not present:
            missing = {str(s): absent for s in rows[SERVER_NAME].unique()}
        return missing

    def _failed(self, message: str, now: datetime, seconds: float) -> None:
        with self._lock:
            status = self._status
            if status["last_error"] is None or status["last_error"]["message"] != message:
                log.error("Prometheus pull failed (forecasts age until it answers): %s", message)
            status["pulls"] += 1
            status["failed_pulls"] += 1
            status["consecutive_failures"] += 1
            status["last_pull_at"] = now.isoformat()
            status["last_pull_seconds"] = round(seconds, 3)
            status["last_error"] = {"at": now.isoformat(), "message": message}

    def _succeeded(self, now: datetime, pulled: Pulled) -> None:
        with self._lock:
            status = self._status
            if status["consecutive_failures"]:
                log.info("Prometheus answers again after %d failed pulls", status["consecutive_failures"])
            status["pulls"] += 1
            status["consecutive_failures"] = 0
            status["last_pull_at"] = status["last_success_at"] = now.isoformat()
            status["last_pull_seconds"] = round(pulled.seconds, 3)
            status["hosts_backfilled"] += pulled.new_hosts
            status["last_error"] = None

    def status(self) -> dict[str, Any]:
        """Pulls, failures and the last error, hosts, and what was left out and why (JSON-able)."""
        with self._lock:
            return {**self._status, "read_to": None if self._read_to is None else self._read_to.isoformat()}

    def targets(self) -> dict[str, dict[str, str]]:
        """Each host's instance and job, as its series were read (a host fed another way has none): one copy per
        scrape or alert round, not one per host."""
        with self._lock:
            return dict(self.labels)
