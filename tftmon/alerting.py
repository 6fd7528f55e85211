"""The page rule: when a server's critical forecasts become a page (an alert an on-call is sent), and when
the page clears.

A forecaster's alert fires on one forecast: severity critical, the fitted alert score reached. One
forecast is noisy, so a page needs the alert at `persist` of the last `window` forecasts (Prometheus's
`for:`, counted in forecasts) and clears only after `clear_after` forecasts in a row without it
(Prometheus's `keep_firing_for`), so a server hovering at its threshold is one page, not ten. The service
(AlertBook -> Alertmanager) and the evaluation's operator units (alert episodes per fleet-day, their
precision, recall and lead) apply this one rule, at one forecast per model step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np


@dataclass(frozen=True)
class PageRule:
    """How many forecasts open and clear a page (see the module docstring)."""

    persist: int = 2
    window: int = 3
    clear_after: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.persist <= self.window:
            raise ValueError(f"a page needs 1 ≤ persist ≤ window; got persist={self.persist}, window={self.window}")
        if self.clear_after < 1:
            raise ValueError(f"clear_after must be ≥ 1; got {self.clear_after}")

    @property
    def text(self) -> str:
        """The rule in words, for summaries and docs."""
        return (
            f"a page opens when {self.persist} of the last {self.window} forecasts alert and clears after "
            f"{self.clear_after} forecasts in a row without"
        )


Transition = Literal["opened", "cleared"]
#: What /alerts/history records for a server: its alert raised, escalated or resolved (severity, with
#: hysteresis), and its page opened or cleared (this rule).
TransitionKind = Literal["raised", "escalated", "resolved", "paged", "page cleared"]
TRANSITION_KINDS: tuple[str, ...] = get_args(TransitionKind)


@dataclass
class PageState:
    """One server's page under a rule, fed one forecast at a time (the live service)."""

    rule: PageRule
    recent: deque[bool] = field(init=False)
    paging: bool = False
    calm: int = 0

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.rule.window)

    def update(self, alert: bool) -> Transition | None:
        """The page's transition after a forecast that alerts (`alert`) or not; None if it stays as it was."""
        self.recent.append(alert)
        if not self.paging:
            if sum(self.recent) >= self.rule.persist:
                self.paging, self.calm = True, 0
                return "opened"
            return None
        self.calm = 0 if alert else self.calm + 1
        if self.calm >= self.rule.clear_after:
            self.paging, self.calm = False, 0
            self.recent.clear()
            return "cleared"
        return None


def pages(alerts: Sequence[bool] | np.ndarray, rule: PageRule) -> list[tuple[int, int]]:
    """The pages of one server's consecutive forecasts: (index that opened it, index that cleared it, or
    len(alerts) when still open at the end), by the same state machine as the live service."""
    state = PageState(rule)
    out: list[tuple[int, int]] = []
    opened = -1
    for i, alert in enumerate(np.asarray(alerts, dtype=bool).tolist()):
        change = state.update(alert)
        if change == "opened":
            opened = i
        elif change == "cleared":
            out.append((opened, i))
    if state.paging:
        out.append((opened, len(alerts)))
    return out


#: Key of the page rule in a model's training_info.json: the rule its evaluation scored, which the service
#: then pages by.
PAGE_RULE_KEY = "page_rule"


def page_rule_from_info(info: dict[str, object] | None) -> PageRule:
    """The page rule a model carries (PAGE_RULE_KEY); the default rule for models that carry none."""
    stored = (info or {}).get(PAGE_RULE_KEY)
    if not isinstance(stored, dict):
        return PageRule()
    return PageRule(**{k: int(v) for k, v in stored.items() if k in ("persist", "window", "clear_after")})
