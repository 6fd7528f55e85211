"""Great Expectations suites generated from the contract (expectations/*.json) and the helper columns they check.

The suites are *generated* from tftmon.contract (expectation_files), so a contract change without regenerating
them fails a test instead of silently validating old rules. Rules GE cannot phrase over the raw columns (a sum
of four columns, an order within each server, a hash of another column) become derived helper columns
(HELPER_COLUMNS, computed in run.py) that plain GE expectations then check.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from tftmon.contract import (
    COLUMNS,
    CONTRACT_VERSION,
    CPU_PARTS,
    CPU_SUM_FIX,
    CPU_SUM_RULE,
    CPU_SUM_TOLERANCE,
    JAVA_CPU,
    JAVA_CPU_BOUND,
    PROFILE,
    PROFILE_NAMES,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    STATES,
    TIMESTAMP,
    Column,
    required_columns,
)

if TYPE_CHECKING:
    from great_expectations.core.expectation_suite import ExpectationSuite

SuiteKind = Literal["simulated", "telemetry"]
SUITES: tuple[SuiteKind, ...] = ("simulated", "telemetry")
#: The repository's expectations/ folder (this file is tftmon/data/validate/suites.py).
EXPECTATIONS_DIR = Path(__file__).resolve().parents[3] / "expectations"

#: numpy dtypes accepted per numeric logical type (GE's type check compares numpy dtypes exactly).
_NUMERIC_DTYPES: dict[str, tuple[str, ...]] = {
    "int": ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"),
    "float": ("float32", "float64"),
}

# Derived helper columns: the one place that defines them (computed in run._derive_helpers).
CPU_PARTS_SUM = "_cpu_parts_sum"
JAVA_CPU_OK = "_java_cpu_within_user_sys"
SERVER_ID_OK = "_server_id_matches_name"
TS_INCREASING = "_ts_increasing_in_server"
UNIQUE_SAMPLE = "_server_timestamp_unique"
HELPER_COLUMNS: dict[str, tuple[tuple[str, ...], str]] = {
    CPU_PARTS_SUM: (CPU_PARTS, "row sum of the CPU split; GE checks it lies within 100 ± tolerance"),
    JAVA_CPU_OK: ((JAVA_CPU, *JAVA_CPU_BOUND), "java_cpu_pct <= user + sys (+ tolerance), per row"),
    SERVER_ID_OK: ((SERVER_NAME, SERVER_ID), "server_id equals encoding.server_id(server_name)"),
    TS_INCREASING: ((SERVER_NAME, TIMESTAMP), "timestamp is later than the server's previous row"),
    UNIQUE_SAMPLE: ((SERVER_NAME, TIMESTAMP), "no other row has the same server_name and timestamp"),
}


def import_gx() -> ModuleType:
    """Import Great Expectations on first use: it costs ~4 s that `tftmon --help` should not pay."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    return gx


def suite_columns(kind: SuiteKind) -> tuple[Column, ...]:
    """Contract columns a suite knows; telemetry never has the simulator's label."""
    return tuple(c for c in COLUMNS if kind == "simulated" or c.role != "label")


def _spec(rule: str, gx_type: str, columns: Sequence[str], fix: str, **kwargs: Any) -> dict[str, Any]:
    """One expectation config; meta carries the rule, the contract columns and the fix (GE renders notes)."""
    return {"type": gx_type, "kwargs": kwargs, "meta": {"columns": list(columns), "notes": fix, "rule": rule}}


def _range_text(col: Column) -> str:
    unit = f" {col.unit}" if col.unit else ""
    if col.max is None:
        return f"≥ {col.min:g}{unit}"
    return f"within {col.min:g}–{col.max:g}{unit}"


def _column_specs(col: Column, required: bool) -> list[dict[str, Any]]:
    name = col.name
    specs = []
    if required:
        specs.append(
            _spec(
                "exists",
                "expect_column_to_exist",
                [name],
                f"column {name} is missing: add it "
                f"({col.description.rstrip('.')}) or rename the source field to {name}",
                column=name,
            )
        )
    specs.append(
        _spec(
            "not_null",
            "expect_column_values_to_not_be_null",
            [name],
            f"{name} must not be null: fix the collector or drop the incomplete rows",
            column=name,
        )
    )
    if col.type in _NUMERIC_DTYPES:
        kind = "an integer count" if col.type == "int" else "a float"
        specs.append(
            _spec(
                "dtype",
                "expect_column_values_to_be_in_type_list",
                [name],
                f"{name} must be {kind} ({col.pandas_dtype}): cast it when writing the Parquet",
                column=name,
                type_list=list(_NUMERIC_DTYPES[col.type]),
            )
        )
    if col.min is not None or col.max is not None:
        bounds = {"min_value": col.min, "max_value": col.max}
        specs.append(
            _spec(
                "range",
                "expect_column_values_to_be_between",
                [name],
                f"{name} must be {_range_text(col)}: clip or fix the collector",
                column=name,
                **{k: v for k, v in bounds.items() if v is not None},
            )
        )
    allowed = {STATE: STATES, PROFILE: PROFILE_NAMES}.get(name)
    if allowed is not None:
        specs.append(
            _spec(
                "allowed_values",
                "expect_column_values_to_be_in_set",
                [name],
                f"{name} must be one of {', '.join(allowed)}: map other labels to these",
                column=name,
                value_set=list(allowed),
            )
        )
    return specs


