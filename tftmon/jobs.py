"""Jobs: thin orchestration of the core modules with MLflow tracking, shared by the CLI and MLproject.

Each job logs into the run `mlflow run` created (or a new run of the `tftmon` experiment when a job
asks for one); nothing below this layer knows about tracking.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import mlflow

from tftmon import tracking
from tftmon.config import SimulationConfig
from tftmon.contract import CONTRACT_VERSION
from tftmon.io import MAPPING_FILE, METADATA_FILE

log = logging.getLogger(__name__)

SAMPLE_ROWS = 1000


def run_generate(config: SimulationConfig, out: Path, progress: bool = True) -> dict:
    """Simulate a dataset; inside an MLflow run, log its parameters, metadata, mapping and a sample."""
    from tftmon.simulate import write_dataset

    started = time.perf_counter()
    metadata = write_dataset(config, out, progress=progress)
    seconds = time.perf_counter() - started
    if tracking.inside_mlflow_run():
        with tracking.job_run("generate", tags={"tftmon.contract_version": CONTRACT_VERSION}):
            params = config.model_dump(mode="json", exclude={"fleet"})
            params["fleet_file"] = bool(config.fleet)
            # Prefixed: `mlflow run` already logged the raw -P values under the plain names.
            mlflow.log_params({f"sim.{k}": str(v) for k, v in params.items()})
            mlflow.set_tag("tftmon.dataset_path", str(Path(out).resolve()))
            mlflow.log_metrics(
                {"rows": metadata["rows"], "servers": len(metadata["fleet"]), "seconds": seconds,
                 "rows_per_s": metadata["rows"] / seconds}
            )
            mlflow.log_artifact(str(Path(out) / METADATA_FILE))
            mlflow.log_artifact(str(Path(out) / MAPPING_FILE))
            _log_sample(out)
    return metadata


def _log_sample(out: Path) -> None:
    """A small Parquet sample of the output, so the run shows what the data looks like."""
    import pyarrow.parquet as pq

    from tftmon.io import parquet_files

    first = parquet_files(out)[0]
    table = pq.ParquetFile(first).read_row_group(0).slice(0, SAMPLE_ROWS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sample.parquet"
        pq.write_table(table, path)
        mlflow.log_artifact(str(path))


def default_docs_dir(path: Path) -> Path:
    return Path("reports") / "validation" / Path(path).name


def run_validate(path: Path, suite: str = "auto", strict: bool = False, docs_dir: Path | None = None):
    """Validate a dataset; inside an MLflow run, log the report, Data Docs and `validation_success`."""
    from tftmon.validate import validate_path

    docs_dir = docs_dir or default_docs_dir(path)
    report = validate_path(path, suite=suite, strict=strict, docs_dir=docs_dir)
    if tracking.inside_mlflow_run():
        with tracking.job_run("validate", tags={"tftmon.contract_version": CONTRACT_VERSION}):
            mlflow.log_params({"validate.path": str(path), "validate.suite": report.suite, "validate.strict": strict})
            mlflow.log_metric("validation_success", float(report.success))
            mlflow.log_metric("rows", report.rows)
            mlflow.log_text(report.to_text(), "validation/report.txt")
            mlflow.log_text(json.dumps(report.to_dict(), indent=2, default=str), "validation/report.json")
            if report.docs_path is not None and Path(docs_dir).exists():
                tracking.log_artifact_dir(docs_dir, "validation/data_docs")
    return report


def contract_outputs(root: Path, markdown: bool, expectations: bool) -> dict[Path, str]:
    """Files generated from the contract, keyed by path under `root`, with their expected text."""
    outputs: dict[Path, str] = {}
    if markdown:
        from tftmon.contract_doc import render_markdown

        outputs[Path(root) / "docs" / "DATA_CONTRACT.md"] = render_markdown()
    if expectations:
        from tftmon.validate import expectation_files

        outputs.update({Path(root) / "expectations" / name: text for name, text in expectation_files().items()})
    return outputs
