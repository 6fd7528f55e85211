"""Retraining: the fleet to a new Production version, served and verified, or nothing changed at all.

`run_retrain` is one parent MLflow run (`retrain`) with a child run per step: collect (a telemetry dataset,
the last days of a Prometheus, or the simulated demo fleet as it is now) -> validate (GE) -> train (-> the
held-out evaluation) -> evaluate -> promote (the registry's gate: not worse than the champion on the same
held-out data) -> reload (POST /admin/reload) -> verify (every active server gets a finite forecast from the
new version, and /status reports it). The candidate is trained and evaluated with the champion's own settings
(`training_settings`). Any failing step stops the chain, and so does SIGTERM or Ctrl-C (the runs end KILLED,
the lock is released); when Production was already swapped, the previous champion is restored in the registry
and reloaded. Every event is a tag on the parent run and a line of the event log (`tftmon.ops.events`); a lock file
(`tftmon.ops.lock`) keeps a second retrain from starting.

The service is reached over HTTP only (ops never imports serve).
"""

from __future__ import annotations

import json
import logging
import math
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import requests
from pydantic import ValidationError
from tqdm import tqdm

from tftmon.config import DemoConfig, EvaluationConfig, RetrainConfig, Settings, TrainConfig, error_text
from tftmon.contract import MODEL_STEP, OFFLINE_AFTER, SERVER_ID, SERVER_NAME, STATE, TIMESTAMP, to_utc
from tftmon.data.ingest.prometheus import redacted
from tftmon.ops import tracking
from tftmon.ops.events import MAX_TAG_CHARS, EventLog
from tftmon.ops.lock import exclusive

log = logging.getLogger(__name__)

STEPS = ("collect", "validate", "train", "evaluate", "promote", "reload", "verify")
#: Parent-run tags that say how a retrain ended, and why.
OUTCOME_TAG = "tftmon.retrain.outcome"
FAILED_STEP_TAG = "tftmon.retrain.failed_step"
ERROR_TAG = "tftmon.retrain.error"
#: Parent-run tag: where the candidate's training and evaluation settings came from.
SETTINGS_TAG = "tftmon.retrain.settings"
#: The artifact of a failed retrain: step, error, traceback, what was rolled back.
ERROR_ARTIFACT = "retrain_error.json"
#: Collected Prometheus data ends this long before now: a scrape still being stored could reach one CPU part's
#: query of the last step and not the next (docs/INGEST.md, Limits), and validation would refuse the step.
SETTLE = timedelta(minutes=1)


class RetrainFailed(RuntimeError):
    """A step failed; Production is as it was before the retrain. The message names the step and why."""

    def __init__(self, step: str, error: str, run_id: str) -> None:
        super().__init__(f"retrain failed at {step}: {error} (run {run_id})")
        self.step = step
        self.error = error
        self.run_id = run_id


class StepFailed(RuntimeError):
    """A step's own check failed (not an exception of the code it called); the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Collect: which servers are active, which have enough history to train on
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetSurvey:
    """The servers of the collected data: active (heard from within OFFLINE_AFTER of the newest sample), of
    those the ones with less than the minimum history (left to cold start), and the offline ones."""

    end: pd.Timestamp
    active: list[str]
    short_history: dict[str, float]  # server -> hours of history
    offline: list[str]

    @property
    def training(self) -> list[str]:
        return [s for s in self.active if s not in self.short_history]

    def to_dict(self) -> dict[str, Any]:
        return {"end": str(self.end), "active": self.active, "short_history": self.short_history,
                "offline": self.offline, "training": self.training}  # fmt: skip


def survey(frame: pd.DataFrame, min_history: pd.Timedelta) -> FleetSurvey:
    """Sort the servers of a dataset into active (with or without enough history) and offline."""
    span = frame.groupby(SERVER_NAME, observed=True)[TIMESTAMP].agg(["min", "max"])
    end = span["max"].max()
    active = span[span["max"] >= end - OFFLINE_AFTER]
    history = active["max"] - active["min"] + MODEL_STEP
    short = history[history < min_history]
    return FleetSurvey(
        end=end,
        active=sorted(map(str, active.index)),
        short_history={str(s): round(h / pd.Timedelta(hours=1), 1) for s, h in short.items()},
        offline=sorted(map(str, span.index.difference(active.index))),
    )


def _source_name(config: RetrainConfig) -> str:
    """What a retrain collects from, for its run name, parameters and events: never a URL's credentials."""
    if config.prometheus_url is not None:
        return f"{redacted(config.prometheus_url)} (last {config.days:g} d)"
    return "simulated fleet" if config.simulate else str(config.data)


