"""Fleet and data drift against the Production model: what `tftmon drift` and `tftmon monitor` act on.

Fleet drift compares the servers the Production model was trained on (its `training_info.json`) with the
servers that report now: a dataset's telemetry, Prometheus's view (each host's last node_exporter sample over
the last 30 days, named as `tftmon ingest --prometheus` names it), or the running service's live view
(`GET /fleet`). Silence is measured to the newest sample seen (from Prometheus: to the clock; or to `now`):
offline after a day, a retirement (sunset) candidate after a week, retired after 30 days; a known server absent
altogether counts as retired. Drift % = (new + retired) / known sets the priority (contract, "Fleet drift").
With a service, its unknown-server prediction rate (`GET /status`) is banded too, and a critical rate raises
the priority to at least UNKNOWN_RATE_CRITICAL_PRIORITY.

Data drift (a dataset, or Prometheus's recent window ingested as `tftmon ingest --prometheus` writes it)
scores each metric's shift per profile between the end of the training data and the recent telemetry
(tftmon.evaluation.shift), and backtests the model on the end of the data against the MASE its training run
logged. Both are reported; neither changes the priority. Every check is a run of the monitoring experiment,
so drift over time is a chart in the MLflow UI.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import requests
from tqdm import tqdm

from tftmon.config import DriftConfig, Settings
from tftmon.contract import (
    DRIFT_HIGH_PCT,
    DRIFT_LOW_PCT,
    DRIFT_MEDIUM_PCT,
    DRIFT_PRIORITIES,
    LOAD_AVERAGE,
    METRICS,
    MODEL_STEP,
    OFFLINE_AFTER,
    PROFILE,
    SERVER,
    SERVER_NAME,
    SUNSET_AFTER,
    SUNSET_CANDIDATE_AFTER,
    TIMESTAMP,
    UNKNOWN_RATE_CRITICAL,
    UNKNOWN_RATE_CRITICAL_PRIORITY,
    UNKNOWN_RATE_WARNING,
    DriftPriority,
    UnknownRateLevel,
    normalise_hostname,
    profile_of,
    to_utc,
)
from tftmon.io import TRAINING_INFO_FILE, parquet_files, read_json, read_metrics
from tftmon.ops import registry, tracking

log = logging.getLogger(__name__)

#: Data the forecast-error backtest needs: the gate's seasonal history (two periods) and its held-out hours.
FORECAST_ERROR_SPAN = 2 * registry.GATE_EVALUATION.seasonal_steps * MODEL_STEP + timedelta(
    hours=registry.GATE_EVALUATION.holdout_hours
)
#: Names shown per list in the text report (the JSON has them all).
SHOWN = 10


class DriftError(RuntimeError):
    """The check cannot run (no Production model, nothing to compare with); the message says what to do."""


def exit_code(priority: DriftPriority) -> int:
    """A check's exit code, so cron or CI can act on it: 0 none, 1 low, 2 medium, 3 high."""
    return DRIFT_PRIORITIES.index(priority)


def drift_priority(drift_pct: float) -> DriftPriority:
    """Priority of a drift %: low from DRIFT_LOW_PCT, medium from DRIFT_MEDIUM_PCT, high above DRIFT_HIGH_PCT."""
    if drift_pct > DRIFT_HIGH_PCT:
        return "high"
    if drift_pct >= DRIFT_MEDIUM_PCT:
        return "medium"
    return "low" if drift_pct >= DRIFT_LOW_PCT else "none"


def unknown_rate_level(rate: float) -> UnknownRateLevel:
    """fine below UNKNOWN_RATE_WARNING, warning up to UNKNOWN_RATE_CRITICAL, critical above it."""
    if rate > UNKNOWN_RATE_CRITICAL:
        return "critical"
    return "warning" if rate >= UNKNOWN_RATE_WARNING else "fine"


def combined_priority(fleet: DriftPriority, level: UnknownRateLevel | None) -> DriftPriority:
    """The fleet's priority, raised to UNKNOWN_RATE_CRITICAL_PRIORITY when the unknown-server rate is critical."""
    if level != "critical":
        return fleet
    return max(fleet, UNKNOWN_RATE_CRITICAL_PRIORITY, key=DRIFT_PRIORITIES.index)


