"""The BentoML worker's lifeline: it dies with the server process that started it.

`bentoml serve` (the arbiter) starts the service's worker in a session of its own and hands it the
listening socket. An arbiter killed with SIGKILL cannot stop it: the worker, re-parented to init, would keep
the port and answer on it for as long as it lives, and every restart on that port would fail (a supervisor
restarting a crashed service, forever). So the worker watches its parent and stops itself once it is gone:
SIGTERM to itself (uvicorn's graceful stop closes the socket first), then a hard exit should that not have
ended it after a grace period. A thread polling the parent pid, not a parent-death signal: that signal is
sent when the *thread* that forked the worker ends, which need not be the arbiter's end.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)

#: Set by `tftmon serve` to its own pid before it execs into the BentoML server (exec keeps the pid), so
#: a worker knows its server even if that server died before the worker could look at its parent.
SERVER_PID_ENV = "TFTMON_SERVER_PID"
#: How often the worker looks at its parent (seconds).
POLL_SECONDS = 0.5
#: How long the graceful stop may take (open requests finishing) before the worker exits anyway (seconds).
GRACE_SECONDS = 10.0


def server_pid() -> int:
    """The server this worker belongs to: the pid `tftmon serve` exported, else (a plain `bentoml serve`)
    the parent now."""
    exported = os.environ.get(SERVER_PID_ENV, "")
    return int(exported) if exported.isdigit() else os.getppid()


def die_with_server(poll_seconds: float = POLL_SECONDS, grace_seconds: float = GRACE_SECONDS) -> threading.Thread:
    """Watch the server from a daemon thread (the worker, once, as it starts); returns the thread."""
    thread = threading.Thread(
        target=_watch, args=(server_pid(), poll_seconds, grace_seconds), name="tftmon-lifeline", daemon=True
    )
    thread.start()
    return thread


def _watch(server: int, poll_seconds: float, grace_seconds: float) -> None:
    while os.getppid() == server:
        time.sleep(poll_seconds)
    log.error("the BentoML server (pid %d) is gone: this worker stops too, freeing its port", server)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_seconds)
    log.error("still running %g s after SIGTERM: exiting now", grace_seconds)
    os._exit(1)
