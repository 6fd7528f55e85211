"""The `tftmon` command: a thin click layer that parses options and calls the pipeline modules.

Heavy imports (GE, torch, MLflow) happen inside each command so `tftmon --help` stays instant. Defaults
are read from the config classes (tftmon/config.py), so help texts and MLproject never drift from them.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import click
from pydantic import BaseModel, ValidationError

from tftmon import __version__
from tftmon.config import (
    FEED_TOKEN_ENV,
    JOB_CONFIGS,
    DemoConfig,
    DriftConfig,
    EvaluationConfig,
    IngestConfig,
    NetworkConfig,
    RetrainConfig,
    Scenario,
    ServiceConfig,
    SimulationConfig,
    TrainConfig,
    error_text,
)
from tftmon.contract import CONTRACT_VERSION, METRICS
from tftmon.dashboard.settings import DashboardSettings
from tftmon.data.validate import SUITES, SuiteKind
from tftmon.ops.stack import StackOptions
from tftmon.serve.feed import FeedOptions
from tftmon.serve.feed_control import ControlOptions

log = logging.getLogger("tftmon")

Config = TypeVar("Config", bound=BaseModel)
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

SCENARIOS: tuple[str, ...] = get_args(Scenario)


def _duration(value: timedelta) -> str:
    """5min rather than 0:05:00: the spelling duration options accept."""
    seconds = int(value.total_seconds())
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _field_default(model: type[BaseModel], field: str) -> Any:
    """A config field's default in the form an option takes it."""
    value = model.model_fields[field].default
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _config_option(name: str, model: type[BaseModel], text: str, metavar: str) -> Decorator:
    """--NAME for config field NAME: left out, or empty as MLproject passes it, it keeps the field's default,
    which the help text reads from the config class so it never drifts."""
    field = name.replace("-", "_")
    return click.option(f"--{name}", field, metavar=metavar, help=f"{text} (default {_field_default(model, field)}).")


#: --progress/--no-progress: the same on every long-running command.
_progress_option = click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr."
)


