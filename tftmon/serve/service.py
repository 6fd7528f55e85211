"""The BentoML service: HTTP in, the registry's Production model out. An edge only.

`bentoml serve tftmon.serve.service:Tftmon` (or `tftmon serve`) resolves `models:/tftmon@production`,
imports that version into the BentoML model store with `bentoml.mlflow.import_model` (tag
`tftmon:v<version>`) and loads it from there. Every endpoint is a FastAPI route mounted on the service,
so all of them, with their status codes and schemas, are in the OpenAPI spec BentoML publishes
(`/docs.json`). State (live windows, cache, alerts) lives in one process: the service runs one worker.
State logic is in tftmon.serve.live and tftmon.serve.alerts; request and response models, and the words
of their errors, in tftmon.serve.schemas; what a request's rows become for the model in tftmon.model.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import bentoml
import pandas as pd
import torch
from bentoml._internal.server.http import instruments
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Histogram, Metric, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import SkipValidation, ValidationError
from pydantic_core import from_json, to_json
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from tftmon.config import FEED_TOKEN_ENV, ServiceConfig, Settings
from tftmon.contract import (
    CONTRACT_VERSION,
    MIN_RAW_INTERVAL,
    MODEL_STEP,
    PROFILE,
    SERVER_NAME,
    STEP_MINUTES,
    TIMESTAMP,
    normalise_hostname,
)
from tftmon.model.features import InsufficientHistory, SamplesTooFrequent, check_interval
from tftmon.serve.alertmanager import AlertmanagerSink
from tftmon.serve.alerts import AlertBook
from tftmon.serve.exporter import METRICS_PATH, ExportOptions, ForecastExporter
from tftmon.serve.lifeline import die_with_server
from tftmon.serve.limits import RateLimiter, retry_after_header
from tftmon.serve.live import (
    LiveFleet,
    LiveWindows,
    LoadedModel,
    ModelSlot,
    UnknownTracker,
    payloads,
    public,
    utcnow,
)
from tftmon.serve.prometheus_source import PrometheusSource, Shard
from tftmon.serve.schemas import (
    ActiveAlerts,
    AlertHistory,
    ArrowBody,
    CurrentPredictions,
    ErrorResponse,
    ExplainResponse,
    FeedRequest,
    FeedResponse,
    Fleet,
    FleetHistory,
    Health,
    LiveStatus,
    PredictRequest,
    PredictResponse,
    Problem,
    ReloadResponse,
    RowsRequest,
    ServerHistory,
    ValidRows,
    coverage_problem,
    fast_rows,
    json_problem,
    missing_target_problems,
    problem_response,
    profile_change_problem,
    repeated_key_problems,
    request_errors,
    row_count_problem,
    row_rule_problems,
    short_history_problem,
    shown,
    warming_servers,
)

log = logging.getLogger(__name__)
CONFIG = ServiceConfig()
SETTINGS = Settings()
#: A connection per registry query, so a tracking DB recreated under the service is read, not the unlinked
#: file a pooled connection still holds (reload re-reads the registry).
os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")

# ---------------------------------------------------------------------------------------------
# Prometheus metrics. `bentoml serve` runs prometheus_client in multiprocess mode: counters and histograms
# live in its files and BentoML's /metrics already exposes them, so they are registered nowhere else (each
# family once). What describes the service's state now (model, alerts, unknown servers) is built from that
# state at scrape time by __metrics__, so a swapped-out model version leaves no series behind.
# ---------------------------------------------------------------------------------------------

REQUESTS = Counter("tftmon_http_requests", "HTTP requests", ["endpoint", "method", "code"], registry=None)
LATENCY = Histogram(
    "tftmon_http_request_seconds", "HTTP request latency", ["endpoint"], registry=None,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
PREDICTIONS = Counter("tftmon_predictions", "Server forecasts produced", ["source", "cold_start"], registry=None)
RELOADS = Counter("tftmon_model_reloads", "Admin reloads", ["outcome"], registry=None)
FORECAST_SECONDS = Histogram(
    "tftmon_forecast_seconds", "Model time per forecast call", ["source"], registry=None,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
ROUTES = frozenset(
    {"/health", "/status", "/predict", "/feed", "/predictions/current", "/alerts/active", "/alerts/history",
     "/fleet", "/fleet/history", "/admin/reload", METRICS_PATH}
)  # fmt: skip
#: BentoML's own endpoints, labelled as they are in its request metrics (never reach the FastAPI app).
BENTOML_ROUTES = frozenset({"/metrics", "/readyz", "/livez", "/healthz", "/docs.json", "/schema.json", "/"})
#: Routes with a path parameter, counted under their template (one label per route, not per server).
TEMPLATES = ("/explain/", "/servers/")
#: Per-client limits on the endpoints that take work in a body, checked before the body is read.
LIMITS = {
    "/predict": RateLimiter(CONFIG.predict_per_minute, CONFIG.predict_burst),
    "/feed": RateLimiter(CONFIG.feed_per_minute, CONFIG.feed_burst),
}
#: What the handler learned about a request (servers, rows, model version), for the one log line per
#: /predict the middleware writes. A mutable dict in a context variable: set by the middleware, filled by
#: the handler (which runs in a copy of the middleware's context), read back after it.
REQUEST_FACTS: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("tftmon_request_facts")
request_log = logging.getLogger("tftmon.requests")

#: The Prometheus text exposition format's content type.
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"
NO_MODEL_FIX = "promote a version with `tftmon promote`, then POST /admin/reload (or restart the service)"


# ---------------------------------------------------------------------------------------------
# Loading the Production model through the BentoML model store
# ---------------------------------------------------------------------------------------------


def _tracking_db_present() -> None:
    """Refuse to read a sqlite tracking DB that was deleted: MLflow keeps its connection to the unlinked
    file (and would answer from it), while a new connection would create an empty one."""
    uri = SETTINGS.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(
            f"the tracking DB {uri} is gone; restore it or point MLFLOW_TRACKING_URI at the new one"
        )


def load_production() -> LoadedModel | None:
    """The version alias `production` points at now, imported into the BentoML store once per weights
    digest: a recreated registry reuses version numbers, so the tag names the content, not the number.
    The imported copy's weights are checked against the digest at every load; a copy that fails is
    removed from the store, so the next reload imports it afresh. None: the registry, read, has no Production
    version; a registry that cannot be read raises (RegistryUnreadable), so a reload never passes for one."""
    from tftmon.model.network import WEIGHTS_FILE
    from tftmon.ops import registry

    _tracking_db_present()
    version = registry.production_version()
    if version is None:
        return None
    digest = registry.weights_digest(version)
    tag = f"{SETTINGS.tftmon_model_name}:v{version}-{(digest or 'undigested')[:16]}"
    if digest is None:  # nothing to key a cached copy by (an older tftmon registered it): import afresh
        _remove_import(tag)
    try:
        bento_model = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        bento_model = bentoml.mlflow.import_model(
            tag,
            model_uri=f"models:/{SETTINGS.tftmon_model_name}/{version}",
            labels={"mlflow_version": version, "weights_sha256": digest or "", "contract_version": CONTRACT_VERSION},
            metadata={"tracking_uri": SETTINGS.mlflow_tracking_uri},
        )
    try:
        weights = next(Path(bento_model.path).rglob(WEIGHTS_FILE), None)
        registry.verify_weights(version, Path(bento_model.path) if weights is None else weights.parent)
        pyfunc = bentoml.mlflow.load_model(bento_model)
    except Exception:
        _remove_import(tag)
        raise
    return LoadedModel(version, pyfunc.unwrap_python_model().model, utcnow(), digest)


def _remove_import(tag: str) -> None:
    with contextlib.suppress(bentoml.exceptions.NotFound):
        bentoml.models.delete(tag)


# ---------------------------------------------------------------------------------------------
# Errors: always JSON with the rule and the fix, never a traceback
# ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An answer other than 2xx. `close`: the body was not read to its end, so the connection is closed
    after the answer (Connection: close) instead of the server reading, and discarding, the rest of it."""

    def __init__(
        self,
        status: int,
        error: str,
        fix: str | None = None,
        problems: list[Problem] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.fix, self.problems, self.close = status, error, fix, problems or [], close


def _error_body(error: str, fix: str | None = None) -> dict[str, Any]:
    return ErrorResponse(error=error, fix=fix).model_dump()


def _read_body(body: bytes) -> Any:
    """A JSON body as the endpoints take it: Arrow's columns when it is a plain rows request
    (schemas.ArrowBody), else pydantic-core's parse (Rust), twice as fast as json.loads on the tens of MB a
    fleet's history is. Malformed JSON is a 422 that says where and how to repair it."""
    arrow = ArrowBody.read(body)
    if arrow is not None:
        return arrow
    try:
        data = from_json(body)
    except ValueError as exc:
        problem = json_problem(str(exc))
        raise ApiError(422, f"the body is not valid JSON: {exc}", problem.fix, [problem]) from None
    repeated = repeated_key_problems(body)
    if repeated:
        raise _unprocessable(repeated)
    return data


class _JsonBodyRequest(Request):
    """A request whose body is read within CONFIG.max_body_bytes and its time limits, and whose JSON is read
    by _read_body."""

    async def body(self) -> bytes:
        """The body, refused (413) from its Content-Length, or as soon as the bytes streamed in pass the limit,
        so an oversized body is never held whole; refused (408) when it stops arriving for
        CONFIG.body_idle_timeout_seconds (a Content-Length larger than what is sent) or is not all there after
        CONFIG.body_timeout_seconds (a trickle). Either way nothing more is read: the connection is closed."""
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > CONFIG.max_body_bytes:
                raise _too_large()
            chunks, size = [], 0
            pieces = aiter(self.stream())
            deadline = time.monotonic() + CONFIG.body_timeout_seconds
            while True:
                wait = min(CONFIG.body_idle_timeout_seconds, deadline - time.monotonic())
                try:
                    async with asyncio.timeout(max(wait, 0)):
                        chunk = await anext(pieces)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise _too_slow(size) from None
                size += len(chunk)
                if size > CONFIG.max_body_bytes:
                    raise _too_large()
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = _read_body(await self.body())
        return self._json


def _too_large() -> ApiError:
    limit = CONFIG.max_body_bytes
    return ApiError(
        413,
        f"the request body is larger than the limit of {limit} bytes ({limit / 2**20:g} MiB)",
        "split the rows over several requests, or raise TFTMON_SERVICE_MAX_BODY_BYTES",
        close=True,
    )


def _too_slow(received: int) -> ApiError:
    idle, total = CONFIG.body_idle_timeout_seconds, CONFIG.body_timeout_seconds
    return ApiError(
        408,
        f"the request body did not arrive in time ({received} bytes read): nothing came for {idle:g} s, or it "
        f"was not complete after {total:g} s",
        "send a Content-Length that matches the body, and the whole body at once; or raise "
        "TFTMON_SERVICE_BODY_IDLE_TIMEOUT_SECONDS / TFTMON_SERVICE_BODY_TIMEOUT_SECONDS",
        close=True,
    )


class _JsonBodyRoute(APIRoute):
    """Every route of the app reads its body through _JsonBodyRequest (FastAPI's custom-route hook). A body
    is read, and its Content-Type and JSON checked, before FastAPI's handler: what FastAPI does not
    recognise as JSON it would pass on as bytes, to be refused as "not a JSON object"."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def route(request: Request) -> Response:
            wrapped = _JsonBodyRequest(request.scope, request.receive)
            if takes_body:
                _check_encoding(wrapped)
            if takes_body and await wrapped.body():
                kind = wrapped.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                if kind != "application/json" and not kind.endswith("+json"):
                    sent = f"as Content-Type {shown(kind)!r}" if kind else "without a Content-Type"
                    raise ApiError(415, f"the body is sent {sent}, not as JSON", "send Content-Type: application/json")
                await wrapped.json()
            return await handler(wrapped)

        return route


def _check_encoding(request: Request) -> None:
    """A compressed body is refused (415) before it is read: it is not decoded (a small body could expand past
    every limit), and read as it is, gzip would be "not valid JSON" and br mistaken for something else."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(
            415,
            f"the body is sent with Content-Encoding {shown(encoding)!r}; the service reads only uncompressed bodies",
            "send the body uncompressed, without a Content-Encoding header (or compress between proxy and client)",
            close=True,
        )


