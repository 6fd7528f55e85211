"""The stack supervisor (`tftmon stack`, the end of `make demo`): children come up in order, one that dies
stops the rest with one line, and SIGTERM (or the supervisor's own death) leaves no process behind.

The real `tftmon serve` (a tiny promoted model) and the real `tftmon feed` run under the supervisor; the
dashboard is a stand-in web server (any process on its port), since the dashboard is not what is tested
here. The other cases use cheap stand-in children. Every process is checked gone through psutil, zombies
counting as gone (the supervisor reaps its own; orphans belong to init).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.serving import LIMITS, store_env
from tftmon.ops.stack import group_alive

#: Runs a Supervisor from a JSON spec: {"options": {...}, "children": [...]} or {"real": true, ...}.
DRIVER = r"""
import json, logging, sys
from pathlib import Path
from tftmon.ops.stack import Child, StackOptions, Supervisor, http_ok, http_up, stack_children

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
spec = json.loads(sys.argv[1])
options = StackOptions(**{k: Path(v) if k == "log_dir" else v for k, v in spec["options"].items()})
if spec.get("real"):
    children = [c for c in stack_children(options, spec["token"]) if c.name != "dashboard"]
    children.append(Child("dashboard", tuple(spec["dashboard"]), http_up(options.dashboard_url),
                          shown=f"dashboard  {options.dashboard_url}", port=options.dashboard_port))
else:
    children = [Child(c["name"], tuple(c["argv"]), http_ok(c["ready"]) if c.get("ready") else None,
                      port=c.get("port")) for c in spec["children"]]
sys.exit(Supervisor(children, options).run())
"""

PY = sys.executable
SLEEP = "import time; time.sleep(600)"
#: A child with a grandchild in its process group.
PARENT = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {SLEEP!r}]); time.sleep(600)"
DIER = "import sys, time; time.sleep(5); print('out of cheese'); sys.exit(3)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _supervise(spec: dict[str, Any], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-c", DRIVER, json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip


def _descendants(pid: int, count: int, timeout: float = 30) -> list[psutil.Process]:
    """The supervisor's descendants, once there are at least `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = psutil.Process(pid).children(recursive=True)
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, [p.cmdline() for p in found]
            return found
        time.sleep(0.1)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _assert_all_gone(procs: list[psutil.Process], timeout: float = 10) -> None:
    """Every process seen, and every process of their groups (the supervisor's children lead their own)."""
    groups = {p.pid for p in procs}
    deadline = time.monotonic() + timeout
    while (any(_alive(p) for p in procs) or any(group_alive(g) for g in groups)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [(p.pid, p.cmdline()) for p in procs if _alive(p)]
    assert not left, f"left alive: {left}"
    assert not [g for g in groups if group_alive(g)]


def _stack_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("stack:")]


def _kill_tree(sup: subprocess.Popen[str], procs: list[psutil.Process]) -> None:
    """Clean up after a failed assertion, so a broken supervisor cannot leak into other tests."""
    for proc in [psutil.Process(sup.pid) if sup.poll() is None else None, *procs]:
        if proc is not None and _alive(proc):
            proc.kill()