def _out_option(default: str, text: str = "Output directory (replaced atomically).") -> Decorator:
    """--out DIR of a command that writes a directory."""
    return click.option(
        "--out", type=click.Path(file_okay=False, path_type=Path), default=Path(default), show_default=True, help=text
    )


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The options a user set: None (left out) and "" (MLproject's empty parameter) mean the config default."""
    return {name: value for name, value in values.items() if value is not None and value != ""}


def _build(model: type[Config], values: dict[str, Any]) -> Config:
    """The config from option values; a bad value is a one-line usage error naming the field, no traceback."""
    try:
        return model(**_given(values))
    except ValidationError as exc:
        raise click.UsageError(error_text(exc)) from None


def _dashes(name: str) -> str:
    """MLflow passes an undeclared `-P name=value` as `--name value`: options also answer to snake_case."""
    return name.replace("_", "-")


class _Command(click.Command):
    """A command whose unknown-option error lists every valid option (click's names only close matches), so a
    typo, e.g. an MLproject `-P max_epoch=1`, says what would have been right."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            options = [
                o for p in self.get_params(ctx) if isinstance(p, click.Option) for o in p.opts + p.secondary_opts
            ]
            message = f"{exc.format_message()} Valid options: {', '.join(options)}."
            raise click.NoSuchOption(exc.option_name, message=message, ctx=ctx) from exc


#: What to do about an OS error, by errno; any other error on a path gets OS_ERROR_FIX.
OS_ERROR_FIXES: dict[int, str] = {
    errno.ENOSPC: "free space on that disk, or write somewhere else (e.g. --out on another disk), and run again",
    errno.EDQUOT: "your disk quota is used up: free some, or write somewhere else, and run again",
    errno.EACCES: "make that path writable (or readable) for this user, or use another path",
    errno.EPERM: "make that path writable (or readable) for this user, or use another path",
    errno.EROFS: "that file system is read-only: write somewhere else",
    errno.ENOENT: "check that the path exists",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) and run again",
}
OS_ERROR_FIX = "check that path and its disk, then run again"


def os_error_line(exc: OSError) -> str:
    """An OS error as one line: the path, what went wrong, and what to do (no traceback). One without a path
    (a network error: requests' errors are OSErrors too) says what it knows."""
    where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    fix = OS_ERROR_FIXES.get(exc.errno or 0)
    if not where:
        return f"{exc}; {fix}" if fix else str(exc)
    return f"{where}: {exc.strerror or exc}; {fix or OS_ERROR_FIX}"


class _Group(_Command, click.Group):
    """The `tftmon` group: its options and every command's list the valid ones on a typo, and an OS error
    (a full disk, a permission) in any command ends in one line naming the path and the fix."""

    command_class = _Command
    group_class = type  # subgroups are _Group too

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # click's own handling: output piped into `head`
            raise
        except OSError as exc:
            log.debug("OS error", exc_info=True)
            raise click.ClickException(os_error_line(exc)) from None
        except SystemExit as exc:  # a job stopped by a signal (tracking.JobStopped) among them
            code = exc.code
        # What an interrupted job's frames held (MLflow's store connections) goes now, while every module is
        # alive: left to the interpreter's shutdown, SQLAlchemy's weak-reference callbacks print a traceback.
        gc.collect()
        raise SystemExit(code)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in (
        "great_expectations",
        "alembic",
        "mlflow",
        "urllib3",
        "matplotlib",
        "lightning.pytorch.utilities.rank_zero",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Harmless deprecation chatter from pytorch-forecasting/Lightning internals, once per batch otherwise.
    for message in (
        ".*LeafSpec.*",
        ".*is an instance of `nn.Module` and is already saved.*",
        ".*unknown classes which were set to NaN.*",
        ".*NumPy array is not writable.*",
    ):
        warnings.filterwarnings("ignore", message=message)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100, "token_normalize_func": _dashes},
)
@click.version_option(__version__, message=f"%(prog)s %(version)s (contract {CONTRACT_VERSION})")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """tftmon: forecast every server's metrics 30 min, 1 h and 8 h ahead, and warn before it fails.

    Pipeline: generate (or ingest) -> validate -> train -> promote -> serve. MLflow tracking goes to
    $MLFLOW_TRACKING_URI (default sqlite:///mlflow.db here, artifacts in ./mlartifacts).
    """
    _setup_logging(verbose)


@main.command()
@_config_option("servers", SimulationConfig, "Fleet size; profiles keep the default proportions", "N")
@_config_option("hours", SimulationConfig, "Length of the simulated period", "H")
@_config_option(
    "interval",
    SimulationConfig,
    "Sample interval, any duration >= 5s (5s, 1min, 5min); training resamples to 5 min",
    "T",
)
@_config_option("seed", SimulationConfig, "Same seed, same data", "N")
@_config_option("start", SimulationConfig, "Start time, ISO 8601 (UTC if no zone)", "TIME")
@click.option(
    "--fleet",
    "fleet_file",
    default="",
    help="Exact fleet: a file of `server_name[,profile]` lines (profile inferred when blank).",
)
@_config_option("add-servers", SimulationConfig, "Drift scenario: add K new servers to the fleet", "K")
@_config_option("retire-servers", SimulationConfig, "Drift scenario: retire the last K servers of the fleet", "K")
@_config_option(
    "scenario",
    SimulationConfig,
    "healthy: no incidents; degrading/critical: force a share of servers onto that path",
    f"[{'|'.join(SCENARIOS)}]",
)
@_config_option("scenario-fraction", SimulationConfig, "Share of servers the scenario applies to", "F")
@_out_option("data/fleet")
@_progress_option
def generate(out: Path, fleet_file: str, progress: bool, **options: str | None) -> None:
    """Simulate a fleet: Parquet + metrics_metadata.json + server_mapping.json under --out."""
    from tftmon.data.simulate import load_fleet_file
    from tftmon.ops.jobs import run_generate

    try:
        fleet = load_fleet_file(Path(fleet_file)) if fleet_file else None
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from exc
    config = _build(SimulationConfig, {**options, "fleet": fleet})
    started = time.perf_counter()
    metadata = run_generate(config, out, progress=progress)
    seconds = time.perf_counter() - started
    click.echo(
        f"wrote {metadata['rows']:,} rows for {len(metadata['fleet'])} servers to {out} "
        f"in {seconds:.1f} s ({metadata['rows'] / seconds:,.0f} rows/s)"
    )


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--strict",
    is_flag=True,
    help="Also fail on unknown columns; require every identity column (simulated: every column).",
)
@click.option(
    "--suite",
    type=click.Choice(["auto", *SUITES]),
    default="auto",
    show_default=True,
    help="auto: simulated when a `state` column exists, else telemetry.",
)
@click.option(
    "--docs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write Great Expectations Data Docs (default: reports/validation/<name>).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate(
    path: Path, strict: bool, suite: SuiteKind | Literal["auto"], docs_dir: Path | None, as_json: bool
) -> None:
    """Validate a dataset against the contract's Great Expectations suites; exit 1 on failure."""
    import json

    from tftmon.ops.jobs import run_validate

    report = run_validate(path, suite=suite, strict=strict, docs_dir=docs_dir)
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else report.to_text())
    sys.exit(0 if report.success else 1)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--targets",
    default="",
    help=f"Comma-separated metrics to forecast (default: those of the {len(METRICS)} PATH has).",
)
@_config_option("max-epochs", TrainConfig, "Upper bound on epochs; early stopping may end sooner", "N")
@_config_option("max-batches-per-epoch", TrainConfig, "Bounds CPU time per epoch", "N")
@_config_option("max-fit-minutes", TrainConfig, "Wall-clock budget of the fit; the best weights so far are kept", "M")
@_config_option("encoder-hours", TrainConfig, "History the model reads", "H")
@_config_option("hidden-size", NetworkConfig, "TFT hidden size", "N")
@click.option(
    "--seasonal-lags",
    "seasonal_lag_hours",
    metavar="H[,H]",
    help="Hours back each target's value is a known input at every step, e.g. 24 or 24,168 (default none).",
)
@_config_option("batch-size", TrainConfig, "Training batch size", "N")
@_config_option("incident-oversampling", TrainConfig, "Extra weight of windows before incidents (0: uniform)", "W")
@_config_option("incident-lead-hours", TrainConfig, "Only incidents this soon in a window's forecast weigh", "H")
@_config_option("num-workers", TrainConfig, "Data-loader processes (spare cores speed up training)", "N")
@_config_option("accelerator", TrainConfig, "cpu, gpu or auto", "NAME")
@_config_option("devices", TrainConfig, "Number of devices, or auto; more than one trains with DDP", "N")
@_config_option("seed", TrainConfig, "Random seed", "N")
@_config_option("holdout-hours", EvaluationConfig, "Last part of time held out for evaluation", "H")
@_progress_option
def train(path: Path, targets: str, progress: bool, holdout_hours: str | None, **options: str | None) -> None:
    """Validate PATH, train the TFT, evaluate it against baselines, log to MLflow and register a version.

    Options left out (or empty, as MLproject passes them) keep the defaults of tftmon.config.TrainConfig.
    """
    from tftmon.ops.jobs import TrainingRefused, run_train

    network: dict[str, Any] = {name: options.pop(name) for name in NetworkConfig.model_fields if name in options}
    if network.get("seasonal_lag_hours"):
        network["seasonal_lag_hours"] = [hours.strip() for hours in network["seasonal_lag_hours"].split(",")]
    config = _build(
        TrainConfig,
        {
            **options,
            "targets": [t.strip() for t in targets.split(",") if t.strip()] or None,
            "model": _given(network),
            "progress_bar": progress,
        },
    )
    eval_config = _build(EvaluationConfig, {"holdout_hours": holdout_hours})
    try:
        outcome = run_train(path, config, eval_config)
    except (TrainingRefused, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(outcome["summary"])
    click.echo(
        f"\nregistered version {outcome['version']} (run {outcome['run_id']}); "
        f"promote it with `tftmon promote --version {outcome['version']}`"
    )


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--version", default=None, help="Registered version (default: production).")
@_config_option("holdout-hours", EvaluationConfig, "Last part of PATH's time scored (≥ 72 h for ~60 incidents)", "H")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation tables as JSON instead of markdown.")
def evaluate(path: Path, version: str | None, holdout_hours: str | None, as_json: bool) -> None:
    """Score a registered version on PATH (e.g. a held-out fleet it never saw) against the baselines.

    Accuracy (MASE, coverage, cold start) and incident early warning side by side with last value, seasonal
    naive, linear drift and the oracle, each alerting at the threshold fitted for it in training at the
    model's validation origins (a model without the baselines' fits them on PATH before the held-out
    period). Recipe: docs/BENCHMARKS.md.
    """
    import json

    from tftmon.ops.jobs import run_evaluate
    from tftmon.ops.registry import PromotionRefused

    eval_config = _build(EvaluationConfig, {"holdout_hours": holdout_hours})
    try:
        outcome = run_evaluate(path, version, eval_config)
    except (PromotionRefused, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not as_json:
        click.echo(outcome["summary"])
        return
    results = outcome["results"]
    tables = {"ratio": results.ratio, "aggregate": results.aggregate, "cold_start": results.cold_start}
    if results.warnings is not None:
        tables["warnings"] = results.warnings.table
    payload = {
        "version": outcome["version"],
        "run_id": outcome["run_id"],
        "incidents_skipped": results.incidents_skipped,
    }
    payload |= {name: None if t is None else t.to_dict(orient="records") for name, t in tables.items()}
    click.echo(json.dumps(payload, indent=2, default=str))


@main.command()
@click.argument("source", required=False, default="")
@click.option(
    "--mapping",
    "mapping_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML mapping: fields, metric names and units, time zone, profiles (docs/INGEST.md); not needed for "
    "a long file whose metrics already have contract names.",
)
@_config_option(
    "format", IngestConfig, "File format; auto detects it from the first file's columns", "[auto|long|wide|series]"
)
@click.option(
    "--prometheus", default="", metavar="URL", help="Query this Prometheus server (URL) instead of reading SOURCE."
)
@click.option(
    "--start", default="", metavar="TIME", help="Prometheus: first sample time, ISO 8601 (default: a day before --end)."
)
@click.option("--end", default="", metavar="TIME", help="Prometheus: last sample time, ISO 8601 (default: now).")
@_config_option("max-gap", IngestConfig, "Interpolate gaps up to this long; longer ones split a series", "T")
@_config_option("duplicates", IngestConfig, "Samples with one server, metric and time: last|mean|error", "RULE")
@click.option(
    "--timezone", default="", metavar="ZONE", help="Zone of timestamps without an offset (overrides the mapping's)."
)
@click.option(
    "--profile", default="", metavar="NAME", help="Profile of every server (default: field, mapping, or hostname)."
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse a percentage column whose values look like two scales (percent and fractions of 1) instead of "
    "warning.",
)
@_out_option("data/ingested")
@_progress_option
def ingest(
    source: str,
    mapping_file: Path | None,
    prometheus: str,
    start: str,
    end: str,
    timezone: str,
    profile: str,
    strict: bool,
    out: Path,
    progress: bool,
    **options: str | None,
) -> None:
    """Real telemetry -> contract Parquet under --out, ready for validate and train.

    SOURCE is a CSV or Parquet file, a directory or a glob: long (timestamp, server, metric, value), wide (a
    column per metric) or one file per series (timestamp, value). Gaps, duplicates and everything left out
    are counted in metrics_metadata.json and summarised here.
    """
    from tftmon.contract import MODEL_STEP, to_utc
    from tftmon.data.ingest import Mapping, MappingError, Samples, ingest_files, ingest_samples, load_mapping, summary

    if bool(source) == bool(prometheus):
        raise click.UsageError("give either SOURCE (files) or --prometheus URL, not both or neither")
    config = _build(IngestConfig, options)
    try:
        mapping = load_mapping(mapping_file)
        overrides = _given({"timezone": timezone, "profile": profile})
        if overrides:
            mapping = Mapping.model_validate({**mapping.model_dump(exclude_unset=True), **overrides})
    except ValidationError as exc:
        raise click.UsageError(error_text(exc)) from None
    except MappingError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        if prometheus:
            from tftmon.data.ingest.prometheus import query_prometheus

            until = to_utc(end or datetime.now().astimezone()).to_pydatetime()
            since = to_utc(start).to_pydatetime() if start else until - timedelta(days=1)
            long, described = query_prometheus(prometheus, since, until, step=MODEL_STEP, progress=progress)
            metadata = ingest_samples(
                Samples(long, source=described), mapping, config, out, progress=progress, strict=strict
            )
        else:
            metadata = ingest_files(source, mapping, config, out, progress=progress, strict=strict)
    except ValueError as exc:  # IngestError, MappingError: the message names the input and the fix
        raise click.ClickException(str(exc)) from None
    click.echo(summary(metadata, out))


@main.command()
@click.option("--version", default=None, help="Version to promote (default: the newest whose training finished).")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Backtest on the last hours of this dataset (>= 2 days) instead of the held-out sample kept with the version.",
)
@click.option("--force", is_flag=True, help="Promote even if it scores worse than the champion or cannot be scored.")
@click.option("--reason", default="", help="Why; recorded as a tag on the version.")
def promote(version: str | None, data: Path | None, force: bool, reason: str) -> None:
    """Gate a version (its run finished, files, weights digest, forecasts for every server, a backtest of its
    weights vs the baselines and the champion), then make it production."""
    from tftmon.ops.registry import PromotionRefused
    from tftmon.ops.registry import promote as promote_version

    try:
        report = promote_version(version, force=force, reason=reason, data=data)
    except (PromotionRefused, ValueError) as exc:  # ValueError: --data is not a readable contract dataset
        raise click.ClickException(str(exc)) from exc
    click.echo(report.to_text())
    click.echo(f"version {report.version} is now production (alias @production, stage Production)")


@main.command()
@click.option("--reason", default="rollback", show_default=True, help="Recorded as a tag on the version.")
def rollback(reason: str) -> None:
    """Put the previous champion back into production."""
    from tftmon.ops.registry import PromotionRefused
    from tftmon.ops.registry import rollback as rollback_version

    try:
        version = rollback_version(reason)
    except PromotionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"version {version} is production again")


