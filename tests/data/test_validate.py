"""tftmon.data.validate against real Great Expectations and real Parquet files: good data passes, each kind of
bad data fails with a message that names the column, the rule and the fix."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tftmon.contract import (
    CPU_IDLE,
    CPU_PARTS,
    JAVA_CPU,
    METRICS,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    TIMESTAMP,
    deprecation_message,
)
from tftmon.data.validate import (
    EXPECTATIONS_DIR,
    SUITES,
    Finding,
    ValidationReport,
    suite_json,
    validate_frame,
    validate_path,
)

Writer = Callable[[pd.DataFrame], Path]


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    """Write a frame as a real Parquet file, like `tftmon generate` or a collector would."""

    def _write(df: pd.DataFrame) -> Path:
        path = tmp_path / "metrics.parquet"
        df.to_parquet(path, index=False)
        return path

    return _write


def only_failure(report: ValidationReport, rule: str) -> Finding:
    """The report failed, and exactly one failure is of this rule."""
    assert not report.success
    found = [f for f in report.failures if f.rule == rule]
    assert len(found) == 1, report.to_text()
    return found[0]


def rules(report: ValidationReport) -> set[str]:
    return {f.rule for f in report.failures}


# ---------------------------------------------------------------------------------------------
# Good data
# ---------------------------------------------------------------------------------------------


def test_valid_frame_passes_both_suites(frame: pd.DataFrame, write: Writer) -> None:
    path = write(frame)
    report = validate_path(path, strict=True)
    assert report.success, report.to_text()
    assert (report.suite, report.rows, report.failures, report.warnings) == ("simulated", len(frame), [], [])
    telemetry = validate_path(path, suite="telemetry")
    # the label is not part of real telemetry: tolerated with a warning, never an input
    assert telemetry.success, telemetry.to_text()
    assert [w.columns for w in telemetry.warnings] == [(STATE,)]


def test_telemetry_without_state_passes_telemetry_suite(make_frame: Callable, write: Writer) -> None:
    telemetry = make_frame(state=False)
    report = validate_path(write(telemetry))
    assert report.success and report.suite == "telemetry", report.to_text()
    # the optional identity columns may be absent unless strict
    minimal = telemetry.drop(columns=[SERVER_ID, "profile"])
    assert validate_frame(minimal).success
    strict = validate_frame(minimal, strict=True)
    assert {f.columns for f in strict.failures} == {(SERVER_ID,), ("profile",)}
    assert rules(strict) == {"exists"}


def test_simulated_dataset_passes_strict_validation() -> None:
    if importlib.util.find_spec("tftmon.data.simulate") is None:
        pytest.skip("tftmon.data.simulate is not written yet: nothing to simulate")
    from tftmon.config import SimulationConfig
    from tftmon.data.simulate import simulate

    data = simulate(SimulationConfig(servers=12, hours=12, seed=7, scenario="critical"))
    report = validate_frame(data, strict=True)
    assert report.success and report.suite == "simulated", report.to_text()


def test_dictionary_encoded_text_is_text(frame: pd.DataFrame) -> None:
    text = [SERVER_NAME, SERVER_ID, "profile", STATE]
    frame[text] = frame[text].astype("category")
    assert validate_frame(frame, strict=True).success


def test_caller_frame_is_not_modified(frame: pd.DataFrame) -> None:
    before = frame.copy()
    validate_frame(frame)
    pd.testing.assert_frame_equal(frame, before)


# ---------------------------------------------------------------------------------------------
# Bad data: each failure names column, rule and fix
# ---------------------------------------------------------------------------------------------


def test_deprecated_column_is_rejected_with_its_replacement(frame: pd.DataFrame, write: Writer) -> None:
    frame["cpu_pct"] = 100 - frame[CPU_IDLE]
    failure = only_failure(validate_path(write(frame)), "deprecated_column")
    assert failure.columns == ("cpu_pct",)
    assert failure.message == deprecation_message("cpu_pct")
    assert "cpu_user_pct / cpu_sys_pct" in failure.message


def test_missing_column(frame: pd.DataFrame, write: Writer) -> None:
    failure = only_failure(validate_path(write(frame.drop(columns="mem_used_pct"))), "exists")
    assert failure.columns == ("mem_used_pct",)
    assert failure.expectation == "expect_column_to_exist"
    assert failure.message.startswith("column mem_used_pct is missing: add it")


def test_unknown_state(frame: pd.DataFrame, write: Writer) -> None:
    frame.loc[[2, 5], STATE] = "exploded"
    failure = only_failure(validate_path(write(frame)), "allowed_values")
    assert failure.columns == (STATE,)
    assert (failure.unexpected_count, failure.samples) == (2, ("exploded", "exploded"))
    assert "state must be one of healthy, idle" in failure.message


def test_percentage_above_100(frame: pd.DataFrame, write: Writer) -> None:
    frame.loc[[1, 4, 9], "cpu_user_pct"] = 130.0
    report = validate_path(write(frame))
    failure = only_failure(report, "range")
    assert failure.columns == ("cpu_user_pct",)
    assert failure.message.startswith("cpu_user_pct must be within 0–100 %: clip or fix the collector; 3 rows")
    assert "e.g. 130.0" in failure.message


def test_nans_are_reported_once_as_nulls(frame: pd.DataFrame, write: Writer) -> None:
    frame.loc[[0, 7], "cpu_sys_pct"] = np.nan
    report = validate_path(write(frame))
    failure = only_failure(report, "not_null")
    assert failure.columns == ("cpu_sys_pct",) and failure.unexpected_count == 2
    assert "cpu_sys_pct must not be null" in failure.message
    assert rules(report) == {"not_null"}  # the CPU sum and java bound skip the missing value


def test_float_connection_counts(frame: pd.DataFrame, write: Writer) -> None:
    frame["back_close_wait"] = frame["back_close_wait"].astype(float) + 0.5
    failure = only_failure(validate_path(write(frame)), "dtype")
    assert failure.columns == ("back_close_wait",) and failure.observed == "float64"
    assert "back_close_wait must be an integer count (int64)" in failure.message


def test_duplicate_timestamps(frame: pd.DataFrame, write: Writer) -> None:
    duplicated = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    report = validate_path(write(duplicated))
    failure = only_failure(report, "unique_sample")
    assert failure.columns == (SERVER_NAME, TIMESTAMP) and failure.unexpected_count == 2
    name = frame.loc[3, SERVER_NAME]
    assert failure.samples[0] == f"{SERVER_NAME}={name} {TIMESTAMP}={frame.loc[3, TIMESTAMP].isoformat()}"
    assert "must be unique: drop the duplicate samples" in failure.message


def test_timestamps_not_increasing_within_a_server(frame: pd.DataFrame, write: Writer) -> None:
    rows = frame.index[frame[SERVER_NAME] == frame.loc[0, SERVER_NAME]][[2, 3]]
    frame.loc[rows, TIMESTAMP] = frame.loc[rows[::-1], TIMESTAMP].to_numpy()  # swap two samples
    report = validate_path(write(frame))
    failure = only_failure(report, "increasing_in_server")
    assert failure.unexpected_count == 1 and rules(report) == {"increasing_in_server"}
    assert "timestamp must be strictly increasing within each server" in failure.message


def test_cpu_parts_summing_to_140(frame: pd.DataFrame, write: Writer) -> None:
    frame.loc[[6], CPU_IDLE] += 40.0
    failure = only_failure(validate_path(write(frame)), "cpu_sum")
    assert failure.columns == CPU_PARTS and failure.samples == (pytest.approx(140.0),)
    assert f"{' + '.join(CPU_PARTS)} must equal 100 ± 0.01 %" in failure.message
    assert "e.g. 140.0" in failure.message


def test_java_cpu_above_user_plus_sys(frame: pd.DataFrame, write: Writer) -> None:
    frame.loc[8, JAVA_CPU] = frame.loc[8, "cpu_user_pct"] + frame.loc[8, "cpu_sys_pct"] + 5
    failure = only_failure(validate_path(write(frame)), "java_cpu_bound")
    assert failure.columns[0] == JAVA_CPU and f"{JAVA_CPU}=" in failure.samples[0]


def test_wrong_server_id(frame: pd.DataFrame, write: Writer) -> None:
    frame.loc[frame[SERVER_NAME] == frame.loc[1, SERVER_NAME], SERVER_ID] = "0123456789abcdef"
    failure = only_failure(validate_path(write(frame)), "server_id_hash")
    assert failure.columns == (SERVER_NAME, SERVER_ID)
    assert failure.samples[0] == f"{SERVER_NAME}={frame.loc[1, SERVER_NAME]} {SERVER_ID}=0123456789abcdef"
    assert "server_id must equal tftmon.encoding.server_id(server_name)" in failure.message


def test_naive_timestamps(frame: pd.DataFrame, write: Writer) -> None:
    frame[TIMESTAMP] = frame[TIMESTAMP].dt.tz_localize(None)
    failure = only_failure(validate_path(write(frame)), "logical_type")
    assert failure.columns == (TIMESTAMP,) and "timezone-aware UTC" in failure.message


def test_empty_file(frame: pd.DataFrame, write: Writer) -> None:
    report = validate_path(write(frame.iloc[:0]))
    assert not report.success and report.rows == 0
    assert "dataset is empty" in only_failure(report, "not_empty").message


def test_file_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "metrics.parquet"
    path.write_text("timestamp,server_name\n2026-01-05,ppweb001\n")
    failure = only_failure(validate_path(path), "readable_parquet")
    assert str(path) in failure.message and "write data as Parquet" in failure.message


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file" in only_failure(validate_path(tmp_path / "nope"), "readable_parquet").message


def test_unknown_column_warns_and_fails_when_strict(frame: pd.DataFrame) -> None:
    frame["rack"] = "r1"
    relaxed = validate_frame(frame)
    assert relaxed.success and [w.rule for w in relaxed.warnings] == ["unknown_column"]
    strict = validate_frame(frame, strict=True)
    assert only_failure(strict, "unknown_column").columns == ("rack",)


def test_negative_metrics_are_out_of_range(frame: pd.DataFrame) -> None:
    columns = [m for m in METRICS if m not in CPU_PARTS]  # the CPU split has its own sum rule
    for row, column in enumerate(columns):
        frame.loc[row, column] = -1
    report = validate_frame(frame)
    assert rules(report) == {"range"}
    assert {f.columns: (f.unexpected_count, f.samples) for f in report.failures} == {(c,): (1, (-1,)) for c in columns}


# ---------------------------------------------------------------------------------------------
# Report and Data Docs
# ---------------------------------------------------------------------------------------------


def test_report_text_json_and_data_docs(frame: pd.DataFrame, write: Writer, tmp_path: Path) -> None:
    frame.loc[0, "mem_used_pct"] = 130.0
    report = validate_path(write(frame), docs_dir=tmp_path / "docs")
    assert report.docs_path == tmp_path / "docs" / "index.html" and report.docs_path.is_file()
    assert any(p.suffix == ".html" for p in (tmp_path / "docs" / "validations").rglob("*"))
    data = json.loads(report.to_json())
    assert data["success"] is False and data["failures"][0]["columns"] == ["mem_used_pct"]
    assert data["failures"][0]["message"].endswith("e.g. 130.0")
    text = report.to_text()
    assert text.startswith("validation FAILED (1 problems): simulated suite") and "mem_used_pct" in text


# ---------------------------------------------------------------------------------------------
# Committed suites match the contract
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SUITES)
def test_committed_expectations_match_the_contract(kind: str) -> None:
    committed = EXPECTATIONS_DIR / f"{kind}.json"
    assert committed.is_file(), "run `tftmon contract --expectations` to generate expectations/"
    assert committed.read_text() == suite_json(kind), (
        f"{committed} differs from the contract: regenerate with `tftmon contract --expectations`"
    )


# ---------------------------------------------------------------------------------------------
# Real telemetry carries the metrics it has
# ---------------------------------------------------------------------------------------------

IDENTITY = [TIMESTAMP, SERVER_NAME, SERVER_ID, "profile"]


@pytest.mark.parametrize("metrics", [["cpu_user_pct"], ["cpu_user_pct", "mem_used_pct"]], ids=["cpu", "cpu+memory"])
def test_telemetry_with_some_metrics_passes_strict_validation(
    make_frame: Callable, write: Writer, metrics: list[str]
) -> None:
    subset = make_frame(state=False)[IDENTITY + metrics]
    report = validate_path(write(subset), strict=True)
    assert report.success and report.suite == "telemetry", report.to_text()
    # the metric present is still checked against the contract
    subset.loc[3, metrics[-1]] = 130.0
    assert only_failure(validate_frame(subset, strict=True), "range").columns == (metrics[-1],)


def test_cpu_sum_rule_applies_only_when_all_four_parts_are_present(make_frame: Callable) -> None:
    telemetry = make_frame(state=False)
    telemetry.loc[6, CPU_IDLE] += 40.0
    assert only_failure(validate_frame(telemetry), "cpu_sum").columns == CPU_PARTS
    three = telemetry.drop(columns=[CPU_PARTS[1], JAVA_CPU])  # user + iowait + idle need not add up to anything
    assert validate_frame(three, strict=True).success, validate_frame(three).to_text()


def test_no_metric_at_all_is_one_clear_finding(make_frame: Callable) -> None:
    report = validate_frame(make_frame(state=False)[IDENTITY], strict=True)
    failure = only_failure(report, "has_metric")
    assert report.failures == [failure]
    assert "at least 1 contract metric" in failure.message and "cpu_user_pct" in failure.message
