"""Dataset validation against the data contract: generated Great Expectations suites (suites), pre-checks and the
suite run (run), and a readable report with Data Docs (report)."""

from tftmon.data.validate.report import Finding, ValidationReport
from tftmon.data.validate.run import resolve_suite, validate_frame, validate_path
from tftmon.data.validate.suites import (
    EXPECTATIONS_DIR,
    SUITES,
    SuiteKind,
    build_suite,
    expectation_files,
    expectation_specs,
    suite_json,
)

__all__ = [
    "EXPECTATIONS_DIR",
    "SUITES",
    "Finding",
    "SuiteKind",
    "ValidationReport",
    "build_suite",
    "expectation_files",
    "expectation_specs",
    "resolve_suite",
    "suite_json",
    "validate_frame",
    "validate_path",
]
