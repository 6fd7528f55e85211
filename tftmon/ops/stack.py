"""The whole stack from one command: the service, the live feeder and the dashboard, supervised.

`tftmon stack` (and `tftmon demo` after its pipeline) starts `tftmon serve`, waits for its `/readyz`
(a Production model loaded), starts `tftmon feed` with a feed token shared with the service (generated
when TFTMON_FEED_TOKEN is unset), waits for its scenario control, then starts `tftmon dashboard` and
prints its URL. Each child runs in its own process group (its own session, so a terminal's Ctrl-C
reaches only the supervisor), with its output in `<log_dir>/<name>.log`.

Nothing is restarted: when a child exits, the supervisor says which in one line and stops the rest.
Ctrl-C, SIGTERM or SIGHUP stop them all: SIGTERM to every group (feeder first, service last), SIGKILL
to what is left after `stop_timeout`, and a wait until no process of any group is left. On Linux a child
also gets SIGTERM if the supervisor itself is killed (PR_SET_PDEATHSIG), so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import IO

import requests

from tftmon.config import FEED_TOKEN_ENV, DemoConfig

log = logging.getLogger(__name__)

#: How often the supervisor looks at its children and their readiness (seconds).
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class StackOptions:
    """Ports, feeder settings and timeouts of `tftmon stack` (all on one host, 127.0.0.1 by default)."""

    host: str = "127.0.0.1"
    service_port: int = 3000
    #: The feeder's scenario control (`tftmon feed --control-port`), which the dashboard's buttons call.
    control_port: int = 3001
    dashboard_port: int = 8501
    scenario: str = "degrading"
    #: The feeder's fleet: the demo's by default, so the demo model knows every server.
    servers: int = DemoConfig().simulation.servers
    seed: int = DemoConfig().simulation.seed
    #: Simulated seconds per wall-clock second (None: the feeder's default).
    speed: float | None = None
    #: How long the service may take to load its model, and each other child to answer (seconds).
    ready_timeout: float = 300.0
    #: How long a child may take to exit after SIGTERM before its group is killed (seconds).
    stop_timeout: float = 20.0
    log_dir: Path = Path("logs/stack")
    #: Live hosts from this Prometheus instead of the simulator feeder (no feeder is started).
    prometheus: str | None = None
    #: Alertmanagers the service posts critical alerts to.
    alertmanagers: tuple[str, ...] = ()

    @property
    def service_url(self) -> str:
        return f"http://{self.host}:{self.service_port}"

    @property
    def feeder_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"


Probe = Callable[[], bool]


@dataclass(frozen=True)
class Child:
    """One supervised command: its name, argv, extra environment, and when it counts as up."""

    name: str
    argv: tuple[str, ...]
    #: True once the child serves (None: up as soon as it started).
    ready: Probe | None = None
    #: What to tell the user once it is up, e.g. its URL.
    shown: str = ""
    #: What to check when it does not come up.
    hint: str = ""
    env: dict[str, str] = field(default_factory=dict)
    #: A port that must be free before it starts.
    port: int | None = None
    #: While waiting for it: why it will never be ready, if it already says so (None: keep waiting).
    refused: Callable[[], str | None] | None = None


def http_ok(url: str, timeout: float = 2.0) -> Probe:
    """A probe: GET url answers 200."""

    def probe() -> bool:
        try:
            return requests.get(url, timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    return probe


def http_up(url: str, timeout: float = 2.0) -> Probe:
    """A probe: GET url answers at all (any status below 500)."""

    def probe() -> bool:
        try:
            return requests.get(url, timeout=timeout).status_code < 500
        except requests.RequestException:
            return False

    return probe


def without_model(service_url: str) -> Callable[[], str | None]:
    """The service loads its model before it answers: /health up without one means there is none."""

    def check() -> str | None:
        try:
            health = requests.get(f"{service_url}/health", timeout=2)
            loaded = health.status_code != 200 or health.json().get("model_loaded", True)
        except (requests.RequestException, ValueError):
            return None
        return None if loaded else "service is up without a Production model"

    return check


def say(text: str) -> None:
    """The supervisor's own lines on stdout, at once even when piped (`make demo | tee`)."""
    print(text, flush=True)


def tftmon(*args: str) -> tuple[str, ...]:
    """argv of a `tftmon` command run by this interpreter (no PATH lookup)."""
    return (sys.executable, "-m", "tftmon.cli", *args)


