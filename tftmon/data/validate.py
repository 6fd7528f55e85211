"""Dataset validation: Great Expectations suites generated from the contract, plus readable pre-checks.

Why this shape:
- The suites in expectations/*.json are *generated* from tftmon.contract (expectation_files), so a
  contract change without regenerating them fails a test instead of silently validating old rules.
- Some contract rules cannot be phrased by GE over the raw columns (a sum of four columns, an order
  within each server, a hash of another column). Those become derived helper columns (HELPER_COLUMNS,
  computed in _derive_helpers with vectorised numpy) that plain GE expectations then check.
- Some problems GE cannot phrase readably at all (a deprecated name, an empty or non-Parquet file, pandas
  string / tz-aware dtypes that GE's type check does not understand): those are pre-checks. Every
  problem, from GE or a pre-check, ends up in one ValidationReport with a plain-words fix; no tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tftmon.contract import (
    COLUMNS,
    COLUMNS_BY_NAME,
    CONTRACT_VERSION,
    CPU_PARTS,
    CPU_SUM_TOLERANCE,
    DEPRECATED_COLUMNS,
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
    deprecation_message,
    required_columns,
)
from tftmon.encoding import server_id
from tftmon.io import DatasetError, parquet_files, read_metrics

if TYPE_CHECKING:
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult

SuiteKind = Literal["simulated", "telemetry"]
SUITES: tuple[SuiteKind, ...] = ("simulated", "telemetry")
EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"

#: Samples of bad values per failure: enough to recognise the problem, short enough for a terminal.
MAX_SAMPLES = 5
#: BASIC gives the counts and a short list of bad values: all a report needs. SUMMARY would also compute
#: unexpected index lists and queries, filtering the whole frame per expectation (3x slower on 10 M rows).
RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": MAX_SAMPLES}

#: numpy dtypes accepted per numeric logical type (GE's type check compares numpy dtypes exactly).
_NUMERIC_DTYPES: dict[str, tuple[str, ...]] = {
    "int": ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"),
    "float": ("float32", "float64"),
}

# Derived helper columns: the one place that defines them (computed in _derive_helpers).
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


def _gx() -> ModuleType:
    """Import Great Expectations on first use: it costs ~4 s that `tftmon --help` should not pay."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.execution_engine import pandas_execution_engine

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    # GE fingerprints every in-memory batch under 1 GB with an md5 of the whole frame (~0.6 s per million
    # rows); we never use that fingerprint, so switch it off for every size.
    pandas_execution_engine.HASH_THRESHOLD = 0
    return gx