@dataclass(frozen=True)
class FleetDrift:
    """The known fleet against the reporting one, each list sorted by name."""

    known: int
    #: Servers seen within OFFLINE_AFTER of the reference time.
    active: list[str]
    #: Servers reporting (not sunset) that the model never saw.
    new_servers: list[str]
    offline: list[str]
    sunset_candidates: list[str]
    #: Silent at least SUNSET_AFTER, or known and absent altogether.
    sunset: list[str]
    #: The known servers among `sunset`: what drift % counts.
    retired: list[str]

    @property
    def drift_pct(self) -> float:
        return 100.0 * (len(self.new_servers) + len(self.retired)) / self.known if self.known else 0.0


def compare_fleets(known: Iterable[str], last_seen: pd.Series, now: pd.Timestamp) -> FleetDrift:
    """Classify servers by silence up to `now`: `last_seen` maps each reporting server to its newest sample."""
    known_set = set(known)
    by_name = {str(name): now - to_utc(seen) for name, seen in last_seen.items()}

    def silent(low: timedelta | None, high: timedelta | None = None) -> list[str]:
        return sorted(n for n, s in by_name.items() if (low is None or s >= low) and (high is None or s < high))

    sunset = sorted({*silent(SUNSET_AFTER), *(known_set - set(by_name))})
    gone = set(sunset)
    return FleetDrift(
        known=len(known_set),
        active=silent(None, OFFLINE_AFTER),
        new_servers=sorted(n for n in by_name if n not in known_set and n not in gone),
        offline=silent(OFFLINE_AFTER, SUNSET_CANDIDATE_AFTER),
        sunset_candidates=silent(SUNSET_CANDIDATE_AFTER, SUNSET_AFTER),
        sunset=sunset,
        retired=sorted(gone & known_set),
    )


@dataclass(frozen=True)
class ForecastError:
    """The Production model's MASE on the end of the data beside the MASE its training run logged."""

    recent_mase: float
    evaluation_mase: float | None
    origins: int
    servers: int

    @property
    def ratio(self) -> float | None:
        return None if not self.evaluation_mase else self.recent_mase / self.evaluation_mase


