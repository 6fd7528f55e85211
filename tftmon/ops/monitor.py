"""`tftmon monitor`: check drift periodically and retrain when the policy says so.

The decision is a pure function of the policy, the drift report, the retraining history (from the event
log) and the clock (`decide`), so every rule is tested with a fake clock: a minimum gap between retrain
attempts and a weekly maximum (failed attempts count, so a broken retrain never loops), a forced retrain
when the model is older than `max_model_age`, and priority -> when: low in the next maintenance window,
medium in a window within `medium_within` of its detection (else at once), high at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from tftmon.config import DriftConfig, RetrainConfig, RetrainPolicy, load_yaml
from tftmon.ops.events import EventLog

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)
Action = Literal["retrain", "wait", "nothing"]


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, the field and the fix."""


def load_policy(path: Path | None) -> RetrainPolicy:
    """The policy in a YAML file (None: the defaults); a typo or a bad value names the field."""
    if path is None:
        return RetrainPolicy()
    return load_yaml(
        RetrainPolicy, path, PolicyError, "a policy is a mapping of field: value; see configs/retrain-policy.yaml"
    )


class DriftLike(Protocol):
    """What `decide` reads of a drift report (tftmon.ops.drift.DriftReport)."""

    @property
    def priority(self) -> str: ...
    @property
    def model_age_days(self) -> float | None: ...


@dataclass(frozen=True)
class History:
    """What the event log says about past retrains: when attempts started, and since when the drift now
    pending was first detected (None: none pending since the last verified retrain)."""

    attempts: tuple[datetime, ...] = ()
    drift_since: datetime | None = None

    @classmethod
    def from_events(cls, records: Iterable[dict[str, Any]]) -> History:
        attempts: list[datetime] = []
        drift_since: datetime | None = None
        for record in records:
            when = datetime.fromisoformat(record["time"])
            if record["event"] == "retrain_started":
                attempts.append(when)
            elif record["event"] == "verified":
                drift_since = None
            elif record["event"] == "drift_detected" and record.get("priority", "none") != "none":
                drift_since = drift_since or when
        return cls(tuple(sorted(attempts)), drift_since)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    #: Retrain because the model is too old, whatever the drift.
    forced: bool = False
    #: When waiting: the earliest time the retrain may run.
    not_before: datetime | None = None

    def to_text(self) -> str:
        when = f" (not before {self.not_before:%Y-%m-%d %H:%M} UTC)" if self.not_before else ""
        return f"{self.action}: {self.reason}{when}"


def maintenance_window(policy: RetrainPolicy, now: datetime) -> tuple[bool, datetime]:
    """Whether `now` is inside the daily maintenance window, and when the next one starts."""
    today = now.replace(hour=policy.maintenance_start_hour, minute=0, second=0, microsecond=0)
    length = timedelta(hours=policy.maintenance_hours)
    inside = any(start <= now < start + length for start in (today - timedelta(days=1), today))
    return inside, today if today > now else today + timedelta(days=1)


def decide(policy: RetrainPolicy, report: DriftLike, history: History, now: datetime) -> Decision:
    """Whether to retrain now, given the drift report, past attempts and the clock."""
    age = report.model_age_days
    forced = policy.max_model_age is not None and age is not None and timedelta(days=age) > policy.max_model_age
    if report.priority == "none" and not forced:
        return Decision("nothing", "no drift" + ("" if age is None else f"; model {age:.1f} days old"))
    why = f"model {age:.1f} days old (max_model_age {policy.max_model_age})" if forced else ""
    why = "; ".join(filter(None, [f"drift priority {report.priority}" if report.priority != "none" else "", why]))

    week = [t for t in history.attempts if now - t < WEEK]
    if len(week) >= policy.max_per_week:
        free = sorted(week)[-policy.max_per_week] + WEEK
        return Decision("wait", f"{why}; {len(week)} retrains in 7 days (max_per_week {policy.max_per_week})",
                        forced, free)  # fmt: skip
    if history.attempts and now - history.attempts[-1] < policy.min_gap:
        return Decision("wait", f"{why}; last retrain {now - history.attempts[-1]} ago (min_gap {policy.min_gap})",
                        forced, history.attempts[-1] + policy.min_gap)  # fmt: skip
    if forced or report.priority == "high":
        return Decision("retrain", why, forced)
    inside, next_window = maintenance_window(policy, now)
    if inside:
        return Decision("retrain", f"{why}; in the maintenance window")
    if report.priority == "low":
        return Decision("wait", f"{why}: waits for the maintenance window", not_before=next_window)
    deadline = (history.drift_since or now) + policy.medium_within
    if next_window <= deadline:
        return Decision("wait", f"{why}: the maintenance window comes within {policy.medium_within}",
                        not_before=next_window)  # fmt: skip
    return Decision("retrain", f"{why}: no maintenance window within {policy.medium_within} of its detection")


@dataclass(frozen=True)
class Tick:
    """One check of the monitor: the report's priority, the decision, and the retrain's result if one ran."""

    priority: str
    decision: Decision
    retrain: str | None = None
    failed: bool = False


def check_once(policy: RetrainPolicy, retrain: RetrainConfig, drift: DriftConfig, now: datetime | None = None) -> Tick:
    """Check drift on the retrain's source (its dataset or Prometheus, and its service), decide, and retrain from
    that source if the policy says so; a check that cannot run, or a failed or refused retrain, is reported, not
    raised (the monitor carries on and tries again at the next interval)."""
    from tftmon.io import DatasetError
    from tftmon.ops.drift import DriftError, check_drift
    from tftmon.ops.lock import LockHeld
    from tftmon.ops.retrain import RetrainFailed, run_retrain

    try:
        report = check_drift(
            drift, data=retrain.data, prometheus_url=retrain.prometheus_url, service_url=retrain.service_url
        )
    except (DriftError, DatasetError) as exc:
        log.error("drift check failed: %s", exc)
        return Tick("unknown", Decision("nothing", f"the drift check could not run: {exc}"), failed=True)
    now = now or datetime.now(UTC)
    events = EventLog(retrain.event_log)
    history = History.from_events(events.read())
    decision = decide(policy, report, history, now)
    log.info("drift %s: %s", report.priority, decision.to_text())
    detected = {
        "priority": report.priority,
        "drift_pct": report.fleet.drift_pct,
        "new_servers": len(report.fleet.new_servers),
        "retired": len(report.fleet.retired),
        "drift_run_id": report.run_id,
        "decision": decision.to_text(),
    }
    if decision.action != "retrain":
        if report.priority != "none":
            events.emit("drift_detected", **detected)
        return Tick(report.priority, decision)
    try:
        outcome = run_retrain(retrain, trigger=detected)
    except (RetrainFailed, LockHeld) as exc:
        log.error("%s", exc)
        return Tick(report.priority, decision, str(exc), failed=True)
    return Tick(report.priority, decision, outcome.to_text())


def run_monitor(
    policy: RetrainPolicy,
    retrain: RetrainConfig,
    drift: DriftConfig,
    interval: timedelta,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
) -> Tick:
    """Check every `interval` until stopped (or once); returns the last tick."""
    stop = stop or threading.Event()
    while True:
        tick = check_once(policy, retrain, drift)
        if once or stop.wait(interval.total_seconds()):
            return tick
