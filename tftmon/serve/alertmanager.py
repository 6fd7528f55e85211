"""Critical alerts to Prometheus Alertmanager (API v2): on-call is paged through the routes, silences and
inhibitions a team already runs, not by watching a dashboard.

It behaves like Prometheus' own notifier, so Alertmanager treats tftmon as one more rule evaluator:
- Only the critical level goes out: the level whose alert score is fitted for a false-alarm budget
  (`risk.AlertCalibration`); warnings stay on the dashboard.
- An active alert is re-posted at the first sync `resend_seconds` after its last post, each time valid for
  4 x max(resend, evaluation interval) (`endsAt`): if tftmon dies or stops forecasting, Alertmanager resolves it
  by itself, and a restarted Alertmanager (it keeps no alerts) learns it again at the next re-post.
- An alert that stops being critical (resolved by the AlertBook, or down to warning) is posted once more with
  `endsAt` = now. Its labels are fixed when it turns critical, so a change of driving metric neither pages
  again nor leaves a stale alert behind; the same server critical again later is a new alert (new `startsAt`).
- Every alert goes to every URL (an Alertmanager cluster dedups notifications), each URL from a thread of its
  own, so a slow or dead one never holds up the forecast loop or the others. Undelivered, the latest state of
  each alert is kept and retried with backoff, up to `max_pending` (beyond: oldest resolved first dropped,
  counted and logged). A 4xx is the payload refused: logged with Alertmanager's text, counted and not retried
  (the next re-post is the retry). One log line per change of a URL's state, never one per retry.

`Planner.plan` is the pure part (what to post now, given what was posted); `AlertmanagerSink` holds its state
and the senders.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
from prometheus_client import Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tftmon import __version__
from tftmon.contract import MODEL_STEP, probability_text
from tftmon.risk import RISK_METRICS_BY_KEY, SEVERITY_LABELS, Severity
from tftmon.serve.alerts import RAISED_WALL

log = logging.getLogger(__name__)

#: The alertname of every alert tftmon posts: the critical level of a server's forecast.
ALERTNAME = "TftmonForecastCritical"
#: Where the options come from, for errors (tftmon serve --alertmanager / --dashboard-url).
URLS_OPTION = "--alertmanager (TFTMON_SERVICE_ALERTMANAGER_URLS)"
ALERTMANAGER_EXAMPLE = "http://alertmanager:9093 (http://user:password@alertmanager:9093 for basic auth)"
DASHBOARD_OPTION = "--dashboard-url (TFTMON_SERVICE_DASHBOARD_URL)"
DASHBOARD_EXAMPLE = "http://dashboard.example:8501"
#: Prometheus' rule: an alert is valid this many re-post intervals past each post.
VALIDITY_INTERVALS = 4
#: Alert states in one POST (Alertmanager takes any number; this bounds one request's body).
BATCH = 500
#: The first retry's delay (s); it doubles up to half the resend interval, so a state is tried at least
#: twice before a fresher one is due.
FIRST_RETRY_SECONDS = 0.5
#: 4xx answers worth retrying: the request timed out, or the client is rate-limited.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
#: Alertmanager's error text kept for a log line and /status (characters).
ERROR_CHARS = 500


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def _utc(at: datetime | str) -> datetime:
    """A time as aware UTC (a naive one is taken as UTC, as everywhere in tftmon)."""
    parsed = datetime.fromisoformat(at) if isinstance(at, str) else at
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# What to post (pure)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    """One alert state for Alertmanager: its postable alert (API v2 JSON) and whether it resolves it."""

    server: str
    alert: dict[str, Any]
    resolved: bool

    @property
    def key(self) -> tuple[str, str]:
        """One alert in Alertmanager: a newer state replaces an undelivered older one of the same key."""
        return self.server, self.alert["startsAt"]


@dataclass(frozen=True)
class Sent:
    """The last state of a server's critical alert handed to the senders, and when."""

    post: Post
    at: datetime


