"""The feeder's scenario control: a tiny JSON API on 127.0.0.1 that switches the live feed's scenario.

`GET /scenario` answers the scenario in force; `POST /scenario` with `{"scenario": "critical"}` asks for
another, which the feed loop applies at its next tick (`FleetSimulator.switch_scenario`): the stream goes
on from the current data time, the new scenario's forced path starting then. A bad body gets a 400 (not
JSON) or 422 (wrong field or value) with `{"error", "fix"}`. JSON only, stdlib `http.server`, one daemon
thread per request; the dashboard's scenario buttons call it (from its server, not from the browser).

Bound to 127.0.0.1, it is still reachable from a web page in the operator's browser: a cross-site form or
`fetch` (CSRF), or a page whose own name re-resolves to 127.0.0.1 (DNS rebinding). So a request must name
this API by its own address in `Host` (a rebinding page's request names the page's host), and an `Origin`
header, which browsers send with every cross-site POST, must be this API's own; anything else gets a 403.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast, get_args

import pandas as pd

from tftmon.config import Scenario

log = logging.getLogger(__name__)

#: The scenarios a client may ask for (`normal`: natural incidents only, no forced path).
SCENARIOS: tuple[str, ...] = get_args(Scenario)
#: The one resource.
PATH = "/scenario"
#: A request body is a few bytes; anything larger is refused unread.
MAX_BODY_BYTES = 4096
FIX = f'send a JSON object like {{"scenario": "critical"}}; scenario is one of {", ".join(SCENARIOS)}'
#: Host names a request may call the API by, beside the address it binds to (a wildcard address is none).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost"})
#: Of a header value echoed in an error: at most this many characters.
ECHOED_CHARS = 100


@dataclass(frozen=True)
class ControlOptions:
    """Where the control API listens (`tftmon feed --control-port`; 0 = no control API)."""

    host: str = "127.0.0.1"
    port: int = 3001


def _iso(moment: datetime | pd.Timestamp | None) -> str | None:
    if moment is None:
        return None
    return pd.Timestamp(moment).tz_convert(UTC).isoformat().replace("+00:00", "Z")


class ScenarioControl:
    """The scenario a client asked for, shared between the HTTP threads and the feed loop.

    `request` (any thread) records a wish; `take` (the feed loop, before each tick) returns it once;
    `applied` records the data time from which it holds."""

    def __init__(self, scenario: str) -> None:
        self._lock = threading.Lock()
        self._scenario = scenario
        self._since = datetime.now(UTC)
        self._applies_from: pd.Timestamp | None = None
        self._pending: str | None = None

    def state(self) -> dict[str, Any]:
        """`scenario`, `since` (wall clock, UTC, when it was chosen), `applies_from` (the data time of the
        first tick under it; null until the feed reaches it) and the `choices`."""
        with self._lock:
            return {
                "scenario": self._scenario,
                "since": _iso(self._since),
                "applies_from": _iso(self._applies_from),
                "choices": list(SCENARIOS),
            }

    def request(self, scenario: str) -> dict[str, Any]:
        """Ask for `scenario` (one of SCENARIOS); asking for the one in force changes nothing."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}")
        with self._lock:
            if scenario != self._scenario:
                self._scenario, self._pending = scenario, scenario
                self._since, self._applies_from = datetime.now(UTC), None
                log.info("scenario %s requested", scenario)
        return self.state()

    def take(self) -> Scenario | None:
        """The scenario asked for since the last call, if any (the feed loop, before a tick)."""
        with self._lock:
            pending, self._pending = self._pending, None
        return cast(Scenario | None, pending)

    def applied(self, scenario: str, data_time: pd.Timestamp) -> None:
        """The feed switched to `scenario` from data time `data_time` on."""
        with self._lock:
            if scenario == self._scenario and self._applies_from is None:
                self._applies_from = pd.Timestamp(data_time)


