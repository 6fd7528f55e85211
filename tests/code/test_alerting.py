"""The page rule, and pages scored as an on-call sees them."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from tftmon.alerting import PageRule, PageState, pages
from tftmon.contract import MODEL_STEP, ORIGIN, SERVER_NAME
from tftmon.evaluation.incidents import page_frame, page_scores

T0 = pd.Timestamp("2026-03-02", tz="UTC")


def test_rule_refuses_persist_beyond_window() -> None:
    with pytest.raises(ValueError, match="persist"):
        PageRule(persist=3, window=2)
    with pytest.raises(ValueError, match="clear_after"):
        PageRule(clear_after=0)


def test_one_forecast_pages_at_once_and_clears_at_once() -> None:
    assert pages([0, 1, 0, 1, 1, 0], PageRule(1, 1, 1)) == [(1, 2), (3, 5)]


def test_persistence_skips_a_blip_and_hysteresis_keeps_one_page() -> None:
    rule = PageRule(persist=2, window=3, clear_after=3)
    # a lone blip never pages; two of three do; two calm forecasts do not clear it, three do
    flags = [1, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert pages(flags, rule) == [(6, 12)]


def test_page_still_open_at_the_end() -> None:
    assert pages([0, 1, 1, 1], PageRule(2, 2, 1)) == [(2, 4)]


def test_live_state_matches_the_batch_rule() -> None:
    rng = np.random.default_rng(3)
    flags = rng.random(500) < 0.3
    rule = PageRule(2, 4, 2)
    state, opened, live = PageState(rule), -1, []
    for i, flag in enumerate(flags):
        change = state.update(bool(flag))
        if change == "opened":
            opened = i
        elif change == "cleared":
            live.append((opened, i))
    assert live == pages(flags, rule)[: len(live)]


def _alerts(flags: dict[str, list[int]]) -> pd.DataFrame:
    rows = [
        {SERVER_NAME: name, ORIGIN: T0 + i * MODEL_STEP, "alert": bool(flag)}
        for name, values in flags.items()
        for i, flag in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_page_scores_count_pages_not_forecasts() -> None:
    n = 12 * 24  # one day of 5-min forecasts per server
    a = [0] * n
    a[100:110] = [1] * 10  # one page, 10 alerting forecasts, an incident 1 h after it opens
    b = [0] * n
    b[50:53] = [1] * 3  # a false page
    episodes = pd.DataFrame({SERVER_NAME: ["a"], "start": [T0 + 112 * MODEL_STEP], "end": [T0 + 118 * MODEL_STEP]})
    scores = page_scores(_alerts({"a": a, "b": b}), episodes, PageRule(1, 1, 1), lead=timedelta(minutes=30))
    assert (scores.pages, scores.true_pages, scores.false_pages) == (2, 1, 1)
    assert scores.precision == 0.5
    assert scores.pages_per_server_day == pytest.approx(1.0)
    assert (scores.episodes, scores.warned, scores.median_lead_min) == (1, 1, 60.0)


def test_a_gap_restarts_the_state() -> None:
    frame = _alerts({"a": [1, 1, 1, 1]}).drop(index=2)
    assert len(page_frame(frame, PageRule(1, 1, 1))) == 2