def _collect_prometheus(config: RetrainConfig, now: datetime, out: Path) -> None:
    """The last `days` up to now of every host the Prometheus scrapes, written to `out` (atomically) by ingest's
    own code, as `tftmon ingest --prometheus` writes it; the source (URL without credentials, range, hosts) is
    recorded on the active run."""
    from tftmon.config import IngestConfig
    from tftmon.data.ingest import Mapping, Samples, ingest_samples, summary
    from tftmon.data.ingest.prometheus import query_prometheus

    assert config.prometheus_url is not None
    end = to_utc(now).to_pydatetime() - SETTLE
    long, described = query_prometheus(config.prometheus_url, end - timedelta(days=config.days), end, progress=False)
    metadata = ingest_samples(Samples(long, source=described), Mapping(), IngestConfig(), out, progress=False)
    mlflow.log_params(
        {"collect.prometheus": described["url"], "collect.start": described["start"], "collect.end": described["end"]}
    )
    mlflow.log_metric("prometheus_hosts", len(set(described["servers"].values())))
    mlflow.log_dict(described, "prometheus.json")  # queries, range, each instance's host, what was left out
    mlflow.log_text(summary(metadata, out), "ingest.txt")


def collect(config: RetrainConfig, now: datetime) -> tuple[Path, pd.DataFrame, FleetSurvey]:
    """The dataset to train on (written under `config.out` when servers are left out), the collected data
    and its survey. With `simulate`, the demo fleet's period is moved to end now; with `prometheus_url`, the
    last `days` are ingested to `out/prometheus`."""
    from tftmon.io import MAPPING_FILE, METRICS_FILE, atomic_directory, read_metrics

    source = config.data
    if config.simulate:
        from tftmon.data.simulate import write_dataset

        end = pd.Timestamp(now).floor(MODEL_STEP)
        simulation = config.simulation.model_copy(
            update={"start": (end - pd.Timedelta(hours=config.simulation.hours)).to_pydatetime()}
        )
        source = config.out / "simulated"
        write_dataset(simulation, source, progress=False)
        mlflow.log_params(
            {f"sim.{k}": str(v) for k, v in simulation.model_dump(mode="json", exclude={"fleet"}).items()}
        )
    elif config.prometheus_url is not None:
        source = config.out / "prometheus"
        _collect_prometheus(config, now, source)
    assert source is not None
    frame = read_metrics(source)
    found = survey(frame, pd.Timedelta(config.min_history))
    if not found.training:
        raise StepFailed(
            f"no active server of {source} has {config.min_history_hours:g} h of history (min_history_hours); "
            "collect longer telemetry, or lower min_history_hours"
        )
    left_out = set(found.short_history) | set(found.offline)
    path = Path(source)
    if left_out:
        path = config.out / "training"
        with atomic_directory(path) as tmp:
            frame[frame[SERVER_NAME].isin(found.training)].to_parquet(tmp / METRICS_FILE, index=False)
            if (Path(source) / MAPPING_FILE).is_file():  # the source's names and ids, for provenance
                (tmp / MAPPING_FILE).write_bytes((Path(source) / MAPPING_FILE).read_bytes())
    mlflow.log_params({"collect.source": str(source), "collect.dataset": str(path)})
    mlflow.log_metrics(
        {
            "servers_active": len(found.active),
            "servers_training": len(found.training),
            "servers_short_history": len(found.short_history),
            "servers_offline": len(found.offline),
            "rows": len(frame),
        }
    )
    mlflow.log_dict(found.to_dict(), "fleet.json")
    return path, frame, found


