"""The one place that talks to MLflow tracking: store location, our experiment, and run resolution.

Jobs call `job_run(...)`: inside `mlflow run` it resumes the run MLflow created (MLFLOW_RUN_ID), so
entry points log where the UI expects them; standalone it starts a run in the `tftmon` experiment,
whose artifacts live under ./mlartifacts when the store is local.

A job stopped by SIGTERM or SIGINT unwinds (`stoppable`): its runs end KILLED, its lock and temp dirs go. A
killed job (SIGKILL) cannot end its run, which then says RUNNING forever. Every job run therefore records the
host and pid of its process; the first time a process opens the tracking store (`configure`), and whenever a
job starts, the RUNNING runs of processes that are gone are marked FAILED and their temp dirs removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import mlflow
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from tftmon.config import Settings
from tftmon.io import CHECKPOINT_PREFIX, owned_temp_dir, pid_alive, sweep_stale_temps

log = logging.getLogger(__name__)

JOB_TAG = "tftmon.job"
#: The process that started (or resumed) a run: how a later reader knows whether it can still finish.
HOST_TAG = "tftmon.host"
PID_TAG = "tftmon.pid"
#: A run's dataset directory (generate and train set it; drift reads the training run's as its reference).
DATASET_PATH_TAG = "tftmon.dataset_path"
#: MLflow 3's experiment type, as its UI's type selector writes it: model training (runs, metrics, models), not
#: GenAI (traces, prompts). MLflow 3.18's UI picks its view per browser instead (the side bar's toggle, or
#: `?workflowType=machine_learning` in the URL); the tag still types the experiment for what reads it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
#: Temp directories of a job's process (`job_temp_dir`: a model and its evaluation before they are logged),
#: swept with training's checkpoint directories once that process is gone.
JOB_TEMP_PREFIX = "tftmon-job-"
JOB_TEMP_PREFIXES = (CHECKPOINT_PREFIX, JOB_TEMP_PREFIX)

#: The tracking stores this process has cleared of dead jobs' runs and temp dirs (once each, see `configure`).
_cleared_stores: set[str] = set()


class RegistryUnreadable(OSError):
    """The tracking store and registry could not be read (a tracking DB overwritten, emptied or unreachable), as
    opposed to one read that has no Production version: nothing may be concluded from it. An OSError, so every
    command reports it as one line, as it does a full disk."""


def unreadable(exc: Exception) -> RegistryUnreadable:
    """What the store raised (MLflow's or SQLAlchemy's own error), as one line naming the store and the fix."""
    cause = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RegistryUnreadable(
        f"the registry could not be read: {cause} (tracking store {Settings().mlflow_tracking_uri}); restore the "
        "tracking store, or point MLFLOW_TRACKING_URI at a readable one"
    )


def configure(settings: Settings | None = None) -> Settings:
    """Point MLflow at the configured store (default sqlite:///mlflow.db in the working directory); the first
    time in this process, clear what dead jobs left there (`clear_dead_jobs` on our experiments).
    RegistryUnreadable when the store cannot be read."""
    settings = settings or Settings()
    uri = settings.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    if uri not in _cleared_stores:
        names = (settings.tftmon_experiment, settings.tftmon_monitoring_experiment)
        try:
            experiments = [e.experiment_id for e in map(mlflow.get_experiment_by_name, names) if e is not None]
        except Exception as exc:  # whatever the store raises (a sqlite file that is not a database: SQLAlchemy's)
            raise unreadable(exc) from exc
        clear_dead_jobs(experiments)
        _cleared_stores.add(uri)
    return settings


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def experiment_id(settings: Settings) -> str:
    """Our experiment, created on first use with local artifacts under tftmon_artifact_root, of MLflow's
    model-training kind (one an older tftmon created gets the kind now; a kind chosen in the UI is kept)."""
    experiment = mlflow.get_experiment_by_name(settings.tftmon_experiment)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return experiment.experiment_id
    location = None
    if _is_local_store(settings.mlflow_tracking_uri):
        location = settings.tftmon_artifact_root.resolve().as_uri()
    return mlflow.create_experiment(
        settings.tftmon_experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
    )


def inside_mlflow_run() -> bool:
    """True when `mlflow run` launched us (or a parent job has an active run)."""
    return bool(os.environ.get("MLFLOW_RUN_ID")) or mlflow.active_run() is not None


def _owner_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def is_orphaned(run: Any) -> bool:
    """A RUNNING run started on this host by a process that no longer exists: it will never finish.

    A run from another host, or one without the tags (not a tftmon job), cannot be judged and never is.
    """
    tags = run.data.tags
    pid = tags.get(PID_TAG, "")
    if run.info.status != "RUNNING" or tags.get(HOST_TAG) != socket.gethostname() or not pid.isdigit():
        return False
    return not pid_alive(int(pid))


def settle(run: Any) -> str:
    """The run's status, after marking it FAILED if it is orphaned (`is_orphaned`)."""
    if not is_orphaned(run):
        return str(run.info.status)
    mlflow.MlflowClient().set_terminated(run.info.run_id, status="FAILED")
    log.warning(
        "run %s (%s) was left RUNNING by process %s on %s, which is gone: marked FAILED",
        run.info.run_id, run.data.tags.get(JOB_TAG, "?"), run.data.tags[PID_TAG], run.data.tags[HOST_TAG],
    )  # fmt: skip
    return "FAILED"


def fail_orphaned_runs(experiment_ids: list[str]) -> list[str]:
    """Mark FAILED every orphaned tftmon job run in these experiments; returns their run ids."""
    if not experiment_ids:
        return []
    running = mlflow.search_runs(
        experiment_ids=experiment_ids,
        filter_string=f"attributes.status = 'RUNNING' and tags.`{PID_TAG}` != ''",
        output_format="list",
    )
    return [run.info.run_id for run in running if settle(run) == "FAILED"]


def clear_dead_jobs(experiment_ids: list[str]) -> list[str]:
    """What killed jobs left: their temp dirs (JOB_TEMP_PREFIXES under the system temp directory) removed and
    their RUNNING runs in these experiments marked FAILED; returns the ids of the runs marked."""
    for prefix in JOB_TEMP_PREFIXES:
        sweep_stale_temps(Path(tempfile.gettempdir()), prefix)
    return fail_orphaned_runs(experiment_ids)


@contextlib.contextmanager
def job_temp_dir() -> Iterator[Path]:
    """A temp directory owned by this process (its pid in the name), removed after the block; one a killed job
    left is removed by the next tftmon process that opens the tracking store (`clear_dead_jobs`)."""
    path = owned_temp_dir(JOB_TEMP_PREFIX)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class JobStopped(SystemExit):
    """SIGTERM or SIGINT arrived while a job ran. Raised in the main thread, it unwinds every `with` block: runs
    end KILLED, the retrain lock and temp dirs are released. A SystemExit, so the process exits quietly with
    128 + the signal's number, as a shell reports it, and Lightning's fit passes it on rather than turning
    an interrupt into exit 1."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signal = signal.Signals(signum).name

    def __str__(self) -> str:
        return f"stopped by {self.signal}"


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise JobStopped(signum)


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise JobStopped where Python would otherwise die at once, leaving
    runs RUNNING and locks held (SIGTERM), or raise a bare KeyboardInterrupt (SIGINT). A handler another part
    installed is kept; nested blocks and threads other than the main one (no signals there) change nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    replaced = {signum: default for signum, default in defaults.items() if signal.getsignal(signum) == default}
    for signum in replaced:
        signal.signal(signum, _raise_stopped)
    try:
        yield
    finally:
        for signum, default in replaced.items():
            signal.signal(signum, default)


@contextlib.contextmanager
def _killed_when_stopped(name: str) -> Iterator[None]:
    """End the active run KILLED, not FAILED, when its process stops before the job is done (JobStopped, an
    interrupt, an exit), and with it every child run still running: a signal may land between a child's start and
    the block that would end it."""
    run = mlflow.active_run()
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as exc:
        killed = RunStatus.to_string(RunStatus.KILLED)
        if run is not None:
            client = mlflow.MlflowClient()
            running = f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.status = 'RUNNING'"
            for child in client.search_runs([run.info.experiment_id], filter_string=running):
                client.set_terminated(child.info.run_id, killed)
        while (active := mlflow.active_run()) is not None and (run is None or active.info.run_id != run.info.run_id):
            mlflow.end_run(killed)  # a child started but not yet inside its own block
        mlflow.end_run(killed)
        why = str(exc) or type(exc).__name__
        log.warning("%s run %s ended KILLED: %s", name, None if run is None else run.info.run_id, why)
        raise


@contextlib.contextmanager
def job_run(name: str, tags: dict[str, str] | None = None, experiment: str | None = None) -> Iterator[Any]:
    """Run context for a job, tagged with its job name and its process (host, pid).

    Inside `mlflow run` (MLFLOW_RUN_ID set, nothing active yet) it resumes that run; under an active
    pipeline run (demo, retrain) it opens a nested child run; otherwise a new run in our experiment (or
    `experiment`, e.g. the monitoring one), after clearing what killed jobs left there (`clear_dead_jobs`).
    SIGTERM and SIGINT stop the job (`stoppable`): its runs end KILLED.
    """
    with stoppable():
        settings = configure()
        if experiment is not None:
            settings = settings.model_copy(update={"tftmon_experiment": experiment})
        tags = {JOB_TAG: name, **_owner_tags(), **(tags or {})}
        run_id = os.environ.get("MLFLOW_RUN_ID")
        if mlflow.active_run() is None and run_id:
            with mlflow.start_run(run_id=run_id) as run, _killed_when_stopped(name):
                mlflow.set_tags(tags)
                yield run
            return
        parent = mlflow.active_run()
        if parent is None:
            experiment = experiment_id(settings)
            clear_dead_jobs([experiment])
            started = mlflow.start_run(experiment_id=experiment, run_name=name, tags=tags)
            with started as run, _killed_when_stopped(name):
                yield run
            return
        # Create the child explicitly: start_run(nested=True) without a run id would resume MLFLOW_RUN_ID,
        # i.e. the parent itself, and end it when the child ends.
        child = mlflow.MlflowClient().create_run(
            parent.info.experiment_id, run_name=name, tags={**tags, "mlflow.parentRunId": parent.info.run_id}
        )
        with mlflow.start_run(run_id=child.info.run_id, nested=True) as run, _killed_when_stopped(name):
            yield run


def name_run(name: str) -> None:
    """Give the active run a readable name (runs started by `mlflow run` get a random one)."""
    mlflow.set_tag("mlflow.runName", name)


def describe_run(markdown: str) -> None:
    """The active run's description: the text its MLflow page shows under the name (markdown)."""
    mlflow.set_tag(MLFLOW_RUN_NOTE, markdown)


def log_dataset(frame: Any, path: Path, context: str) -> None:
    """Record a dataset as an input of the active run (the run page's Datasets column), by path and digest."""
    dataset = from_pandas(frame, source=str(Path(path).resolve()), name=Path(path).name)
    mlflow.log_input(dataset, context=context)


def log_artifact_dir(path: Path, artifact_path: str) -> None:
    """Log a directory of files (e.g. Data Docs) under artifact_path of the active run."""
    mlflow.log_artifacts(str(path), artifact_path=artifact_path)


#: The per-epoch numbers worth a chart (Lightning name -> MLflow name). pytorch-forecasting also reports
#: per-target SMAPE/MAPE under names with spaces; MAPE explodes on near-zero series (I/O wait, swap),
#: so those stay out of the run and the evaluation's per-metric MASE stands in for them.
EPOCH_METRICS: dict[str, str] = {"train_loss_epoch": "train_loss", "val_loss": "val_loss", "lr": "lr"}


def epoch_logger(prefix: str = "") -> Any:
    """A Lightning callback that logs every epoch's losses and learning rate to the active MLflow run.

    Training writes to MLflow through this callback alone; the training code knows nothing of tracking.
    """
    from lightning.pytorch.callbacks import Callback

    class MlflowEpochLogger(Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            found = trainer.callback_metrics
            metrics = {f"{prefix}{out}": float(found[name]) for name, out in EPOCH_METRICS.items() if name in found}
            mlflow.log_metrics(metrics, step=trainer.current_epoch)

    return MlflowEpochLogger()
