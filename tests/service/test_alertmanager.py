"""The Alertmanager sink (tftmon.serve.alertmanager): what it posts and when, against a real Alertmanager and a
webhook receiver (tests/alertmanager_stack.py), and what happens when Alertmanager is down, refuses a payload,
asks for a password or is one of two. Alerts come from a real AlertBook fed forecast records, synced after each
forecast as the service does; the planning rules are also checked on their own, without a clock or a network.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.alertmanager_stack import PASSWORD, USER, Receiver, alertmanager, receiver, require_alertmanager
from tests.dashboard.conftest import wait_for
from tests.serving import free_port
from tftmon.alerting import PageRule
from tftmon.contract import DISK_USAGE, MEM_USED, probability_text
from tftmon.risk import SEVERITY_LABELS, Severity
from tftmon.serve.alertmanager import ALERTNAME, AlertmanagerSink, Planner, Post, Sent
from tftmon.serve.alerts import RAISED_WALL, AlertBook
from tftmon.serve.live import utcnow

LOGGER = "tftmon.serve.alertmanager"
SinkFactory = Callable[..., AlertmanagerSink]


#: Pages at the first critical forecast, clears at the first other: these tests are about the sink, not the rule.
IMMEDIATE = PageRule(1, 1, 1)


def record(name: str, severity: str = "critical", *, metric: str | None = MEM_USED, probability: float = 0.64) -> dict:
    """One server's forecast record with the fields the AlertBook reads (tftmon.serve.live.payloads)."""
    return {
        "server_name": name, "profile": "database", "severity": severity, "risk": 0.9, "metric": metric,
        "reason": f"Memory ≥ 97 % (critical for database) in 40 min: {probability_text(probability)}, p50 93 %, p90 "
        "reaches it",
        "prediction_time": "2026-01-01T12:00:00+00:00", "model_version": "3", "_value": 93.0, "_quantile": "p90",
        "_probability": probability, "_minutes_ahead": 40,
    }  # fmt: skip


class Fleet:
    """An AlertBook fed forecasts and synced to a sink after each, as the service's refresh loop does."""

    def __init__(self, sink: AlertmanagerSink, labels: dict[str, dict[str, str]] | None = None) -> None:
        self.book = AlertBook(history=100, resolve_after=1)
        self.sink, self.labels = sink, labels or {}

    def forecast(self, *records: dict[str, Any]) -> None:
        self.book.update(records, utcnow(), IMMEDIATE)
        active = [{**a, "labels": self.labels.get(a["server_name"], {})} for a in self.book.active.values()]
        self.sink.sync(active, utcnow())