def stack_children(options: StackOptions, feed_token: str) -> list[Child]:
    """service -> feeder -> dashboard, in start order; with a Prometheus source, no feeder."""
    host = options.host
    serve = ["serve", "--host", host, "--port", str(options.service_port), "--dashboard-url", options.dashboard_url]
    if options.prometheus is not None:
        serve += ["--prometheus", options.prometheus]
    for url in options.alertmanagers:
        serve += ["--alertmanager", url]
    feed = ["feed", "--url", options.service_url, "--servers", str(options.servers), "--seed", str(options.seed),
            "--scenario", options.scenario, "--control-port", str(options.control_port)]  # fmt: skip
    if options.speed is not None:
        feed += ["--speed", str(options.speed)]
    token = {FEED_TOKEN_ENV: feed_token}
    dashboard = ["dashboard", "--port", str(options.dashboard_port), "--service-url", options.service_url,
                 "--feeder-url", options.feeder_url]  # fmt: skip
    children = [
        Child(
            "service",
            tftmon(*serve),
            http_ok(f"{options.service_url}/readyz"),
            shown=f"service    {options.service_url}  (API docs {options.service_url}/docs)",
            hint="is a model in production? run `tftmon demo` (or `tftmon promote`) first",
            env=token,
            port=options.service_port,
            refused=without_model(options.service_url),
        ),
        Child(
            "feeder",
            tftmon(*feed),
            http_ok(f"{options.feeder_url}/scenario"),
            shown=f"feeder     {options.feeder_url}/scenario  ({options.servers} servers, scenario {options.scenario})",
            env=token,
            port=options.control_port,
        ),
        Child(
            "dashboard",
            tftmon(*dashboard),
            http_up(options.dashboard_url),
            shown=f"dashboard  {options.dashboard_url}",
            port=options.dashboard_port,
        ),
    ]
    return [child for child in children if options.prometheus is None or child.name != "feeder"]


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `port` on `host` fails because something holds it (bound as servers bind, with
    SO_REUSEADDR). Any other failure (an address not of this machine, a privileged port) is left to the
    server's own bind to report."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        return False
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def port_holder(port: int) -> str:
    """Which process holds TCP `port`, for an error line: "pid N (its command line)", read from /proc (Linux),
    or, where none can be seen (another user's, another system), a phrase saying so."""
    inodes: set[str] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            rows = [line.split() for line in table.read_text().splitlines()[1:]]
        except OSError:
            continue
        # sl local_address(HEXADDR:HEXPORT) rem_address st tx:rx tr:when retrnsmt uid timeout inode
        inodes |= {row[9] for row in rows if len(row) > 9 and int(row[1].rsplit(":", 1)[1], 16) == port}
    sockets = {f"socket:[{inode}]" for inode in inodes if inode != "0"}  # 0: TIME_WAIT, no process holds it
    processes = sorted(int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()) if sockets else []
    for pid in processes:
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to look into
            if any(os.readlink(fd) in sockets for fd in Path(f"/proc/{pid}/fd").iterdir()):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                return f"pid {pid} ({command.strip()[:200]})"
    return "a process this user cannot see"


def _die_with_parent(supervisor: int) -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux; kept across exec).

    A supervisor that dies between the fork and the prctl sends no signal, so the child checks that its
    parent is still the supervisor once the prctl is in place, and exits if not.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != supervisor:
        os._exit(1)


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group pgid."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 8192))
            lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class StackFailed(RuntimeError):
    """A child did not come up, or exited: the one line saying which."""


