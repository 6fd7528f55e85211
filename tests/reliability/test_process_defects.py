"""Issue 31, items 1, 4, 8 and 11 (d), against the real parts: a `tftmon serve` whose server is killed with
SIGKILL (its worker must not keep the port) or whose port is taken (one line naming the holder), a reload
over a registry that cannot be read (409, the old model serving on, never a 200), a rollback on an empty
registry (one line), and the feeder's scenario control refusing what a web page sends (CSRF, DNS rebinding).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest
import requests
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import ROOT
from tests.serving import ADMIN_TOKEN, LIMITS, Served, free_port, register_version, store_env
from tftmon.cli import main
from tftmon.config import Settings
from tftmon.dashboard.client import FeederClient
from tftmon.ops import registry, tracking
from tftmon.ops.stack import port_in_use
from tftmon.serve.feed_control import ControlOptions, ControlServer, ScenarioControl

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: What a tracking DB overwritten by something else holds.
NOT_A_DATABASE = b"this is not an SQLite database\n" * 256


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _serve(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`tftmon serve` on 127.0.0.1:port, in a session of its own (as a supervisor would start it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tftmon.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, **LIMITS, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"tftmon serve exited:\n{log.read_text()[-3000:]}"
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"service not up in {timeout} s:\n{log.read_text()[-3000:]}")


# -- item 1: the worker dies with its server; a busy port is one line ------------------------------------------


def test_a_server_killed_outright_takes_its_worker_and_the_port_with_it(tmp_path: Path) -> None:
    port = free_port()
    env = {**store_env(tmp_path), "BENTOML_HOME": str(tmp_path / "bentoml"), "TFTMON_ADMIN_TOKEN": ""}
    log = tmp_path / "serve.log"
    server = _serve(port, env, log)
    workers: list[psutil.Process] = []
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", server, log)  # no model: it answers all the same
        workers = [p for p in psutil.Process(server.pid).children() if "_bentoml_impl.worker" in " ".join(p.cmdline())]
        assert workers, [p.cmdline() for p in psutil.Process(server.pid).children()]
        assert all(p.pid == os.getpgid(p.pid) for p in workers)  # BentoML detaches them: killpg never reaches them

        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        deadline = time.monotonic() + 60  # a poll of the parent, then the graceful stop (or the hard exit)
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p.pid for p in workers if _alive(p)], f"orphaned worker kept running:\n{log.read_text()[-2000:]}"
        assert not port_in_use("127.0.0.1", port)  # a restart on the port can bind it
        assert "is gone: this worker stops too" in log.read_text()
    finally:
        for process in workers:
            if _alive(process):
                process.kill()
        if server.poll() is None:
            server.kill()


def test_serve_on_a_busy_port_says_so_in_one_line_naming_the_holder(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tftmon.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env={**os.environ, **store_env(tmp_path)}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: port {port} on 127.0.0.1 is already in use by pid {os.getpid()} ("), lines
    assert lines[0].endswith("): stop that process, or serve on another port (--port)"), lines


# -- item 4: a registry that cannot be read is no "no change" --------------------------------------------------


@pytest.fixture
def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty sqlite registry under tmp_path for this process (a connection per query, as the service's)."""
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    for key, value in store_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(store_env(tmp_path)["MLFLOW_TRACKING_URI"])
    return tmp_path / "mlflow.db"


def test_no_production_is_told_from_a_registry_that_cannot_be_read(fresh_store: Path) -> None:
    assert registry.production_version() is None  # nothing registered
    MlflowClient().create_registered_model(Settings().tftmon_model_name)
    assert registry.production_version() is None  # a model without the alias
    fresh_store.write_bytes(NOT_A_DATABASE)
    with pytest.raises(tracking.RegistryUnreadable, match=r"^the registry could not be read: .*not a database"):
        registry.production_version()


