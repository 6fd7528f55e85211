"""`tftmon retrain` end to end: a real sqlite MLflow store, a real `bentoml serve`, tiny fleets and models.

The module trains a champion by retraining on a 7-server fleet (the service starts empty and is reloaded to
it), then retrains on the same fleet with 5 servers added and 2 retired (one added server has a short
history: left to cold start) while a client calls the service throughout. The failures are real ones caused
by legitimate options: a candidate trained with a learning rate of 5 (worse than the champion), a target
that is not a metric (training), a wrong admin token (reload), a verification timeout of 1 ms (verify).
Each leaves Production and the service on the version before, with the failure recorded. The lock tests
need no training: another process holds the lock, or a dead one left it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import requests
from click.testing import CliRunner

from tests.conftest import ROOT
from tests.model.conftest import tiny_config
from tests.service.test_service import rows
from tests.serving import ADMIN_TOKEN, FEED_TOKEN, Served, store_env
from tftmon.cli import main
from tftmon.config import DriftConfig, EvaluationConfig, RetrainConfig, RetrainPolicy, SimulationConfig
from tftmon.contract import SERVER_NAME, TIMESTAMP
from tftmon.data.simulate import write_dataset
from tftmon.io import MAPPING_FILE, METRICS_FILE, read_metrics
from tftmon.ops import registry, tracking
from tftmon.ops.events import TAG_PREFIX, EventLog
from tftmon.ops.lock import Holder, LockHeld, exclusive
from tftmon.ops.monitor import check_once
from tftmon.ops.retrain import ERROR_ARTIFACT, FAILED_STEP_TAG, STEPS, RetrainFailed, run_retrain

FLEET = SimulationConfig(servers=7, hours=40, seed=3)
DRIFTED = FLEET.model_copy(update={"add_servers": 5, "retire_servers": 2})
#: As the pipeline tests train: enough for the gate's backtest bound on this fleet, seconds of training.
TRAIN = tiny_config(max_epochs=1, max_batches_per_epoch=4)
#: Few origins: the evaluation only has to run (the gate scores candidates with its own backtest).
EVAL = EvaluationConfig(
    holdout_hours=10, origin_every=timedelta(hours=2), calibration_origins=20, alert_fit_hours=4,
    alert_fit_every=timedelta(hours=1),
)  # fmt: skip
#: The added server whose telemetry starts late: active, but too little history to train on.
SHORT_HOURS = 10


@dataclass
class World:
    root: Path
    service: Served
    fleet: Path
    drifted: Path
    champion: str
    new_servers: list[str]
    retired: list[str]
    short_server: str

    def config(self, data: Path | None = None, **overrides: Any) -> RetrainConfig:
        values: dict[str, Any] = {
            "data": data or self.drifted,
            "out": self.root / "work",
            "min_history_hours": 24,
            "train": TRAIN,
            "evaluation": EVAL,
            "service_url": self.service.url,
            "admin_token": ADMIN_TOKEN,
            "event_log": self.root / "events.jsonl",
            "lock_file": self.root / "retrain.lock",
        }
        return RetrainConfig(**(values | overrides))

    def serving(self) -> str:
        return str(requests.get(f"{self.service.url}/status", timeout=30).json()["model_version"])


def _drifted_dataset(root: Path) -> tuple[Path, list[str], list[str], str]:
    """The fleet with 5 added and 2 retired servers, one added server's telemetry starting late."""
    source = root / "drifted-full"
    write_dataset(DRIFTED, source, progress=False)
    frame = read_metrics(source)
    base = set(read_metrics(root / "fleet", columns=[SERVER_NAME])[SERVER_NAME])
    names = set(frame[SERVER_NAME])
    new, retired = sorted(names - base), sorted(base - names)
    short = new[0]
    late = frame[TIMESTAMP].max() - pd.Timedelta(hours=SHORT_HOURS)
    frame = frame[(frame[SERVER_NAME] != short) | (frame[TIMESTAMP] > late)]
    out = root / "drifted"
    out.mkdir()
    frame.to_parquet(out / METRICS_FILE, index=False)
    (out / MAPPING_FILE).write_bytes((source / MAPPING_FILE).read_bytes())
    return out, new, retired, short


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A store, the two fleets, a service started empty, and a champion that a first retrain promoted."""
    root = tmp_path_factory.mktemp("retrain")
    env = store_env(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        write_dataset(FLEET, root / "fleet", progress=False)
        drifted, new, retired, short = _drifted_dataset(root)
        service = Served(
            {**env, "TFTMON_ADMIN_TOKEN": ADMIN_TOKEN, "TFTMON_FEED_TOKEN": FEED_TOKEN}, root / "serve.log"
        )
        try:
            service.wait_ready()
            partial = World(root, service, root / "fleet", drifted, "", new, retired, short)
            champion = run_retrain(partial.config(root / "fleet"), progress=False)
            partial.champion = champion.version
            yield partial
        finally:
            service.stop()


def _children(parent_run_id: str) -> dict[str, Any]:
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", output_format="list"
    )
    return {run.data.tags[tracking.JOB_TAG]: run for run in runs}


def _events(world: World, run_id: str) -> list[str]:
    return [r["event"] for r in EventLog(world.config().event_log).read() if r["run_id"] == run_id]


def _assert_failed_and_unchanged(world: World, caught: RetrainFailed, step: str, production: str) -> dict[str, Any]:
    """Production and the service are on `production`; the failure is on the parent run and in the log."""
    assert caught.step == step
    assert registry.production_version() == production
    assert world.serving() == production
    run = mlflow.get_run(caught.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILED_STEP_TAG] == step
    assert f"{TAG_PREFIX}failed" in run.data.tags
    error = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{ERROR_ARTIFACT}")
    assert error["step"] == step and error["error"] == caught.error
    assert _events(world, caught.run_id)[-1] == "failed"
    return error


@pytest.mark.slow
def test_first_retrain_promotes_and_the_empty_service_loads_it(world: World) -> None:
    assert registry.production_version() == world.champion == world.serving()


@pytest.mark.slow
def test_retrain_swaps_the_served_model_with_no_failed_request_and_covers_every_active_server(world: World) -> None:
    before = registry.production_version()
    known = read_metrics(world.fleet)
    steady = known[known[SERVER_NAME] == sorted(set(known[SERVER_NAME]) - set(world.retired))[0]]
    body = {"rows": rows(steady[steady[TIMESTAMP] > steady[TIMESTAMP].max() - pd.Timedelta(hours=3)]),
            "include_path": False}  # fmt: skip
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            for response in (
                requests.get(f"{world.service.url}/status", timeout=60),
                requests.post(f"{world.service.url}/predict", json=body, timeout=60),
            ):
                if response.status_code != 200:
                    failures.append(f"{response.request.path_url}: {response.status_code} {response.text[:200]}")
                elif "predictions" in response.json():
                    versions.append(response.json()["model_version"])
            time.sleep(0.2)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        outcome = run_retrain(world.config(), progress=False)
        time.sleep(1.5)  # a few calls after the swap
    finally:
        stop.set()
        thread.join(timeout=120)

    assert failures == []
    assert versions[0] == before and versions[-1] == outcome.version != before
    assert registry.production_version() == outcome.version == world.serving()
    # Every active server: the 5 added included; the one with a short history by cold start.
    active = set(read_metrics(world.drifted, columns=[SERVER_NAME])[SERVER_NAME])
    assert set(world.new_servers) <= active and not set(world.retired) & active
    assert set(outcome.coverage.forecast) == active and outcome.coverage.complete
    assert outcome.coverage.cold_start == [world.short_server]
    assert outcome.survey.short_history == {world.short_server: pytest.approx(SHORT_HOURS, abs=0.1)}
    assert world.short_server not in registry.version_files(outcome.version).joinpath("training_info.json").read_text()

    children = _children(outcome.run_id)
    assert set(STEPS) <= set(children) and all(run.info.status == "FINISHED" for run in children.values())
    assert children["verify"].data.metrics["coverage_pct"] == 100.0
    tags = mlflow.get_run(outcome.run_id).data.tags
    expected = ["retrain_started", "collected", "validated", "trained", "evaluated", "promoted", "reloaded", "verified"]
    assert {f"{TAG_PREFIX}{event}" for event in expected} <= set(tags)
    assert _events(world, outcome.run_id) == expected


@pytest.mark.slow
def test_a_candidate_worse_than_the_champion_is_not_promoted(world: World) -> None:
    production = registry.production_version()
    assert production is not None
    # A learning rate of 5 throws the weights far off: finite forecasts, MASE two orders of magnitude worse.
    diverged = TRAIN.model_copy(update={"model": TRAIN.model.model_copy(update={"learning_rate": 5.0})})
    with pytest.raises(RetrainFailed) as caught:
        run_retrain(world.config(train=diverged), progress=False)
    error = _assert_failed_and_unchanged(world, caught.value, "promote", production)
    assert "worse than champion" in error["error"] and "rolled_back" not in _events(world, caught.value.run_id)


@pytest.mark.slow
def test_a_training_failure_changes_nothing(world: World) -> None:
    production = registry.production_version()
    assert production is not None
    with pytest.raises(RetrainFailed) as caught:
        run_retrain(world.config(train=tiny_config(targets=["cpu_pct"])), progress=False)
    error = _assert_failed_and_unchanged(world, caught.value, "train", production)
    assert "cpu_pct" in error["error"] and error["candidate"] is None


@pytest.mark.slow
def test_a_reload_failure_rolls_the_registry_back(world: World) -> None:
    production = registry.production_version()
    assert production is not None
    with pytest.raises(RetrainFailed) as caught:
        run_retrain(world.config(admin_token="not-the-token"), progress=False)
    error = _assert_failed_and_unchanged(world, caught.value, "reload", production)
    assert "401" in error["error"] or "403" in error["error"]
    assert error["undone"]["restored"] == production
    assert _events(world, caught.value.run_id)[-3:] == ["promoted", "rolled_back", "failed"]


@pytest.mark.slow
def test_a_verification_failure_rolls_registry_and_service_back(world: World) -> None:
    production = registry.production_version()
    assert production is not None
    with pytest.raises(RetrainFailed) as caught:
        run_retrain(world.config(verify_timeout_seconds=0.001), progress=False)
    error = _assert_failed_and_unchanged(world, caught.value, "verify", production)
    assert error["undone"]["service_reload"] == production and error["undone"]["service_serves"] == production
    assert _events(world, caught.value.run_id)[-4:] == ["promoted", "reloaded", "rolled_back", "failed"]


@pytest.mark.slow
def test_monitor_finds_the_drift_and_holds_the_retrain_for_the_minimum_gap(world: World) -> None:
    """The fleet the Production model does not know (the old one against the drifted model, or the other way
    round): drift, but this module retrained minutes ago: over a weekly maximum of 1, within the minimum gap."""
    known = json.loads(
        registry.version_files(str(registry.production_version())).joinpath("training_info.json").read_text()
    )
    config = world.config(data=world.fleet if world.new_servers[-1] in known["servers"] else world.drifted)
    drift = DriftConfig(track=False, forecast_error=False, progress_bar=False)
    tick = check_once(RetrainPolicy(max_per_week=1), config, drift)
    assert tick.priority in ("low", "medium", "high") and not tick.failed
    assert tick.decision.action == "wait" and "max_per_week 1" in tick.decision.reason and tick.retrain is None
    tick = check_once(RetrainPolicy(max_per_week=100), config, drift)
    assert tick.decision.action == "wait" and "min_gap" in tick.decision.reason and tick.retrain is None
    last = list(EventLog(config.event_log).read())[-1]
    assert last["event"] == "drift_detected" and last["priority"] == tick.priority and last["run_id"] is None


# ---------------------------------------------------------------------------------------------
# The lock: no training needed
# ---------------------------------------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from tftmon.ops.lock import exclusive
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding the retrain lock, as a running retrain does."""
    lock = tmp_path / "retrain.lock"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        yield lock, process
    finally:
        process.kill()
        process.wait()


