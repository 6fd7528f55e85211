"""Running validation: reading the dataset, pre-checks GE cannot phrase readably, helper columns, the GE suite.

Pre-checks cover what GE cannot say readably at all (a deprecated name, an empty or non-Parquet file, pandas
string / tz-aware dtypes that GE's type check does not understand); helper columns turn cross-column rules
into columns plain GE expectations check (suites.HELPER_COLUMNS).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tftmon.contract import (
    COLUMNS_BY_NAME,
    CPU_PARTS,
    CPU_SUM_TOLERANCE,
    DEPRECATED_COLUMNS,
    JAVA_CPU,
    JAVA_CPU_BOUND,
    METRIC_PRESENT_FIX,
    METRIC_PRESENT_RULE,
    MIN_METRICS,
    PROFILE,
    PROFILE_FIX,
    PROFILE_RULE,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    TIMESTAMP,
    TIMESTAMP_FIX,
    TIMESTAMP_RULE,
    Column,
    deprecation_message,
    present_metrics,
    profile_conflicts,
    timestamp_bounds,
)
from tftmon.data.validate.report import (
    RESULT_FORMAT,
    Finding,
    ValidationReport,
    finding_from_result,
    precheck,
    run_with_data_docs,
)
from tftmon.data.validate.suites import (
    CPU_PARTS_SUM,
    HELPER_COLUMNS,
    JAVA_CPU_OK,
    SERVER_ID_OK,
    SUITES,
    TS_INCREASING,
    UNIQUE_SAMPLE,
    SuiteKind,
    expectation_specs,
    import_gx,
    suite_columns,
    suite_from_specs,
)
from tftmon.encoding import server_id
from tftmon.io import DatasetError, parquet_files, read_metrics

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult


def validate_path(
    path: Path | str,
    suite: SuiteKind | Literal["auto"] = "auto",
    strict: bool = False,
    docs_dir: Path | str | None = None,
) -> ValidationReport:
    """Validate a Parquet dataset (file or directory); unreadable input is a failure, never a traceback."""
    start = time.perf_counter()
    try:
        names = _column_names(Path(path))
        # Read only what the suite checks: other columns are judged by name alone.
        wanted = [n for n in names if n in COLUMNS_BY_NAME]
        text = [n for n in wanted if COLUMNS_BY_NAME[n].type == "string"]
        frame = read_metrics(Path(path), columns=wanted, categories=text)
    except DatasetError as exc:
        finding = precheck("readable_parquet", (), str(exc))
        return ValidationReport(
            False, suite, strict, 0, [finding], source=str(path), seconds=time.perf_counter() - start
        )
    report = _validate(frame, names, suite, strict, docs_dir)
    report.source = str(path)
    report.seconds = time.perf_counter() - start
    return report


def validate_frame(
    df: pd.DataFrame,
    suite: SuiteKind | Literal["auto"] = "auto",
    strict: bool = False,
    docs_dir: Path | str | None = None,
) -> ValidationReport:
    """Validate an in-memory frame (the caller's frame is never modified)."""
    start = time.perf_counter()
    report = _validate(df, [str(c) for c in df.columns], suite, strict, docs_dir)
    report.seconds = time.perf_counter() - start
    return report


def _column_names(path: Path) -> list[str]:
    """Column names of a dataset from the first file's Parquet footer, without reading any data."""
    files = parquet_files(path)
    try:
        return list(pq.read_schema(files[0]).names)
    except Exception:  # not Parquet: read_metrics raises the project's DatasetError with its fix
        return [str(c) for c in read_metrics(path).columns]


def resolve_suite(names: Iterable[str], suite: SuiteKind | Literal["auto"]) -> SuiteKind:
    """'auto' means simulated when the simulator's label column is there, else real telemetry."""
    if suite == "auto":
        return "simulated" if STATE in names else "telemetry"
    if suite not in SUITES:
        raise ValueError(f"suite must be auto, {' or '.join(SUITES)}; got {suite!r}")
    return suite


def _validate(
    df: pd.DataFrame,
    names: list[str],
    suite: SuiteKind | Literal["auto"],
    strict: bool,
    docs_dir: Path | str | None,
) -> ValidationReport:
    kind = resolve_suite(names, suite)
    failures, warnings = _name_checks(names, kind, strict)
    if kind == "telemetry" and len(present_metrics(names)) < MIN_METRICS:
        failures.append(precheck("has_metric", (), f"{METRIC_PRESENT_RULE}: {METRIC_PRESENT_FIX}"))
    rows = len(df)
    if rows == 0:
        failures.append(
            precheck(
                "not_empty", (), "dataset is empty (0 rows): generate or collect data first, or point at the right path"
            )
        )
        return ValidationReport(False, kind, strict, 0, failures, warnings)

    known = {c.name: c for c in suite_columns(kind)}
    present = [n for n in names if n in known and n in df.columns]
    usable = set(present)
    for name in present:
        problem = _logical_type_problem(df[name], known[name])
        if problem is not None:
            usable.discard(name)
            if problem:  # numeric columns are reported by GE's own type expectation
                failures.append(precheck("logical_type", (name,), problem, observed=str(df[name].dtype)))

    failures += _row_rule_prechecks(df, usable)
    frame = df[present].copy(deep=False)  # copy-on-write: helper columns never touch the caller's frame
    for helper, values in _derive_helpers(frame, usable).items():
        frame[helper] = values
    specs = [s for s in expectation_specs(kind, strict, present=names) if _applies(s, frame, usable)]
    result, docs_path = _run_gx(frame, kind, specs, docs_dir)
    failures += [finding_from_result(r, frame) for r in result.results if not r.success]
    return ValidationReport(not failures, kind, strict, rows, failures, warnings, docs_path=docs_path)


def _name_checks(names: list[str], kind: SuiteKind, strict: bool) -> tuple[list[Finding], list[Finding]]:
    """Deprecated names always fail; names outside the suite warn, or fail when strict."""
    failures = [precheck("deprecated_column", (n,), deprecation_message(n)) for n in names if n in DEPRECATED_COLUMNS]
    known = {c.name for c in suite_columns(kind)}
    unknown = [n for n in names if n not in known and n not in DEPRECATED_COLUMNS]
    extra = [
        precheck(
            "unknown_column", (n,), f"column {n} is not in the {kind} contract: drop or rename it (it is not validated)"
        )
        for n in unknown
    ]
    return (failures + extra, []) if strict else (failures, extra)


def _row_rule_prechecks(frame: pd.DataFrame, usable: set[str]) -> list[Finding]:
    """Rules the service applies with the same words: the contract's timestamp window (a bound that moves
    with the clock, so no static GE suite can hold it) and one profile per server."""
    findings = []
    if TIMESTAMP in usable:
        low, high = timestamp_bounds()
        ts = frame[TIMESTAMP]
        outside = ts.lt(pd.Timestamp(low)) | ts.gt(pd.Timestamp(high))
        if outside.any():
            observed = f"{int(outside.sum())} rows, e.g. {ts[outside].iloc[0].isoformat()}"
            findings.append(precheck("timestamp_range", (TIMESTAMP,), f"{TIMESTAMP_RULE}: {TIMESTAMP_FIX}", observed))
    if usable.issuperset((SERVER_NAME, PROFILE)):
        servers = profile_conflicts(frame[SERVER_NAME], frame[PROFILE])
        if servers:
            observed = f"{len(servers)} servers, e.g. {servers[0]}"
            fix = f"{PROFILE_RULE}: {PROFILE_FIX}"
            findings.append(precheck("one_profile_per_server", (SERVER_NAME, PROFILE), fix, observed))
    return findings


def _logical_type_problem(series: pd.Series, col: Column) -> str | None:
    """None if the dtype holds the column's logical type; '' if GE reports it; else the fix."""
    dtype = series.dtype
    if col.type == "timestamp":
        if isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC":
            return None
        return f"{col.name} must be a timezone-aware UTC timestamp: convert with pd.to_datetime(..., utc=True)"
    if col.type == "string":
        # str, object, string[pyarrow], or dictionary-encoded text read from Parquet as a category
        text = dtype.categories.dtype if isinstance(dtype, pd.CategoricalDtype) else dtype
        if pd.api.types.is_string_dtype(text):
            return None
        return f"{col.name} must be text (str): cast it to string when writing the Parquet"
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return None
    return ""


def _applies(spec: dict[str, Any], frame: pd.DataFrame, usable: set[str]) -> bool:
    """Which expectations run: existence always; value rules only on present columns of a usable dtype."""
    if spec["meta"]["rule"] == "exists":
        return True
    column = spec["kwargs"]["column"]
    if column not in frame.columns:
        return False
    return spec["meta"]["rule"] in ("not_null", "dtype") or column in usable or column in HELPER_COLUMNS


def _derive_helpers(frame: pd.DataFrame, usable: set[str]) -> dict[str, np.ndarray]:
    """Compute the HELPER_COLUMNS whose sources are present with a usable dtype; NaN/NaT rows pass here
    (the not-null expectations report them) so one bad value is not reported twice."""
    helpers: dict[str, np.ndarray] = {}
    if usable.issuperset(CPU_PARTS):
        first, *rest = (frame[c].to_numpy(dtype=float) for c in CPU_PARTS)
        helpers[CPU_PARTS_SUM] = sum(rest, first)
    if usable.issuperset(HELPER_COLUMNS[JAVA_CPU_OK][0]):
        java = frame[JAVA_CPU].to_numpy(dtype=float)
        bound = sum(frame[c].to_numpy(dtype=float) for c in JAVA_CPU_BOUND)
        helpers[JAVA_CPU_OK] = ~(java > bound + CPU_SUM_TOLERANCE)
    if SERVER_NAME not in usable:
        return helpers
    codes, names = pd.factorize(frame[SERVER_NAME])
    if SERVER_ID in usable:
        helpers[SERVER_ID_OK] = _server_id_matches(codes, names, frame[SERVER_ID])
    if TIMESTAMP in usable:
        helpers[TS_INCREASING], helpers[UNIQUE_SAMPLE] = _time_order(codes, frame[TIMESTAMP])
    return helpers


def _server_id_matches(codes: np.ndarray, names: Iterable[Any], ids: pd.Series) -> np.ndarray:
    """Hash each distinct name once (not per row), then compare integer codes."""
    id_codes, id_values = pd.factorize(ids)
    position = {value: i for i, value in enumerate(id_values)}
    expected = np.array([position.get(_expected_id(n), -2) for n in names] + [-1], dtype=np.int64)
    return (expected[codes] == id_codes) | (id_codes < 0)


def _expected_id(name: Any) -> str | None:
    try:
        return server_id(str(name))
    except ValueError:  # empty hostname: no id can match
        return None


def _time_order(codes: np.ndarray, timestamps: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(strictly later than the same server's previous row, unique per server and time)."""
    n = len(codes)
    ts = timestamps.array.asi8
    nat = np.iinfo(np.int64).min
    # Small integer codes make the stable sort a radix sort (fast); file order is kept within a server.
    small = codes.astype(np.int16) if len(codes) and codes.max() < np.iinfo(np.int16).max else codes
    order = np.argsort(small, kind="stable")
    c, t = codes[order], ts[order]
    increasing = np.ones(n, dtype=bool)
    increasing[order[1:]] = (c[1:] != c[:-1]) | (t[1:] > t[:-1]) | (t[1:] == nat) | (t[:-1] == nat)
    unique = np.ones(n, dtype=bool)
    if not increasing.all():  # strictly increasing per server implies unique; only sort fully otherwise
        order = np.lexsort((ts, codes))
        c, t = codes[order], ts[order]
        dup = (c[1:] == c[:-1]) & (t[1:] == t[:-1]) & (t[1:] != nat)
        unique[order[1:][dup]] = False
        unique[order[:-1][dup]] = False
    return increasing, unique


def _run_gx(
    frame: pd.DataFrame, kind: SuiteKind, specs: list[dict[str, Any]], docs_dir: Path | str | None
) -> tuple[ExpectationSuiteValidationResult, Path | None]:
    """Run the suite on the frame in a throw-away (ephemeral) context; build static Data Docs if asked."""
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("tftmon")
        .add_dataframe_asset(f"{kind}_data")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(suite_from_specs(kind, specs))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"tftmon_{kind}_validation", data=batch, suite=suite)
    )
    params = {"dataframe": frame}
    with _no_batch_fingerprint():
        if docs_dir is None:
            return definition.run(batch_parameters=params, result_format=RESULT_FORMAT), None
        return run_with_data_docs(context, definition, kind, params, docs_dir)


@contextmanager
def _no_batch_fingerprint() -> Iterator[None]:
    """GE fingerprints every in-memory batch under 1 GB with an md5 of the whole frame (~0.6 s per million
    rows); we never use that fingerprint, so it is off while our suite runs, and GE is left as it was after."""
    from great_expectations.execution_engine import pandas_execution_engine

    saved = pandas_execution_engine.HASH_THRESHOLD
    pandas_execution_engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        pandas_execution_engine.HASH_THRESHOLD = saved