def test_any_command_opening_an_unreadable_store_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first store access of a process (`tracking.configure`, which every job makes) names the store and
    the fix, instead of SQLAlchemy's traceback."""
    (tmp_path / "mlflow.db").write_bytes(NOT_A_DATABASE)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(tracking.RegistryUnreadable, match=r"^the registry could not be read: .*not a database"):
        tracking.configure()


@pytest.fixture
def served_store(
    fresh_store: Path, model_store: dict, fleet_history: pd.DataFrame, tmp_path: Path
) -> Iterator[tuple[Served, Path]]:
    """The tiny model promoted as version 1 of a registry of its own, and a service on it."""
    registry.promote(register_version(model_store["model_dir"], fleet_history), force=True, reason="issue 31")
    env = {**store_env(tmp_path), "TFTMON_ADMIN_TOKEN": ADMIN_TOKEN}
    with Served(env, tmp_path / "serve.log") as service:
        yield service, fresh_store


def test_reload_over_an_unreadable_registry_is_refused_and_the_model_serves_on(
    served_store: tuple[Served, Path],
) -> None:
    service, database = served_store
    assert requests.get(f"{service.url}/health", timeout=5).json()["model_loaded"] is True
    intact = database.read_bytes()
    for broken in (NOT_A_DATABASE, b""):  # overwritten, emptied
        database.write_bytes(broken)
        reload = requests.post(f"{service.url}/admin/reload", headers=ADMIN, timeout=120)
        assert reload.status_code == 409, reload.text
        assert reload.json()["error"].startswith(
            "reload failed, still serving version 1: the registry could not be read: "
        ), reload.text
        assert requests.get(f"{service.url}/health", timeout=5).json()["model_loaded"] is True
    database.write_bytes(intact)
    reload = requests.post(f"{service.url}/admin/reload", headers=ADMIN, timeout=120)
    assert reload.status_code == 200 and reload.json()["changed"] is False, reload.text


# -- item 11 (d): rollback on an empty registry --------------------------------------------------------------


def test_rollback_on_an_empty_registry_is_one_line(fresh_store: Path) -> None:
    result = CliRunner().invoke(main, ["rollback"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: no version of model 'tftmon' is registered, so none to roll back to; run `tftmon train` first"
    )


# -- item 8: the scenario control refuses web pages ----------------------------------------------------------


@pytest.fixture
def control() -> Iterator[tuple[ScenarioControl, ControlServer]]:
    state = ScenarioControl("degrading")
    with ControlServer(state, ControlOptions(port=0)) as server:
        yield state, server


def test_scenario_control_refuses_other_origins_and_hosts(control: tuple[ScenarioControl, ControlServer]) -> None:
    state, server = control
    port = server.port
    foreign = [
        {"Origin": "http://evil.example"},  # a cross-site form or fetch (CSRF)
        {"Origin": "null"},  # a sandboxed page
        {"Origin": f"http://127.0.0.1:{port + 1}"},  # another local web app
        {"Host": f"evil.example:{port}"},  # DNS rebinding: the page's own name, resolved to 127.0.0.1
        {"Host": f"127.0.0.1.evil.example:{port}"},
    ]
    for headers in foreign:
        refused = requests.post(server.url, json={"scenario": "critical"}, headers=headers, timeout=5)
        assert refused.status_code == 403, (headers, refused.text)
        header = next(iter(headers))
        assert refused.json()["error"].startswith(f"header {header} is {headers[header]!r}, not this"), refused.text
        assert f"http://127.0.0.1:{port}/scenario" in refused.json()["fix"]
        assert state.state()["scenario"] == "degrading"
    rebound = requests.get(server.url, headers={"Host": f"evil.example:{port}"}, timeout=5)
    assert rebound.status_code == 403, rebound.text

    # This machine's own clients: the dashboard's (no Origin), by either loopback name, and a page of its own.
    assert FeederClient(f"http://127.0.0.1:{port}").set_scenario("critical")["scenario"] == "critical"
    local = {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
    assert requests.post(server.url, json={"scenario": "healthy"}, headers=local, timeout=5).status_code == 200
    assert state.state()["scenario"] == "healthy"