class DriftCheckFailed(click.ClickException):
    """`tftmon drift` could not run: exit 4, apart from the priorities' 0-3."""

    exit_code = 4


@main.command()
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option(
    "--service",
    "service_url",
    default=None,
    metavar="URL",
    help="The running service: its unknown-server rate (GET /status), and its live fleet (GET /fleet) when no PATH "
    "or --prometheus.",
)
@click.option(
    "--prometheus",
    "prometheus_url",
    default=None,
    metavar="URL",
    help="Instead of PATH: the fleet as this Prometheus sees it (each host's last node_exporter sample) and its "
    "recent telemetry, read as `tftmon ingest --prometheus` reads it.",
)
@_config_option("reference", DriftConfig, "Training data to compare with; None: the model's training run's", "PATH")
@_config_option("recent-hours", DriftConfig, "Recent telemetry compared with the training data", "H")
@_config_option("reference-hours", DriftConfig, "End of the training period compared with", "H")
@_config_option("sample-size", DriftConfig, "Values drawn per metric, profile and side", "N")
@click.option(
    "--forecast-error/--no-forecast-error",
    default=False,
    show_default=True,
    help="Also backtest the model on the end of PATH against its logged MASE (loads torch: slower).",
)
@click.option("--track/--no-track", default=True, show_default=True, help="Log the check as a monitoring run.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the table.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 whatever the priority (MLproject: the run stays FINISHED).")
@_progress_option
def drift(
    path: Path | None,
    service_url: str | None,
    prometheus_url: str | None,
    forecast_error: bool,
    track: bool,
    as_json: bool,
    exit_zero: bool,
    progress: bool,
    **options: str | None,
) -> None:
    """Fleet and data drift of PATH's telemetry (or Prometheus's, or the live service's) vs the Production model.

    New, offline (24 h), sunset-candidate (7 d) and sunset (30 d or absent) servers; drift % = (new + retired)
    / known; per-metric, per-profile shift scores; the recent forecast error. Exit code = priority: 0 none,
    1 low, 2 medium, 3 high; 4 when the check could not run. Logged to the `tftmon-monitoring` experiment.
    """
    import json

    from tftmon.io import DatasetError
    from tftmon.ops.drift import DriftError, check_drift, exit_code

    flags = {"forecast_error": forecast_error, "track": track, "progress_bar": progress}
    config = _build(DriftConfig, {**options, **flags})
    try:
        report = check_drift(
            config, data=path or None, prometheus_url=prometheus_url or None, service_url=service_url or None
        )
    except (DriftError, DatasetError) as exc:
        raise DriftCheckFailed(str(exc)) from None
    click.echo(json.dumps(report.to_json(), indent=2, default=str) if as_json else report.to_text())
    sys.exit(0 if exit_zero else exit_code(report.priority))


