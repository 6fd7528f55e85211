"""A killed job leaves its run RUNNING forever (issue 9, defect 8); the next job marks it FAILED, but never a
run whose process still lives, nor one it cannot judge (another host, or not a tftmon job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mlflow import MlflowClient

from tests.conftest import ROOT
from tftmon.ops import tracking

KILLED_JOB = """
import os, signal
from tftmon.ops import tracking
with tracking.job_run("train") as run:
    print(run.info.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_job_run() -> str:
    """The id of a run whose job was killed with SIGKILL while it ran (same store, through the environment)."""
    done = subprocess.run(
        [sys.executable, "-c", KILLED_JOB], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    return done.stdout.split()[0]


def test_the_next_job_marks_a_killed_jobs_run_failed(mlflow_store: str) -> None:
    client = MlflowClient()
    killed = _killed_job_run()
    assert client.get_run(killed).info.status == "RUNNING"
    with tracking.job_run("validate"):
        pass
    assert client.get_run(killed).info.status == "FAILED"


def test_a_live_jobs_run_is_never_marked(mlflow_store: str) -> None:
    with tracking.job_run("train") as run:
        experiment = run.info.experiment_id
        assert tracking.fail_orphaned_runs([experiment]) == []
        assert MlflowClient().get_run(run.info.run_id).info.status == "RUNNING"
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"


def test_runs_it_cannot_judge_are_left_alone(mlflow_store: str) -> None:
    killed = _killed_job_run()
    client = MlflowClient()
    client.set_tag(killed, tracking.HOST_TAG, "another-host")  # its pid means nothing here
    untagged = client.create_run(client.get_run(killed).info.experiment_id)  # not started by a tftmon job
    experiment = untagged.info.experiment_id
    assert tracking.fail_orphaned_runs([experiment]) == []
    assert {client.get_run(r).info.status for r in (killed, untagged.info.run_id)} == {"RUNNING"}