# ---------------------------------------------------------------------------------------------
# Suites generated from the contract
# ---------------------------------------------------------------------------------------------


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
    parts = " + ".join(CPU_PARTS)
    bound = " + ".join(JAVA_CPU_BOUND)
    return [
        _spec(
            "cpu_sum",
            "expect_column_values_to_be_between",
            CPU_PARTS,
            f"{parts} must equal 100 ± {CPU_SUM_TOLERANCE:g} %: rescale the CPU split so its parts add up to 100",
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


def expectation_specs(kind: SuiteKind, strict: bool = False) -> list[dict[str, Any]]:
    """Expectation configs of a suite, in a stable order; strict makes every suite column required."""
    required = {c.name for c in suite_columns(kind)} if strict else set(required_columns(kind))
    specs = [s for col in suite_columns(kind) for s in _column_specs(col, col.name in required)]
    return specs + _cross_column_specs()


def build_suite(kind: SuiteKind, strict: bool = False) -> ExpectationSuite:
    """The GE suite for simulated data or real telemetry, derived from the contract."""
    return _suite_from_specs(kind, expectation_specs(kind, strict))


def _suite_from_specs(kind: SuiteKind, specs: list[dict[str, Any]]) -> ExpectationSuite:
    gx = _gx()
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
    data = build_suite(kind).to_json_dict()
    data.pop("id", None)
    data["meta"].pop("great_expectations_version", None)
    for exp in data["expectations"]:
        exp.pop("id", None)
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expectation_files() -> dict[str, str]:
    """expectations/<kind>.json as generated from the contract; `tftmon contract --expectations` writes them."""
    return {f"{kind}.json": suite_json(kind) for kind in SUITES}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One broken rule: what, where, how much, examples, and the fix in plain words.

    `expectation` is the GE expectation type, or tftmon.<rule> for a pre-check GE cannot phrase;
    `rule` is the short contract rule id (range, cpu_sum, deprecated_column, ...).
    """

    expectation: str
    rule: str
    columns: tuple[str, ...]
    fix: str
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    samples: tuple[Any, ...] = ()
    observed: str | None = None

    @property
    def message(self) -> str:
        text = self.fix
        if self.unexpected_count is not None:
            pct = f" ({self.unexpected_percent:.3g} %)" if self.unexpected_percent is not None else ""
            noun = "row" if self.unexpected_count == 1 else "rows"
            text += f"; {self.unexpected_count:,} {noun}{pct}"
        if self.samples:
            text += ", e.g. " + "; ".join(_format(s) for s in self.samples)
        if self.observed is not None:
            text += f"; observed {self.observed}"
        return text


@dataclass
class ValidationReport:
    """Outcome of one validation; failures make it unsuccessful, warnings never do."""

    success: bool
    suite: str
    strict: bool
    rows: int
    failures: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    source: str | None = None
    docs_path: Path | None = None
    seconds: float = 0.0
    contract_version: str = CONTRACT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("failures", "warnings"):
            for finding, entry in zip(getattr(self, key), data[key], strict=True):
                entry["columns"] = list(finding.columns)
                entry["samples"] = [_jsonable(s) for s in finding.samples]
                entry["message"] = finding.message
        data["docs_path"] = str(self.docs_path) if self.docs_path else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_text(self) -> str:
        """Terminal report: a verdict line, then one line per failure and warning."""
        verdict = "PASSED" if self.success else f"FAILED ({len(self.failures)} problems)"
        mode = " (strict)" if self.strict else ""
        lines = [
            f"validation {verdict}: {self.suite} suite{mode}, {self.rows:,} rows"
            + (f", {self.source}" if self.source else "")
            + f" [contract {self.contract_version}, {self.seconds:.1f} s]"
        ]
        for mark, findings in (("✗", self.failures), ("!", self.warnings)):
            lines += [f"  {mark} {', '.join(f.columns) or '-'} [{f.expectation}]: {f.message}" for f in findings]
        if self.docs_path:
            lines.append(f"  Data Docs: {self.docs_path}")
        return "\n".join(lines)


def _precheck(rule: str, columns: tuple[str, ...], fix: str, observed: str | None = None) -> Finding:
    return Finding(f"tftmon.{rule}", rule, columns, fix, observed=observed)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


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
        finding = _precheck("readable_parquet", (), str(exc))
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
    rows = len(df)
    if rows == 0:
        failures.append(
            _precheck(
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
                failures.append(_precheck("logical_type", (name,), problem, observed=str(df[name].dtype)))

    frame = df[present].copy(deep=False)  # copy-on-write: helper columns never touch the caller's frame
    for helper, values in _derive_helpers(frame, usable).items():
        frame[helper] = values
    specs = [s for s in expectation_specs(kind, strict) if _applies(s, frame, usable)]
    result, docs_path = _run_gx(frame, kind, specs, docs_dir)
    failures += [_finding(r, frame) for r in result.results if not r.success]
    return ValidationReport(not failures, kind, strict, rows, failures, warnings, docs_path=docs_path)


def _name_checks(names: list[str], kind: SuiteKind, strict: bool) -> tuple[list[Finding], list[Finding]]:
    """Deprecated names always fail; names outside the suite warn, or fail when strict."""
    failures = [_precheck("deprecated_column", (n,), deprecation_message(n)) for n in names if n in DEPRECATED_COLUMNS]
    known = {c.name for c in suite_columns(kind)}
    unknown = [n for n in names if n not in known and n not in DEPRECATED_COLUMNS]
    extra = [
        _precheck(
            "unknown_column", (n,), f"column {n} is not in the {kind} contract: drop or rename it (it is not validated)"
        )
        for n in unknown
    ]
    return (failures + extra, []) if strict else (failures, extra)


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


# ---------------------------------------------------------------------------------------------
# Helper columns (vectorised: 10 M rows must validate in seconds)
# ---------------------------------------------------------------------------------------------


def _derive_helpers(frame: pd.DataFrame, usable: set[str]) -> dict[str, np.ndarray]:
    """Compute the HELPER_COLUMNS whose sources are present with a usable dtype; NaN/NaT rows pass here
    (the not-null expectations report them) so one bad value is not reported twice."""
    helpers: dict[str, np.ndarray] = {}
    if usable.issuperset(CPU_PARTS):
        helpers[CPU_PARTS_SUM] = sum(frame[c].to_numpy(dtype=float) for c in CPU_PARTS)
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


def _server_id_matches(codes: np.ndarray, names: Sequence[str], ids: pd.Series) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# Great Expectations run and result translation
# ---------------------------------------------------------------------------------------------


def _run_gx(
    frame: pd.DataFrame, kind: SuiteKind, specs: list[dict[str, Any]], docs_dir: Path | str | None
) -> tuple[ExpectationSuiteValidationResult, Path | None]:
    """Run the suite on the frame in a throw-away (ephemeral) context; build static Data Docs if asked."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("tftmon")
        .add_dataframe_asset(f"{kind}_data")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(_suite_from_specs(kind, specs))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"tftmon_{kind}_validation", data=batch, suite=suite)
    )
    params = {"dataframe": frame}
    if docs_dir is None:
        return definition.run(batch_parameters=params, result_format=RESULT_FORMAT), None

    docs = Path(docs_dir).resolve()
    context.add_data_docs_site(
        "tftmon",
        {
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs)},
        },
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"tftmon_{kind}_checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["tftmon"])],
            result_format=RESULT_FORMAT,
        )
    )
    outcome = checkpoint.run(batch_parameters=params)
    return next(iter(outcome.run_results.values())), docs / "index.html"