DEMO = DemoConfig()


class RetrainLocked(click.ClickException):
    """Another retrain holds the lock: exit 75 (EX_TEMPFAIL, try again later), not 1 (this one failed)."""

    exit_code = 75


def _retrain_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options `retrain` and `monitor` share: the data source, the service, the event log and the lock."""
    fleet, demo_train = DEMO.simulation, DEMO.train
    champion = "default: the champion's, as it was trained; without one,"
    simulate = "--simulate: "
    options: list[Decorator] = [
        click.option("--data", type=click.Path(path_type=Path), default=None, help="Telemetry dataset to retrain on."),
        click.option(
            "--prometheus",
            "prometheus_url",
            default=None,
            metavar="URL",
            help="Instead of --data: the last --days of every host this Prometheus scrapes, read as `tftmon ingest "
            "--prometheus` reads it.",
        ),
        _config_option("days", RetrainConfig, "--prometheus: days collected up to now, fractions allowed", "N"),
        click.option("--simulate", is_flag=True, help="Instead of --data: the simulated demo fleet as it is now."),
        click.option("--servers", default=None, metavar="N", help=f"{simulate}fleet size (default {fleet.servers})."),
        click.option("--hours", default=None, metavar="H", help=f"{simulate}history (default {fleet.hours:g})."),
        click.option("--add-servers", default=None, metavar="K", help=f"{simulate}add K new servers (default 0)."),
        click.option("--retire-servers", default=None, metavar="K", help=f"{simulate}retire K servers (default 0)."),
        click.option("--seed", default=None, metavar="N", help=f"{simulate}seed (default {fleet.seed})."),
        click.option(
            "--service",
            "service_url",
            default=None,
            metavar="URL",
            help="The running service to reload (POST /admin/reload, TFTMON_ADMIN_TOKEN) and verify.",
        ),
        click.option(
            "--max-epochs",
            default=None,
            metavar="N",
            help=f"Epochs ({champion} {TrainConfig().max_epochs}; --simulate: {demo_train.max_epochs}).",
        ),
        click.option(
            "--max-batches-per-epoch",
            default=None,
            metavar="N",
            help=f"Batches per epoch ({champion} {TrainConfig().max_batches_per_epoch}; --simulate: "
            f"{demo_train.max_batches_per_epoch}).",
        ),
        _config_option("min-history-hours", RetrainConfig, "Servers with less history are left to cold start", "H"),
        _config_option("out", RetrainConfig, "Where simulated and collected data are written", "DIR"),
        _config_option("event-log", RetrainConfig, "Append-only JSON-lines event log", "FILE"),
        _config_option("lock-file", RetrainConfig, "Lock file: one retrain at a time", "FILE"),
        _progress_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _retrain_config(options: dict[str, Any]) -> RetrainConfig:
    """RetrainConfig from the shared options (consumed from `options`): left-out ones keep the demo fleet's
    defaults; training is the champion's (`tftmon.ops.retrain.training_settings`), the options given set over."""
    simulation = _given({k: options.pop(k) for k in ("servers", "hours", "add_servers", "retire_servers", "seed")})
    train = _given({k: options.pop(k) for k in ("max_epochs", "max_batches_per_epoch")})
    progress = options.pop("progress")
    given = [options["data"] is not None, bool(options["prometheus_url"]), options.pop("simulate")]
    if sum(given) != 1:
        raise click.UsageError(
            "give one data source: --data PATH (telemetry), --prometheus URL (the live fleet's last --days) or "
            "--simulate (the demo fleet)"
        )
    values = {
        **options,
        "simulation": DEMO.simulation.model_dump() | simulation,
        "train_overrides": train | {"progress_bar": progress},
    }
    return _build(RetrainConfig, values)