def _real_spec(tmp_path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The real service and feeder; a stand-in web server on the dashboard's port."""
    ports = {"service_port": _free_port(), "control_port": _free_port(), "dashboard_port": _free_port()}
    spec = {
        "real": True,
        "token": "stack-test-token",
        "options": {**ports, "servers": 3, "seed": 3, "scenario": "degrading", "ready_timeout": 240,
                    "stop_timeout": 20, "log_dir": str(tmp_path / "logs")},
        "dashboard": [PY, "-m", "http.server", str(ports["dashboard_port"]), "--bind", "127.0.0.1"],
    }  # fmt: skip
    return spec, ports


@pytest.mark.slow
def test_real_service_and_feeder_come_up_in_order_and_sigterm_leaves_nothing(
    model_store: dict,
    tmp_path: Path,
) -> None:
    spec, ports = _real_spec(tmp_path)
    started = time.monotonic()
    sup = _supervise(spec, {**LIMITS, **model_store["env"], "BENTOML_HOME": str(tmp_path / "bentoml")})
    procs: list[psutil.Process] = []
    try:
        assert sup.stdout is not None
        banner = sup.stdout.readline()  # blocks until everything is up (or the supervisor gave up)
        assert banner.startswith(f"Dashboard: http://127.0.0.1:{ports['dashboard_port']}"), (
            banner + sup.communicate(timeout=60)[1][-3000:]
        )
        up_after = time.monotonic() - started
        service = f"http://127.0.0.1:{ports['service_port']}"
        assert requests.get(f"{service}/readyz", timeout=5).status_code == 200
        control = f"http://127.0.0.1:{ports['control_port']}/scenario"
        assert requests.get(control, timeout=5).json()["scenario"] == "degrading"
        assert requests.post(control, json={"scenario": "critical"}, timeout=5).status_code == 200
        deadline = time.monotonic() + 60  # the feeder's back-fill reaches the service with the shared token
        while requests.get(f"{service}/status", timeout=5).json()["servers_live"] < 3:
            assert time.monotonic() < deadline, (tmp_path / "logs" / "feeder.log").read_text()[-3000:]
            time.sleep(0.5)
        procs = _descendants(sup.pid, 3)
        names = " ".join(" ".join(p.cmdline()) for p in procs)
        assert "bentoml" in names and " feed " in names and "http.server" in names

        sup.send_signal(signal.SIGTERM)
        _, err = sup.communicate(timeout=60)
        assert sup.returncode == 0, err[-3000:]
        _assert_all_gone(procs)
        for port in ports.values():
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
        assert {p.name for p in (tmp_path / "logs").iterdir()} == {"service.log", "feeder.log", "dashboard.log"}
        print(f"stack up in {up_after:.1f} s")
    finally:
        _kill_tree(sup, procs)


def test_a_child_that_dies_stops_the_rest_with_one_line(tmp_path: Path) -> None:
    spec = {
        "options": {"log_dir": str(tmp_path), "stop_timeout": 10},
        "children": [
            {"name": "sleeper", "argv": [PY, "-c", PARENT]},
            {"name": "dier", "argv": [PY, "-c", DIER]},
        ],
    }
    sup = _supervise(spec)
    procs = _descendants(sup.pid, 3)  # sleeper, its grandchild, dier
    try:
        out, err = sup.communicate(timeout=60)
        assert sup.returncode == 1
        lines = _stack_lines(err)
        assert len(lines) == 1, err
        assert lines[0].startswith("stack: dier (pid ") and "exited with code 3: out of cheese" in lines[0], lines
        assert lines[0].endswith("; stopping sleeper") and str(tmp_path / "dier.log") in lines[0]
        assert "Traceback" not in err
        assert out.startswith("Stack up.")  # it was up before the child died: nothing restarted it
        _assert_all_gone(procs)
    finally:
        _kill_tree(sup, procs)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])  # SIGINT: Ctrl-C
def test_a_stop_signal_kills_even_a_child_that_ignores_sigterm(tmp_path: Path, signum: int) -> None:
    spec = {
        "options": {"log_dir": str(tmp_path), "stop_timeout": 1.5},
        "children": [
            {"name": "stubborn", "argv": [PY, "-c", STUBBORN]},
            {"name": "parent", "argv": [PY, "-c", PARENT]},
        ],
    }
    sup = _supervise(spec)
    procs = _descendants(sup.pid, 3)
    try:
        assert sup.stdout is not None and sup.stdout.readline().startswith("Stack up.")
        time.sleep(0.5)  # let the stubborn child install its handler
        stopped = time.monotonic()
        sup.send_signal(signum)
        out, err = sup.communicate(timeout=30)
        assert sup.returncode == 0, err
        assert time.monotonic() - stopped < 10
        assert f"Stopping parent, stubborn ({signal.Signals(signum).name})..." in out
        assert "stubborn did not stop in 1.5 s" in err
        _assert_all_gone(procs)
    finally:
        _kill_tree(sup, procs)


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """SIGKILL leaves the supervisor no chance to clean up: PR_SET_PDEATHSIG still stops its children."""
    if sys.platform != "linux":
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    spec = {"options": {"log_dir": str(tmp_path)}, "children": [{"name": "a", "argv": [PY, "-c", SLEEP]},
                                                               {"name": "b", "argv": [PY, "-c", SLEEP]}]}  # fmt: skip
    sup = _supervise(spec)
    procs = _descendants(sup.pid, 2)
    try:
        sup.kill()
        sup.wait(timeout=10)
        _assert_all_gone(procs)
    finally:
        _kill_tree(sup, procs)