def _finding(result: Any, frame: pd.DataFrame) -> Finding:
    """Translate one failed GE result into a Finding, with examples a person can act on."""
    config = result.expectation_config
    meta, column = config.meta, config.kwargs.get("column")
    columns = tuple(meta["columns"])
    info = result.exception_info or {}
    if info.get("raised_exception"):
        message = f"{meta['notes']} (not evaluated: {info.get('exception_message')})"
        return Finding(config.type, meta["rule"], columns, message)
    details = result.result or {}
    observed = details.get("observed_value") if meta["rule"] == "dtype" else None
    if column in HELPER_COLUMNS and column != CPU_PARTS_SUM:
        samples = _row_samples(frame, ~frame[column].to_numpy(dtype=bool), HELPER_COLUMNS[column][0])
    else:
        samples = tuple(details.get("partial_unexpected_list") or ())[:MAX_SAMPLES]
    return Finding(
        expectation=config.type,
        rule=meta["rule"],
        columns=columns,
        fix=meta["notes"],
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        samples=samples,
        observed=None if observed is None else str(observed),
    )


def _row_samples(frame: pd.DataFrame, bad: np.ndarray, columns: Sequence[str]) -> tuple[str, ...]:
    """First bad rows described by their source columns (a False flag alone tells nobody anything)."""
    rows = frame.loc[bad, list(columns)].head(MAX_SAMPLES)
    return tuple(
        " ".join(f"{c}={_format(v)}" for c, v in zip(columns, row, strict=True)) for row in rows.itertuples(index=False)
    )


def _format(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float):
        return str(round(value, 4))
    return str(value)