@main.command()
@_retrain_options
def retrain(**options: Any) -> None:
    """Retrain and hot-swap: collect -> validate -> train -> evaluate -> promote (the gate) -> reload the
    service -> verify that every active server gets a forecast from the new version.

    One parent MLflow run with a child run per step; events as its tags and lines of --event-log. A failing
    step stops the chain and leaves Production as it was (rolled back and reloaded if already swapped).
    Exit 1 on failure, 75 when another retrain holds the lock.
    """
    from tftmon.ops.lock import LockHeld
    from tftmon.ops.retrain import RetrainFailed, run_retrain

    progress = options["progress"]
    config = _retrain_config(options)
    try:
        outcome = run_retrain(config, progress=progress)
    except LockHeld as exc:
        raise RetrainLocked(str(exc)) from None
    except RetrainFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(outcome.to_text())


@main.command()
@click.option("--interval", default="1h", show_default=True, help="Time between drift checks (e.g. 30min, 1h).")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Retrain policy YAML (documented defaults: configs/retrain-policy.yaml; `tftmon config --schema monitor`).",
)
@click.option("--once", is_flag=True, help="One check (and retrain if due), then exit: for cron.")
@_retrain_options
def monitor(interval: str, policy_file: Path | None, once: bool, **options: Any) -> None:
    """Check drift every --interval and retrain when the policy says so (priority, minimum gap, weekly
    maximum, model age, maintenance window). The drift check reads --data, or --prometheus, or the --service's
    live fleet; the retrain it triggers reads the same source.
    """
    from tftmon.config import parse_duration
    from tftmon.ops.monitor import PolicyError, load_policy, run_monitor

    try:
        period = parse_duration(interval)
        policy = load_policy(policy_file)
    except (PolicyError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    progress = options["progress"]
    config = _retrain_config(options)
    drift_config = DriftConfig(progress_bar=progress)
    try:
        tick = run_monitor(policy, config, drift_config, period, once=once)
    except KeyboardInterrupt:
        click.echo("monitor stopped")
        return
    click.echo(f"drift {tick.priority}: {tick.decision.to_text()}")
    if tick.retrain:
        click.echo(tick.retrain)
    sys.exit(1 if tick.failed else 0)


@main.command()
@_out_option("data/demo", "Where the demo fleet is written.")
@click.option(
    "--stack/--no-stack",
    default=True,
    show_default=True,
    help="Then bring up service, feeder and dashboard until Ctrl-C (as `tftmon stack`); --no-stack: pipeline only.",
)
def demo(out: Path, stack: bool) -> None:
    """The whole pipeline on a small fleet: generate -> validate -> train -> evaluate -> promote, then
    the live stack: service, feeder (degrading scenario) and dashboard on 127.0.0.1 until Ctrl-C."""
    from tftmon.ops.jobs import run_demo

    outcome = run_demo(out)
    click.echo(outcome["summary"])
    click.echo(
        f"\nDemo done: model version {outcome['version']} is production.\n"
        f"  data:        {out}\n"
        f"  runs:        {', '.join(outcome['run_ids'])}\n"
        f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {outcome['tracking_uri']}\n"
        f"  Data Docs:   {outcome['docs']}"
    )
    if stack:
        from tftmon.ops.stack import run_stack

        click.echo("\nStarting the live stack (service, feeder, dashboard)...")
        code = run_stack()
        if code:
            sys.exit(code)


@main.command()
@click.option(
    "--scenario",
    type=click.Choice(SCENARIOS),
    default=StackOptions.scenario,
    show_default=True,
    help="The feeder's scenario at start (switch it later from the dashboard).",
)
@click.option(
    "--servers",
    type=click.IntRange(min=1),
    default=StackOptions.servers,
    show_default=True,
    help="The feeder's fleet size (the demo's fleet by default, so the demo model knows every server).",
)
@click.option("--seed", type=int, default=StackOptions.seed, show_default=True, help="The feeder's simulator seed.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help=f"Simulated seconds per wall-clock second (default: the feeder's, {FeedOptions.speed:g}).",
)
@click.option(
    "--service-port",
    type=click.IntRange(1, 65535),
    default=StackOptions.service_port,
    show_default=True,
    help="Port of `tftmon serve`.",
)
@click.option(
    "--control-port",
    type=click.IntRange(1, 65535),
    default=StackOptions.control_port,
    show_default=True,
    help="Port of the feeder's scenario control.",
)
@click.option(
    "--dashboard-port",
    type=click.IntRange(1, 65535),
    default=StackOptions.dashboard_port,
    show_default=True,
    help="Port of the dashboard.",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=StackOptions.log_dir,
    show_default=True,
    help="Each process's output goes to NAME.log here.",
)
@click.option(
    "--ready-timeout",
    type=click.FloatRange(min=1),
    default=StackOptions.ready_timeout,
    show_default=True,
    help="Seconds the service may take to load its model (and each other process to answer).",
)
@click.option(
    "--prometheus",
    metavar="URL",
    help="Watch the hosts this Prometheus scrapes (node_exporter) instead of starting the simulator feeder.",
)
@click.option(
    "--alertmanager", metavar="URL", multiple=True, help="Post critical alerts to this Alertmanager; repeatable."
)
def stack(
    scenario: str,
    servers: int,
    seed: int,
    speed: float | None,
    service_port: int,
    control_port: int,
    dashboard_port: int,
    log_dir: Path,
    ready_timeout: float,
    prometheus: str | None,
    alertmanager: tuple[str, ...],
) -> None:
    """Service, live feeder and dashboard on 127.0.0.1 over the Production model, until Ctrl-C.

    With --prometheus the service watches the hosts that Prometheus scrapes and no feeder is started; with
    --alertmanager its critical alerts go to Alertmanager too.

    Starts `tftmon serve`, waits for its /readyz, then `tftmon feed` (sharing TFTMON_FEED_TOKEN with the
    service; generated if unset) and `tftmon dashboard`, and prints the dashboard's URL. Restarts nothing:
    if one exits, it says which and stops the rest. Ctrl-C or SIGTERM stops them all.
    """
    from tftmon.ops.stack import run_stack

    options = StackOptions(
        scenario=scenario, servers=servers, seed=seed, speed=speed, service_port=service_port,
        control_port=control_port, dashboard_port=dashboard_port, log_dir=log_dir, ready_timeout=ready_timeout,
        prometheus=prometheus, alertmanagers=alertmanager,
    )  # fmt: skip
    code = run_stack(options)
    if code:
        sys.exit(code)


@main.command()
@click.option("--markdown", is_flag=True, help="Regenerate docs/DATA_CONTRACT.md from tftmon/contract.py.")
@click.option("--expectations", is_flag=True, help="Regenerate the GE suites in expectations/.")
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if the committed files differ.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Project root holding docs/ and expectations/.",
)
def contract(markdown: bool, expectations: bool, check: bool, root: Path) -> None:
    """Print the data contract, or regenerate the docs and GE suites generated from it."""
    from tftmon.ops.jobs import contract_outputs

    outputs = contract_outputs(root, markdown=markdown, expectations=expectations)
    if not outputs:
        from tftmon.data.contract_doc import render_markdown

        click.echo(render_markdown())
        return
    stale = [path for path, text in outputs.items() if not path.exists() or path.read_text() != text]
    if check:
        for path in stale:
            click.echo(f"stale: {path} (run `tftmon contract --markdown --expectations`)", err=True)
        sys.exit(1 if stale else 0)
    from tftmon.io import write_bytes_atomic

    for path in stale:
        write_bytes_atomic(path, outputs[path].encode())
        click.echo(f"wrote {path}")
    if not stale:
        click.echo("up to date")


@main.command()
@click.option(
    "--host",
    help=f"Interface to listen on (default $TFTMON_SERVICE_HOST, else {_field_default(ServiceConfig, 'host')}).",
)
@click.option(
    "--port", type=int, help=f"HTTP port (default $TFTMON_SERVICE_PORT, else {_field_default(ServiceConfig, 'port')})."
)
@click.option(
    "--prometheus",
    metavar="URL",
    help="Pull every host's node_exporter metrics from this Prometheus-compatible API once per model step "
    "(default $TFTMON_SERVICE_PROMETHEUS_URL; /feed works beside it).",
)
@click.option(
    "--alertmanager",
    metavar="URL",
    multiple=True,
    help="Post critical alerts to this Alertmanager (API v2); repeat for several.",
)
@click.option("--shard", metavar="I/N", help="Forecast only shard I of N (0 <= I < N) of the hosts, by name.")
@click.option("--dashboard-url", metavar="URL", help="The dashboard, for the link in each alert.")
def serve(
    host: str | None,
    port: int | None,
    prometheus: str | None,
    alertmanager: tuple[str, ...],
    shard: str | None,
    dashboard_url: str | None,
) -> None:
    """BentoML service of models:/tftmon@production (forecasts, risk, alerts, live feed, /metrics).

    Live data comes from /feed and, with --prometheus, from Prometheus; forecasts are Prometheus series on
    /metrics/forecasts; with --alertmanager, critical alerts go to Alertmanager (docs/PROMETHEUS.md).
    Admin endpoints need TFTMON_ADMIN_TOKEN; limits are TFTMON_SERVICE_* variables (tftmon.config.ServiceConfig).
    This process becomes the BentoML server, so one SIGTERM stops the whole tree; its worker stops too when
    this process is killed outright (SIGKILL), freeing the port for a restart.
    """
    given = {
        "prometheus_url": prometheus,
        "alertmanager_urls": alertmanager or None,
        "shard": shard,
        "dashboard_url": dashboard_url,
    }
    service = _build(ServiceConfig, {"host": host, "port": port, **given})
    from tftmon.serve.alertmanager import Target

    for url in service.alertmanager_urls:  # refused here, not later in the worker's log
        try:
            Target.parse(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--alertmanager") from None
    from tftmon.ops.stack import port_holder, port_in_use
    from tftmon.serve.lifeline import SERVER_PID_ENV

    if port_in_use(service.host, service.port):  # refused here in one line, not by a traceback from BentoML's bind
        raise click.ClickException(
            f"port {service.port} on {service.host} is already in use by {port_holder(service.port)}: stop that "
            "process, or serve on another port (--port)"
        )
    # The BentoML worker reads ServiceConfig from the environment, and the server it dies with: this process's
    # pid, which exec keeps. Only the new program's environment gets them: nothing leaks into this one.
    env = {
        **os.environ,
        **{
            f"TFTMON_SERVICE_{name.upper()}": json.dumps(value) if isinstance(value, tuple) else value
            for name, value in _given(given).items()
        },
        SERVER_PID_ENV: str(os.getpid()),
    }
    argv = [sys.executable, "-m", "bentoml", "serve", "tftmon.serve.service:Tftmon"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [*argv, "--host", service.host, "--port", str(service.port)], env)


@main.command()
@click.option("--url", help="The service (default: where `tftmon serve` listens, from TFTMON_SERVICE_HOST/PORT).")
@click.option(
    "--servers",
    type=int,
    default=_field_default(SimulationConfig, "servers"),
    show_default=True,
    help="Fleet size (default proportions of profiles).",
)
@click.option(
    "--scenario",
    type=click.Choice(SCENARIOS),
    default=_field_default(SimulationConfig, "scenario"),
    show_default=True,
    help="healthy / degrading / critical: the feeder owns the scenario.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=FeedOptions.speed,
    show_default=True,
    help="Simulated seconds per wall-clock second.",
)
@click.option(
    "--interval",
    default=_field_default(SimulationConfig, "interval"),
    show_default=True,
    help="Tick interval (any duration >= 5s).",
)
@click.option(
    "--backfill-hours",
    type=click.FloatRange(min=0),
    default=FeedOptions.backfill_hours,
    show_default=True,
    help="History sent at once first, so forecasts start immediately.",
)
@click.option(
    "--ticks",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after N live ticks after the back-fill (default: never).",
)
@click.option(
    "--seed", type=int, default=_field_default(SimulationConfig, "seed"), show_default=True, help="Simulator seed."
)
@click.option(
    "--token",
    envvar=FEED_TOKEN_ENV,
    required=True,
    help=f"The service's /feed bearer token (env {FEED_TOKEN_ENV}; the service must have the same).",
)
@click.option(
    "--control-port",
    type=click.IntRange(min=0, max=65535),
    default=ControlOptions.port,
    show_default=True,
    help="Scenario control API on 127.0.0.1 (GET/POST /scenario, switches from the next tick); 0 = off.",
)
def feed(
    url: str | None,
    servers: int,
    scenario: str,
    speed: float,
    interval: str,
    backfill_hours: float,
    ticks: int | None,
    seed: int,
    token: str,
    control_port: int,
) -> None:
    """Stream live simulator ticks (the batch simulator's code path) into the service's /feed.

    The scenario can be switched while it runs: `curl -X POST 127.0.0.1:3001/scenario -d '{"scenario":
    "critical"}'` (or the dashboard's buttons); the new scenario's forced path starts at the next tick.
    """
    from tftmon.serve.feed import live_config, run
    from tftmon.serve.feed_control import ControlServer, ScenarioControl

    if url is None:
        service = _build(ServiceConfig, {})
        url = f"http://{service.host}:{service.port}"
    try:
        config = live_config(servers, scenario, interval, backfill_hours, seed)
    except ValidationError as exc:
        raise click.UsageError(error_text(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    options = FeedOptions(url=url.rstrip("/"), token=token, speed=speed, backfill_hours=backfill_hours, max_ticks=ticks)
    control = ScenarioControl(config.scenario)
    server = None
    if control_port:
        try:
            server = ControlServer(control, ControlOptions(port=control_port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve the scenario control on 127.0.0.1:{control_port} ({exc.strerror or exc}); "
                "pick a free port with --control-port, or --control-port 0 to run without it"
            ) from None
    try:
        sent = run(config, options, control)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if server is not None:
            server.close()
    click.echo(f"sent {sent} ticks for {servers} servers to {url}/feed")


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True, help="HTTP port on 127.0.0.1.")
@click.option(
    "--service-url", help="The service (default $TFTMON_DASHBOARD_SERVICE_URL, else where `tftmon serve` listens)."
)
@click.option(
    "--feeder-url",
    help="The feeder's scenario control, for the demo buttons (default $TFTMON_DASHBOARD_FEEDER_URL, else "
    f"{_field_default(DashboardSettings, 'feeder_url')}).",
)
@click.option(
    "--refresh-seconds",
    type=float,
    help="Seconds between refreshes (default $TFTMON_DASHBOARD_REFRESH_SECONDS, else "
    f"{_field_default(DashboardSettings, 'refresh_seconds'):g}).",
)
def dashboard(port: int, service_url: str | None, feeder_url: str | None, refresh_seconds: float | None) -> None:
    """Streamlit dashboard over the service's HTTP API: fleet heatmap, forecasts with thresholds, explanations.

    Listens on 127.0.0.1 only. This process becomes Streamlit (settings passed as TFTMON_DASHBOARD_*
    variables), so one SIGTERM stops it.
    """
    values = {"service_url": service_url, "feeder_url": feeder_url, "refresh_seconds": refresh_seconds}
    settings = _build(DashboardSettings, values)
    os.environ.update(
        TFTMON_DASHBOARD_SERVICE_URL=settings.service_url,
        TFTMON_DASHBOARD_FEEDER_URL=settings.feeder_url,
        TFTMON_DASHBOARD_REFRESH_SECONDS=str(settings.refresh_seconds),
    )
    app = Path(__file__).with_name("dashboard") / "app.py"
    # Accents in blue: on this page red means critical.
    argv = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", "127.0.0.1",
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
            "--theme.primaryColor", "#1565c0"]  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


@main.command("config")
@click.option(
    "--schema",
    "job",
    type=click.Choice(list(JOB_CONFIGS)),
    required=True,
    help="Print the JSON schema of this job's config: every field with its type, default and bounds.",
)
def config_command(job: str) -> None:
    """Show the configuration a command runs with (tftmon/config.py), e.g. `tftmon config --schema train`."""
    import json

    click.echo(json.dumps(JOB_CONFIGS[job].model_json_schema(), indent=2))


@main.command("stack-prometheus")
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-prometheus"),
    show_default=True,
    help="Working dir: TSDB, configs, dataset, the demo's own MLflow registry, logs (git ignores it).",
)
@click.option("--hosts", type=click.IntRange(min=1), help="Simulated node_exporters (default 20).")
@click.option(
    "--hours",
    type=click.FloatRange(min=1),
    help=f"Their history before now, as long as the demo's (default {DemoConfig().simulation.hours:g}).",
)
@click.option(
    "--port",
    "ports",
    metavar="NAME=N",
    multiple=True,
    help="Port on 127.0.0.1 of prometheus, alertmanager, node-exporter, fleet, service or dashboard (default: a "
    "free one); repeatable.",
)
def stack_prometheus(workdir: Path, hosts: int | None, hours: float | None, ports: tuple[str, ...]) -> None:
    """Watch a fleet through a real Prometheus and Alertmanager, all on 127.0.0.1, until Ctrl-C.

    Simulated node_exporters with a week of history (one host ramping into trouble) and this machine's own, in
    Debian's Prometheus; a model trained from it (ingest --prometheus, train, promote); then service and
    dashboard, critical alerts going to Alertmanager and forecasts scraped back by Prometheus. Prints every URL
    and a PromQL query to try. Needs Debian's prometheus, prometheus-node-exporter and prometheus-alertmanager.
    """
    from tftmon.ops.prometheus_demo import PORT_NAMES, MissingBinaries, PrometheusDemoOptions, run_prometheus_demo

    given: dict[str, Any] = _given({"workdir": workdir, "hosts": hosts, "hours": hours})
    for entry in ports:
        name, _, number = entry.partition("=")
        if name.replace("-", "_") not in PORT_NAMES or not number.isdigit() or not 0 < int(number) < 65536:
            names = ", ".join(n.replace("_", "-") for n in PORT_NAMES)
            raise click.BadParameter(f"{entry!r}: give NAME=N, NAME one of {names}", param_hint="--port")
        given[f"{name.replace('-', '_')}_port"] = int(number)
    try:
        code = run_prometheus_demo(PrometheusDemoOptions(**given))
    except MissingBinaries as exc:
        raise click.ClickException(str(exc)) from None
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