@dataclass(frozen=True)
class Planner:
    """What to post at each sync, given what was posted: no clock, no I/O."""

    resend: timedelta
    validity: timedelta
    dashboard_url: str | None = None
    service_url: str | None = None

    def plan(
        self, sent: Mapping[str, Sent], active: Iterable[Mapping[str, Any]], now: datetime
    ) -> tuple[list[Post], dict[str, Sent]]:
        """The posts due at `now` for the AlertBook's active alerts that page (`paging`: the model's page
        rule), and what will have been sent after them.

        A server's resolved state is remembered while its AlertBook alert stays active (as a warning), so
        critical again it starts a new alert from now; once the AlertBook drops it, so does the plan.
        """
        posts: list[Post] = []
        after: dict[str, Sent] = {}
        for alert in active:
            name = alert["server_name"]
            before = sent.get(name)
            firing = before if before is not None and not before.post.resolved else None
            if not alert.get("paging"):
                if firing is not None:
                    after[name] = self._resolve(firing, now, posts)
                elif before is not None:
                    after[name] = before
                continue
            if firing is not None:
                if now - firing.at < self.resend:
                    after[name] = firing
                    continue
                labels, starts = firing.post.alert["labels"], firing.post.alert["startsAt"]
            else:
                labels = self.labels(alert)
                starts = _iso(now if before is not None else _utc(alert[RAISED_WALL]))
            post = Post(name, self.postable(alert, labels, starts, now + self.validity), resolved=False)
            posts.append(post)
            after[name] = Sent(post, now)
        for name, before in sent.items():
            if name not in after and not before.post.resolved:
                self._resolve(before, now, posts)
        return posts, after

    @staticmethod
    def _resolve(before: Sent, now: datetime, posts: list[Post]) -> Sent:
        post = Post(before.post.server, {**before.post.alert, "endsAt": _iso(now)}, resolved=True)
        posts.append(post)
        return Sent(post, now)

    @staticmethod
    def labels(alert: Mapping[str, Any]) -> dict[str, str]:
        """Who the alert is about, as routes and silences match it: fixed for the alert's life."""
        name = alert["server_name"]
        source = alert.get("labels") or {}
        labels = {
            "alertname": ALERTNAME,
            "severity": Severity.CRITICAL.value,
            "server": name,
            "instance": source.get("instance") or name,
            "profile": str(alert["profile"]),
        }
        if source.get("job"):
            labels["job"] = source["job"]
        if alert["metric"]:
            labels["metric"] = alert["metric"]
        return labels

    def link(self, server: str) -> str | None:
        return None if self.dashboard_url is None else f"{self.dashboard_url}/?server={quote(server)}"

    @staticmethod
    def summary(alert: Mapping[str, Any]) -> str:
        """One line: who, what, how soon and how probable, in the contract's words with the %:
        "db1 (database): Memory may reach its critical level in 40 min: about as likely as not (64 %)"."""
        metric, probability, minutes = alert["metric"], alert["probability"], int(alert["minutes_ahead"] or 0)
        what = RISK_METRICS_BY_KEY[metric].label if metric in RISK_METRICS_BY_KEY else "a metric"
        hours, mins = divmod(minutes, 60)
        soon = (f"{hours} h {mins} min" if mins else f"{hours} h") if hours else f"{mins} min"
        soon = f" in {soon}" if minutes else ""
        how = "" if probability is None else f": {probability_text(probability)}"
        return f"{alert['server_name']} ({alert['profile']}): {what} may reach its critical level{soon}{how}"

    def postable(self, alert: Mapping[str, Any], labels: dict[str, str], starts: str, ends: datetime) -> dict[str, Any]:
        """The alert as Alertmanager's API v2 takes it; annotations (all text) from the latest forecast: the
        summary says how probable (word and %) and how soon, the description (risk's reason) adds the level,
        the forecast median (p50) and the lowest quantile reaching the level; `meaning` what critical means.
        `predicted_for` is data time, as the forecast's; startsAt/endsAt are wall clock, as Alertmanager's."""
        name = alert["server_name"]
        probability = alert["probability"]
        annotations = {
            "summary": self.summary(alert),
            "description": alert["reason"],
            "meaning": SEVERITY_LABELS[Severity.CRITICAL],
            "predicted_for": alert["predicted_for"],
            "probability": None if probability is None else f"{probability:.2f}",
            "probability_word": alert.get("probability_word"),
            "minutes_ahead": str(alert["minutes_ahead"]),
            "model_version": str(alert["model_version"]),
            "dashboard": self.link(name),
        }
        postable = {
            "labels": labels,
            "annotations": {k: v for k, v in annotations.items() if v is not None},
            "startsAt": starts,
            "endsAt": _iso(ends),
        }
        generator = self.link(name) or self.service_url
        if generator is not None:
            postable["generatorURL"] = generator
        return postable