def test_a_busy_port_or_a_child_that_never_answers_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        spec = {"options": {"log_dir": str(tmp_path / "a")},
                "children": [{"name": "service", "argv": [PY, "-c", SLEEP], "port": port}]}  # fmt: skip
        sup = _supervise(spec)
        _, err = sup.communicate(timeout=30)
    assert sup.returncode == 1
    assert _stack_lines(err) == [
        f"stack: port {port} (service) already in use on 127.0.0.1: stop what holds it or choose other ports "
        "(--service-port, --control-port, --dashboard-port)"
    ]
    assert not (tmp_path / "a").exists()  # nothing started

    closed = _free_port()
    mute = {"name": "mute", "argv": [PY, "-c", SLEEP], "ready": f"http://127.0.0.1:{closed}/"}
    spec = {"options": {"log_dir": str(tmp_path / "b"), "ready_timeout": 1}, "children": [mute]}
    sup = _supervise(spec)
    procs = _descendants(sup.pid, 1)
    try:
        _, err = sup.communicate(timeout=30)
        assert sup.returncode == 1
        lines = _stack_lines(err)
        assert len(lines) == 1 and lines[0].startswith("stack: mute did not come up in 1 s"), err
        _assert_all_gone(procs)
    finally:
        _kill_tree(sup, procs)


@pytest.mark.slow
def test_a_service_without_a_model_stops_the_stack_at_once(tmp_path: Path) -> None:
    """No Production model: the service answers /health without one, so the stack says so (and the fix)
    instead of waiting out its ready timeout, and never starts the feeder."""
    spec, _ = _real_spec(tmp_path)
    started = time.monotonic()
    sup = _supervise(spec, {**LIMITS, **store_env(tmp_path / "empty"), "BENTOML_HOME": str(tmp_path / "bentoml")})
    procs = _descendants(sup.pid, 1)
    try:
        _, err = sup.communicate(timeout=200)
        assert sup.returncode == 1, err[-3000:]
        lines = _stack_lines(err)
        assert len(lines) == 1, err[-3000:]
        assert lines[0].startswith("stack: service is up without a Production model (is a model in production? run "
                                   "`tftmon demo` (or `tftmon promote`) first); its log: "), lines  # fmt: skip
        assert time.monotonic() - started < 200 < spec["options"]["ready_timeout"]
        assert not (tmp_path / "logs" / "feeder.log").exists()
        _assert_all_gone(procs)
    finally:
        _kill_tree(sup, procs)


def test_demo_ends_with_the_stack_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tftmon demo` (what `make demo` runs) brings the stack up after the pipeline; --no-stack stops there."""
    from click.testing import CliRunner

    from tftmon.cli import main
    from tftmon.ops import jobs, stack

    calls: list[str] = []
    outcome = {"summary": "", "version": "1", "run_ids": ["r"], "tracking_uri": "sqlite://", "docs": "d"}
    monkeypatch.setattr(jobs, "run_demo", lambda out: calls.append("pipeline") or outcome)
    monkeypatch.setattr(stack, "run_stack", lambda options=None: calls.append("stack") or 0)
    assert CliRunner().invoke(main, ["demo", "--no-stack"]).exit_code == 0
    assert calls == ["pipeline"]
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert calls == ["pipeline", "pipeline", "stack"]
