"""Jobs that are retrained, stopped or killed (issue 31, items 2, 6 and 17 in part).

A retrain of a dataset trains with the champion's own settings, not the demo's; SIGTERM or SIGINT ends a
`tftmon train` or `tftmon retrain` with its runs KILLED and its lock released; after a `kill -9`, the next tftmon
command that opens the tracking store marks the dead job's run FAILED and removes its checkpoint directory; and
training runs carry a description in an experiment of MLflow's model-training kind. Real sqlite stores, real
`tftmon` processes, tiny fleets and models.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import mlflow
import pytest
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from tests.conftest import ROOT
from tests.model.conftest import tiny_config
from tests.serving import store_env
from tftmon.config import DemoConfig, EvaluationConfig, RetrainConfig, SimulationConfig, TrainConfig
from tftmon.data.simulate import write_dataset
from tftmon.io import CHECKPOINT_PREFIX
from tftmon.ops import registry, tracking
from tftmon.ops.events import EventLog
from tftmon.ops.jobs import run_train
from tftmon.ops.retrain import OUTCOME_TAG, SETTINGS_TAG, STEPS, RetrainFailed, run_retrain, training_settings

FLEET = SimulationConfig(servers=7, hours=40, seed=3)
#: Settings no default and no demo has: a retrain that trains with them took them from the champion.
CHAMPION_TRAIN = tiny_config(max_epochs=1, max_batches_per_epoch=3, seed=11)
CHAMPION_EVAL = EvaluationConfig(
    holdout_hours=10, origin_every=timedelta(hours=2), calibration_origins=20, alert_fit_hours=4,
    alert_fit_every=timedelta(hours=1),
)  # fmt: skip


def _params(run_id: str, prefix: str) -> dict[str, str]:
    return {k: v for k, v in mlflow.get_run(run_id).data.params.items() if k.startswith(prefix)}


def _children(parent_run_id: str) -> dict[str, mlflow.entities.Run]:
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", output_format="list"
    )
    return {run.data.tags[tracking.JOB_TAG]: run for run in runs}


# ---------------------------------------------------------------------------------------------
# Item 2: a retrain trains with the champion's settings
# ---------------------------------------------------------------------------------------------


@dataclass
class Retrained:
    champion_run_id: str
    retrain_run_id: str


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retrained]:
    """A champion trained (and promoted) with CHAMPION_TRAIN, then a retrain of the same dataset given no settings."""
    root = tmp_path_factory.mktemp("champion")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for key, value in store_env(root).items():
            mp.setenv(key, value)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        write_dataset(FLEET, root / "fleet", progress=False)
        champion = run_train(root / "fleet", CHAMPION_TRAIN, CHAMPION_EVAL)
        registry.promote(champion["version"], force=True, reason="the champion of this test")
        config = RetrainConfig(
            data=root / "fleet", out=root / "work", min_history_hours=24, event_log=root / "events.jsonl",
            lock_file=root / "retrain.lock",
        )  # fmt: skip
        try:
            run_id = run_retrain(config, progress=False).run_id
        except RetrainFailed as failed:  # the gate's verdict on so tiny a model is beside the point here
            assert STEPS.index(failed.step) > STEPS.index("train"), failed
            run_id = failed.run_id
        yield Retrained(champion["run_id"], run_id)


@pytest.mark.slow
def test_a_retrain_of_a_dataset_trains_with_the_champions_own_settings(retrained: Retrained) -> None:
    trained = _children(retrained.retrain_run_id)["train"].info.run_id
    for prefix in ("train.", "eval."):
        assert _params(trained, prefix) == _params(retrained.champion_run_id, prefix), prefix
    assert _params(trained, "train.")["train.max_batches_per_epoch"] == "3"
    tags = mlflow.get_run(retrained.retrain_run_id).data.tags
    assert "champion version 1's own" in tags[SETTINGS_TAG]


@pytest.mark.slow
def test_training_runs_carry_a_description_in_an_experiment_of_the_model_training_kind(retrained: Retrained) -> None:
    for run_id in (retrained.champion_run_id, _children(retrained.retrain_run_id)["train"].info.run_id):
        run = mlflow.get_run(run_id)
        assert run.data.tags[MLFLOW_RUN_NOTE].startswith("Registered as version "), run_id
        assert "**Training:**" in run.data.tags[MLFLOW_RUN_NOTE]
        experiment = mlflow.get_experiment(run.info.experiment_id)
        assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING_KIND


def test_an_experiment_an_older_tftmon_created_gets_the_kind_and_a_chosen_kind_is_kept(mlflow_store: str) -> None:
    older = mlflow.create_experiment("tftmon")  # as tftmon <= 0.18 created it: no kind
    with tracking.job_run("validate"):
        pass
    assert mlflow.get_experiment(older).tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING_KIND
    mlflow.MlflowClient().set_experiment_tag(older, tracking.EXPERIMENT_KIND_TAG, "forecasting")  # chosen in the UI
    with tracking.job_run("validate"):
        pass
    assert mlflow.get_experiment(older).tags[tracking.EXPERIMENT_KIND_TAG] == "forecasting"


def test_a_simulated_retrain_trains_as_the_demo_and_given_settings_win(tmp_path: Path) -> None:
    simulated = training_settings(RetrainConfig(), champion=None, progress=False)
    assert simulated.train == DemoConfig().train.model_copy(update={"progress_bar": False})
    assert simulated.evaluation == DemoConfig().evaluation
    # No champion: the defaults, with the options given over them (progress bars as asked, unless they say).
    given = RetrainConfig(data=tmp_path, train_overrides={"max_epochs": "3", "progress_bar": False})
    resolved = training_settings(given, champion=None, progress=True)
    assert resolved.train == TrainConfig(max_epochs=3, progress_bar=False)
    assert resolved.evaluation == EvaluationConfig()
    assert "the defaults" in resolved.source and "max_epochs" in resolved.source


def test_a_training_override_that_is_no_training_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"max_epoch \(did you mean max_epochs\?\)"):
        RetrainConfig(train_overrides={"max_epoch": 3})
    with pytest.raises(ValueError, match=r"(?s)train_overrides.*TrainConfig: max_epochs: .*greater than or equal to 1"):
        RetrainConfig(train_overrides={"max_epochs": 0})


# ---------------------------------------------------------------------------------------------
# Item 6: stopped jobs end their runs and release the lock; killed ones are cleared by the next command
# ---------------------------------------------------------------------------------------------

#: Long enough for `tftmon train`'s default 32 h of validation after 10 h held out.
STOPPED_FLEET = SimulationConfig(servers=3, hours=60, seed=3)
#: A tftmon train that is still fitting when it is stopped: tiny epochs, but many of them.
LONG_TRAIN = (
    "--max-epochs", "1000", "--max-batches-per-epoch", "2", "--hidden-size", "8", "--encoder-hours", "2",
    "--batch-size", "16", "--holdout-hours", "10", "--accelerator", "cpu", "--devices", "1", "--no-progress",
)  # fmt: skip


@dataclass
class Workdir:
    root: Path
    fleet: Path
    env: dict[str, str]

    @property
    def temp(self) -> Path:
        return Path(self.env["TMPDIR"])

    def tftmon(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tftmon.cli", *args], cwd=self.root, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def checkpoints(self) -> list[Path]:
        return sorted(self.temp.glob(f"{CHECKPOINT_PREFIX}*"))


@pytest.fixture(scope="module")
def fleet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stopped") / "fleet"
    write_dataset(STOPPED_FLEET, path, progress=False)
    return path


@pytest.fixture
def workdir(tmp_path: Path, fleet_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workdir:
    """A store and a temp directory of their own (TMPDIR: where training keeps its checkpoints), shared with the
    tftmon processes started here."""
    env = store_env(tmp_path)
    (tmp_path / "tmp").mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    process_env = {**os.environ, **env, "TMPDIR": str(tmp_path / "tmp"), "PYTHONPATH": str(ROOT)}
    return Workdir(tmp_path, fleet_path, process_env)


def _wait_for(condition: object, process: subprocess.Popen[str], what: str, seconds: float = 300) -> None:
    """Poll `condition` (a callable) until it holds; the process ending first fails with its stderr."""
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"tftmon exited {process.returncode} before {what}:\n{process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)


def _runs(job: str) -> list[mlflow.entities.Run]:
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [run for run in runs if run.data.tags[tracking.JOB_TAG] == job]


@pytest.mark.slow
def test_sigterm_during_training_ends_the_run_killed_and_removes_the_checkpoints(workdir: Workdir) -> None:
    process = workdir.tftmon("train", str(workdir.fleet), *LONG_TRAIN)
    _wait_for(workdir.checkpoints, process, "the fit started")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr and "stopped by SIGTERM" in stderr
    (run,) = _runs("train")
    assert run.info.status == "KILLED"
    assert workdir.checkpoints() == []


@pytest.mark.slow
def test_after_kill_9_of_training_the_next_command_fails_its_run_and_removes_its_checkpoints(
    workdir: Workdir,
) -> None:
    killed = workdir.tftmon("train", str(workdir.fleet), *LONG_TRAIN)
    _wait_for(workdir.checkpoints, killed, "the fit started")
    killed.kill()
    killed.communicate()
    (left,) = workdir.checkpoints()
    assert str(killed.pid) in left.name
    assert [run.info.status for run in _runs("train")] == ["RUNNING"]

    # A command that starts no job, only opens the tracking store: there is no version to promote.
    promote = workdir.tftmon("promote")
    _, stderr = promote.communicate(timeout=300)
    assert promote.returncode == 1 and "no version" in stderr, stderr[-3000:]
    assert [run.info.status for run in _runs("train")] == ["FAILED"]
    assert workdir.checkpoints() == []


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_retrain_ends_its_runs_killed_records_the_stop_and_releases_the_lock(
    workdir: Workdir, stop: signal.Signals
) -> None:
    lock, events = workdir.root / "retrain.lock", EventLog(workdir.root / "events.jsonl")
    process = workdir.tftmon(
        "retrain", "--data", str(workdir.fleet), "--out", "work", "--min-history-hours", "24",
        "--lock-file", str(lock), "--event-log", str(events.path), "--no-progress",
    )  # fmt: skip
    _wait_for(lambda: any(r["event"] == "retrain_started" for r in events.read()), process, "the retrain started")
    assert lock.exists()
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + stop, stderr[-3000:]
    assert "Traceback" not in stderr

    assert not lock.exists()
    last = list(events.read())[-1]
    assert last["event"] == "failed" and last["error"] == f"stopped by {stop.name}"
    (parent,) = _runs("retrain")
    assert parent.info.status == "KILLED" and parent.data.tags[OUTCOME_TAG] == "stopped"
    assert {run.info.status for run in _children(parent.info.run_id).values()} <= {"KILLED", "FINISHED"}
