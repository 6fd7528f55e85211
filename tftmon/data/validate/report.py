"""The readable report: findings with a plain-words fix, failed GE results translated into them, Data Docs.

Every problem, from GE or a pre-check, ends up in one ValidationReport; no tracebacks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tftmon.contract import CONTRACT_VERSION
from tftmon.data.validate.suites import CPU_PARTS_SUM, HELPER_COLUMNS, SuiteKind, import_gx

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.core.validation_definition import ValidationDefinition
    from great_expectations.data_context import AbstractDataContext

#: Samples of bad values per failure: enough to recognise the problem, short enough for a terminal.
MAX_SAMPLES = 5
#: BASIC gives the counts and a short list of bad values: all a report needs. SUMMARY would also compute
#: unexpected index lists and queries, filtering the whole frame per expectation (3x slower on 10 M rows).
RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": MAX_SAMPLES}


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


def precheck(rule: str, columns: tuple[str, ...], fix: str, observed: str | None = None) -> Finding:
    """A finding of a check GE cannot phrase readably; its expectation is tftmon.<rule>."""
    return Finding(f"tftmon.{rule}", rule, columns, fix, observed=observed)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def finding_from_result(result: Any, frame: pd.DataFrame) -> Finding:
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


def run_with_data_docs(
    context: AbstractDataContext,
    definition: ValidationDefinition,
    kind: SuiteKind,
    params: dict[str, Any],
    docs_dir: Path | str,
) -> tuple[ExpectationSuiteValidationResult, Path]:
    """Run the validation through a checkpoint that renders static Data Docs HTML under `docs_dir`."""
    gx = import_gx()
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
