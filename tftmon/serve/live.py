"""The service's state, kept out of the HTTP layer so it can be tested on its own.

- `ModelSlot`: the loaded Production model; a reload loads and smoke-tests the new one beside the old
  and swaps one reference, so a request that already took the old model finishes on it.
- `LiveWindows`: a bounded rolling window of raw ticks per server (servers x encoder span).
- `UnknownTracker`: unknown-server count and prediction rate over a rolling window.
- `payloads`: the model's tidy forecast + `risk.score` -> one JSON-ready record per server.
- `LiveFleet`: forecasts the live windows once per step into a cache and the AlertBook (tftmon.serve.alerts).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from tftmon.alerting import PageRule, page_rule_from_info
from tftmon.contract import (
    HORIZONS,
    METRIC,
    METRICS,
    MIN_RAW_INTERVAL,
    MODEL_STEP,
    ORIGIN,
    PROFILE,
    QUANTILE_NAMES,
    SERVER_NAME,
    STEP,
    STEP_MINUTES,
    STEP_NS,
    TIMESTAMP,
    profile_of,
)
from tftmon.data.resample import resample_to_model_step
from tftmon.model.network import Explanation, ForecastModel, explain, forecast
from tftmon.model.smoke import SmokeTestFailed, smoke_test
from tftmon.risk import SEVERITY_LABELS, AlertCalibration, Severity, score
from tftmon.serve.alerts import AlertBook

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# The model slot
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    version: str
    model: ForecastModel
    loaded_at: datetime
    #: SHA-256 of the weights registered with the version: a recreated registry reuses version numbers.
    digest: str | None = None

    @property
    def known_servers(self) -> frozenset[str]:
        return frozenset(self.model.training_info.get("servers", []))

    @cached_property
    def calibration(self) -> AlertCalibration:
        """The alert threshold the version was fitted with: read once per loaded version, so a version
        without a usable one is reported once, not on every forecast."""
        return AlertCalibration.from_info(self.model.training_info)

    @cached_property
    def page_rule(self) -> PageRule:
        """The page rule the version was evaluated with (the default for versions that carry none)."""
        return page_rule_from_info(self.model.training_info)

    @property
    def history_steps(self) -> int:
        """Steps of history a forecast reads: the encoder, and the seasonal lags' reach before it."""
        return self.model.config.history_steps

    @property
    def targets(self) -> tuple[str, ...]:
        """The metrics the model forecasts: what every row must carry and all a forecast reports."""
        return tuple(self.model.config.targets)


class ModelSlot:
    """Holds the current model; reloads are serialised, inference runs one forecast at a time (2 cores)."""

    def __init__(self, loader: Callable[[], LoadedModel | None]) -> None:
        self._loader = loader
        self._current: LoadedModel | None = None
        self._reload_lock = threading.Lock()
        self._infer_lock = threading.Lock()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def reload(self) -> tuple[LoadedModel | None, LoadedModel | None]:
        """Load what the loader resolves now, smoke-test it, then swap; on any error the old model stays."""
        with self._reload_lock:
            previous = self._current
            candidate = self._loader()
            if candidate is None:
                return previous, previous
            if previous is not None and (candidate.version, candidate.digest) == (previous.version, previous.digest):
                return previous, previous
            try:
                smoke_test(candidate.model)
            except SmokeTestFailed as exc:
                raise SmokeTestFailed(f"version {candidate.version}: {exc}") from exc
            self._current = candidate
            return previous, candidate

    def forecast(self, loaded: LoadedModel, history: pd.DataFrame) -> pd.DataFrame:
        with self._infer_lock:
            return forecast(loaded.model, history)

    def explain(self, loaded: LoadedModel, history: pd.DataFrame) -> Explanation:
        with self._infer_lock:
            return explain(loaded.model, history)


# ---------------------------------------------------------------------------------------------
# Rolling windows of live ticks
# ---------------------------------------------------------------------------------------------