# ---------------------------------------------------------------------------------------------
# Train: with the champion's settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSettings:
    """What the candidate is trained and evaluated with, and where that came from, in words."""

    train: TrainConfig
    evaluation: EvaluationConfig
    source: str


def recorded_settings(version: str) -> TrainingSettings | None:
    """The training and evaluation settings a registered version was trained with (`tftmon train` records them
    in its training_info.json); None when it has no record (an older tftmon trained it)."""
    from tftmon.io import TRAINING_INFO_FILE, read_json
    from tftmon.ops import registry
    from tftmon.ops.jobs import TRAINING_SETTINGS_KEY

    record = read_json(registry.version_files(version) / TRAINING_INFO_FILE).get(TRAINING_SETTINGS_KEY)
    if record is None:
        return None
    try:
        return TrainingSettings(
            TrainConfig.model_validate(record["train"]),
            EvaluationConfig.model_validate(record["evaluation"]),
            f"champion version {version}'s own",
        )
    except ValidationError as exc:  # recorded by a tftmon whose settings had other fields
        problem = f"champion version {version}'s recorded settings do not fit this tftmon ({error_text(exc)})"
        log.warning("%s: training with the defaults", problem)
        return TrainingSettings(TrainConfig(), EvaluationConfig(), f"the defaults: {problem}")


def training_settings(config: RetrainConfig, champion: str | None, progress: bool) -> TrainingSettings:
    """The candidate's settings: those `config` gives; else the demo's with `simulate`; else the champion's own
    (a candidate trained shorter or smaller than the model it must beat would be put to an unfair gate); else
    the defaults. `config.train_overrides` go over them; `progress` shows progress bars unless they say."""
    if config.simulate:
        demo = DemoConfig()
        found = TrainingSettings(demo.train, demo.evaluation, "the demo's (--simulate)")
    else:
        found = (None if champion is None else recorded_settings(champion)) or TrainingSettings(
            TrainConfig(), EvaluationConfig(), "the defaults (no champion with recorded settings)"
        )
    train = config.train or found.train
    overrides = {"progress_bar": progress} | config.train_overrides
    return TrainingSettings(
        TrainConfig.model_validate(train.model_dump() | overrides),
        config.evaluation or found.evaluation,
        f"training: {'given' if config.train else found.source}; evaluation: "
        f"{'given' if config.evaluation else found.source}"
        + (f"; overrides: {config.train_overrides}" if config.train_overrides else ""),
    )


# ---------------------------------------------------------------------------------------------
# Verify: every active server gets a finite forecast from the new version
# ---------------------------------------------------------------------------------------------


@dataclass
class Coverage:
    """Which active servers got a finite forecast from `version`: known ones and cold-start ones counted apart;
    servers with less history than one encoder window are warming up (not asked, counted apart)."""

    version: str
    active: int
    forecast: list[str] = field(default_factory=list)
    cold_start: list[str] = field(default_factory=list)
    warming_up: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    non_finite: list[str] = field(default_factory=list)

    @property
    def asked(self) -> int:
        return self.active - len(self.warming_up)

    @property
    def percent(self) -> float:
        return 100.0 * len(self.forecast) / self.asked if self.asked else 0.0

    @property
    def complete(self) -> bool:
        return self.asked > 0 and len(self.forecast) == self.asked and not self.missing and not self.non_finite

    def to_text(self) -> str:
        return (
            f"{len(self.forecast)}/{self.asked} active servers forecast by version {self.version} "
            f"({self.percent:.1f} %; {len(self.cold_start)} cold start, {len(self.warming_up)} warming up)"
            + (f"; no forecast: {', '.join(self.missing[:10])}" if self.missing else "")
            + (f"; non-finite: {', '.join(self.non_finite[:10])}" if self.non_finite else "")
        )