@dataclass(frozen=True)
class DriftReport:
    """One drift check; `priority` decides what a monitor does, `exit_code(priority)` what cron sees."""

    priority: DriftPriority
    #: Where the reporting fleet came from: a dataset path, a Prometheus URL (no credentials) or a service URL.
    source: str
    #: The time silence is measured to: `now`, or the newest sample seen.
    checked_at: datetime
    model_version: str | None
    model_age_days: float | None
    fleet: FleetDrift
    fleet_priority: DriftPriority
    unknown_rate: float | None = None
    unknown_level: UnknownRateLevel | None = None
    #: Per metric and profile (tftmon.evaluation.shift.SHIFT_COLUMNS), largest shift first.
    shifts: list[dict[str, Any]] = field(default_factory=list)
    forecast_error: ForecastError | None = None
    #: What was not checked, and why.
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON-ready values (the exit code included)."""
        out = dataclasses.asdict(self)
        out.update(out.pop("fleet"), drift_pct=self.fleet.drift_pct)  # the fleet's counts at the top level
        out["checked_at"] = self.checked_at.isoformat()
        out["exit_code"] = exit_code(self.priority)
        if self.forecast_error is not None:
            out["forecast_error"]["ratio"] = self.forecast_error.ratio
        out["shifts"] = [{k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in row.items()}
                         for row in self.shifts]  # fmt: skip
        return out

    def to_text(self) -> str:
        """The readable table `tftmon drift` prints: counts, the servers (capped lists), shifts, notes."""
        fleet = self.fleet
        age = "" if self.model_age_days is None else f", {self.model_age_days:.1f} days old"
        lines = [
            f"drift of Production model v{self.model_version}{age} vs {self.source} "
            f"at {self.checked_at:%Y-%m-%d %H:%M} UTC",
            f"  {'priority':<25}{self.priority.upper()} (exit code {exit_code(self.priority)})",
            f"  {'drift':<25}{fleet.drift_pct:.1f} % = ({len(fleet.new_servers)} new + {len(fleet.retired)} retired) / "
            f"{fleet.known} known: {self.fleet_priority} [low ≥ {DRIFT_LOW_PCT:g} %, medium ≥ {DRIFT_MEDIUM_PCT:g} %, "
            f"high > {DRIFT_HIGH_PCT:g} %]",
            _names_line(f"active (< {_span(OFFLINE_AFTER)})", fleet.active),
            _names_line("new", fleet.new_servers),
            _names_line(f"offline (≥ {_span(OFFLINE_AFTER)})", fleet.offline),
            _names_line(f"sunset cand. (≥ {_span(SUNSET_CANDIDATE_AFTER)})", fleet.sunset_candidates),
            _names_line(f"sunset (≥ {_span(SUNSET_AFTER)}, absent)", fleet.sunset),
        ]
        if self.unknown_rate is not None:
            lines.append(
                f"  {'unknown-server rate':<25}{self.unknown_rate:.1%}: {self.unknown_level} [warning ≥ "
                f"{UNKNOWN_RATE_WARNING:.0%}, critical > {UNKNOWN_RATE_CRITICAL:.0%}; critical raises the priority "
                f"to ≥ {UNKNOWN_RATE_CRITICAL_PRIORITY}]"
            )
        if self.shifts:
            lines.append("  data drift, largest first (shift: Wasserstein / training std; KS statistic):")
            lines.append(f"    {'metric':<18}{'profile':<16}{'shift':>7}{'KS':>7}{'train mean':>12}{'recent mean':>13}")
            for row in self.shifts[:SHOWN]:
                lines.append(
                    f"    {row['metric']:<18}{row['profile']:<16}{row['shift']:>7.2f}{row['ks']:>7.2f}"
                    f"{row['reference_mean']:>12.2f}{row['recent_mean']:>13.2f}"
                )
        if self.forecast_error is not None:
            error = self.forecast_error
            versus = "" if error.ratio is None else f" vs {error.evaluation_mase:.3f} evaluated (x{error.ratio:.2f})"
            lines.append(
                f"  {'forecast error':<25}MASE {error.recent_mase:.3f} on the end of the data{versus}, "
                f"{error.origins} origins of {error.servers} servers"
            )
        lines += [f"  note: {note}" for note in self.notes]
        if self.run_id:
            lines.append(f"  logged as MLflow run {self.run_id} ({Settings().tftmon_monitoring_experiment})")
        return "\n".join(lines)


def _span(delta: timedelta) -> str:
    return f"{delta.days} d" if delta.days else f"{delta.total_seconds() / 3600:g} h"


def _names_line(label: str, names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN]) + (f", … {len(names) - SHOWN} more" if len(names) > SHOWN else "")
    return f"  {label:<25}{len(names):<5}{shown}"


# ---------------------------------------------------------------------------------------------
# The Production model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Production:
    version: str
    model_dir: Path
    training_info: dict[str, Any]
    created: datetime
    #: The MASE the training run logged (registry.SCORE_METRIC), and the dataset it recorded.
    evaluation_mase: float | None
    dataset: Path | None


def _production() -> _Production:
    from mlflow import MlflowClient

    version = registry.production_version()
    if version is None:
        raise DriftError("no Production model to compare with: train and promote one (tftmon train, tftmon promote)")
    client, name = MlflowClient(), Settings().tftmon_model_name
    details = client.get_model_version(name, version)
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    if details.run_id:
        run = client.get_run(details.run_id)
        metrics, tags = run.data.metrics, run.data.tags
    model_dir = registry.version_files(version)
    return _Production(
        version=version,
        model_dir=model_dir,
        training_info=read_json(model_dir / TRAINING_INFO_FILE),
        created=datetime.fromtimestamp(details.creation_timestamp / 1000, UTC),
        evaluation_mase=metrics.get(registry.SCORE_METRIC),
        dataset=Path(tags[tracking.DATASET_PATH_TAG]) if tracking.DATASET_PATH_TAG in tags else None,
    )


# ---------------------------------------------------------------------------------------------
# Reading the reporting fleet: a dataset, or the service's live view
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scan:
    """Each server's newest sample, and each Parquet file's time span (to read only the files a window needs)."""

    last_seen: pd.Series
    spans: list[tuple[Path, pd.Timestamp, pd.Timestamp]]

    @property
    def newest(self) -> pd.Timestamp:
        return max(last for _, _, last in self.spans)


def _scan(path: Path, progress: bool) -> _Scan:
    """Two columns of every file: the servers and their sample times."""
    seen: list[pd.Series] = []
    spans = []
    for file in tqdm(parquet_files(path), desc=f"scan {Path(path).name}", unit="file", disable=not progress):
        frame = read_metrics(file, columns=[SERVER_NAME, TIMESTAMP], categories=[SERVER_NAME])
        if frame.empty:
            continue
        ts = to_utc(frame[TIMESTAMP])
        seen.append(ts.groupby(frame[SERVER_NAME], observed=True).max())
        spans.append((file, ts.min(), ts.max()))
    if not spans:
        raise DriftError(f"{path}: no samples in it; point at telemetry (tftmon ingest, tftmon generate)")
    return _Scan(pd.concat(seen).groupby(level=0).max(), spans)


def _read_window(scan: _Scan, start: pd.Timestamp, end: pd.Timestamp, servers: set[str] | None = None) -> pd.DataFrame:
    """The metrics of [start, end] (of `servers` only, when given) at the model step, each row with a profile."""
    from tftmon.data.resample import resample_to_model_step

    frames = []
    for file, first, last in scan.spans:
        if last < start or first > end:
            continue
        names = set(pq.read_schema(file).names)
        frame = read_metrics(file, columns=[c for c in (TIMESTAMP, SERVER_NAME, PROFILE, *METRICS) if c in names])
        ts = to_utc(frame[TIMESTAMP])
        keep = (ts >= start) & (ts <= end)
        if servers is not None:
            keep &= frame[SERVER_NAME].isin(servers)
        frames.append(frame[keep])
    window = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if window.empty:
        return window
    if PROFILE not in window.columns:
        profiles = {name: profile_of(name) for name in window[SERVER_NAME].unique()}
        window[PROFILE] = window[SERVER_NAME].map(profiles)
    return resample_to_model_step(window)


def _get(url: str, timeout: float) -> dict[str, Any]:
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise DriftError(
            f"cannot reach {url} ({exc.__class__.__name__}): start the service (tftmon serve) or pass its --service URL"
        ) from None
    if response.status_code != 200:
        raise DriftError(f"{url} answered {response.status_code}: {response.text[:200]}; check the --service URL")
    body: dict[str, Any] = response.json()
    return body


def _service_view(url: str, timeout: float) -> tuple[pd.Series, dict[str, Any]]:
    """The live servers' newest sample times (GET /fleet) and the service's status (GET /status)."""
    base = url.rstrip("/")
    servers = _get(f"{base}/fleet", timeout)["servers"]
    status = _get(f"{base}/status", timeout)
    last_seen = pd.Series(
        pd.to_datetime([s["last_seen"] for s in servers], utc=True), index=[s["server_name"] for s in servers]
    )
    return last_seen, status


def _last_seen(long: pd.DataFrame, step: timedelta) -> pd.Series:
    """Each host's last evaluation with a sample, by the name ingest gives it (query_prometheus stamps each value at
    the start of the step it evaluated at the end of)."""
    names = long[SERVER].astype(str).map(normalise_hostname)
    return long.groupby(names)[TIMESTAMP].max() + step


def _prometheus_view(
    url: str, config: DriftConfig, clock: pd.Timestamp, out: Path
) -> tuple[pd.Series, _Scan | None, str]:
    """Each host's last sample over SUNSET_AFTER (node_load1, which every node_exporter has, every `survey_step`)
    and, when a host reported within the recent window, that window (or the span the forecast error needs) at the
    model step, ingested to `out` by ingest's own code as `tftmon ingest --prometheus` writes it."""
    from tftmon.config import IngestConfig
    from tftmon.data.ingest import IngestError, Mapping, Samples, ingest_samples
    from tftmon.data.ingest.prometheus import DEFAULT_QUERIES, query_prometheus

    end = clock.to_pydatetime()
    survey_only: dict[str, None] = {metric: None for metric in DEFAULT_QUERIES if metric != LOAD_AVERAGE}
    span = max(timedelta(hours=config.recent_hours), FORECAST_ERROR_SPAN if config.forecast_error else timedelta(0))
    scan = None
    try:
        long, described = query_prometheus(
            url, end - SUNSET_AFTER, end, step=config.survey_step, progress=False, queries=survey_only
        )
        last_seen = _last_seen(long, config.survey_step)
        if clock - last_seen.max() < span + config.survey_step:
            # A step more than the span: only the whole steps inside a range are read.
            recent, described = query_prometheus(url, end - span - MODEL_STEP, end, progress=config.progress_bar)
            last_seen = pd.concat([last_seen, _last_seen(recent, MODEL_STEP)]).groupby(level=0).max()
            ingest_samples(Samples(recent, source=described), Mapping(), IngestConfig(), out, progress=False)
            scan = _scan(out, progress=False)
    except IngestError as exc:  # PrometheusError: unreachable, refused, no data; the message names URL and fix
        raise DriftError(str(exc)) from None
    return last_seen, scan, f"{described['url']} (Prometheus)"