class Supervisor:
    """Starts children in order, each once the one before it is up; stops them all, never restarts one."""

    def __init__(self, children: Sequence[Child], options: StackOptions, echo: Callable[[str], None] = say) -> None:
        self.children = list(children)
        self.options = options
        self.echo = echo
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self._files: list[IO[bytes]] = []
        self._stop = threading.Event()
        self.stopped_by: str | None = None

    # -- signals -------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopped_by = signal.Signals(signum).name
        self._stop.set()

    def request_stop(self) -> None:
        self.stopped_by = self.stopped_by or "request"
        self._stop.set()

    # -- running -------------------------------------------------------------------------------

    def run(self) -> int:
        """Bring the stack up and keep it until a signal (exit 0) or a failure (exit 1, one line on stderr)."""
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        try:
            self._up()
            if self._stop.is_set():
                return 0
            self.echo(self._banner())
            while not self._stop.wait(POLL_SECONDS):
                self._check()
            self.echo(f"Stopping {', '.join(reversed(self.procs))} ({self.stopped_by})...")
            return 0
        except StackFailed as exc:
            others = [name for name in self.procs if self.procs[name].poll() is None]
            stopping = f"; stopping {', '.join(others)}" if others else ""
            print(f"stack: {exc}{stopping}", file=sys.stderr, flush=True)
            return 1
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _up(self) -> None:
        busy = [c for c in self.children if c.port is not None and port_in_use(self.options.host, c.port)]
        if busy:
            ports = ", ".join(f"{c.port} ({c.name})" for c in busy)
            raise StackFailed(f"port {ports} already in use on {self.options.host}: stop what holds it or choose "
                              "other ports (--service-port, --control-port, --dashboard-port)")  # fmt: skip
        self.options.log_dir.mkdir(parents=True, exist_ok=True)
        for child in self.children:
            if self._stop.is_set():
                return
            self._start(child)
            self._wait_ready(child)

    def _start(self, child: Child) -> None:
        path = self.options.log_dir / f"{child.name}.log"
        out = path.open("wb")
        self._files.append(out)
        self.logs[child.name] = path
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **child.env}
        die_with_us = partial(_die_with_parent, os.getpid()) if sys.platform == "linux" else None
        self.procs[child.name] = subprocess.Popen(
            child.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=die_with_us,
        )  # fmt: skip
        log.info("started %s (pid %d): %s", child.name, self.procs[child.name].pid, " ".join(child.argv))

    def _wait_ready(self, child: Child) -> None:
        if child.ready is None:
            return
        deadline = time.monotonic() + self.options.ready_timeout
        while not self._stop.is_set():
            self._check()
            if child.ready():
                return
            why = child.refused() if child.refused is not None else None
            if why is not None:
                hint = f" ({child.hint})" if child.hint else ""
                raise StackFailed(f"{why}{hint}; its log: {self.logs[child.name]}")
            if time.monotonic() > deadline:
                hint = f" ({child.hint})" if child.hint else ""
                raise StackFailed(
                    f"{child.name} did not come up in {self.options.ready_timeout:g} s{hint}; "
                    f"its log: {self.logs[child.name]}"
                )
            self._stop.wait(POLL_SECONDS * 2)

    def _check(self) -> None:
        """Raise StackFailed naming the first child that exited."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                last = _last_line(self.logs[name])
                said = f": {last}" if last else ""
                raise StackFailed(f"{name} (pid {proc.pid}) exited with code {code}{said} [log: {self.logs[name]}]")

    def _banner(self) -> str:
        lines = [f"  {c.shown}" for c in self.children if c.shown]
        dashboard = next((c for c in self.children if c.name == "dashboard"), None)
        head = f"Dashboard: {self.options.dashboard_url}" if dashboard is not None else "Stack up."
        return "\n".join([head, *lines, f"  logs       {self.options.log_dir}/", "Ctrl-C stops them all."])

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM every child's group, newest first; SIGKILL what is left after stop_timeout; wait until
        no process of any group is alive."""
        started = list(self.procs.items())
        for _, proc in reversed(started):
            self._signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.options.stop_timeout
        for name, proc in reversed(started):
            while (proc.poll() is None or group_alive(proc.pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None or group_alive(proc.pid):
                log.warning("%s did not stop in %g s: killing its process group", name, self.options.stop_timeout)
                self._signal_group(proc, signal.SIGKILL)
        for _, proc in started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("pid %d survived SIGKILL", proc.pid)
            kill_deadline = time.monotonic() + 10
            while group_alive(proc.pid) and time.monotonic() < kill_deadline:
                self._signal_group(proc, signal.SIGKILL)
                time.sleep(0.05)
        for out in self._files:
            out.close()
        self._files.clear()
        self.procs.clear()

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)  # its own session: the group id is its pid


def feed_token() -> str:
    """The token the service and the feeder share: TFTMON_FEED_TOKEN, else a fresh random one."""
    return os.environ.get(FEED_TOKEN_ENV) or secrets.token_urlsafe(24)


def run_stack(options: StackOptions | None = None, echo: Callable[[str], None] = say) -> int:
    """Bring up service, feeder and dashboard and keep them until Ctrl-C/SIGTERM; the exit code."""
    options = options or StackOptions()
    return Supervisor(stack_children(options, feed_token()), options, echo).run()