def _problem(body: Any) -> tuple[HTTPStatus, str] | None:
    """What is wrong with a parsed body, or None."""
    if not isinstance(body, dict):
        return HTTPStatus.UNPROCESSABLE_ENTITY, f"the body must be a JSON object, not {type(body).__name__}"
    if "scenario" not in body:
        return HTTPStatus.UNPROCESSABLE_ENTITY, "field `scenario` is missing"
    extra = sorted(set(body) - {"scenario"})
    if extra:
        return HTTPStatus.UNPROCESSABLE_ENTITY, f"unknown field(s) {', '.join(map(repr, extra))}: only `scenario`"
    if body["scenario"] not in SCENARIOS:
        allowed = ", ".join(SCENARIOS)
        return HTTPStatus.UNPROCESSABLE_ENTITY, f"field `scenario` is {body['scenario']!r}, not one of {allowed}"
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "tftmon-feed"

    def _send(self, status: HTTPStatus, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: HTTPStatus, error: str, fix: str = FIX, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": error, "fix": fix}, headers)

    def _foreign(self) -> tuple[str, str | None] | None:
        """The header (name, value) showing that a web page, not a client on this machine, sent the request."""
        host = self.headers.get("Host")
        if host is None or host.lower() not in self.server.authorities:
            return "Host", host
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in self.server.origins:
            return "Origin", origin
        return None

    def _route(self) -> bool:
        """True for a request of this machine's to PATH; anything else is answered here (403, 404)."""
        foreign = self._foreign()
        if foreign is not None:
            header, value = foreign
            said = "missing" if value is None else repr(value[:ECHOED_CHARS])
            own = f"{self.server.origins[0]}{PATH}"
            self.close_connection = True
            self._error(
                HTTPStatus.FORBIDDEN,
                f"header {header} is {said}, not this scenario control's own address: web pages may not switch the "
                "scenario (cross-site requests and DNS rebinding are refused)",
                f"call {own} from this machine (as the dashboard does), with no Origin header of another site",
            )
            return False
        if self.path.split("?", 1)[0].rstrip("/") == PATH:
            return True
        self._error(HTTPStatus.NOT_FOUND, f"no resource {self.path.split('?', 1)[0]}", f"use GET or POST {PATH}")
        return False

    def do_GET(self) -> None:
        if self._route():
            self._send(HTTPStatus.OK, self.server.control.state())

    def do_POST(self) -> None:
        if not self._route():
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a body of at most {MAX_BODY_BYTES} bytes is expected")
            return
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if raw.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({exc})")
            return
        if body is None:
            self._error(HTTPStatus.BAD_REQUEST, "the body is empty")
            return
        problem = _problem(body)
        if problem is not None:
            self._error(*problem)
            return
        self._send(HTTPStatus.OK, self.server.control.request(body["scenario"]))

    def _not_allowed(self) -> None:
        if self._route():
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not allowed", f"use GET or POST {PATH}",
                        {"Allow": "GET, POST"})  # fmt: skip

    do_PUT = do_PATCH = do_DELETE = _not_allowed

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control %s: " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], control: ScenarioControl) -> None:
        self.control = control
        super().__init__(address, _Handler)
        host, port = str(self.server_address[0]), int(self.server_address[1])
        names = sorted(LOOPBACK_NAMES | ({host} - {"0.0.0.0"}), key=lambda name: (name != host, name))  # bound first
        # A client leaves the port out of Host and Origin only where it is HTTP's own.
        spelled = [f"{name}:{port}" for name in names] + (names if port == 80 else [])
        #: The Host values a request may carry: this API's own address, by the name bound to or a loopback one.
        self.authorities = frozenset(spelled)
        #: The Origin values of this API's own pages (none of another site's), the address bound to first.
        self.origins = [f"http://{authority}" for authority in spelled]


class ControlServer:
    """The control API in a daemon thread; `port` 0 picks a free one (see `.port`). Close it when done."""

    def __init__(self, control: ScenarioControl, options: ControlOptions = ControlOptions()) -> None:
        self.control = control
        self._server = _Server((options.host, options.port), control)
        self.host, self.port = str(self._server.server_address[0]), int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="feed-control", daemon=True)
        self._thread.start()
        log.info("scenario control on %s", self.url)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
