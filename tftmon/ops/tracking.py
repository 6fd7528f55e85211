"""The one place that talks to MLflow tracking: store location, our experiment, and run resolution.

Jobs call `job_run(...)`: inside `mlflow run` it resumes the run MLflow created (MLFLOW_RUN_ID), so
entry points log where the UI expects them; standalone it starts a run in the `tftmon` experiment,
whose artifacts live under ./mlartifacts when the store is local.

A killed job cannot end its run, which then says RUNNING forever. Every job run therefore records the
host and pid of its process; a RUNNING run whose process is gone is marked FAILED wherever it is found.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.pandas_dataset import from_pandas

from tftmon.config import Settings
from tftmon.io import pid_alive

log = logging.getLogger(__name__)

JOB_TAG = "tftmon.job"
#: The process that started (or resumed) a run: how a later reader knows whether it can still finish.
HOST_TAG = "tftmon.host"
PID_TAG = "tftmon.pid"
#: A run's dataset directory (generate and train set it; drift reads the training run's as its reference).
DATASET_PATH_TAG = "tftmon.dataset_path"


def configure(settings: Settings | None = None) -> Settings:
    """Point MLflow at the configured store (default sqlite:///mlflow.db in the working directory)."""
    settings = settings or Settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return settings


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def experiment_id(settings: Settings) -> str:
    """Our experiment, created on first use with local artifacts under tftmon_artifact_root."""
    experiment = mlflow.get_experiment_by_name(settings.tftmon_experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if _is_local_store(settings.mlflow_tracking_uri):
        location = settings.tftmon_artifact_root.resolve().as_uri()
    return mlflow.create_experiment(settings.tftmon_experiment, artifact_location=location)


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
    running = mlflow.search_runs(
        experiment_ids=experiment_ids,
        filter_string=f"attributes.status = 'RUNNING' and tags.`{PID_TAG}` != ''",
        output_format="list",
    )
    return [run.info.run_id for run in running if settle(run) == "FAILED"]


@contextlib.contextmanager
def job_run(name: str, tags: dict[str, str] | None = None, experiment: str | None = None) -> Iterator[Any]:
    """Run context for a job, tagged with its job name and its process (host, pid).

    Inside `mlflow run` (MLFLOW_RUN_ID set, nothing active yet) it resumes that run; under an active
    pipeline run (demo, retrain) it opens a nested child run; otherwise a new run in our experiment (or
    `experiment`, e.g. the monitoring one), after marking the runs killed jobs left RUNNING there as FAILED.
    """
    settings = configure()
    if experiment is not None:
        settings = settings.model_copy(update={"tftmon_experiment": experiment})
    tags = {JOB_TAG: name, **_owner_tags(), **(tags or {})}
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if mlflow.active_run() is None and run_id:
        with mlflow.start_run(run_id=run_id) as run:
            mlflow.set_tags(tags)
            yield run
        return
    parent = mlflow.active_run()
    if parent is None:
        experiment = experiment_id(settings)
        fail_orphaned_runs([experiment])
        with mlflow.start_run(experiment_id=experiment, run_name=name, tags=tags) as run:
            yield run
        return
    # Create the child explicitly: start_run(nested=True) without a run id would resume MLFLOW_RUN_ID,
    # i.e. the parent itself, and end it when the child ends.
    child = mlflow.MlflowClient().create_run(
        parent.info.experiment_id, run_name=name, tags={**tags, "mlflow.parentRunId": parent.info.run_id}
    )
    with mlflow.start_run(run_id=child.info.run_id, nested=True) as run:
        yield run


def name_run(name: str) -> None:
    """Give the active run a readable name (runs started by `mlflow run` get a random one)."""
    mlflow.set_tag("mlflow.runName", name)


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