def am_alerts(url: str, server: str, auth: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """The server's active alerts in Alertmanager (resolved ones are not listed)."""
    response = httpx.get(f"{url}/api/v2/alerts", params={"filter": f'server="{server}"'}, auth=auth, timeout=5)
    response.raise_for_status()
    return list(response.json())


def notified(webhook: Receiver, server: str, status: str) -> list[dict[str, Any]]:
    return [a for a in webhook.alerts(server) if a["status"] == status]


def messages(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level and text in r.getMessage()
    ]


def parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def webhook() -> Iterator[Receiver]:
    with receiver() as running:
        yield running


@pytest.fixture(scope="module")
def am(tmp_path_factory: pytest.TempPathFactory, webhook: Receiver) -> Iterator[str]:
    require_alertmanager()
    with alertmanager(tmp_path_factory.mktemp("alertmanager"), webhook.url) as url:
        yield url


@pytest.fixture
def make_sink() -> Iterator[SinkFactory]:
    """AlertmanagerSink(...), closed after the test."""
    made: list[AlertmanagerSink] = []

    def make(*args: Any, **kwargs: Any) -> AlertmanagerSink:
        made.append(AlertmanagerSink(*args, **kwargs))
        return made[-1]

    yield make
    for sink in made:
        sink.close(0.5)


# ---------------------------------------------------------------------------------------------
# The plan, without a clock or a network
# ---------------------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
PLANNER = Planner(resend=timedelta(seconds=60), validity=timedelta(minutes=20), dashboard_url="http://dash:8501")


class Planned:
    """The planner driven by an AlertBook, keeping what was sent between forecasts."""

    def __init__(self) -> None:
        self.book = AlertBook(history=100, resolve_after=1)
        self.sent: dict[str, Sent] = {}

    def forecast(self, at: datetime, *records: dict[str, Any]) -> list[Post]:
        self.book.update(records, at, IMMEDIATE)
        posts, self.sent = PLANNER.plan(self.sent, list(self.book.active.values()), at)
        return posts


def test_only_critical_is_posted_and_re_posted_after_the_resend_interval() -> None:
    planned = Planned()
    [post] = planned.forecast(T0, record("db1"), record("web1", "warning"))
    assert post.server == "db1" and not post.resolved
    assert post.alert["startsAt"] == "2026-01-01T12:00:00.000+00:00"  # the wall-clock time the AlertBook raised it
    assert parse(post.alert["endsAt"]) == T0 + timedelta(minutes=20)
    assert planned.forecast(T0 + timedelta(seconds=30), record("db1"), record("web1", "warning")) == []
    [again] = planned.forecast(T0 + timedelta(seconds=60), record("db1", probability=0.7), record("web1", "warning"))
    assert again.key == post.key and again.alert["annotations"]["probability"] == "0.70"
    assert parse(again.alert["endsAt"]) == T0 + timedelta(seconds=60) + timedelta(minutes=20)


def test_leaving_critical_resolves_and_critical_again_is_a_new_alert() -> None:
    planned = Planned()
    [first] = planned.forecast(T0, record("db1"))
    at = T0 + timedelta(minutes=5)
    [down] = planned.forecast(at, record("db1", "warning"))  # still an AlertBook alert, no longer critical
    assert down.resolved and down.key == first.key and parse(down.alert["endsAt"]) == at
    assert planned.forecast(at + timedelta(minutes=5), record("db1", "warning")) == []  # resolved once
    at += timedelta(minutes=10)
    [second] = planned.forecast(at, record("db1"))
    assert parse(second.alert["startsAt"]) == at and second.key != first.key  # not when the AlertBook raised it
    at += timedelta(minutes=5)
    [gone] = planned.forecast(at, record("db1", "healthy"))  # the AlertBook resolves it
    assert gone.resolved and gone.key == second.key and planned.sent == {}
    at += timedelta(minutes=5)
    [third] = planned.forecast(at, record("db1"))  # a new AlertBook alert: when it was raised
    assert parse(third.alert["startsAt"]) == at


def test_labels_are_fixed_for_the_alert_and_annotations_follow_the_forecast() -> None:
    planned = Planned()
    posts = {p.server: p for p in planned.forecast(T0, record("db1"), record("db2", metric=None))}
    assert posts["db1"].alert["labels"] == {
        "alertname": ALERTNAME, "severity": "critical", "server": "db1", "instance": "db1", "profile": "database",
        "metric": MEM_USED,
    }  # fmt: skip
    assert "metric" not in posts["db2"].alert["labels"]  # no driving metric: no label rather than an empty one
    later = {p.server: p for p in planned.forecast(T0 + timedelta(minutes=5), record("db1", metric=DISK_USAGE))}
    moved = later["db1"]  # the driving metric changed: the same alert, its labels kept
    assert not moved.resolved and moved.key == posts["db1"].key and moved.alert["labels"]["metric"] == MEM_USED
    assert moved.alert["annotations"]["summary"] == (
        "db1 (database): Disk may reach its critical level in 40 min: about as likely as not (64 %)"
    )


# ---------------------------------------------------------------------------------------------
# Options and bounds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["alertmanager:9093", "ftp://alertmanager", "http://:9093", f"http://{USER}:{PASSWORD}@am:9093/api/v2/alerts",
     "http://am:9093/?x=1", "http://am:99999"],
)  # fmt: skip
def test_a_bad_url_names_the_option_and_the_fix_never_the_password(url: str) -> None:
    with pytest.raises(ValueError, match=r"--alertmanager \(TFTMON_SERVICE_ALERTMANAGER_URLS\).*e\.g\. http://") as err:
        AlertmanagerSink([url])
    assert PASSWORD not in str(err.value)