def _cross_column_specs() -> list[dict[str, Any]]:
    bound = " + ".join(JAVA_CPU_BOUND)
    return [
        _spec(
            "cpu_sum",
            "expect_column_values_to_be_between",
            CPU_PARTS,
            f"{CPU_SUM_RULE}: {CPU_SUM_FIX}",
            column=CPU_PARTS_SUM,
            min_value=100 - CPU_SUM_TOLERANCE,
            max_value=100 + CPU_SUM_TOLERANCE,
        ),
        _spec(
            "java_cpu_bound",
            "expect_column_values_to_be_in_set",
            (JAVA_CPU, *JAVA_CPU_BOUND),
            f"{JAVA_CPU} must not exceed {bound} (JVM CPU is part of them): clip it to their sum",
            column=JAVA_CPU_OK,
            value_set=[True],
        ),
        _spec(
            "server_id_hash",
            "expect_column_values_to_be_in_set",
            (SERVER_NAME, SERVER_ID),
            f"{SERVER_ID} must equal tftmon.encoding.server_id({SERVER_NAME}): regenerate it or drop the "
            "column (it is derived when absent)",
            column=SERVER_ID_OK,
            value_set=[True],
        ),
        _spec(
            "unique_sample",
            "expect_column_values_to_be_in_set",
            (SERVER_NAME, TIMESTAMP),
            f"({SERVER_NAME}, {TIMESTAMP}) must be unique: drop the duplicate samples",
            column=UNIQUE_SAMPLE,
            value_set=[True],
        ),
        _spec(
            "increasing_in_server",
            "expect_column_values_to_be_in_set",
            (SERVER_NAME, TIMESTAMP),
            f"{TIMESTAMP} must be strictly increasing within each server: sort by {SERVER_NAME}, "
            f"{TIMESTAMP} and drop repeated samples",
            column=TS_INCREASING,
            value_set=[True],
        ),
    ]


def expectation_specs(
    kind: SuiteKind, strict: bool = False, present: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """Expectation configs of a suite, in a stable order.

    Strict makes every identity and label column of the suite required, and every metric of simulated data
    (real telemetry carries the metrics it has). With `present` (a dataset's columns), the suite is the
    one for that dataset: checks of absent columns, and rules across columns not all present (the CPU
    split's sum needs all four parts), are left out; existence checks stay.
    """
    columns = suite_columns(kind)
    required = set(required_columns(kind))
    if strict:
        required |= {c.name for c in columns if kind == "simulated" or c.role != "metric"}
    specs = [s for col in columns for s in _column_specs(col, col.name in required)] + _cross_column_specs()
    if present is None:
        return specs
    return [s for s in specs if s["meta"]["rule"] == "exists" or set(s["meta"]["columns"]) <= set(present)]


def build_suite(kind: SuiteKind, strict: bool = False) -> ExpectationSuite:
    """The GE suite for simulated data or real telemetry, derived from the contract."""
    return suite_from_specs(kind, expectation_specs(kind, strict))


def suite_from_specs(kind: SuiteKind, specs: list[dict[str, Any]]) -> ExpectationSuite:
    """A named suite of these expectation configs; refuses any that GE would skip."""
    gx = import_gx()
    suite = gx.ExpectationSuite(
        name=f"tftmon_{kind}",
        expectations=specs,
        meta={"contract_version": CONTRACT_VERSION, "generated_by": "tftmon contract --expectations"},
    )
    if len(suite.expectations) != len(specs):  # GE logs and skips invalid configs; refuse instead
        raise RuntimeError(f"Great Expectations rejected {len(specs) - len(suite.expectations)} expectations")
    return suite


def suite_json(kind: SuiteKind) -> str:
    """Deterministic JSON of a suite: no random ids or GE version, sorted keys, so diffs show contract changes."""
    data: dict[str, Any] = build_suite(kind).to_json_dict()
    data.pop("id", None)
    data["meta"].pop("great_expectations_version", None)
    for exp in data["expectations"]:
        exp.pop("id", None)
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expectation_files() -> dict[str, str]:
    """expectations/<kind>.json as generated from the contract; `tftmon contract --expectations` writes them."""
    return {f"{kind}.json": suite_json(kind) for kind in SUITES}
