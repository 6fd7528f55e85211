"""`tftmon monitor`'s policy: the file (strict, documented defaults) and `decide`, with a fake clock.

`decide` is pure: a drift report (anything with `priority` and `model_age_days`), the history the event log
gives, and `now`. Every rule is one test here; no MLflow, no service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tftmon.cli import main
from tftmon.config import DriftConfig, RetrainConfig, RetrainPolicy
from tftmon.ops.events import EventLog
from tftmon.ops.monitor import History, PolicyError, check_once, decide, load_policy, maintenance_window

#: Mondays at 12:00 UTC: ten hours after the default window (02:00-04:00) closed, 14 before the next one.
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
POLICY = RetrainPolicy()


@dataclass(frozen=True)
class Report:
    """A DriftReport as `decide` reads it."""

    priority: str
    model_age_days: float | None = 3.0


def test_the_documented_policy_file_is_the_defaults() -> None:
    assert load_policy(ROOT / "configs" / "retrain-policy.yaml") == RetrainPolicy() == load_policy(None)


def test_a_policy_file_sets_durations_in_words(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("min_gap: 90min\nmax_model_age: null\nmedium_within: 2d\n")
    policy = load_policy(path)
    assert (policy.min_gap, policy.max_model_age, policy.medium_within) == (
        timedelta(minutes=90),
        None,
        timedelta(days=2),
    )
    assert policy.max_per_week == RetrainPolicy().max_per_week


def test_a_typo_in_the_policy_names_the_file_the_field_and_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("min_gaps: 1h\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid RetrainPolicy: unknown field min_gaps (did you mean min_gap?)")
    assert all(name in message for name in RetrainPolicy.model_fields) and "\n" not in message


def test_a_bad_value_and_a_non_mapping_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("min_gap: soon\n")
    with pytest.raises(PolicyError, match=r"min_gap: .*not a duration"):
        load_policy(path)
    path.write_text("- 1h\n")
    with pytest.raises(PolicyError, match="a mapping of field: value"):
        load_policy(path)


def test_monitor_refuses_a_bad_policy_before_checking_anything(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("max_per_week: 0\n")
    result = CliRunner().invoke(main, ["monitor", "--simulate", "--once", "--policy", str(path)])
    assert result.exit_code == 2 and "max_per_week" in result.output


def test_no_drift_and_a_young_model_mean_nothing() -> None:
    assert decide(POLICY, Report("none"), History(), NOON).action == "nothing"


def test_high_priority_retrains_now() -> None:
    decision = decide(POLICY, Report("high"), History(), NOON)
    assert decision.action == "retrain" and "high" in decision.reason


def test_low_priority_waits_for_the_maintenance_window() -> None:
    decision = decide(POLICY, Report("low"), History(), NOON)
    assert decision.action == "wait" and decision.not_before == datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    assert decide(POLICY, Report("low"), History(), datetime(2026, 3, 3, 2, 30, tzinfo=UTC)).action == "retrain"


def test_medium_priority_waits_for_a_window_within_24h_else_retrains() -> None:
    fresh = History(drift_since=NOON)
    decision = decide(POLICY, Report("medium"), fresh, NOON)
    assert decision.action == "wait" and decision.not_before == datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    # Detected 20 h ago: the next window (14 h away) is past the 24 h deadline.
    late = History(drift_since=NOON - timedelta(hours=20))
    assert decide(POLICY, Report("medium"), late, NOON).action == "retrain"


def test_an_old_model_is_retrained_whatever_the_drift() -> None:
    decision = decide(POLICY, Report("none", model_age_days=31), History(), NOON)
    assert decision.action == "retrain" and decision.forced and "31.0 days old" in decision.reason
    never = POLICY.model_copy(update={"max_model_age": None})
    assert decide(never, Report("none", model_age_days=400), History(), NOON).action == "nothing"


def test_the_minimum_gap_holds_even_for_high_priority() -> None:
    history = History(attempts=(NOON - timedelta(hours=2),))
    decision = decide(POLICY, Report("high"), history, NOON)
    assert decision.action == "wait" and decision.not_before == NOON + timedelta(hours=4)
    assert decide(POLICY, Report("high"), history, NOON + timedelta(hours=4)).action == "retrain"


def test_the_weekly_maximum_counts_the_last_seven_days() -> None:
    attempts = tuple(NOON - timedelta(days=d) for d in (6, 4, 2))
    decision = decide(POLICY, Report("high"), History(attempts=attempts), NOON)
    assert decision.action == "wait" and "3 retrains in 7 days" in decision.reason
    assert decision.not_before == attempts[0] + timedelta(days=7)
    assert decide(POLICY, Report("high"), History(attempts=attempts), decision.not_before).action == "retrain"


def test_the_window_spans_midnight() -> None:
    late = RetrainPolicy(maintenance_start_hour=23, maintenance_hours=3)
    assert maintenance_window(late, datetime(2026, 3, 3, 1, 0, tzinfo=UTC)) == (
        True,
        datetime(2026, 3, 3, 23, 0, tzinfo=UTC),
    )
    assert not maintenance_window(late, datetime(2026, 3, 3, 2, 0, tzinfo=UTC))[0]


def test_history_comes_from_the_event_log(tmp_path: Path) -> None:
    events = EventLog(tmp_path / "events.jsonl")
    events.emit("drift_detected", priority="medium")
    events.emit("retrain_started")
    events.emit("verified")
    events.emit("drift_detected", priority="none")
    events.emit("drift_detected", priority="low")
    with (tmp_path / "events.jsonl").open("a") as fh:
        fh.write('{"torn": ')  # a crash mid-line: skipped
    records = list(events.read())
    history = History.from_events(records)
    assert len(history.attempts) == 1 and history.attempts[0] == datetime.fromisoformat(records[1]["time"])
    assert history.drift_since == datetime.fromisoformat(records[4]["time"])


def test_a_check_that_cannot_run_is_reported_and_the_monitor_carries_on(tmp_path: Path, mlflow_store: str) -> None:
    config = RetrainConfig(data=tmp_path / "missing", event_log=tmp_path / "events.jsonl")
    tick = check_once(POLICY, config, DriftConfig(track=False, progress_bar=False))
    assert tick.failed and tick.decision.action == "nothing" and "could not run" in tick.decision.reason
    assert not (tmp_path / "events.jsonl").exists()  # nothing detected, nothing retrained
    result = CliRunner().invoke(main, ["monitor", "--once", "--data", str(tmp_path / "missing"), "--no-progress"])
    assert result.exit_code == 1 and "could not run" in result.output