# ---------------------------------------------------------------------------------------------
# Data drift and forecast error
# ---------------------------------------------------------------------------------------------


def _reference_window(production: _Production, config: DriftConfig, progress: bool) -> tuple[pd.DataFrame, str]:
    """The last `reference_hours` of the model's training period in the reference data, or why there is none."""
    path = config.reference or production.dataset
    if path is None:
        return pd.DataFrame(), (
            "no data drift: the model's training run recorded no dataset; pass --reference PATH (its training data)"
        )
    if not Path(path).exists():
        return pd.DataFrame(), f"no data drift: the training data {path} is gone; pass --reference PATH"
    scan = _scan(Path(path), progress)
    end = scan.newest
    trained_until = production.training_info.get("time_range", [None, None])[1]
    if trained_until is not None:
        end = min(end, to_utc(trained_until))
    window = _read_window(scan, end - pd.Timedelta(hours=config.reference_hours), end)
    return window, f"reference: {path}, the {config.reference_hours:g} h up to {end:%Y-%m-%d %H:%M}"


def _forecast_error(production: _Production, frame: pd.DataFrame) -> ForecastError:
    """Backtest the Production weights on the end of `frame` as the promotion gate scores them."""
    from tftmon.evaluation.backtest import holdout_start
    from tftmon.model.network import load_model

    model = load_model(production.model_dir)
    holdout = holdout_start(frame, registry.GATE_EVALUATION.holdout_hours)
    score = registry.backtest_score(model, registry.GateSample.cut(frame, holdout, "recent telemetry"))
    return ForecastError(
        recent_mase=score.mase,
        evaluation_mase=production.evaluation_mase,
        origins=score.origins,
        servers=int(frame[SERVER_NAME].nunique()),
    )