class _Series:
    """One server's raw ticks, oldest first, in arrays compacted on growth (amortised O(1) per tick)."""

    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.ts = np.empty(0, dtype=np.int64)
        self.values = np.empty((0, len(METRICS)))
        self.start = 0
        self.end = 0

    @property
    def last_ts(self) -> int | None:
        return int(self.ts[self.end - 1]) if self.end > self.start else None

    def append(self, ts: np.ndarray, values: np.ndarray, keep_ns: int, max_rows: int) -> int:
        """Append ticks newer than the last one; returns how many were older and dropped."""
        received = len(ts)
        ts, values = ts[-max_rows:], values[-max_rows:]  # older rows would be cut below: never stored
        last = self.last_ts
        if last is not None:
            newer = ts > last
            ts, values = ts[newer], values[newer]
        if len(ts) > 1:  # sorted by the caller: drop repeated timestamps within one request
            increasing = np.concatenate([[True], ts[1:] > ts[:-1]])
            ts, values = ts[increasing], values[increasing]
        dropped = received - len(ts)
        n, k = self.end - self.start, len(ts)
        if self.end + k > len(self.ts):  # n and k are at most max_rows: a window never exceeds 2 x max_rows
            capacity = min(max(2 * (n + k), 64), 2 * max_rows)
            new_ts, new_values = np.empty(capacity, dtype=np.int64), np.empty((capacity, len(METRICS)))
            new_ts[:n], new_values[:n] = self.ts[self.start : self.end], self.values[self.start : self.end]
            self.ts, self.values, self.start, self.end = new_ts, new_values, 0, n
        self.ts[self.end : self.end + k], self.values[self.end : self.end + k] = ts, values
        self.end += k
        if self.end > self.start:
            cutoff = self.ts[self.end - 1] - keep_ns
            self.start += int(np.searchsorted(self.ts[self.start : self.end], cutoff, side="right"))
            self.start = max(self.start, self.end - max_rows)
        return dropped

    def span_steps(self) -> int:
        """Model steps from the first to the last bin, inclusive (as features.inference_frame counts)."""
        if self.end == self.start:
            return 0
        return int(self.ts[self.end - 1] // STEP_NS - self.ts[self.start] // STEP_NS + 1)


@dataclass
class FeedResult:
    accepted: int
    ignored_stale: int
    #: New servers of a batch refused for lack of room; when any is, nothing of the batch was stored.
    refused_servers: list[str] = field(default_factory=list)
    #: Live servers a batch's rows give another profile (name -> the live profile), and those rows; when any
    #: is, nothing of the batch was stored: a server has one profile, across requests as within one.
    changed_profiles: dict[str, str] = field(default_factory=dict)
    changed_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


class LiveWindows:
    """Per-server rolling windows; memory is bounded by the server limit x one full window's bytes, with
    the server limit the smaller of max_servers and what max_bytes holds at full windows."""

    def __init__(self, max_servers: int, max_bytes: int) -> None:
        self.max_servers_configured = max_servers
        self.max_bytes = max_bytes
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()
        self.steps = 0
        self.rows_appended = 0

    def set_history_steps(self, history_steps: int) -> None:
        """Keep one step more than a forecast reads (the newest bin is usually still filling)."""
        self.steps = history_steps + 1

    @property
    def _keep_ns(self) -> int:
        return self.steps * STEP_NS

    @property
    def _max_rows(self) -> int:
        return int(self.steps * MODEL_STEP / MIN_RAW_INTERVAL) + 1

    @property
    def max_servers(self) -> int:
        """Servers whose full windows (2 x max rows of timestamp + metrics, see _Series) fit max_bytes."""
        window_bytes = 2 * self._max_rows * 8 * (1 + len(METRICS))
        return max(0, min(self.max_servers_configured, self.max_bytes // window_bytes))

    def __len__(self) -> int:
        return len(self._series)

    def append(self, frame: pd.DataFrame) -> FeedResult:
        """Append contract rows (timestamp UTC, server_name, optional profile, the metrics sent: NaN for others)."""
        ts_all = pd.to_datetime(frame[TIMESTAMP], utc=True).to_numpy(dtype="datetime64[ns]").view(np.int64)
        values_all = frame.reindex(columns=list(METRICS)).to_numpy(dtype=np.float64)
        names = frame[SERVER_NAME].to_numpy()
        profiles = frame[PROFILE].to_numpy() if PROFILE in frame.columns else None
        result = FeedResult(0, 0)
        codes, uniques = pd.factorize(names)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        with self._lock:
            if profiles is not None:
                live = np.array([getattr(self._series.get(name), "profile", None) for name in uniques], dtype=object)
                sent = pd.Series(profiles, dtype=object)
                changed = sent.notna().to_numpy() & pd.notna(live[codes]) & (sent.to_numpy() != live[codes])
                if changed.any():  # all or nothing, as below
                    result.changed_rows = np.flatnonzero(changed)
                    result.changed_profiles = {str(uniques[c]): str(live[c]) for c in np.unique(codes[changed])}
                    return result
            new = [str(name) for name in uniques if name not in self._series]
            room = self.max_servers - len(self._series)
            if len(new) > room:  # all or nothing: a client retrying a half-stored batch would double it
                result.refused_servers = new[max(room, 0) :]
                return result
            for i, name in enumerate(uniques):
                rows = order[bounds[i] : bounds[i + 1]]
                series = self._series.get(name)
                if series is None:
                    given = profiles[rows[0]] if profiles is not None else None
                    series = self._series[name] = _Series(given if isinstance(given, str) else profile_of(name))
                ts, values = ts_all[rows], values_all[rows]
                sort = np.argsort(ts, kind="stable")
                dropped = series.append(ts[sort], values[sort], self._keep_ns, self._max_rows)
                result.ignored_stale += dropped
                result.accepted += len(rows) - dropped
            self.rows_appended += result.accepted
        return result

    def forget(self, names: Iterable[str]) -> None:
        """Drop these servers' windows: a source about to lay down their whole history again (a model that reads
        more metrics or a longer window) would otherwise have its older rows ignored as stale."""
        with self._lock:
            for name in names:
                self._series.pop(name, None)

    def snapshot(self, history_steps: int) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        """History of servers with all the history a forecast reads, and the servers still warming up."""
        warming: list[dict[str, Any]] = []
        parts: list[tuple[str, str, np.ndarray, np.ndarray]] = []
        with self._lock:
            for name, series in self._series.items():
                have = series.span_steps()
                if have >= history_steps:
                    s, e = series.start, series.end
                    parts.append((name, series.profile, series.ts[s:e].copy(), series.values[s:e].copy()))
                else:
                    need = history_steps - have
                    warming.append(
                        {
                            "server_name": name,
                            "have_steps": have,
                            "need_steps": need,
                            "need_minutes": need * STEP_MINUTES,
                        }
                    )
        if not parts:
            return pd.DataFrame(), warming
        lengths = [len(p[2]) for p in parts]
        history = pd.DataFrame(np.concatenate([p[3] for p in parts]), columns=list(METRICS))
        history.insert(0, TIMESTAMP, pd.to_datetime(np.concatenate([p[2] for p in parts]), unit="ns", utc=True))
        history.insert(1, SERVER_NAME, np.repeat(np.array([p[0] for p in parts], dtype=object), lengths))
        history.insert(2, PROFILE, np.repeat(np.array([p[1] for p in parts], dtype=object), lengths))
        return history, warming

    def servers(self) -> list[tuple[str, str, int, int]]:
        """(name, profile, newest sample in ns, span in model steps) of every live server, by name."""
        with self._lock:
            rows = [(n, s.profile, s.last_ts, s.span_steps()) for n, s in self._series.items()]
        return sorted((n, p, ts, span) for n, p, ts, span in rows if ts is not None)

    def latest_ns(self) -> int | None:
        with self._lock:
            times = [s.last_ts for s in self._series.values() if s.last_ts is not None]
        return max(times) if times else None


# ---------------------------------------------------------------------------------------------
# Forecast -> per-server records
# ---------------------------------------------------------------------------------------------


def _finite_or_none(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def payloads(
    tidy: pd.DataFrame, loaded: LoadedModel, include_path: bool = True, decimals: int = 3
) -> list[dict[str, Any]]:
    """One JSON-ready record per server from the model's tidy forecast, scored by tftmon.risk; servers
    by name, metrics in the model's order.

    Built from whole arrays (one `tolist` per view, one `to_dict` for the scores): per-server pandas
    and numpy calls cost more than the forecast itself at 900 servers. The forecast's own row order
    (server, then metric, then step) is the cube's: re-sorting its 1.2 million rows by name took 0.3 s.
    """
    server_codes, server_index = pd.factorize(tidy[SERVER_NAME])
    metric_codes, metric_index = pd.factorize(tidy[METRIC])
    n_steps = int(tidy[STEP].max())
    shape = (len(server_index), len(metric_index), n_steps)
    grid = np.indices(shape).reshape(3, -1)
    steps = tidy[STEP].to_numpy()
    if len(tidy) != grid.shape[1] or not (
        (server_codes == grid[0]).all() and (metric_codes == grid[1]).all() and (steps == grid[2] + 1).all()
    ):
        raise ValueError("payloads needs the forecast's layout: every server x metric x step, in that order")
    tidy = tidy.assign(**{ORIGIN: tidy[TIMESTAMP] - pd.to_timedelta(steps * STEP_NS, unit="ns")})
    by_name = np.argsort(np.asarray(server_index, dtype=object), kind="stable")
    servers, metrics = list(server_index[by_name]), list(metric_index)
    scores = score(tidy, calibration=loaded.calibration).set_index(SERVER_NAME).loc[servers].to_dict("records")
    cube = tidy[list(QUANTILE_NAMES)].to_numpy(dtype=float).round(decimals)
    if not np.isfinite(cube).all():
        raise ValueError(f"version {loaded.version} forecast non-finite values; not serving them")
    cube = cube.reshape(*shape, len(QUANTILE_NAMES))[by_name]
    at_horizons = cube[:, :, [step - 1 for step in HORIZONS.values()], :].transpose(0, 2, 1, 3).tolist()
    paths = cube.transpose(0, 1, 3, 2).tolist() if include_path else None
    known = loaded.known_servers
    records: list[dict[str, Any]] = []
    for i, (name, row) in enumerate(zip(servers, scores, strict=True)):
        horizons = {
            h: {m: dict(zip(QUANTILE_NAMES, by_q, strict=True)) for m, by_q in zip(metrics, by_h, strict=True)}
            for h, by_h in zip(HORIZONS, at_horizons[i], strict=True)
        }
        record: dict[str, Any] = {
            "server_name": name,
            "profile": row[PROFILE],
            "prediction_time": row[ORIGIN].isoformat(),
            "cold_start": name not in known,
            "model_version": loaded.version,
            "risk": round(float(row["risk"]), 4),
            "alert_score": round(float(row["raw"]), 4),
            "severity": row["severity"],
            "severity_label": SEVERITY_LABELS[Severity(row["severity"])],
            "colour": row["colour"],
            "metric": row["metric"] if isinstance(row["metric"], str) else None,
            "reason": row["reason"],
            "drivers": [d for d in str(row["drivers"]).split("; ") if d],
            "horizons": horizons,
            "step_minutes": STEP_MINUTES,
            # Alert details (kept for AlertBook; not part of the public forecast record).
            "_value": _finite_or_none(row["value"]),
            "_quantile": row["quantile"] if isinstance(row["quantile"], str) and row["quantile"] else None,
            "_probability": _finite_or_none(row["probability"]),
            "_minutes_ahead": int(row["minutes_ahead"]),
        }
        if paths is not None:
            record["path"] = {
                m: dict(zip(QUANTILE_NAMES, by_q, strict=True)) for m, by_q in zip(metrics, paths[i], strict=True)
            }
        records.append(record)
    return records


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The record without the alert-only fields."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------------------------
# Unknown servers
# ---------------------------------------------------------------------------------------------


class UnknownTracker:
    """Distinct unknown hostnames (bounded) and the unknown share of predictions over a rolling window."""

    def __init__(self, window_seconds: float, max_names: int) -> None:
        self.window = window_seconds
        self.max_names = max_names
        self.names: set[str] = set()
        self._events: deque[tuple[float, int, int]] = deque()
        self._lock = threading.Lock()

    def record(self, names: Iterable[str], known: frozenset[str], now: float | None = None) -> int:
        """Count one prediction per name; returns how many were unknown."""
        now = time.monotonic() if now is None else now
        names = list(names)
        unknown = [n for n in names if n not in known]
        with self._lock:
            for name in unknown:
                if len(self.names) < self.max_names:
                    self.names.add(name)
            self._events.append((now, len(names), len(unknown)))
            self._trim(now)
        return len(unknown)

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window:
            self._events.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            total = sum(e[1] for e in self._events)
            unknown = sum(e[2] for e in self._events)
        return unknown / total if total else 0.0


# ---------------------------------------------------------------------------------------------
# The live fleet: windows -> forecast once per step -> cached records and alerts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """One forecast as every reader sees it: its predictions and the alerts it left, swapped in by one assignment,
    so no reader pairs one forecast's predictions with another's alerts or reads the alert book mid-update."""

    #: /predictions/current's body.
    cache: dict[str, Any]
    #: /alerts/active's body: computed_at (the cache's), counts and the alerts, worst first.
    alerts: dict[str, Any]
    #: The alert book's entries, private keys included (the Alertmanager sink reads when each was raised).
    active: list[dict[str, Any]]
    #: /alerts/history's transitions, oldest first.
    history: list[dict[str, Any]]


class LiveFleet:
    """Forecasts the live fleet when due and caches the result; GET endpoints only read the cache."""

    def __init__(
        self,
        slot: ModelSlot,
        windows: LiveWindows,
        alerts: AlertBook,
        unknown: UnknownTracker,
        every_seconds: float,
        on_forecast: Callable[[list[dict[str, Any]], LoadedModel], None] | None = None,
        summaries: int = 2016,
        stale_after_seconds: float = float("inf"),
    ) -> None:
        self.slot, self.windows, self.alerts, self.unknown = slot, windows, alerts, unknown
        self.every_seconds = every_seconds
        self.stale_after_seconds = stale_after_seconds
        self.on_forecast = on_forecast
        self.published = Published(
            cache={"model_version": None, "computed_at": None, "predictions": [], "warming_up": []},
            alerts={"computed_at": None, "counts": alerts.counts(), "alerts": []},
            active=[],
            history=[],
        )
        self._rows_seen = 0
        self._servers_seen = 0
        self._data_ns: int | None = None
        self._wall = float("-inf")
        self._version: str | None = None
        #: Server forecasts that failed since start, and the servers whose last forecast failed (with why).
        self.failures = 0
        self.failing: dict[str, str] = {}
        #: Bumped whenever the cache and alerts change, so encoded views are rebuilt only then.
        self.generation = 0
        #: The history the cached forecast read, at the model step (per server: /explain and the fan charts).
        self.inputs = pd.DataFrame()
        #: One fleet summary per live forecast, oldest first (the Historical view).
        self.summaries: deque[dict[str, Any]] = deque(maxlen=summaries)

    def due(self, now: float) -> bool:
        """New rows and (a new model step of data, a server that joined, a new model, or every_seconds)."""
        loaded = self.slot.current
        if loaded is None or self.windows.rows_appended == self._rows_seen:
            return False
        latest = self.windows.latest_ns()
        new_step = latest is not None and (self._data_ns is None or latest // STEP_NS > self._data_ns // STEP_NS)
        joined = len(self.windows) != self._servers_seen
        return new_step or joined or loaded.version != self._version or now - self._wall >= self.every_seconds

    def _forecast(self, loaded: LoadedModel, history: pd.DataFrame) -> list[dict[str, Any]]:
        """The fleet in one call; when that fails, server by server, so one bad server costs only its own
        forecast (counted in failures and failing) and never freezes everyone else's."""
        try:
            records = payloads(self.slot.forecast(loaded, history), loaded)
            self.failing = {}
            return records
        except Exception as exc:
            log.warning("live forecast of %d servers failed (%s); retrying server by server", len(history), exc)
        records, failing = [], {}
        for name, one in history.groupby(SERVER_NAME, sort=False):
            try:
                records += payloads(self.slot.forecast(loaded, one), loaded)
            except Exception as exc:
                failing[str(name)] = f"{exc.__class__.__name__}: {exc}"
        self.failures += len(failing)
        self.failing = failing
        if failing:
            log.error("live forecast failed for %d servers: %s", len(failing), failing)
        return sorted(records, key=lambda r: r["server_name"])

    def refresh(self, now: float | None = None) -> bool:
        """Forecast every ready server now (if due); returns whether the cache changed."""
        now = time.monotonic() if now is None else now
        if not self.due(now):
            return False
        loaded = self.slot.current
        assert loaded is not None  # due() checked it
        self._rows_seen = self.windows.rows_appended
        self._servers_seen = len(self.windows)
        self._data_ns = self.windows.latest_ns()
        history, warming = self.windows.snapshot(loaded.history_steps)
        records = self._forecast(loaded, history) if len(history) else []
        self._wall, self._version = now, loaded.version
        self.unknown.record((r["server_name"] for r in records), loaded.known_servers)
        self.alerts.update(records, utcnow(), loaded.page_rule)
        # At the model step: the model reads nothing finer, and raw 5 s windows would double the windows' memory.
        self.inputs = resample_to_model_step(history) if len(history) else history
        self.summaries.append(fleet_summary(records, len(warming), self.alerts.counts(), loaded.version))
        if self.on_forecast is not None:  # counted before it is published: a reader of the cache sees the count
            self.on_forecast(records, loaded)
        predictions = [public(r) for r in records]
        self._age(predictions, utcnow())
        computed_at = utcnow().isoformat()
        self.published = Published(
            cache={
                "model_version": loaded.version,
                "computed_at": computed_at,
                "predictions": predictions,
                "warming_up": warming,
            },
            alerts={"computed_at": computed_at, "counts": self.alerts.counts(), "alerts": self.alerts.sorted_active()},
            active=[dict(alert) for alert in self.alerts.active.values()],
            history=list(self.alerts.history),
        )
        self.generation += 1
        return True

    @property
    def cache(self) -> dict[str, Any]:
        """The latest forecast of every ready server, as /predictions/current serves it."""
        return self.published.cache

    def ages(self, now: datetime) -> dict[str, float]:
        """Seconds from each live server's newest sample to `now` (never negative: a fast simulated feed runs
        ahead of the clock)."""
        now_ns = now.timestamp() * 1e9
        return {name: max(0.0, (now_ns - ts) / 1e9) for name, _, ts, _ in self.windows.servers()}

    def stale(self, now: datetime) -> dict[str, float]:
        """The live servers without a new sample for longer than the stale limit, with their age (s)."""
        return {name: round(age, 1) for name, age in self.ages(now).items() if age > self.stale_after_seconds}

    def _age(self, predictions: list[dict[str, Any]], now: datetime) -> None:
        ages = self.ages(now)
        for record in predictions:
            age = ages.get(record["server_name"])
            record["data_age_seconds"] = None if age is None else round(age, 1)
            record["stale"] = age is not None and age > self.stale_after_seconds

    def restamp(self, now: datetime) -> None:
        """Re-age the cached forecasts, so one whose data stopped coming is shown stale even though nothing
        new was forecast (a source calls this after each pull, failed or not)."""
        self._age(self.cache["predictions"], now)
        self.generation += 1


def _counts(severities: pd.Series) -> dict[str, int]:
    return {level.value: int((severities == level.value).sum()) for level in Severity}


def _risk_summary(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "servers": len(frame),
        "mean_risk": round(float(frame["risk"].mean()), 4) if len(frame) else 0.0,
        "max_risk": round(float(frame["risk"].max()), 4) if len(frame) else 0.0,
        "counts": _counts(frame["severity"]),
    }


def fleet_summary(records: list[dict[str, Any]], warming: int, alerts: dict[str, int], version: str) -> dict[str, Any]:
    """The fleet at one forecast, overall and per profile (a few numbers; kept for a week by default)."""
    frame = pd.DataFrame(records, columns=["profile", "risk", "severity", "prediction_time"])
    return {
        "computed_at": utcnow().isoformat(),
        "data_time": frame["prediction_time"].max() if len(frame) else None,
        "model_version": version,
        "warming_up": warming,
        **_risk_summary(frame),
        "alerts": dict(alerts),
        "by_profile": {str(p): _risk_summary(part) for p, part in frame.groupby("profile", sort=True)},
    }
