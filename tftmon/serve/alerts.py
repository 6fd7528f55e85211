"""Alert state of the live fleet: hysteresis on forecast severities and a bounded transition history.

A server's alert is raised or escalated by one forecast, but resolved only after `resolve_after`
healthy forecasts in a row, so a server hovering at a threshold does not flap between raised and
resolved. Whether it pages (Alertmanager) is the loaded model's page rule (tftmon.alerting): `paging`
opens after enough critical forecasts and clears after enough without, the rule the evaluation scored.
Fed the per-server records of tftmon.serve.live.payloads.

One clock per object: alerts and transitions carry data time only (the forecasts' origins and what they
predict for), never the wall clock. When an alert was raised by the wall clock is kept for the Alertmanager
sink under `_raised_wall`, a private key `sorted_active` leaves out. An alert's `value` is the forecast
median (`value_quantile`), its probability said in the contract's words too (`probability_word`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pandas as pd

from tftmon.alerting import PageRule, PageState, TransitionKind
from tftmon.contract import probability_word, quantile_name
from tftmon.risk import Severity

_SEVERITY_RANK = {Severity.HEALTHY.value: 0, Severity.WARNING.value: 1, Severity.CRITICAL.value: 2}
#: The forecast quantile an alert's `value` is: risk's value is the median (tftmon.risk.metric_risk).
VALUE_QUANTILE = quantile_name(0.5)
#: Private key of an active alert: the wall-clock time it was raised (Alertmanager's startsAt), never served.
RAISED_WALL = "_raised_wall"


class AlertBook:
    """Active alerts per server with hysteresis, and a bounded history of transitions."""

    def __init__(self, history: int, resolve_after: int) -> None:
        self.resolve_after = resolve_after
        self.active: dict[str, dict[str, Any]] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self._healthy_streak: dict[str, int] = {}
        self._pages: dict[str, PageState] = {}

    def _transition(self, kind: TransitionKind, record: dict[str, Any], previous: str) -> None:
        """A transition at data time: `data_time` is the origin of the forecast that made it."""
        self.history.append(
            {
                "kind": kind,
                "server_name": record["server_name"],
                "severity": record["severity"],
                "previous_severity": previous,
                "metric": record["metric"],
                "reason": record["reason"],
                "data_time": record["prediction_time"],
            }
        )

    def update(self, records: Iterable[dict[str, Any]], now: datetime, rule: PageRule | None = None) -> None:
        """Apply one forecast's records; `now` (wall clock) is kept only as a new alert's RAISED_WALL. `rule`:
        the loaded model's page rule (a new rule, after a reload, starts every server's page state afresh)."""
        rule = rule or PageRule()
        for record in records:
            name, severity = record["server_name"], record["severity"]
            page = self._pages.get(name)
            if page is None or page.rule != rule:
                page = self._pages[name] = PageState(rule)
            if page.update(severity == Severity.CRITICAL.value) is not None:
                self._transition("paged" if page.paging else "page cleared", record, record["severity"])
            alert = self.active.get(name)
            if severity == Severity.HEALTHY.value:
                if alert is None:
                    continue
                streak = self._healthy_streak.get(name, 0) + 1
                self._healthy_streak[name] = streak
                if streak >= self.resolve_after:
                    self._transition("resolved", record, alert["severity"])
                    del self.active[name]
                    self._healthy_streak.pop(name, None)
                continue
            self._healthy_streak.pop(name, None)
            if alert is None:
                self.active[name] = self._alert(record, record["prediction_time"], now, page.paging)
                self._transition("raised", record, Severity.HEALTHY.value)
            else:
                if _SEVERITY_RANK[severity] > _SEVERITY_RANK[alert["severity"]]:
                    self._transition("escalated", record, alert["severity"])
                # Same alert: keep when it started, refresh what it predicts now.
                self.active[name] = self._alert(record, alert["since"], alert[RAISED_WALL], page.paging)

    @staticmethod
    def _alert(record: dict[str, Any], since: str, raised_wall: datetime, paging: bool) -> dict[str, Any]:
        """The alert as /alerts/active serves it (data time only), plus the private RAISED_WALL."""
        minutes = record["_minutes_ahead"]
        origin = pd.Timestamp(record["prediction_time"])
        probability = record["_probability"]
        return {
            "server_name": record["server_name"],
            "profile": record["profile"],
            "severity": record["severity"],
            "risk": record["risk"],
            "metric": record["metric"],
            "probability": probability,
            "probability_word": None if probability is None else probability_word(probability),
            "minutes_ahead": minutes,
            "prediction_time": record["prediction_time"],
            "predicted_for": (origin + pd.Timedelta(minutes=minutes)).isoformat() if minutes else None,
            "value": record["_value"],
            "value_quantile": None if record["_value"] is None else VALUE_QUANTILE,
            "reached_by_quantile": record["_quantile"],
            "reason": record["reason"],
            "since": since,
            "paging": paging,
            "model_version": record["model_version"],
            RAISED_WALL: raised_wall,
        }

    def counts(self) -> dict[str, int]:
        counts = {Severity.WARNING.value: 0, Severity.CRITICAL.value: 0}
        for alert in self.active.values():
            counts[alert["severity"]] += 1
        return counts

    def sorted_active(self) -> list[dict[str, Any]]:
        """The active alerts as served, worst first: without their private (wall-clock) keys."""
        ranked = sorted(self.active.values(), key=lambda a: (-a["risk"], a["server_name"]))
        return [{k: v for k, v in alert.items() if not k.startswith("_")} for alert in ranked]
