"""A real Alertmanager (Debian's `prometheus-alertmanager`) and a webhook receiver, for the Alertmanager sink's tests.

Alertmanager runs on 127.0.0.1 on a free (or given) port with a temp config and temp storage, clustering off, in
its own process group (tests/prometheus_stack.py's helpers), stopped on exit. It routes every alert, each in a
group of its own, to the receiver with send_resolved and sub-second grouping, so a notification follows a post
within about a second. The receiver is a stdlib HTTP server in a thread that keeps every JSON body posted to it;
told to answer 400, it also stands in for an Alertmanager refusing a payload.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.dashboard.conftest import stop_group
from tests.prometheus_stack import require_binaries, start_daemon, wait_until_up
from tests.serving import free_port

BINARIES = ("prometheus-alertmanager",)
INSTALL = "apt-get install -y prometheus-alertmanager"
#: The basic-auth user of an Alertmanager started with auth=True, and the bcrypt hash of its password (cost 4,
#: precomputed: Alertmanager's web config takes only hashes, and Python 3.13 has no bcrypt of its own).
USER, PASSWORD = "tftmon", "tftmon-test-secret"
PASSWORD_BCRYPT = "$2b$04$ZkSLq5JlmW4gHYbgQJq0kuoiKNaW7ZQxHM/iNinQ6nyexI.Yi89yG"


def require_alertmanager() -> None:
    """Skip (fail with CI=true) without Debian's Alertmanager, naming the install command."""
    require_binaries(BINARIES, INSTALL)


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: Any


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with self.server.lock:
            self.server.posts.append(Post(self.path, dict(self.headers), body))
        reply = self.server.reply.encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test reads what was posted, not an access log on stderr."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int, reply: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status, self.reply = status, reply
        self.posts: list[Post] = []
        self.lock = threading.Lock()


class Receiver:
    """What was posted to the receiver's URL, oldest first (Alertmanager's notifications, or the sink's posts)."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"

    def posts(self) -> list[Post]:
        with self._server.lock:
            return list(self._server.posts)

    def alerts(self, server_name: str) -> list[dict[str, Any]]:
        """Each notified alert of one server (label `server`), with its status (firing or resolved)."""
        return [a for post in self.posts() for a in post.body["alerts"] if a["labels"].get("server") == server_name]


@contextlib.contextmanager
def receiver(status: int = 200, reply: str = "") -> Iterator[Receiver]:
    """A receiver on a free port answering every POST with `status` and `reply`."""
    server = _Server(status, reply)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield Receiver(server)
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def alertmanager(
    tmp: Path, webhook: str, port: int | None = None, repeat_interval: str = "1h", auth: bool = False
) -> Iterator[str]:
    """Alertmanager on `port` (a free one if None) notifying `webhook`; yields its URL. With auth, every request
    needs basic auth as USER with PASSWORD. A repeat_interval longer than a test: one notification per alert."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: webhook\n"
        "  group_by: ['...']\n"  # every alert a group of its own: one notification per alert
        f"  group_wait: 100ms\n  group_interval: 300ms\n  repeat_interval: {repeat_interval}\n"
        "receivers:\n"
        f"  - name: webhook\n    webhook_configs: [{{url: '{webhook}/', send_resolved: true}}]\n"
    )
    address = f"127.0.0.1:{port or free_port()}"
    log = tmp / "alertmanager.log"
    command = ["prometheus-alertmanager", f"--config.file={config}", f"--storage.path={tmp / 'data'}",
               f"--web.listen-address={address}", "--cluster.listen-address=", "--log.level=warn"]  # fmt: skip
    if auth:
        web = tmp / "web.yml"
        web.write_text(f"basic_auth_users:\n  {USER}: '{PASSWORD_BCRYPT}'\n")
        command.append(f"--web.config.file={web}")
    process = start_daemon(command, log)
    try:
        wait_until_up(f"http://{address}/-/ready", process, log, auth=(USER, PASSWORD) if auth else None)
        yield f"http://{address}"
    finally:
        stop_group(process)