def _data_drift(
    production: _Production, config: DriftConfig, scan: _Scan, fleet: FleetDrift, now: pd.Timestamp
) -> tuple[list[dict[str, Any]], ForecastError | None, list[str]]:
    """Shift scores of the recent window vs the reference, and the recent forecast error (each when possible)."""
    from tftmon.evaluation.shift import shift_scores

    notes: list[str] = []
    recent = _read_window(scan, now - pd.Timedelta(hours=config.recent_hours), now)
    reference, said = _reference_window(production, config, config.progress_bar)
    shifts: list[dict[str, Any]] = []
    if reference.empty or recent.empty:
        notes.append(said if reference.empty else f"no data drift: no samples in the last {config.recent_hours:g} h")
    else:
        notes.append(said)
        table = shift_scores(reference, recent, config.sample_size, config.seed)
        shifts = [{str(k): v for k, v in row.items()} for row in table.to_dict(orient="records")]

    error = None
    if not config.forecast_error:
        return shifts, None, notes
    first = min(first for _, first, _ in scan.spans)
    known_active = sorted(set(fleet.active) - set(fleet.new_servers))
    if now - first < FORECAST_ERROR_SPAN or not known_active:
        notes.append(
            f"no forecast error: it needs {_span(FORECAST_ERROR_SPAN)} of data from servers the model knows "
            f"(the data spans {(now - first).total_seconds() / 3600:.0f} h, {len(known_active)} known servers active)"
        )
        return shifts, None, notes
    picked = set(known_active[:: max(1, len(known_active) // registry.GATE_SERVERS)][: registry.GATE_SERVERS])
    try:
        error = _forecast_error(production, _read_window(scan, now - FORECAST_ERROR_SPAN, now, picked))
    except ValueError as exc:
        notes.append(f"no forecast error: {exc}")
    return shifts, error, notes


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


def check_drift(
    config: DriftConfig,
    *,
    data: Path | None = None,
    prometheus_url: str | None = None,
    service_url: str | None = None,
    now: datetime | None = None,
) -> DriftReport:
    """Compare the reporting fleet (`data`, or Prometheus's view at `prometheus_url`, else the service's live view)
    with the Production model's fleet.

    `now`: the time silence is measured to (default: the newest sample seen; with Prometheus, the clock) and model
    age at (default: the clock). With `service_url` the unknown-server rate is checked too. Logged as a monitoring
    run (config.track).
    """
    if data is not None and prometheus_url is not None:
        raise DriftError("give one telemetry source: a dataset PATH or --prometheus URL, not both")
    if data is None and prometheus_url is None and service_url is None:
        raise DriftError("nothing to check: give a telemetry dataset PATH, --prometheus URL or the --service URL")
    tracking.configure()
    production = _production()
    clock = to_utc(now if now is not None else datetime.now(UTC))
    notes: list[str] = []
    status: dict[str, Any] | None = None
    scan: _Scan | None = None
    last_seen: pd.Series | None = None
    source = ""
    with tempfile.TemporaryDirectory(prefix="tftmon-drift-") as tmp:  # Prometheus's recent window, as a dataset
        if prometheus_url is not None:
            last_seen, scan, source = _prometheus_view(prometheus_url, config, clock, Path(tmp))
        elif data is not None:
            scan = _scan(Path(data), config.progress_bar)
            last_seen, source = scan.last_seen, str(data)
        if service_url is not None:
            live, status = _service_view(service_url, config.timeout_seconds)
            if last_seen is None:
                if live.empty:
                    raise DriftError(
                        f"{service_url} has no live servers: feed it (tftmon feed), or check a dataset PATH or "
                        "--prometheus URL"
                    )
                last_seen, source = live, f"{service_url} (live view)"
            if status.get("model_version") not in (None, production.version):
                notes.append(
                    f"the service serves v{status['model_version']}, Production is v{production.version}: "
                    "reload it (POST /admin/reload)"
                )
        assert last_seen is not None
        reference_time = clock if now is not None or prometheus_url is not None else to_utc(last_seen.max())
        fleet = compare_fleets(production.training_info.get("servers", []), last_seen, reference_time)

        shifts: list[dict[str, Any]] = []
        error = None
        if scan is not None:
            shifts, error, found = _data_drift(production, config, scan, fleet, reference_time)
            notes += found
        elif prometheus_url is not None:
            notes.append(f"no data drift: no host reported to Prometheus in the last {config.recent_hours:g} h")
        else:
            notes.append(
                "no data drift: it needs a telemetry dataset PATH or --prometheus URL (the live view keeps only "
                "recent windows)"
            )

    rate = None if status is None else float(status["unknown_rate"])
    level = None if rate is None else unknown_rate_level(rate)
    fleet_priority = drift_priority(fleet.drift_pct)
    report = DriftReport(
        priority=combined_priority(fleet_priority, level),
        source=source,
        checked_at=reference_time.to_pydatetime(),
        model_version=production.version,
        model_age_days=(clock - production.created).total_seconds() / 86400,
        fleet=fleet,
        fleet_priority=fleet_priority,
        unknown_rate=rate,
        unknown_level=level,
        shifts=shifts,
        forecast_error=error,
        notes=notes,
    )
    return _logged(report, config) if config.track else report


def _logged(report: DriftReport, config: DriftConfig) -> DriftReport:
    """The check as a run of the monitoring experiment: counts, rates and shift scores as metrics."""
    from tftmon.evaluation.shift import by_metric

    metrics: dict[str, float] = {
        "drift_pct": report.fleet.drift_pct,
        "priority": exit_code(report.priority),
        "known": report.fleet.known,
        "active": len(report.fleet.active),
        "new": len(report.fleet.new_servers),
        "offline": len(report.fleet.offline),
        "sunset_candidates": len(report.fleet.sunset_candidates),
        "sunset": len(report.fleet.sunset),
        "retired": len(report.fleet.retired),
    }
    if report.model_age_days is not None:
        metrics["model_age_days"] = report.model_age_days
    if report.unknown_rate is not None:
        metrics["unknown_rate"] = report.unknown_rate
    if report.shifts:
        for metric, row in by_metric(pd.DataFrame(report.shifts)).iterrows():
            metrics[f"ks_{metric}"] = float(row["ks"])
            if np.isfinite(row["shift"]):
                metrics[f"shift_{metric}"] = float(row["shift"])
    if report.forecast_error is not None:
        metrics["recent_mase"] = report.forecast_error.recent_mase
        if report.forecast_error.ratio is not None:
            metrics["mase_ratio"] = report.forecast_error.ratio
    tags = {"tftmon.priority": report.priority, "tftmon.model_version": str(report.model_version)}
    with tracking.job_run("drift", tags=tags, experiment=Settings().tftmon_monitoring_experiment) as run:
        tracking.name_run(f"drift {report.priority} · {report.fleet.drift_pct:.0f} % · {report.source}")
        mlflow.log_params({**config.params("drift"), "drift.source": report.source})
        mlflow.log_metrics(metrics)
        mlflow.log_dict(report.to_json(), "drift.json")
        return dataclasses.replace(report, run_id=run.info.run_id)
