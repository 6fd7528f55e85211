"""Jobs: thin orchestration of the core modules with MLflow tracking, shared by the CLI and MLproject.

Each job logs into the run `mlflow run` created (or a new run of the `tftmon` experiment when a job
asks for one); nothing below this layer knows about tracking.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mlflow
import pandas as pd

from tftmon.config import DemoConfig, EvaluationConfig, PeerConfig, SimulationConfig, TrainConfig
from tftmon.contract import CONTRACT_VERSION, SERVER_NAME, TIMESTAMP
from tftmon.evaluation import backtest
from tftmon.evaluation.peer import PEER_DIR
from tftmon.evaluation.report import registry_description
from tftmon.io import MAPPING_FILE, METADATA_FILE, dataset_fingerprint
from tftmon.ops import tracking
from tftmon.risk import ALERT_THRESHOLD_KEY

if TYPE_CHECKING:
    from tftmon.data.validate import SuiteKind
    from tftmon.evaluation.backtest import EvaluationResults
    from tftmon.model.train import TrainingResult

log = logging.getLogger(__name__)

SAMPLE_ROWS = 1000
#: Key in a model's training_info.json: the training and evaluation settings it was trained with (how it was
#: run, e.g. its progress bars, left out), which a retrain of the champion trains its successor with.
TRAINING_SETTINGS_KEY = "training_settings"


def run_generate(config: SimulationConfig, out: Path, progress: bool = True) -> dict:
    """Simulate a dataset; inside an MLflow run, log its parameters, metadata, mapping and a sample."""
    from tftmon.data.simulate import write_dataset

    started = time.perf_counter()
    metadata = write_dataset(config, out, progress=progress)
    seconds = time.perf_counter() - started
    if tracking.inside_mlflow_run():
        with tracking.job_run("generate", tags={"tftmon.contract_version": CONTRACT_VERSION}):
            params = config.model_dump(mode="json", exclude={"fleet"})
            params["fleet_file"] = bool(config.fleet)
            # Prefixed: `mlflow run` already logged the raw -P values under the plain names.
            mlflow.log_params({f"sim.{k}": str(v) for k, v in params.items()})
            mlflow.set_tag(tracking.DATASET_PATH_TAG, str(Path(out).resolve()))
            mlflow.log_metrics(
                {
                    "rows": metadata["rows"],
                    "servers": len(metadata["fleet"]),
                    "seconds": seconds,
                    "rows_per_s": metadata["rows"] / seconds,
                }
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
    with tracking.job_temp_dir() as tmp:
        path = tmp / "sample.parquet"
        pq.write_table(table, path)
        mlflow.log_artifact(str(path))


def default_docs_dir(path: Path) -> Path:
    return Path("reports") / "validation" / Path(path).name


def run_validate(
    path: Path,
    suite: SuiteKind | Literal["auto"] = "auto",
    strict: bool = False,
    docs_dir: Path | None = None,
    frame: pd.DataFrame | None = None,
):
    """Validate a dataset; inside an MLflow run, log the report, Data Docs and `validation_success`.

    `frame`: the dataset at `path` already in memory (training reads it once for both uses).
    """
    from tftmon.data.validate import validate_frame, validate_path

    docs_dir = docs_dir or default_docs_dir(path)
    if frame is None:
        report = validate_path(path, suite=suite, strict=strict, docs_dir=docs_dir)
    else:
        report = validate_frame(frame, suite=suite, strict=strict, docs_dir=docs_dir)
        report.source = str(path)
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
        from tftmon.data.contract_doc import render_markdown

        outputs[Path(root) / "docs" / "DATA_CONTRACT.md"] = render_markdown()
    if expectations:
        from tftmon.data.validate import expectation_files

        outputs.update({Path(root) / "expectations" / name: text for name, text in expectation_files().items()})
    return outputs


# ---------------------------------------------------------------------------------------------
# Training, evaluation, promotion
# ---------------------------------------------------------------------------------------------


class TrainingRefused(RuntimeError):
    """The data failed validation; no model was trained and the run is marked failed."""


def log_evaluation(results: EvaluationResults, predictions: pd.DataFrame, frame: pd.DataFrame, step: int = 0) -> str:
    """Metrics (at `step`, the one the logged model links), tables, plots and the markdown summary of an
    evaluation into the active run."""
    from tftmon.evaluation import report
    from tftmon.ops.registry import SCORE_METRIC, headline_score

    metrics: dict[str, float] = {}
    row: Any  # an itertuples row: pandas-stubs cannot know the columns' types
    for row in results.aggregate.itertuples(index=False):
        metrics[f"eval_mase_{row.horizon}_{row.model}"] = float(row.mase)
        if not pd.isna(row.coverage):
            metrics[f"eval_coverage_{row.horizon}_{row.model}"] = float(row.coverage)
    for row in results.ratio.itertuples(index=False):
        metrics[f"eval_mase_ratio_{row.horizon}"] = float(row.ratio)
    metrics[SCORE_METRIC] = headline_score(results)
    per_metric = results.metrics[results.metrics["model"] == results.model]
    for row in per_metric.itertuples(index=False):
        if "seen" not in per_metric or row.seen:
            metrics[f"eval_mase_{row.horizon}_{row.metric}"] = float(row.mase)
    if results.cold_start is not None:
        for row in results.cold_start.itertuples(index=False):
            if not pd.isna(row.gap):
                metrics[f"eval_cold_start_gap_{row.horizon}"] = float(row.gap)
    if results.warnings is not None:
        for row in results.warnings.table.itertuples(index=False):
            for name in ("recall", "median_lead_min", "precision", "false_alarms_per_server_day", "threshold"):
                value = getattr(row, name)
                if not pd.isna(value):
                    metrics[f"eval_warning_{name}_{row.forecaster}"] = float(value)
    mlflow.log_metrics({k: v for k, v in metrics.items() if not pd.isna(v)}, step=step)
    summary = report.summary_markdown(results)
    with tracking.job_temp_dir() as out:
        results.metrics.to_csv(out / "metrics_table.csv", index=False)
        results.aggregate.to_csv(out / "aggregate.csv", index=False)
        if results.warnings is not None:
            results.warnings.table.to_csv(out / "warnings.csv", index=False)
            results.warnings.curves.to_csv(out / "warning_curves.csv", index=False)
        (out / "summary.md").write_text(summary)
        report.write_plots(results, predictions, frame, out / "plots")
        mlflow.log_artifacts(str(out), artifact_path="evaluation")
    return summary


def run_train(
    path: Path,
    config: TrainConfig,
    eval_config: EvaluationConfig | None = None,
    *,
    validated: bool = False,
    peer_config: PeerConfig | None = None,
) -> dict[str, Any]:
    """Validate, train on every server and the LightGBM peer on the same period, fit the alert thresholds
    on validation origins, evaluate on the held-out time against the baselines and the peer, log and register
    a version (the peer in its model directory's PEER_DIR, for later evaluations); returns ids and the summary.

    `validated`: the caller's own step validated `path` already (retrain), so it is not validated twice.
    """
    from tftmon.data.resample import resample_to_model_step
    from tftmon.evaluation.peer import PeerModel, PeerNotTrained, fit_peer, save_peer
    from tftmon.io import read_metrics
    from tftmon.model.network import save_model
    from tftmon.model.train import fit
    from tftmon.ops import registry

    eval_config = eval_config or EvaluationConfig()
    peer_config = peer_config or PeerConfig()
    with tracking.job_run("train", tags={"tftmon.contract_version": CONTRACT_VERSION}) as run:
        mlflow.log_params(config.params("train"))
        mlflow.log_params({f"eval.{k}": str(v) for k, v in eval_config.model_dump(mode="json").items()})
        raw = read_metrics(path)
        report = None if validated else run_validate(path, strict=False, frame=raw)
        if report is not None and not report.success:
            mlflow.set_tag("tftmon.refused", "invalid data")
            raise TrainingRefused(f"refusing to train on invalid data:\n{report.to_text()}")

        frame = resample_to_model_step(raw)
        del raw
        fingerprint = dataset_fingerprint(path, frame)
        mlflow.log_params(fingerprint)
        mlflow.set_tag(tracking.DATASET_PATH_TAG, str(Path(path).resolve()))
        holdout = backtest.holdout_start(frame, eval_config.holdout_hours)
        mlflow.log_params({"eval.holdout_start": str(holdout)})
        tracking.name_run(
            f"train {Path(path).name} · hidden {config.model.hidden_size} · "
            f"{config.max_epochs}×{config.max_batches_per_epoch or 'all'} batches · {time.strftime('%m-%d %H:%M')}"
        )
        tracking.describe_run(
            f"Training on `{path}` ({fingerprint['data_servers']} servers, {fingerprint['data_start']} to "
            f"{fingerprint['data_end']}; held out from {holdout}): the evaluation and the registered version "
            "follow here when it is done."
        )
        training = frame[frame[TIMESTAMP] < holdout]
        tracking.log_dataset(training, Path(path), context="training")
        model, result = fit(training, config, callbacks=[tracking.epoch_logger()])
        mlflow.set_tag("tftmon.stopped_by", result.stopped_by.value)
        # The registered model links the metrics of one step: the last epoch's, where evaluation goes too.
        step = max(result.epochs - 1, 0)
        mlflow.log_metrics(
            {
                "training_seconds": result.seconds,
                "samples_per_second": result.samples_per_second,
                "best_val_loss": result.best_val_loss,
                "epochs": result.epochs,
            },
            step=step,
        )
        started = time.perf_counter()
        try:
            peer: PeerModel | None = fit_peer(training, peer_config, model.config.targets)
            mlflow.log_metric("peer_training_seconds", time.perf_counter() - started, step=step)
        except PeerNotTrained as exc:
            log.warning("the LightGBM peer is left out of this evaluation: %s", exc)
            peer = None
        started = time.perf_counter()
        calibration = backtest.calibrate(model, frame, holdout, eval_config, peer)
        mlflow.log_metric("calibration_seconds", time.perf_counter() - started, step=step)
        if calibration is not None:
            mlflow.log_metric(ALERT_THRESHOLD_KEY, calibration.threshold, step=step)
        model.training_info[TRAINING_SETTINGS_KEY] = {
            "train": config.model_dump(mode="json", exclude={"progress_bar", "checkpoint_dir"}),
            "evaluation": eval_config.model_dump(mode="json"),
        }
        with tracking.job_temp_dir() as tmp:
            model_dir = tmp / "model_dir"
            save_model(model, model_dir)
            for file in sorted(model_dir.iterdir()):
                mlflow.log_artifact(str(file))
            if peer is not None:
                save_peer(peer, model_dir / PEER_DIR)
            predictions, results = backtest.evaluate_model(model, frame, holdout, eval_config, peer)
            summary = log_evaluation(results, predictions, frame, step=step)
            example_server = frame[SERVER_NAME].iloc[0]
            example = frame[frame[SERVER_NAME] == example_server].tail(model.config.history_steps)
            description = f"{_training_line(result, config)}\n\n" + registry_description(
                results, f"the last {eval_config.holdout_hours:g} h of {path}"
            )
            version = registry.register(
                model_dir,
                model.config.targets,
                example.reset_index(drop=True),
                tags={"contract_version": CONTRACT_VERSION, "data_sha256": str(fingerprint["data_sha256"])},
                step=step,
                description=description,
                sample=registry.GateSample.cut(frame, holdout, f"the held-out time of {path}"),
            )
        tracking.describe_run(f"Registered as version {version}.\n\n{description}")
        return {"run_id": run.info.run_id, "version": version, "summary": summary}


def _training_line(result: TrainingResult, config: TrainConfig) -> str:
    """How far training went, for a reviewer in the registry: a time limit means fewer epochs than asked for."""
    return (
        f"**Training:** {result.epochs} of {config.max_epochs} epochs, stopped by {result.stopped_by} after "
        f"{timedelta(seconds=round(result.seconds))}; best validation loss {result.best_val_loss:.3f}."
    )


def run_evaluate(path: Path, version: str | None = None, eval_config: EvaluationConfig | None = None) -> dict[str, Any]:
    """Evaluate a registered version (default: production) on a dataset against the baselines."""
    from tftmon.data.resample import resample_to_model_step
    from tftmon.evaluation.peer import load_peer
    from tftmon.io import read_metrics
    from tftmon.model.network import load_model
    from tftmon.ops import registry

    eval_config = eval_config or EvaluationConfig()
    version = version or registry.production_version()
    if version is None:
        raise registry.PromotionRefused("no production model to evaluate; pass --version N")
    files = registry.version_files(version)
    model = load_model(files)
    peer = load_peer(files / PEER_DIR) if (files / PEER_DIR).is_dir() else None
    frame = resample_to_model_step(read_metrics(path))
    holdout = backtest.holdout_start(frame, eval_config.holdout_hours)
    with tracking.job_run("evaluate", tags={"tftmon.model_version": version}) as run:
        mlflow.log_params(
            {
                "evaluate.path": str(path),
                "evaluate.version": version,
                "evaluate.holdout_hours": eval_config.holdout_hours,
            }
        )
        predictions, results = backtest.evaluate_model(model, frame, holdout, eval_config, peer)
        summary = log_evaluation(results, predictions, frame)
        registry.describe_version(
            version, registry_description(results, f"the last {eval_config.holdout_hours:g} h of {path}"), "held-out"
        )
        return {"run_id": run.info.run_id, "version": version, "summary": summary, "results": results}


def run_demo(out: Path, config: DemoConfig | None = None) -> dict[str, Any]:
    """generate -> validate -> train (+ evaluate) -> promote, each a child run of one `demo` run."""
    from tftmon.ops import registry

    config = config or DemoConfig()
    with tracking.job_run("demo") as parent:
        run_generate(config.simulation, out)
        docs = default_docs_dir(out)
        report = run_validate(out, strict=True, docs_dir=docs)
        if not report.success:
            raise TrainingRefused(report.to_text())
        outcome = run_train(out, config.train, config.evaluation)
        # A re-run of the demo retrains on fresh data; its model replaces the last demo model.
        gate = registry.promote(outcome["version"], force=True, reason="demo")
        log.info("%s", gate.to_text())
    child_runs = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        output_format="list",
    )
    return {
        **outcome,
        "run_ids": [parent.info.run_id, *(r.info.run_id for r in child_runs)],
        "tracking_uri": mlflow.get_tracking_uri(),
        "docs": str(docs / "index.html"),
    }
