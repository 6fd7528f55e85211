"""A tiny promoted model in a tmp MLflow store, and real `bentoml serve` processes on free local ports.

Shared by tests/service and tests/dashboard: registered as a plugin in tests/conftest.py, so each session
fixture (the trained model above all) is built once per test run, whichever suites use it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from tests.conftest import ROOT
from tftmon.config import NetworkConfig, SimulationConfig, TrainConfig

ADMIN_TOKEN = "test-admin-token"
FEED_TOKEN = "test-feed-token"
#: The headers of a /feed request.
FEED = {"Authorization": f"Bearer {FEED_TOKEN}"}
#: Small enough to train in seconds on 2 cores; the service only needs *a* promoted model.
TINY = TrainConfig(
    max_epochs=1, max_batches_per_epoch=3, max_val_batches=2, encoder_hours=1, validation_hours=9, batch_size=32,
    model=NetworkConfig(hidden_size=8, attention_head_size=1, hidden_continuous_size=4), progress_bar=False,
    accelerator="cpu", devices=1,
)  # fmt: skip
FLEET = SimulationConfig(servers=7, hours=30, seed=3)
#: Small request limits so the limit tests stay cheap; a fast refresh so the feed test does not wait. Rate
#: limits off: every probe of these suites comes from one address (tests/reliability/test_rate_limits.py
#: turns them on).
LIMITS = {
    "TFTMON_SERVICE_PREDICT_PER_MINUTE": "0",
    "TFTMON_SERVICE_FEED_PER_MINUTE": "0",
    "TFTMON_SERVICE_REFRESH_SECONDS": "0.3",
    "TFTMON_SERVICE_MAX_ROWS_PER_REQUEST": "3000",
    "TFTMON_SERVICE_MAX_FEED_ROWS": "3000",
    "TFTMON_SERVICE_MAX_SERVERS_PER_REQUEST": "20",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def store_env(root: Path) -> dict[str, str]:
    """The registry a process reads: the tracking DB and artifact root under root (no BentoML home: see Served)."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "TFTMON_ARTIFACT_ROOT": str(root / "mlartifacts")}


def register_version(model_dir: Path, history: pd.DataFrame) -> str:
    """Register the model directory as a new version (inside its own run), as a training job does."""
    from tftmon.model.network import load_model
    from tftmon.ops import registry, tracking

    model = load_model(model_dir)
    example = history[history["server_name"] == history["server_name"].iloc[0]].tail(model.config.encoder_steps)
    with tracking.job_run("train"):
        return registry.register(model_dir, model.config.targets, example.reset_index(drop=True), tags={})


@pytest.fixture(scope="session")
def fleet_history() -> pd.DataFrame:
    from tftmon.data.simulate import simulate

    return simulate(FLEET)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory, fleet_history: pd.DataFrame) -> Iterator[dict]:
    """Train, register and promote a tiny model in a fresh sqlite store; yields its env and model dir."""
    import mlflow

    from tftmon.model.network import save_model
    from tftmon.model.train import fit
    from tftmon.ops import registry

    root = tmp_path_factory.mktemp("store")
    env = store_env(root)
    with environment(env):
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        model, _ = fit(fleet_history, TINY)
        model_dir = root / "model_dir"
        save_model(model, model_dir)
        version = register_version(model_dir, fleet_history)
        # A barely-trained model on a fleet too short for the gate's backtest: serving needs a model, not a good one.
        registry.promote(version, force=True, reason="service tests")
        yield {"env": env, "model_dir": model_dir, "version": version, "servers": model.training_info["servers"]}


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """These variables set in this process for the block (what a job reads, e.g. the tracking store), then put
    back as they were."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Served:
    """A running `bentoml serve` process and its base URL.

    Each gets its own BentoML home unless one is given: `bentoml serve` empties `<home>/prometheus_multiproc_dir`
    when it starts, so a second live service on the same home unlinks the first one's counter files, and the
    first one's /metrics shows whatever the second one left there instead of its own counts.
    """

    def __init__(
        self, env: dict[str, str], log: Path, bentoml_home: Path | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = bentoml_home or log.parent / f"{log.stem}-bentoml"
        full = {**os.environ, **LIMITS, **env, "BENTOML_HOME": str(home)}
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "tftmon.serve.service:Tftmon", "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=ROOT, env=full, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"service not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def __enter__(self) -> Served:
        """The service once it answers; stopped (its log in the error) if it never does."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def service(model_store: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The service with a promoted model, an admin token and a feed token."""
    env = {**model_store["env"], "TFTMON_ADMIN_TOKEN": ADMIN_TOKEN, "TFTMON_FEED_TOKEN": FEED_TOKEN}
    with Served(env, tmp_path_factory.mktemp("log") / "a") as served:
        yield served


@pytest.fixture(scope="session")
def bare_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The service over an empty registry and without an admin token (with a feed token)."""
    root = tmp_path_factory.mktemp("empty")
    env = {**store_env(root), "TFTMON_ADMIN_TOKEN": "", "TFTMON_FEED_TOKEN": FEED_TOKEN}
    with Served(env, root / "serve.log") as served:
        yield served