# ---------------------------------------------------------------------------------------------
# Sending (one thread per Alertmanager)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One Alertmanager URL, split: where to post, the basic auth, and the URL to show (password masked)."""

    base: str
    shown: str
    auth: httpx.BasicAuth | None

    @property
    def alerts_url(self) -> str:
        return f"{self.base}/api/v2/alerts"

    @classmethod
    def parse(cls, url: str, option: str = URLS_OPTION, example: str = ALERTMANAGER_EXAMPLE) -> Target:
        """A base URL, http(s)://[user:password@]host[:port][/prefix]; an error naming the option otherwise."""
        fix = f"give the base URL, e.g. {example}"
        try:
            parts = urlsplit(url.strip())
            port = "" if parts.port is None else f":{parts.port}"  # a bad port raises here
        except ValueError as exc:
            raise ValueError(f"{option}: cannot parse the URL ({exc}); {fix}") from None
        hostname = parts.hostname or ""
        host = (f"[{hostname}]" if ":" in hostname else hostname) + port
        user, password = parts.username, parts.password
        auth = None if user is None else httpx.BasicAuth(unquote(user), unquote(password or ""))
        shown_user = "" if user is None else f"{user}{'' if password is None else ':***'}@"
        path = parts.path.rstrip("/")
        shown = f"{parts.scheme}://{shown_user}{host}{path}"
        given = url.strip() if password is None else url.strip().replace(f":{password}@", ":***@", 1)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{option}: {given!r} is not an http(s) URL with a host; {fix}")
        if parts.query or parts.fragment or "/api/" in f"{path}/":
            raise ValueError(f"{option}: {given!r} is not a base URL (it has an API path, query or fragment); {fix}")
        return cls(f"{parts.scheme}://{host}{path}", shown, auth)