app = FastAPI(
    title="tftmon",
    version=CONTRACT_VERSION,
    description="Forecasts, risk and alerts from the Production TFT model. Errors: {error, fix, problems}.",
)
app.router.route_class = _JsonBodyRoute
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503)
}


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(request_errors(exc.errors()).model_dump(), status_code=422)


@app.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    if exc.close:
        headers["Connection"] = "close"
    body = ErrorResponse(error=exc.error, fix=exc.fix, problems=exc.problems).model_dump()
    return JSONResponse(body, status_code=exc.status, headers=headers)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    fix = "see /docs.json for the endpoints and their methods" if exc.status_code in (404, 405) else None
    return JSONResponse(_error_body(str(exc.detail), fix), status_code=exc.status_code)


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse(_error_body("internal error; the service log has the details"), status_code=500)


def _endpoint(path: str) -> str:
    """A request's metric label: its route, a path parameter's route by template, anything else "other"
    (one label per route: a label per path would grow the metrics with every server name asked for)."""
    if path in ROUTES or path in BENTOML_ROUTES:
        return path
    return next((t + "{name}" for t in TEMPLATES if path.startswith(t)), "other")


class _RouteLabelledTrafficMetrics(instruments.RunnerTrafficMetricsMiddleware):
    """BentoML's request metrics (`bentoml_service_request_*`) labelled by _endpoint, as tftmon's own are,
    not by the raw path: `/explain/<any name>` made a series per name asked for. BentoML's middleware reads
    the label from the scope's path, so it is handed the route, and the app behind it the path again."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        async def with_path(scope: Scope, receive: Receive, send: Send) -> None:
            if _SENT_PATH in scope:
                scope = {**scope, "path": scope[_SENT_PATH]}
            await app(scope, receive, send)

        super().__init__(with_path, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "path": _endpoint(scope["path"]), _SENT_PATH: scope["path"]}
        await super().__call__(scope, receive, send)


#: The scope key holding a request's own path while BentoML's metrics middleware sees its route.
_SENT_PATH = "tftmon.sent_path"
# BentoML builds its app's middleware stack after importing this module, from this module attribute.
instruments.RunnerTrafficMetricsMiddleware = _RouteLabelledTrafficMetrics  # type: ignore[misc,assignment]


def _rate_limited(path: str, client: str, limiter: RateLimiter, wait: float) -> JSONResponse:
    retry = retry_after_header(wait)
    return JSONResponse(
        _error_body(
            f"rate limit: more than {limiter.per_second * 60:g} requests per minute to {path} from {client}",
            f"retry after {retry} s, or raise TFTMON_SERVICE_{path.strip('/').upper()}_PER_MINUTE on the service",
        ),
        status_code=429,
        headers={"Retry-After": retry, "Connection": "close"},  # the body is not read: nor drained
    )


@app.middleware("http")
async def _count(request: Request, call_next: Any) -> Response:
    """Rate limits first (before any body is read), then the request; counted, timed, and for /predict
    one structured log line (client, servers, rows, latency, model version, status; never the body)."""
    started = time.perf_counter()
    path = request.url.path
    endpoint = _endpoint(path)
    client = request.client.host if request.client else "unknown"
    facts: dict[str, Any] = {}
    REQUEST_FACTS.set(facts)
    code = 500
    try:
        limiter = LIMITS.get(path) if request.method == "POST" else None
        wait = limiter.acquire(client) if limiter is not None else None
        if limiter is not None and wait is not None:
            code = 429
            return _rate_limited(path, client, limiter, wait)
        response = await call_next(request)
        code = response.status_code
        return response
    finally:
        latency = time.perf_counter() - started
        LATENCY.labels(endpoint).observe(latency)
        REQUESTS.labels(endpoint, request.method, str(code)).inc()
        if path == "/predict":
            line = {"event": "predict", "client": client, "status": code, "latency_ms": round(latency * 1000, 1)}
            request_log.info(json.dumps({**line, **facts}))


_bearer = HTTPBearer(auto_error=False, description="TFTMON_ADMIN_TOKEN")


def require_admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Admin needs the configured bearer token; with none configured admin is disabled, not open."""
    token = SETTINGS.tftmon_admin_token
    if not token:
        raise ApiError(403, "admin endpoints are disabled", "set TFTMON_ADMIN_TOKEN and restart the service")
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise ApiError(401, "missing or wrong bearer token", "send Authorization: Bearer $TFTMON_ADMIN_TOKEN")