def test_a_second_retrain_refuses_at_once_naming_the_holder(
    holder: tuple[Path, subprocess.Popen[str]], tmp_path: Path, mlflow_store: str
) -> None:
    lock, process = holder
    config = RetrainConfig(data=tmp_path / "fleet", lock_file=lock, event_log=tmp_path / "events.jsonl")
    started = time.monotonic()
    with pytest.raises(LockHeld) as caught:
        run_retrain(config, progress=False)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert f"process {process.pid} on {socket.gethostname()}" in message and str(lock) in message
    assert mlflow.search_runs(search_all_experiments=True).empty  # refused before any run started

    result = CliRunner().invoke(main, ["retrain", "--data", str(tmp_path), "--lock-file", str(lock)])
    assert result.exit_code == 75 and "a retrain is already running" in result.output


def test_a_stale_lock_is_reported_and_taken_over(tmp_path: Path, mlflow_store: str) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "retrain.lock"
    stale = Holder(dead.pid, socket.gethostname(), "2026-01-01T00:00:00+00:00")
    lock.write_text(json.dumps(stale.__dict__))
    config = RetrainConfig(data=tmp_path / "missing", lock_file=lock, event_log=tmp_path / "events.jsonl")
    with pytest.raises(RetrainFailed) as caught:  # it ran (and failed on the missing data), not refused
        run_retrain(config, progress=False)
    assert caught.value.step == "collect" and "no such file or directory" in caught.value.error
    assert not lock.exists()
    records = list(EventLog(config.event_log).read())
    assert [r["event"] for r in records] == ["stale_lock", "retrain_started", "failed"]
    assert f"process {dead.pid}" in records[0]["holder"]
    assert f"process {dead.pid}" in mlflow.get_run(caught.value.run_id).data.tags[f"{TAG_PREFIX}stale_lock"]


def test_a_lock_of_another_host_is_never_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "retrain.lock"
    lock.write_text(json.dumps(Holder(1, "elsewhere.example", "2026-01-01T00:00:00+00:00").__dict__))
    with pytest.raises(LockHeld, match=r"process 1 on elsewhere\.example.*remove"), exclusive(lock):
        pass
    assert lock.exists()


def test_the_lock_is_released_after_use_and_exclusive_within_a_process(tmp_path: Path) -> None:
    lock = tmp_path / "retrain.lock"
    with exclusive(lock) as grant:
        assert grant.replaced is None and json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(LockHeld), exclusive(lock):
            pass
    assert not lock.exists()