class _Sender:
    """One Alertmanager: the latest undelivered state of each alert, and the thread delivering them."""

    def __init__(self, target: Target, timeout_seconds: float, max_pending: int, max_backoff: float) -> None:
        self.target = target
        self._client = httpx.Client(
            timeout=timeout_seconds, auth=target.auth, headers={"User-Agent": f"tftmon/{__version__}"}
        )
        self._max_pending, self._max_backoff = max_pending, max_backoff
        self._pending: dict[tuple[str, str], Post] = {}
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._deadline = math.inf
        self.posted = self.failed = self.dropped = 0
        self.last_error: dict[str, str] | None = None
        self.last_success: str | None = None
        #: The state of the last attempt: "up", "down" (retrying) or "refusing", with its error; one log line
        #: when it changes.
        self.state, self._error = "unknown", ""
        self._thread = threading.Thread(target=self._run, name=f"tftmon-alertmanager {target.shown}", daemon=True)
        self._thread.start()

    def enqueue(self, posts: list[Post]) -> None:
        with self._cond:
            if self._closing.is_set():
                return
            for post in posts:
                self._pending[post.key] = post
            over = len(self._pending) - self._max_pending
            if over > 0:
                oldest = sorted(self._pending, key=lambda key: not self._pending[key].resolved)[:over]  # stable
                for key in oldest:
                    del self._pending[key]
                self.dropped += over
                log.warning(
                    "Alertmanager %s (%s): %d undelivered alert states dropped, oldest resolved first "
                    "(max_pending %d; %d dropped in all)",
                    self.target.shown, self.state, over, self._max_pending, self.dropped,
                )  # fmt: skip
            self._cond.notify()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            pending = len(self._pending)
        return {
            "state": self.state,
            "posted": self.posted,
            "failed": self.failed,
            "dropped": self.dropped,
            "pending": pending,
            "last_error": self.last_error,
            "last_success": self.last_success,
        }

    def close(self, deadline: float) -> None:
        """Stop taking states; the thread delivers what is pending until `deadline` (monotonic), no retries."""
        with self._cond:
            self._deadline = deadline
            self._closing.set()
            self._cond.notify()

    def join(self, deadline: float) -> None:
        self._thread.join(max(deadline - time.monotonic(), 0.0))

    def _run(self) -> None:
        delay = 0.0
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing.is_set():
                        self._cond.wait()
                    if not self._pending or time.monotonic() > self._deadline:
                        return
                    batch = list(itertools.islice(self._pending.values(), BATCH))
                if self._send(batch):
                    delay = 0.0
                    continue
                if self._closing.is_set():
                    return
                delay = min(max(2 * delay, FIRST_RETRY_SECONDS), self._max_backoff)
                self._closing.wait(delay)
        finally:
            self._client.close()

    def _send(self, batch: list[Post]) -> bool:
        """Post one batch; whether it is done with (accepted or refused) rather than to be retried."""
        try:
            response = self._client.post(self.target.alerts_url, json=[post.alert for post in batch])
        except httpx.HTTPError as exc:
            return self._failed(batch, "down", f"{exc.__class__.__name__}: {exc}")
        except Exception as exc:  # a bug of ours must not end delivery for good
            log.exception("Alertmanager %s: posting %d alert states failed", self.target.shown, len(batch))
            return self._failed(batch, "refusing", f"{exc.__class__.__name__}: {exc}")
        if response.is_success:
            self._done(batch)
            self.posted += len(batch)
            self.last_success = _iso(datetime.now(UTC))
            if self.state in ("down", "refusing"):
                log.info("Alertmanager %s: delivering again (%d alert states accepted)", self.target.shown, len(batch))
            self.state, self._error = "up", ""
            return True
        error = f"HTTP {response.status_code}: {_error_text(response)}"
        refused = response.is_client_error and response.status_code not in RETRYABLE_CLIENT_ERRORS
        return self._failed(batch, "refusing" if refused else "down", error)

    def _failed(self, batch: list[Post], state: str, error: str) -> bool:
        self.failed += len(batch)
        self.last_error = {"at": _iso(datetime.now(UTC)), "error": error}
        changed = state != self.state or (state == "refusing" and error != self._error)
        self.state, self._error = state, error
        if state == "refusing":
            self._done(batch)
            if changed:
                log.error(
                    "Alertmanager %s refused %d alert states (%s); not retried: active alerts are re-posted "
                    "every resend interval",
                    self.target.shown, len(batch), error,
                )  # fmt: skip
            return True
        if changed:
            log.warning(
                "Alertmanager %s unreachable (%s); retrying with backoff, the latest state of each alert kept",
                self.target.shown, error,
            )  # fmt: skip
        return False

    def _done(self, batch: list[Post]) -> None:
        """Forget the batch's states, but not a newer state of the same alert queued meanwhile."""
        with self._cond:
            for post in batch:
                if self._pending.get(post.key) is post:
                    del self._pending[post.key]