def verification_history(frame: pd.DataFrame, servers: list[str], history_steps: int) -> tuple[pd.DataFrame, list[str]]:
    """The history a forecast reads (plus a step) of each server at the model step, and the servers whose history
    is shorter than that (warming up: no forecast is owed yet)."""
    from tftmon.data.resample import resample_to_model_step

    binned = resample_to_model_step(frame[frame[SERVER_NAME].isin(servers)].drop(columns=[STATE], errors="ignore"))
    binned = binned.drop(columns=[SERVER_ID], errors="ignore")
    counts = binned.groupby(SERVER_NAME, observed=True).size()
    warming = sorted(str(s) for s in servers if counts.get(s, 0) < history_steps)
    recent = binned[~binned[SERVER_NAME].isin(warming)].groupby(SERVER_NAME, observed=True).tail(history_steps + 1)
    return recent.reset_index(drop=True), warming


def _finite(value: Any) -> bool:
    """Every number in a nested JSON value is finite (null counts as not)."""
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return isinstance(value, int | float) and math.isfinite(value)


def _batches(history: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    names = sorted(history[SERVER_NAME].unique())
    for i in range(0, len(names), size):
        yield history[history[SERVER_NAME].isin(names[i : i + size])]


class Service:
    """The running service, over HTTP: reload with the admin token, /status, /predict."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def _error(self, response: requests.Response) -> str:
        try:
            body = response.json()
            return f"HTTP {response.status_code}: {body.get('error', body)}" + (
                f" ({body['fix']})" if body.get("fix") else ""
            )
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:300]}"

    def reload(self, timeout: float) -> dict[str, Any]:
        if not self.token:
            raise StepFailed("no admin token: set TFTMON_ADMIN_TOKEN (the service's) to reload it")
        response = requests.post(
            f"{self.url}/admin/reload", headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout
        )
        if response.status_code != 200:
            raise StepFailed(f"POST /admin/reload: {self._error(response)}")
        return dict(response.json())

    def status(self, timeout: float) -> dict[str, Any]:
        response = requests.get(f"{self.url}/status", timeout=timeout)
        if response.status_code != 200:
            raise StepFailed(f"GET /status: {self._error(response)}")
        return dict(response.json())

    def predict(self, history: pd.DataFrame, timeout: float) -> list[dict[str, Any]]:
        rows = json.loads(history.to_json(orient="records", date_format="iso"))
        response = requests.post(f"{self.url}/predict", json={"rows": rows, "include_path": False}, timeout=timeout)
        if response.status_code != 200:
            raise StepFailed(f"POST /predict: {self._error(response)}")
        return list(response.json()["predictions"])


def verify_service(service: Service, version: str, history: pd.DataFrame, coverage: Coverage,
                   config: RetrainConfig) -> Coverage:  # fmt: skip
    """/status must report `version`, and /predict must forecast every asked server with it, finitely."""
    serving = service.status(config.verify_timeout_seconds).get("model_version")
    if serving != version:
        raise StepFailed(f"/status reports version {serving}, not the new version {version}")
    for batch in _batches(history, config.verify_batch_servers):
        for record in service.predict(batch, config.verify_timeout_seconds):
            name = record["server_name"]
            if record.get("model_version") != version:
                raise StepFailed(f"{name} was forecast by version {record.get('model_version')}, not {version}")
            (coverage.forecast if _finite(record["horizons"]) else coverage.non_finite).append(name)
            if record["cold_start"]:
                coverage.cold_start.append(name)
    return coverage


def verify_offline(version: str, history: pd.DataFrame, coverage: Coverage) -> Coverage:
    """Without a service: the new Production version, loaded as serving loads it, forecasts every server."""
    import numpy as np

    from tftmon.contract import QUANTILE_NAMES
    from tftmon.model.pyfunc import to_model_input
    from tftmon.ops import registry

    pyfunc = registry.load_version(version)
    known = set(pyfunc.unwrap_python_model().model.training_info.get("servers", []))
    tidy = pyfunc.predict(to_model_input(history))
    finite = tidy.groupby(SERVER_NAME)[list(QUANTILE_NAMES)].apply(lambda g: bool(np.isfinite(g.to_numpy()).all()))
    for name, ok in finite.items():
        (coverage.forecast if ok else coverage.non_finite).append(str(name))
        if name not in known:
            coverage.cold_start.append(str(name))
    return coverage


# ---------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------


@dataclass
class RetrainOutcome:
    run_id: str
    version: str
    previous: str | None
    survey: FleetSurvey
    coverage: Coverage
    reloaded: bool
    gate: str

    def to_text(self) -> str:
        short = ", ".join(f"{s} ({h:g} h)" for s, h in self.survey.short_history.items())
        lines = [
            f"version {self.version} is production (was {self.previous or 'none'}); run {self.run_id}",
            f"  fleet:    {len(self.survey.active)} active servers, {len(self.survey.training)} trained on, "
            f"{len(self.survey.offline)} offline (left out)",
            *([f"  short history (left to cold start): {short}"] if short else []),
            f"  service:  {'reloaded' if self.reloaded else 'not reloaded (no --service)'}",
            f"  coverage: {self.coverage.to_text()}",
        ]
        return "\n".join(lines)


class _Chain:
    """One retrain's state: what was done so far, so a failure can undo exactly that."""

    def __init__(self, config: RetrainConfig, events: EventLog, progress: bool) -> None:
        from tftmon.ops import registry

        self.config = config
        self.events = events
        self.previous = registry.production_version()
        token = config.admin_token.get_secret_value() if config.admin_token else Settings().tftmon_admin_token
        self.service = Service(config.service_url, token) if config.service_url else None
        self.bar = tqdm(total=len(STEPS), desc="retrain", unit="step", disable=not progress)
        self.progress = progress
        self.settings: TrainingSettings | None = None
        self.version: str | None = None
        self.current = STEPS[0]
        self.promoted = False
        self.reload_tried = False

    def step(self, name: str, work: Callable[[], Any], *, own_run: bool = True) -> Any:
        """Run one step (in a child run of its own unless the job it calls opens one)."""
        self.bar.set_postfix_str(name)
        self.current = name
        if own_run:
            with tracking.job_run(name):
                result = work()
        else:
            result = work()
        self.bar.update()
        return result

    def run(self, now: datetime) -> RetrainOutcome:
        from tftmon.ops.jobs import run_validate

        config = self.config
        path, frame, found = self.step("collect", lambda: collect(config, now))
        self.events.emit(
            "collected",
            dataset=str(path),
            active=len(found.active),
            training=len(found.training),
            short_history=found.short_history,
            offline=found.offline,
        )

        report = self.step("validate", lambda: run_validate(path, strict=False), own_run=False)
        if not report.success:
            raise StepFailed(f"the collected data is invalid:\n{report.to_text()}")
        self.events.emit("validated", dataset=str(path), rows=report.rows)

        trained = self.step("train", lambda: self._train(path), own_run=False)
        self.version = str(trained["version"])
        assert self.settings is not None
        self.events.emit("trained", version=self.version, train_run_id=trained["run_id"], settings=self.settings.source)
        mlflow.set_tag("tftmon.retrain.candidate", self.version)

        score = self.step("evaluate", lambda: self._evaluate(trained["run_id"], trained["summary"]))
        self.events.emit("evaluated", version=self.version, **score)

        gate = self.step("promote", self._promote)
        self.events.emit("promoted", version=self.version, previous=self.previous)

        reloaded = None
        if self.service is None:
            self._skip("reload")
        else:
            reloaded = self.step("reload", self._reload)
            self.events.emit("reloaded", version=self.version, **reloaded)

        coverage = self.step("verify", lambda: self._verify(frame, found))
        self.events.emit(
            "verified",
            version=self.version,
            percent=coverage.percent,
            forecast=len(coverage.forecast),
            cold_start=coverage.cold_start,
            warming_up=coverage.warming_up,
        )
        self.bar.close()
        return RetrainOutcome(
            str(self.events.run_id), self.version, self.previous, found, coverage, reloaded is not None, gate
        )

    def _skip(self, name: str) -> None:
        log.info("no --service: %s skipped", name)
        mlflow.set_tag(f"tftmon.retrain.{name}", "skipped: no service given")
        self.bar.update()

    def _train(self, path: Path) -> dict[str, Any]:
        """Train (and evaluate on the held-out time) with the champion's settings (`training_settings`), recorded
        on the parent run."""
        from tftmon.ops.jobs import run_train

        self.settings = training_settings(self.config, self.previous, self.progress)
        mlflow.set_tag(SETTINGS_TAG, self.settings.source[:MAX_TAG_CHARS])
        return run_train(path, self.settings.train, self.settings.evaluation, validated=True)

    def _evaluate(self, train_run_id: str, summary: str) -> dict[str, float]:
        """The candidate's evaluation on the held-out time (run by training, against the baselines), as this
        step's metrics; the comparison with the champion on the same data is the gate's."""
        from tftmon.ops.registry import SCORE_METRIC

        metrics = mlflow.MlflowClient().get_run(train_run_id).data.metrics
        score = {k: v for k, v in metrics.items() if k == SCORE_METRIC or k.startswith("eval_mase_ratio_")}
        mlflow.log_metrics(score)
        mlflow.log_text(summary, "summary.md")
        return score

    def _promote(self) -> str:
        from tftmon.ops import registry

        assert self.version is not None
        try:
            report = registry.promote(self.version, reason=f"retrain run {self.events.run_id}")
        except registry.PromotionRefused as exc:
            mlflow.log_text(str(exc), "gate.txt")
            raise StepFailed(
                f"version {self.version} did not pass the gate; production stays {self.previous}:\n{exc}"
            ) from None
        self.promoted = True
        mlflow.log_text(report.to_text(), "gate.txt")
        return report.to_text()

    def _reload(self) -> dict[str, Any]:
        assert self.service is not None
        self.reload_tried = True
        answer = self.service.reload(self.config.reload_timeout_seconds)
        if answer.get("model_version") != self.version:
            raise StepFailed(f"the service reloaded version {answer.get('model_version')}, not {self.version}")
        mlflow.log_dict(answer, "reload.json")
        return {"previous_version": answer.get("previous_version"), "changed": answer.get("changed")}

    def _verify(self, frame: pd.DataFrame, found: FleetSurvey) -> Coverage:
        from tftmon.ops import registry

        assert self.version is not None
        production = registry.production_version()
        if production != self.version:
            raise StepFailed(f"production is version {production}, not {self.version}: another promotion meanwhile")
        assert self.settings is not None
        history, warming = verification_history(frame, found.active, self.settings.train.history_steps)
        coverage = Coverage(self.version, len(found.active), warming_up=warming)
        if self.service is not None:
            verify_service(self.service, self.version, history, coverage, self.config)
        else:
            verify_offline(self.version, history, coverage)
        coverage.missing = sorted(set(history[SERVER_NAME]) - set(coverage.forecast) - set(coverage.non_finite))
        mlflow.log_metrics(
            {
                "coverage_pct": coverage.percent,
                "servers_active": coverage.active,
                "servers_forecast": len(coverage.forecast),
                "servers_cold_start": len(coverage.cold_start),
                "servers_warming_up": len(coverage.warming_up),
            }
        )
        mlflow.log_dict(asdict(coverage), "coverage.json")
        if not coverage.complete:
            raise StepFailed(f"coverage is not 100 %: {coverage.to_text()}")
        return coverage

    def undo(self) -> dict[str, Any]:
        """Put Production (registry, then service) back as it was; returns what was done."""
        from tftmon.ops import registry

        done: dict[str, Any] = {}
        if not self.promoted:
            return done
        with tracking.job_run("rollback"):
            reason = f"retrain run {self.events.run_id} failed at {self.current}"
            try:
                done["restored"] = registry.rollback(reason)
            except registry.PromotionRefused:  # there was no champion before: none again
                client = mlflow.MlflowClient()
                client.delete_registered_model_alias(Settings().tftmon_model_name, registry.PRODUCTION)
                done["restored"] = None
            if self.service is not None and self.reload_tried and done["restored"] is not None:
                try:
                    done["service_reload"] = self.service.reload(self.config.reload_timeout_seconds)["model_version"]
                except (StepFailed, requests.RequestException) as exc:
                    done["service_reload"] = f"failed: {exc}"
            if self.service is not None:
                try:
                    done["service_serves"] = self.service.status(self.config.reload_timeout_seconds)["model_version"]
                except (StepFailed, requests.RequestException) as exc:
                    done["service_serves"] = f"unknown: {exc}"
            mlflow.log_dict(done, "rollback.json")
        self.events.emit("rolled_back", version=self.version, **done)
        return done


def run_retrain(
    config: RetrainConfig, *, trigger: dict[str, Any] | None = None, progress: bool = True, now: datetime | None = None
) -> RetrainOutcome:
    """The whole chain under the lock, as one parent run; RetrainFailed (after undoing a swap) when a step
    fails, LockHeld when another retrain runs. `trigger`: the drift report that asked for it (monitor).

    SIGTERM or SIGINT stops it as a failing step does (a swap undone, the stop recorded), then raises
    tracking.JobStopped: the runs end KILLED and the lock is released. Signals are handled from before the lock
    is taken, so no moment leaves it held by a stopped process."""
    now = now or datetime.now(UTC)
    events = EventLog(config.event_log)
    with tracking.stoppable(), exclusive(config.lock_file) as grant, tracking.job_run("retrain") as parent:
        events.run_id = parent.info.run_id
        source = _source_name(config)
        tracking.name_run(f"retrain · {source} · {now:%m-%d %H:%M}")
        params = config.params("retrain") | {"retrain.admin_token": "***"}
        if config.prometheus_url is not None:
            params["retrain.prometheus_url"] = redacted(config.prometheus_url)
        mlflow.log_params(params)
        if grant.replaced is not None:
            events.emit("stale_lock", lock=str(grant.path), holder=grant.replaced)
        if trigger is not None:
            events.emit("drift_detected", **trigger)
        chain = _Chain(config, events, progress)
        try:
            events.emit("retrain_started", previous=chain.previous, source=source)
            outcome = chain.run(now)
        except (Exception, KeyboardInterrupt, SystemExit) as exc:  # a stop undoes a swap as a failure does
            chain.bar.close()
            error = str(exc) or type(exc).__name__
            undone = chain.undo()
            outcome_text = "failed" if isinstance(exc, Exception) else "stopped"
            mlflow.set_tags(
                {OUTCOME_TAG: outcome_text, FAILED_STEP_TAG: chain.current, ERROR_TAG: error.splitlines()[0][:500]}
            )
            mlflow.log_dict(
                {"step": chain.current, "error": error, "candidate": chain.version, "undone": undone,
                 "traceback": traceback.format_exc()},
                ERROR_ARTIFACT,
            )  # fmt: skip
            events.emit("failed", step=chain.current, error=error, version=chain.version, **undone)
            if not isinstance(exc, Exception):
                raise
            raise RetrainFailed(chain.current, error, parent.info.run_id) from exc
        mlflow.set_tags({OUTCOME_TAG: f"promoted version {outcome.version}"})
        return outcome