def require_feed(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """/feed writes into the service's memory: it needs its own token, and with none configured it is off."""
    token = CONFIG.feed_token
    if token is None or not token.get_secret_value():
        raise ApiError(403, "/feed is disabled", f"set {FEED_TOKEN_ENV} on the service and send it as a bearer token")
    if credentials is None or not hmac.compare_digest(
        credentials.credentials.encode(), token.get_secret_value().encode()
    ):
        raise ApiError(401, "missing or wrong bearer token", f"send Authorization: Bearer ${FEED_TOKEN_ENV}")


def _utc(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC)


def _json(body: Any) -> Response:
    """Encoded in Rust (5x json.dumps on 25 MB); payloads() has refused non-finite forecasts already."""
    return Response(to_json(body), media_type="application/json")


def _validated(body: Any, model: type[RowsRequest]) -> ValidRows:
    """The request's rows as columns. FastAPI only parses the JSON (the endpoints skip its validation):
    the column-wise fast path takes plainly valid requests, the pydantic model everything else, and its
    errors answer 422 through the same handler as FastAPI's own. The row count is checked before any row,
    and the contract's rules across rows (schemas.row_rule_problems) after the rows are valid one by one."""
    too_many = row_count_problem(body, model)
    if too_many is not None:
        raise _unprocessable([too_many])
    valid = fast_rows(body, model)
    if valid is None:
        try:
            valid = ValidRows.from_request(model.model_validate(body.python() if isinstance(body, ArrowBody) else body))
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    problems = row_rule_problems(valid)
    if problems:
        raise _unprocessable(problems)
    return valid


def _require_targets(valid: ValidRows, loaded: LoadedModel) -> None:
    """422 naming each metric the loaded model forecasts that rows leave out (once each, with a count)."""
    problems = missing_target_problems(valid.frame, loaded.targets, loaded.version)
    if problems:
        raise _unprocessable(problems)


def _unprocessable(problems: list[Problem], fix: str | None = None) -> ApiError:
    """A 422 in the shape of a validation error's (error line, problems), for the rules checked by hand."""
    response = problem_response(problems)
    return ApiError(422, response.error, fix, response.problems)


def _freeze_heap() -> None:
    """Exempt what is loaded now (libraries, the model) from the cyclic garbage collector.

    A full collection traverses every tracked object: with torch, pandas, MLflow and a model loaded, one
    took 0.4-0.5 s, and building a 900-server response (nested dicts and lists per server) set off one or
    more. Frozen objects are still freed by reference counting, and each freeze unfreezes and collects
    first, so cycles a replaced model leaves are collected at a later reload rather than never.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@bentoml.service(name="tftmon", workers=1, traffic={"timeout": 300})
@bentoml.asgi_app(app, path="/")
class Tftmon:
    """Forecasts, risk and alerts for the fleet from the registry's Production model."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        die_with_server()  # this worker dies with its `bentoml serve` process, even one killed with SIGKILL
        # BentoML's server logging keeps the root at WARNING: tftmon's own lines (model swaps, one JSON line
        # per /predict) are INFO.
        logging.getLogger("tftmon").setLevel(logging.INFO)
        torch.set_num_threads(CONFIG.torch_threads)
        self.slot = ModelSlot(load_production)
        self.unknown = UnknownTracker(CONFIG.unknown_rate_window_seconds, CONFIG.max_unknown_names)
        # sized by the model once one is installed
        self.windows = LiveWindows(CONFIG.max_live_servers, CONFIG.max_live_window_mib << 20)
        self.live = LiveFleet(
            self.slot,
            self.windows,
            AlertBook(CONFIG.alert_history, CONFIG.resolve_after),
            self.unknown,
            CONFIG.forecast_every_seconds or MODEL_STEP.total_seconds(),
            on_forecast=self._counted("feed"),
            summaries=CONFIG.fleet_history,
            stale_after_seconds=CONFIG.stale_after_seconds,
        )
        self.source = (
            None
            if CONFIG.prometheus_url is None
            else PrometheusSource(
                CONFIG.prometheus_url,
                self.windows,
                resolution=timedelta(seconds=CONFIG.prometheus_resolution_seconds or MODEL_STEP.total_seconds()),
                timeout_seconds=CONFIG.prometheus_timeout_seconds,
                shard=Shard.parse(CONFIG.shard),
            )
        )
        self.alert_sink = (
            AlertmanagerSink(
                CONFIG.alertmanager_urls,
                dashboard_url=CONFIG.dashboard_url,
                service_url=f"http://{CONFIG.host}:{CONFIG.port}/alerts/active",
                resend_seconds=CONFIG.alertmanager_resend_seconds,
                evaluation_seconds=max(
                    CONFIG.forecast_every_seconds or MODEL_STEP.total_seconds(), CONFIG.prometheus_pull_seconds or 0
                ),
            )
            if CONFIG.alertmanager_urls
            else None
        )
        #: The forecast series' text, kept between forecasts: a scrape rebuilds only the per-server ages.
        self.exporter = ForecastExporter(ExportOptions.from_config(CONFIG))
        self.last_prediction: datetime | None = None
        #: Set to pull from Prometheus now (a model was installed) instead of at the next step.
        self._pull_now = threading.Event()
        self._encoded: dict[str, tuple[int, bytes]] = {}
        #: Explanations of the current live forecast (generation, by server): the network runs once per
        #: server and forecast, however often a dashboard asks.
        self._explained: tuple[int, dict[str, ExplainResponse]] = (-1, {})
        try:
            self._installed(self.slot.reload()[1])
        except Exception as exc:  # the service starts without a model; /health tells
            log.error("no model loaded at start-up: %s", exc)
        if self.slot.current is None:
            log.warning("no Production model: forecast endpoints answer 503 until %s", NO_MODEL_FIX)
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._refresh_loop, name="tftmon-live", daemon=True)
        self._loop.start()
        if self.source is not None:
            source, live = self.source, self.live
            threading.Thread(
                target=source.run,
                args=(self._stop, self._pull_now, CONFIG.prometheus_pull_seconds, CONFIG.refresh_seconds),
                kwargs={"after": lambda: live.restamp(utcnow())},
                name="tftmon-prometheus",
                daemon=True,
            ).start()

    # -- helpers -------------------------------------------------------------------------------

    def _installed(self, loaded: LoadedModel | None) -> None:
        if loaded is not None:
            self.windows.set_history_steps(loaded.history_steps)
            if self.source is not None:
                self.source.use_model(loaded.targets, loaded.history_steps)
                self._pull_now.set()
            log.info("serving %s version %s", SETTINGS.tftmon_model_name, loaded.version)
            _freeze_heap()

    def _counted(self, source: str) -> Any:
        def count(records: list[dict[str, Any]], loaded: LoadedModel) -> None:
            cold = sum(r["cold_start"] for r in records)
            PREDICTIONS.labels(source, "true").inc(cold)
            PREDICTIONS.labels(source, "false").inc(len(records) - cold)
            self.last_prediction = utcnow()

        return count

    def _refresh_loop(self) -> None:
        while not self._stop.wait(CONFIG.refresh_seconds):
            try:
                started = time.perf_counter()
                if self.live.refresh():
                    FORECAST_SECONDS.labels("feed").observe(time.perf_counter() - started)
                    self._post_alerts()
            except Exception:  # keep the loop alive; the next tick retries
                log.exception("live forecast failed")

    def _post_alerts(self) -> None:
        """Hand the active alerts, with each host's scrape labels, to the Alertmanager sink (it sends them on
        its own thread: a slow or down Alertmanager never holds up a forecast)."""
        if self.alert_sink is None:
            return
        targets = {} if self.source is None else self.source.targets()
        labelled = [{**alert, "labels": targets.get(alert["server_name"], {})} for alert in self.live.published.active]
        self.alert_sink.sync(labelled, utcnow())

    def _model(self) -> LoadedModel:
        loaded = self.slot.current
        if loaded is None:
            raise ApiError(503, "no Production model is loaded", NO_MODEL_FIX)
        return loaded

    def _cached(self, key: str, build: Any) -> Response:
        """Encode a cached view once per live refresh; GETs never re-run the model."""
        generation = self.live.generation
        hit = self._encoded.get(key)
        if hit is None or hit[0] != generation:
            body = to_json(build())
            hit = self._encoded[key] = (generation, body)
        return Response(hit[1], media_type="application/json")

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self._stop.set()
        self._pull_now.set()
        if self.alert_sink is not None:
            self.alert_sink.close()

    def __is_ready__(self) -> bool:
        """BentoML's /readyz: not ready while no model is loaded (the forecast endpoints would answer 503)."""
        return self.slot.current is not None

    def __metrics__(self, content: str) -> str:
        """BentoML's text (our counters and histograms included) plus the state gauges, built now."""
        registry = CollectorRegistry()
        registry.register(self)
        return content + generate_latest(registry).decode()

    def collect(self) -> Iterator[Metric]:
        """The service's state as gauges (prometheus_client's Collector protocol), for __metrics__."""
        loaded = self.slot.current
        info = GaugeMetricFamily("tftmon_model_info", "Loaded model version (value 1)", labels=["version"])
        if loaded is not None:
            info.add_metric([loaded.version], 1)
        yield info
        yield GaugeMetricFamily("tftmon_model_loaded", "1 when a Production model is loaded", value=int(bool(loaded)))
        alerts = GaugeMetricFamily("tftmon_alerts_active", "Active alerts", labels=["severity"])
        for severity, n in self.live.published.alerts["counts"].items():
            alerts.add_metric([severity], n)
        yield alerts
        yield GaugeMetricFamily(
            "tftmon_unknown_servers", "Distinct hostnames the model never saw", value=len(self.unknown.names)
        )
        yield CounterMetricFamily(
            "tftmon_live_forecast_failures", "Server forecasts of the live loop that failed", value=self.live.failures
        )
        yield GaugeMetricFamily(
            "tftmon_live_servers_failing", "Servers whose last live forecast failed", value=len(self.live.failing)
        )
        yield GaugeMetricFamily(
            "tftmon_unknown_server_rate", "Unknown share of predictions (window)", value=self.unknown.rate()
        )
        yield GaugeMetricFamily(
            "tftmon_live_servers_stale", "Live servers without a new sample past the stale limit",
            value=len(self.live.stale(utcnow())),
        )  # fmt: skip
        if self.source is not None:
            pulled = self.source.status()
            yield CounterMetricFamily(
                "tftmon_prometheus_pulls", "Pulls from the Prometheus source", value=pulled["pulls"]
            )
            yield CounterMetricFamily(
                "tftmon_prometheus_pull_failures", "Pulls from the Prometheus source that failed",
                value=pulled["failed_pulls"],
            )  # fmt: skip
            yield GaugeMetricFamily(
                "tftmon_prometheus_hosts", "Hosts in the last pull (this shard)", value=pulled["hosts"]
            )
        if self.alert_sink is not None:
            yield from self.alert_sink.metrics()

    # -- endpoints -------------------------------------------------------------------------------

    @app.get("/health", response_model=Health, tags=["tftmon"])
    def health(self) -> Health:
        """Liveness and whether a model is loaded (the service runs without one)."""
        return Health(model_loaded=self.slot.current is not None)

    @app.get("/status", response_model=LiveStatus, tags=["tftmon"])
    def status(self) -> LiveStatus:
        """Model, uptime, fleet knowledge and unknown-server rate."""
        loaded = self.slot.current
        return LiveStatus(
            model_name=SETTINGS.tftmon_model_name,
            model_version=None if loaded is None else loaded.version,
            contract_version=CONTRACT_VERSION,
            model_contract_version=None if loaded is None else loaded.model.training_info.get("contract_version"),
            model_targets=[] if loaded is None else list(loaded.targets),
            loaded_at=None if loaded is None else loaded.loaded_at,
            uptime_seconds=round(time.monotonic() - self.started, 3),
            servers_known=0 if loaded is None else len(loaded.known_servers),
            servers_live=len(self.windows),
            servers_warming_up=len(self.live.cache["warming_up"]),
            unknown_servers=len(self.unknown.names),
            unknown_rate=self.unknown.rate(),
            unknown_rate_window_seconds=self.unknown.window,
            last_prediction_time=self.last_prediction,
            live_forecast_failures=self.live.failures,
            servers_failing=dict(self.live.failing),
            servers_stale=self.live.stale(utcnow()),
            shard=CONFIG.shard,
            prometheus=None if self.source is None else self.source.status(),
            alertmanager=None if self.alert_sink is None else self.alert_sink.stats(),
        )

    @app.get(METRICS_PATH, tags=["tftmon"], response_class=PlainTextResponse)
    def forecast_metrics(self) -> Response:
        """Every live server's forecast bands, risk, severity and alert score as Prometheus series, labelled
        with the instance and job its data was read from (scrape with honor_labels: true; docs/PROMETHEUS.md).
        A path of its own: BentoML's /metrics describes the service and is scraped often; these are many more
        series that change once per model step."""
        predictions = self.live.cache["predictions"]
        labels = {} if self.source is None else self.source.targets()
        body = self.exporter.render(predictions, labels, self.live.ages(utcnow()))
        return Response(body, media_type=EXPOSITION)

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS, tags=["tftmon"])
    def predict(self, body: Annotated[PredictRequest, SkipValidation()]) -> Response:
        """Forecast, risk and severity per server from the posted history (resampled to the model step)."""
        valid = _validated(body, PredictRequest)
        servers = int(valid.frame[SERVER_NAME].nunique())
        REQUEST_FACTS.get({}).update(servers=servers, rows=len(valid.frame))
        loaded = self._model()
        REQUEST_FACTS.get({})["model_version"] = loaded.version
        _require_targets(valid, loaded)
        try:
            check_interval(valid.frame)
            frame, warming = valid.frame, warming_servers(valid.frame, loaded.history_steps)
            if len(warming) == servers:
                short = short_history_problem(frame, loaded.history_steps)
                assert short is not None  # every server is short
                raise _unprocessable([short], fix=short.fix)
            if warming:  # the others are forecast; these are listed with what they need
                frame = frame[~frame[SERVER_NAME].isin([w["server_name"] for w in warming])]
            sparse = coverage_problem(frame, loaded.model.config.encoder_steps)
            if sparse is not None:
                raise _unprocessable([sparse], fix=sparse.fix)
            started = time.perf_counter()
            tidy = self.slot.forecast(loaded, frame)
        except SamplesTooFrequent as exc:
            fix = f"aggregate to one sample per {MIN_RAW_INTERVAL.total_seconds():g} s or more per server"
            problem = Problem(field=f"rows[*].{TIMESTAMP}", rule=str(exc), fix=fix)
            raise ApiError(422, str(exc), fix, [problem]) from None
        except InsufficientHistory as exc:  # what the model finds short beyond short_history_problem's count
            fix = f"send at least {loaded.history_steps * MODEL_STEP.total_seconds() / 3600:g} h of history per server"
            raise ApiError(422, str(exc), fix, [Problem(field="rows", rule=str(exc), fix=fix)]) from None
        FORECAST_SECONDS.labels("predict").observe(time.perf_counter() - started)
        records = payloads(tidy, loaded, include_path=valid.options["include_path"])
        self.unknown.record((r["server_name"] for r in records), loaded.known_servers)
        self._counted("predict")(records, loaded)
        return _json(
            {"model_version": loaded.version, "predictions": [public(r) for r in records], "warming_up": warming}
        )

    @app.post(
        "/feed", response_model=FeedResponse, responses=ERRORS, tags=["tftmon"], dependencies=[Depends(require_feed)]
    )
    def feed(self, body: Annotated[FeedRequest, SkipValidation()]) -> FeedResponse:
        """Append live ticks to each server's rolling window; the background loop forecasts them."""
        valid = _validated(body, FeedRequest)
        # The windows are as long as the loaded model's encoder, and hold what it forecasts from: no model
        # yet, nothing to keep; rows without one of its metrics would leave a hole in its history.
        _require_targets(valid, self._model())
        result = self.windows.append(valid.frame)
        if result.changed_profiles:
            raise _unprocessable([profile_change_problem(result.changed_profiles, result.changed_rows)])
        if result.refused_servers:
            raise ApiError(
                409,
                f"live window limit of {self.windows.max_servers} servers reached; nothing of this batch was "
                f"stored: {len(result.refused_servers)} new servers do not fit, e.g. "
                f"{', '.join(result.refused_servers[:5])}",
                "send only servers already live, raise TFTMON_SERVICE_MAX_LIVE_SERVERS and "
                "TFTMON_SERVICE_MAX_LIVE_WINDOW_MIB, or restart to forget retired servers",
            )
        return FeedResponse(
            accepted=result.accepted,
            ignored_stale=result.ignored_stale,
            servers_live=len(self.windows),
            servers_warming_up=len(self.live.cache["warming_up"]),
        )

    @app.get("/predictions/current", response_model=CurrentPredictions, tags=["tftmon"])
    def predictions_current(self) -> Response:
        """The latest live forecast of every fed server (cached; refreshed once per model step)."""
        return self._cached("current", lambda: self.live.cache)

    @app.get("/alerts/active", response_model=ActiveAlerts, tags=["tftmon"])
    def alerts_active(self) -> Response:
        """Servers whose forecast crosses a warning or critical level, worst first."""
        return self._cached("alerts", lambda: self.live.published.alerts)

    @app.get("/alerts/history", response_model=AlertHistory, tags=["tftmon"])
    def alerts_history(self) -> Response:
        """Alert transitions (raised, escalated, resolved), newest last; bounded."""
        return self._cached("history", lambda: {"transitions": self.live.published.history})

    @app.get("/fleet", response_model=Fleet, tags=["tftmon"])
    def fleet(self) -> Fleet:
        """Every live server with the data time of its newest sample, and whether it still warms up."""
        loaded = self.slot.current
        need = None if loaded is None else loaded.history_steps
        return Fleet(
            servers=[
                {"server_name": name, "profile": profile, "last_seen": _utc(ts_ns),
                 "warming_up": need is None or span < need}
                for name, profile, ts_ns, span in self.windows.servers()
            ]
        )  # fmt: skip

    @app.get("/fleet/history", response_model=FleetHistory, tags=["tftmon"])
    def fleet_history(self) -> Response:
        """Fleet risk, severities and alerts per live forecast, overall and per profile; oldest first."""
        return self._cached("fleet_history", lambda: {"summaries": list(self.live.summaries)})

    def _inputs_of(self, server_name: str) -> tuple[LoadedModel, pd.DataFrame]:
        """The history the server's cached forecast read; 404 when it is not live, 409 while warming up.
        `server_name` comes normalised (names are compared lower-case); errors show it escaped and short."""
        loaded = self._model()
        inputs = self.live.inputs
        rows = inputs[inputs[SERVER_NAME] == server_name] if len(inputs) else inputs
        if len(rows):
            return loaded, rows
        warming = next((w for w in self.live.cache["warming_up"] if w["server_name"] == server_name), None)
        if warming is not None:
            raise ApiError(
                409, f"{server_name} is warming up: no forecast yet",
                f"keep feeding it; it needs {warming['need_minutes']} more minutes of history",
            )  # fmt: skip
        raise ApiError(
            404,
            f"{shown(server_name)} has no live forecast",
            "feed its metrics to POST /feed; GET /fleet lists live servers",
        )

    @app.get("/servers/{server_name}/history", response_model=ServerHistory, responses=ERRORS, tags=["tftmon"])
    def server_history(self, server_name: str) -> ServerHistory:
        """What the model read for the server's current forecast, at the model step: the fan chart's past
        (the model's metrics only)."""
        server_name = normalise_hostname(server_name)
        loaded, binned = self._inputs_of(server_name)
        return ServerHistory(
            server_name=server_name,
            profile=str(binned[PROFILE].iloc[0]),
            step_minutes=STEP_MINUTES,
            timestamps=binned[TIMESTAMP].tolist(),
            metrics={m: [None if v != v else round(v, 3) for v in binned[m].astype(float)] for m in loaded.targets},
        )

    @app.get("/explain/{server_name}", response_model=ExplainResponse, responses=ERRORS, tags=["tftmon"])
    def explain(self, server_name: str) -> ExplainResponse:
        """The TFT's own interpretation of the server's current forecast: variable importance of static,
        encoder and decoder inputs, and attention over the history (interpret_output). Never invented."""
        server_name = normalise_hostname(server_name)
        generation = self.live.generation
        if self._explained[0] != generation:
            self._explained = (generation, {})
        cached = self._explained[1].get(server_name)
        if cached is not None:
            return cached
        loaded, rows = self._inputs_of(server_name)
        explanation = self.slot.explain(loaded, rows)
        steps = len(explanation.attention)

        def ranked(weights: dict[str, float]) -> list[dict[str, Any]]:
            return [{"name": n, "importance": round(w, 6)} for n, w in sorted(weights.items(), key=lambda x: -x[1])]

        answer = self._explained[1][server_name] = ExplainResponse(
            server_name=server_name,
            profile=str(rows[PROFILE].iloc[0]),
            model_version=loaded.version,
            prediction_time=_utc(int(rows[TIMESTAMP].max().value)),  # bins at the model step already
            static_variables=ranked(explanation.static_variables),
            encoder_variables=ranked(explanation.encoder_variables),
            decoder_variables=ranked(explanation.decoder_variables),
            attention=[
                {"minutes_before": (steps - 1 - i) * STEP_MINUTES, "weight": round(w, 6)}
                for i, w in enumerate(explanation.attention)
            ],
        )
        return answer

    @app.post(
        "/admin/reload", response_model=ReloadResponse, responses=ERRORS, tags=["admin"],
        dependencies=[Depends(require_admin)],
    )  # fmt: skip
    def admin_reload(self) -> ReloadResponse:
        """Swap to the version `production` points at now; the old model serves until the new one passed."""
        try:
            previous, current = self.slot.reload()
        except Exception as exc:
            RELOADS.labels("failed").inc()
            serving = f"version {self.slot.current.version}" if self.slot.current else "no model"
            log.error("reload failed: %s", exc)
            raise ApiError(409, f"reload failed, still serving {serving}: {exc}", "check the registry") from None
        if current is None:
            RELOADS.labels("no_model").inc()
            raise ApiError(409, "the registry has no Production model", NO_MODEL_FIX)
        RELOADS.labels("ok").inc()
        self._installed(current)
        return ReloadResponse(
            previous_version=None if previous is None else previous.version,
            model_version=current.version,
            changed=current is not previous,  # the slot keeps the same object when nothing changed
            loaded_at=current.loaded_at,
        )