def test_undelivered_states_are_bounded_oldest_resolved_first(
    make_sink: SinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = make_sink(f"http://127.0.0.1:{free_port()}", max_pending=2)  # nothing listens: all stay pending
    fleet = Fleet(sink)
    fleet.forecast(record("b1"), record("b2"))
    fleet.forecast(record("b1", "healthy"), record("b2"), record("b3"))  # b1 resolved, b3 new: one too many
    assert sink.stats()[sink_url(sink)]["dropped"] == 1
    fleet.forecast(record("b2"), record("b3"), record("b4"))  # nothing resolved left: the oldest goes (b2)
    stats = sink.stats()[sink_url(sink)]
    assert (stats["dropped"], stats["pending"]) == (2, 2)
    assert len(messages(caplog, logging.WARNING, "undelivered alert states dropped")) == 2
    started = time.monotonic()
    sink.close(1.0)
    assert time.monotonic() - started < 3


def sink_url(sink: AlertmanagerSink) -> str:
    [url] = sink.stats()
    return url


# ---------------------------------------------------------------------------------------------
# A real Alertmanager
# ---------------------------------------------------------------------------------------------


def test_a_critical_alert_reaches_alertmanager_and_the_webhook_a_warning_never(
    am: str, webhook: Receiver, make_sink: SinkFactory
) -> None:
    sink = make_sink([am], dashboard_url="http://dashboard:8501/", service_url="http://tftmon:3000")
    fleet = Fleet(sink, labels={"c-db": {"instance": "10.0.0.5:9100", "job": "node"}})
    fleet.forecast(record("c-db"), record("c-web", "warning"))
    [alert] = wait_for(lambda: am_alerts(am, "c-db"), "the alert in Alertmanager", timeout=10)
    raised = fleet.book.active["c-db"][RAISED_WALL]
    assert alert["labels"] == {
        "alertname": ALERTNAME, "severity": "critical", "server": "c-db", "instance": "10.0.0.5:9100", "job": "node",
        "profile": "database", "metric": MEM_USED,
    }  # fmt: skip
    assert alert["annotations"] == {
        "summary": "c-db (database): Memory may reach its critical level in 40 min: about as likely as not (64 %)",
        "description": "Memory ≥ 97 % (critical for database) in 40 min: about as likely as not (64 %), p50 93 %, "
        "p90 reaches it",
        "meaning": SEVERITY_LABELS[Severity.CRITICAL],
        "predicted_for": "2026-01-01T12:40:00+00:00",
        "probability": "0.64",
        "probability_word": "about as likely as not",
        "minutes_ahead": "40",
        "model_version": "3",
        "dashboard": "http://dashboard:8501/?server=c-db",
    }
    assert alert["generatorURL"] == "http://dashboard:8501/?server=c-db"
    assert abs(parse(alert["startsAt"]) - raised) < timedelta(milliseconds=1)
    assert parse(alert["endsAt"]) - raised > timedelta(minutes=19)  # 4 x max(60 s, one 5-min model step)
    [firing] = wait_for(lambda: notified(webhook, "c-db", "firing"), "the firing notification", timeout=10)
    assert firing["labels"]["server"] == "c-db"
    time.sleep(0.5)  # a group interval more: the warning was never posted, so never notified
    assert am_alerts(am, "c-web") == [] and webhook.alerts("c-web") == []
    stats = sink.stats()[am]
    assert (stats["state"], stats["posted"], stats["failed"], stats["pending"]) == ("up", 1, 0, 0)
    assert stats["last_success"] is not None and json.dumps(stats)
    samples = {s.name: s.value for family in sink.metrics() for s in family.samples}
    assert samples["tftmon_alertmanager_posted_total"] == 1 and samples["tftmon_alertmanager_pending"] == 0


def test_resolved_reaches_the_webhook_and_critical_again_is_a_new_alert(
    am: str, webhook: Receiver, make_sink: SinkFactory
) -> None:
    fleet = Fleet(make_sink([am]))
    fleet.forecast(record("r-db"))
    [first] = wait_for(lambda: am_alerts(am, "r-db"), "the alert in Alertmanager", timeout=10)
    wait_for(lambda: notified(webhook, "r-db", "firing"), "the firing notification", timeout=10)
    fleet.forecast(record("r-db", "warning"))  # down to warning: resolved in Alertmanager
    [resolved] = wait_for(lambda: notified(webhook, "r-db", "resolved"), "the resolved notification", timeout=10)
    assert resolved["startsAt"] == first["startsAt"] and am_alerts(am, "r-db") == []
    fleet.forecast(record("r-db"))
    [second] = wait_for(lambda: am_alerts(am, "r-db"), "the new alert", timeout=10)
    assert parse(second["startsAt"]) > parse(resolved["endsAt"])
    wait_for(lambda: len(notified(webhook, "r-db", "firing")) == 2, "a second firing notification", timeout=10)


def test_re_posts_refresh_the_alert_without_new_notifications_and_it_expires_when_tftmon_stops(
    am: str, webhook: Receiver, make_sink: SinkFactory
) -> None:
    sink = make_sink([am], resend_seconds=0.3, evaluation_seconds=1.0)  # valid for 4 s after each post
    fleet = Fleet(sink)
    for step in range(10):
        fleet.forecast(record("p-db", probability=0.5 + step / 100))
        time.sleep(0.2)
    [alert] = am_alerts(am, "p-db")
    assert sink.stats()[am]["posted"] >= 3 and float(alert["annotations"]["probability"]) >= 0.55  # refreshed
    assert len(notified(webhook, "p-db", "firing")) == 1  # re-posts are no news: repeat_interval rules
    sink.close()  # tftmon stops without resolving: Alertmanager resolves the alert when it expires
    wait_for(lambda: notified(webhook, "p-db", "resolved"), "the alert expiring", timeout=10)
    assert len(notified(webhook, "p-db", "firing")) == 1


def test_an_alert_posted_while_alertmanager_is_down_arrives_once_it_is_up(
    tmp_path: Path, webhook: Receiver, make_sink: SinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    require_alertmanager()
    caplog.set_level(logging.INFO, logger=LOGGER)
    port = free_port()
    sink = make_sink(f"http://127.0.0.1:{port}", resend_seconds=2)  # retries back off up to 1 s
    Fleet(sink).forecast(record("d-db"))
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: sink.stats()[url]["failed"] >= 3, "three failed tries", timeout=10)
    assert (sink.stats()[url]["state"], sink.stats()[url]["pending"]) == ("down", 1)
    assert "ConnectError" in sink.stats()[url]["last_error"]["error"]
    [down] = messages(caplog, logging.WARNING, "unreachable")  # one line, however many retries
    assert url in down
    with alertmanager(tmp_path / "alertmanager", webhook.url, port=port):
        wait_for(lambda: am_alerts(url, "d-db"), "the kept alert in Alertmanager", timeout=15)
        wait_for(lambda: notified(webhook, "d-db", "firing"), "the firing notification", timeout=10)
    stats = sink.stats()[url]
    assert (stats["state"], stats["posted"], stats["pending"]) == ("up", 1, 0) and stats["failed"] >= 3
    assert len(messages(caplog, logging.INFO, "delivering again")) == 1
    assert len(messages(caplog, logging.WARNING, "unreachable")) == 1


def test_a_refused_payload_is_counted_and_logged_once_not_retried(
    make_sink: SinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    refusal = "start time must be before end time"  # Alertmanager's 400: its error as a JSON string
    with receiver(status=400, reply=json.dumps(refusal) + "\n") as refusing:
        sink = make_sink(refusing.url, resend_seconds=0.2, evaluation_seconds=0.2)
        fleet = Fleet(sink)
        for _ in range(3):  # three re-posts, each refused
            fleet.forecast(record("x-db"))
            wait_for(lambda: sink.stats()[refusing.url]["pending"] == 0, "the refusal", timeout=10)
            time.sleep(0.25)
        time.sleep(1.0)  # room for retries that must not happen
        assert len(refusing.posts()) == 3 and all(p.path == "/api/v2/alerts" for p in refusing.posts())
    stats = sink.stats()[refusing.url]
    assert (stats["state"], stats["posted"], stats["failed"], stats["pending"]) == ("refusing", 0, 3, 0)
    assert stats["last_error"]["error"] == f"HTTP 400: {refusal}"
    [logged] = messages(caplog, logging.ERROR, "refused")
    assert refusal in logged


def test_every_alert_goes_to_every_url(am: str, webhook: Receiver, tmp_path: Path, make_sink: SinkFactory) -> None:
    with alertmanager(tmp_path / "second", webhook.url) as second:
        sink = make_sink([am, second, f"{am}/"])  # the same URL twice is one
        Fleet(sink).forecast(record("u-db"))
        for url in (am, second):
            wait_for(lambda url=url: am_alerts(url, "u-db"), f"the alert in {url}", timeout=10)
        wait_for(lambda: len(notified(webhook, "u-db", "firing")) == 2, "one notification from each", timeout=10)
        assert {url: s["posted"] for url, s in sink.stats().items()} == {am: 1, second: 1}


def test_basic_auth_works_and_the_password_is_never_logged_or_shown(
    tmp_path: Path, webhook: Receiver, make_sink: SinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    require_alertmanager()
    caplog.set_level(logging.DEBUG)  # every logger, httpx's request lines too
    wrong = "not-the-secret"
    with alertmanager(tmp_path / "auth", webhook.url, auth=True) as url:
        host = url.removeprefix("http://")
        down = f"127.0.0.1:{free_port()}"
        sink = make_sink([f"http://{USER}:{PASSWORD}@{host}", f"http://intruder:{wrong}@{host}",
                          f"http://{USER}:{PASSWORD}@{down}"])  # fmt: skip
        Fleet(sink).forecast(record("a-db"))
        wait_for(lambda: am_alerts(url, "a-db", auth=(USER, PASSWORD)), "the alert past basic auth", timeout=10)
        shown = f"http://{USER}:***@{host}"
        wait_for(lambda: sink.stats()[f"http://intruder:***@{host}"]["failed"], "the refusal", timeout=10)
        wait_for(lambda: sink.stats()[f"http://{USER}:***@{down}"]["failed"], "the failed try", timeout=10)
    stats = sink.stats()
    assert stats[shown]["posted"] == 1
    assert stats[f"http://intruder:***@{host}"]["last_error"]["error"].startswith("HTTP 401")
    assert messages(caplog, logging.ERROR, "refused") and messages(caplog, logging.WARNING, "unreachable")
    shown_everywhere = caplog.text + json.dumps(stats) + repr([s for f in sink.metrics() for s in f.samples])
    for secret in (PASSWORD, wrong, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()):
        assert secret not in shown_everywhere


def test_one_critical_forecast_does_not_page_under_the_default_rule() -> None:
    book, sent = AlertBook(history=10, resolve_after=1), {}
    for minute, severity in enumerate(("critical", "warning", "warning", "critical", "critical")):
        at = T0 + timedelta(minutes=5 * minute)
        book.update([record("db1", severity)], at, PageRule())
        posts, sent = PLANNER.plan(sent, list(book.active.values()), at)
        assert bool(posts) == (minute == 4)  # the blip never pages; two of three in a row do