def _error_text(response: httpx.Response) -> str:
    """Alertmanager's error: a JSON string (400) or {"message": ...} (422); else the body as text."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict) and "message" in body:
        body = body["message"]
    return (body if isinstance(body, str) else str(body)).strip()[:ERROR_CHARS] or response.reason_phrase


# ---------------------------------------------------------------------------------------------
# The sink
# ---------------------------------------------------------------------------------------------


class AlertmanagerSink:
    """Posts the fleet's critical alerts to one or more Alertmanagers; `sync` after each live forecast."""

    def __init__(
        self,
        urls: str | Iterable[str],
        *,
        dashboard_url: str | None = None,
        service_url: str | None = None,
        resend_seconds: float = 60.0,
        evaluation_seconds: float = MODEL_STEP.total_seconds(),
        timeout_seconds: float = 5.0,
        max_pending: int = 10_000,
    ) -> None:
        """`evaluation_seconds`: how often `sync` is called (one live forecast per model step by default); an
        alert stays valid for several of these or of `resend_seconds`, whichever is longer. `max_pending`:
        undelivered alert states kept per URL."""
        targets = {t.shown: t for t in (Target.parse(u) for u in ([urls] if isinstance(urls, str) else urls))}
        if not targets:
            raise ValueError(f"{URLS_OPTION}: no URL given; give the base URL, e.g. {ALERTMANAGER_EXAMPLE}")
        if resend_seconds <= 0 or evaluation_seconds <= 0 or timeout_seconds <= 0 or max_pending < 1:
            raise ValueError("resend_seconds, evaluation_seconds and timeout_seconds must be > 0, max_pending >= 1")
        dashboard = Target.parse(dashboard_url, DASHBOARD_OPTION, DASHBOARD_EXAMPLE).base if dashboard_url else None
        self.planner = Planner(
            resend=timedelta(seconds=resend_seconds),
            validity=VALIDITY_INTERVALS * timedelta(seconds=max(resend_seconds, evaluation_seconds)),
            dashboard_url=dashboard,
            service_url=service_url,
        )
        self.timeout_seconds = timeout_seconds
        self._sent: dict[str, Sent] = {}
        self._lock = threading.Lock()
        self._senders = [
            _Sender(t, timeout_seconds, max_pending, max(resend_seconds / 2, FIRST_RETRY_SECONDS))
            for t in targets.values()
        ]

    def sync(self, active: Iterable[Mapping[str, Any]], now: datetime) -> None:
        """Hand the AlertBook's active alerts (all of them: a server missing is resolved) to the senders;
        returns at once."""
        with self._lock:
            posts, self._sent = self.planner.plan(self._sent, active, _utc(now))
        if posts:
            for sender in self._senders:
                sender.enqueue(posts)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per URL (password masked): state, posted, failed, dropped, pending (alert states), last_error
        ({at, error}), last_success (time)."""
        return {sender.target.shown: sender.stats() for sender in self._senders}

    def metrics(self) -> Iterator[Metric]:
        """stats() as Prometheus metrics, labelled by URL (for a custom collector)."""
        url = ["alertmanager"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "posted": CounterMetricFamily(
                "tftmon_alertmanager_posted", "Alert states Alertmanager accepted", labels=url
            ),
            "failed": CounterMetricFamily(
                "tftmon_alertmanager_failed", "Alert states in failed posts (each retry counts)", labels=url
            ),
            "dropped": CounterMetricFamily(
                "tftmon_alertmanager_dropped", "Undelivered alert states dropped beyond max_pending", labels=url
            ),
            "pending": GaugeMetricFamily(
                "tftmon_alertmanager_pending", "Alert states waiting for delivery", labels=url
            ),
        }
        for shown, stats in self.stats().items():
            for key, family in families.items():
                family.add_metric([shown], stats[key])
        yield from families.values()

    def close(self, timeout_seconds: float | None = None) -> None:
        """Deliver what is pending (one try each, within `timeout_seconds`, the HTTP timeout by default) and
        stop. Active alerts are not resolved: a restarted tftmon re-posts them, a stopped one lets them
        expire."""
        deadline = time.monotonic() + (self.timeout_seconds if timeout_seconds is None else timeout_seconds)
        for sender in self._senders:
            sender.close(deadline)
        for sender in self._senders:
            sender.join(deadline)
