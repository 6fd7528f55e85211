"""Alert state of the live fleet: hysteresis on forecast severities and a bounded transition history.

A server's alert is raised or escalated by one forecast, but resolved only after `resolve_after`
healthy forecasts in a row, so a server hovering at a threshold does not flap between raised and
resolved. Fed the per-server records of tftmon.serve.live.payloads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pandas as pd

from tftmon.risk import Severity

_SEVERITY_RANK = {Severity.HEALTHY.value: 0, Severity.WARNING.value: 1, Severity.CRITICAL.value: 2}


class AlertBook:
    """Active alerts per server with hysteresis, and a bounded history of transitions."""

    def __init__(self, history: int, resolve_after: int) -> None:
        self.resolve_after = resolve_after
        self.active: dict[str, dict[str, Any]] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self._healthy_streak: dict[str, int] = {}

    def _transition(self, kind: str, record: dict[str, Any], previous: str, now: datetime) -> None:
        self.history.append(
            {
                "kind": kind,
                "server_name": record["server_name"],
                "severity": record["severity"],
                "previous_severity": previous,
                "metric": record["metric"],
                "reason": record["reason"],
                "data_time": record["prediction_time"],
                "at": now.isoformat(),
            }
        )

    def update(self, records: Iterable[dict[str, Any]], now: datetime) -> None:
        for record in records:
            name, severity = record["server_name"], record["severity"]
            alert = self.active.get(name)
            if severity == Severity.HEALTHY.value:
                if alert is None:
                    continue
                streak = self._healthy_streak.get(name, 0) + 1
                self._healthy_streak[name] = streak
                if streak >= self.resolve_after:
                    self._transition("resolved", record, alert["severity"], now)
                    del self.active[name]
                    self._healthy_streak.pop(name, None)
                continue
            self._healthy_streak.pop(name, None)
            if alert is None:
                self.active[name] = self._alert(record, since=record["prediction_time"], raised_at=now)
                self._transition("raised", record, Severity.HEALTHY.value, now)
            else:
                if _SEVERITY_RANK[severity] > _SEVERITY_RANK[alert["severity"]]:
                    self._transition("escalated", record, alert["severity"], now)
                # Same alert: keep when it started, refresh what it predicts now.
                self.active[name] = self._alert(record, since=alert["since"], raised_at=alert["raised_at"])

    @staticmethod
    def _alert(record: dict[str, Any], since: str, raised_at: datetime | str) -> dict[str, Any]:
        minutes = record["_minutes_ahead"]
        origin = pd.Timestamp(record["prediction_time"])
        return {
            "server_name": record["server_name"],
            "profile": record["profile"],
            "severity": record["severity"],
            "risk": record["risk"],
            "metric": record["metric"],
            "value": record["_value"],
            "quantile": record["_quantile"],
            "probability": record["_probability"],
            "minutes_ahead": minutes,
            "predicted_for": (origin + pd.Timedelta(minutes=minutes)).isoformat() if minutes else None,
            "reason": record["reason"],
            "since": since,
            "raised_at": raised_at.isoformat() if isinstance(raised_at, datetime) else raised_at,
            "model_version": record["model_version"],
        }

    def counts(self) -> dict[str, int]:
        counts = {Severity.WARNING.value: 0, Severity.CRITICAL.value: 0}
        for alert in self.active.values():
            counts[alert["severity"]] += 1
        return counts

    def sorted_active(self) -> list[dict[str, Any]]:
        return sorted(self.active.values(), key=lambda a: (-a["risk"], a["server_name"]))
