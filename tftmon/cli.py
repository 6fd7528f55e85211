"""The `tftmon` command: a thin click layer that parses options and calls the pipeline modules.

Heavy imports (pandas, GE, torch, MLflow) happen inside each command so `tftmon --help` stays instant.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

import click
from pydantic import BaseModel

from tftmon import __version__
from tftmon.config import EvaluationConfig, TrainConfig
from tftmon.contract import CONTRACT_VERSION, DEFAULT_FLEET_SIZE

log = logging.getLogger("tftmon")

SCENARIOS = ("normal", "healthy", "degrading", "critical")


def _default(field: str, model: type[BaseModel] = TrainConfig) -> str:
    """'(default X)' read from the config class, so help texts never drift from the real defaults."""
    return f"(default {model.model_fields[field].default})"


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, message=f"%(prog)s %(version)s (contract {CONTRACT_VERSION})")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """tftmon: forecast every server's metrics 30 min, 1 h and 8 h ahead, and warn before it fails.

    Pipeline: generate (or ingest) -> validate -> train -> promote -> serve. MLflow tracking goes to
    $MLFLOW_TRACKING_URI (default sqlite:///mlflow.db here, artifacts in ./mlartifacts).
    """
    _setup_logging(verbose)


@main.command()
@click.option(
    "--servers",
    type=click.IntRange(min=1),
    default=DEFAULT_FLEET_SIZE,
    show_default=True,
    help="Fleet size; profiles keep the default proportions (90 = the default fleet).",
)
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    default=720,
    show_default=True,
    help="Length of the simulated period.",
)
@click.option(
    "--interval",
    default="5min",
    show_default=True,
    help="Sample interval, any duration >= 5s (5s, 1min, 5min). Training resamples to 5 min.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed, same data.")
@click.option("--start", default=None, help="Start time, ISO 8601 (UTC if no zone). Default 2026-01-05T00:00Z.")
@click.option(
    "--fleet",
    "fleet_file",
    default="",
    help="Exact fleet: a file of `server_name[,profile]` lines (profile inferred when blank).",
)
@click.option(
    "--add-servers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Drift scenario: add K new servers to the fleet.",
)
@click.option(
    "--retire-servers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Drift scenario: retire the last K servers of the fleet.",
)
@click.option(
    "--scenario",
    type=click.Choice(SCENARIOS),
    default="normal",
    show_default=True,
    help="healthy: no incidents; degrading/critical: force a share of servers onto that path.",
)
@click.option(
    "--scenario-fraction",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="Share of servers the scenario applies to.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/fleet"),
    show_default=True,
    help="Output directory (replaced atomically).",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def generate(out: Path, fleet_file: str, progress: bool, **options: object) -> None:
    """Simulate a fleet: Parquet + metrics_metadata.json + server_mapping.json under --out."""
    from tftmon.config import SimulationConfig
    from tftmon.data.simulate import load_fleet_file
    from tftmon.ops.jobs import run_generate

    if not options["start"]:
        options.pop("start")
    try:
        fleet = load_fleet_file(Path(fleet_file)) if fleet_file else None
        config = SimulationConfig(**options, fleet=fleet)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from exc
    started = time.perf_counter()
    metadata = run_generate(config, out, progress=progress)
    seconds = time.perf_counter() - started
    click.echo(
        f"wrote {metadata['rows']:,} rows for {len(metadata['fleet'])} servers to {out} "
        f"in {seconds:.1f} s ({metadata['rows'] / seconds:,.0f} rows/s)"
    )


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Also fail on unknown extra columns and require every column.")
@click.option(
    "--suite",
    type=click.Choice(["auto", "simulated", "telemetry"]),
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
def validate(path: Path, strict: bool, suite: str, docs_dir: Path | None, as_json: bool) -> None:
    """Validate a dataset against the contract's Great Expectations suites; exit 1 on failure."""
    import json

    from tftmon.ops.jobs import run_validate

    report = run_validate(path, suite=suite, strict=strict, docs_dir=docs_dir)
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else report.to_text())
    sys.exit(0 if report.success else 1)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--targets", default="", help="Comma-separated metrics to forecast (default: all 14).")
@click.option(
    "--max-epochs", metavar="N", help=f"Upper bound on epochs; early stopping may end sooner {_default('max_epochs')}."
)
@click.option(
    "--max-batches-per-epoch", metavar="N", help=f"Bounds CPU time per epoch {_default('max_batches_per_epoch')}."
)
@click.option("--encoder-hours", metavar="H", help=f"History the model reads {_default('encoder_hours')}.")
@click.option("--hidden-size", metavar="N", help=f"TFT hidden size {_default('hidden_size')}.")
@click.option("--batch-size", metavar="N", help=f"Training batch size {_default('batch_size')}.")
@click.option("--accelerator", default="auto", show_default=True, help="cpu, gpu or auto.")
@click.option("--devices", default="auto", show_default=True, help="Number of devices (or auto); >1 uses DDP.")
@click.option("--seed", metavar="N", help=f"Random seed {_default('seed')}.")
@click.option(
    "--holdout-hours",
    metavar="H",
    help=f"Last part of time held out for evaluation {_default('holdout_hours', EvaluationConfig)}.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
def train(
    path: Path,
    targets: str,
    accelerator: str,
    devices: str,
    progress: bool,
    holdout_hours: str | None,
    **options: str | None,
) -> None:
    """Validate PATH, train the TFT, evaluate it against baselines, log to MLflow and register a version.

    Numeric options left out (or empty, as MLproject passes them) keep TrainConfig's defaults.
    """
    from tftmon.ops.jobs import TrainingRefused, run_train

    try:
        config = TrainConfig(
            **{k: v for k, v in options.items() if v},
            targets=[t.strip() for t in targets.split(",") if t.strip()] or None,
            accelerator=accelerator,
            devices=int(devices) if devices.isdigit() else devices,
            progress_bar=progress,
        )
        eval_config = EvaluationConfig(**({"holdout_hours": holdout_hours} if holdout_hours else {}))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
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
def evaluate(path: Path, version: str | None) -> None:
    """Evaluate a registered model version on PATH against last-value, seasonal-naive and drift baselines."""
    from tftmon.ops.jobs import run_evaluate
    from tftmon.ops.registry import PromotionRefused

    try:
        outcome = run_evaluate(path, version)
    except PromotionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(outcome["summary"])


@main.command()
@click.option("--version", default=None, help="Version to promote (default: the newest).")
@click.option("--force", is_flag=True, help="Promote even if it scores worse than the champion.")
@click.option("--reason", default="", help="Why; recorded as a tag on the version.")
def promote(version: str | None, force: bool, reason: str) -> None:
    """Gate a version (contract, files, forecasts for every server, vs champion), then make it production."""
    from tftmon.ops.registry import PromotionRefused
    from tftmon.ops.registry import promote as promote_version

    try:
        report = promote_version(version, force=force, reason=reason)
    except PromotionRefused as exc:
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


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/demo"),
    show_default=True,
    help="Where the demo fleet is written.",
)
def demo(out: Path) -> None:
    """The whole pipeline on a small fleet: generate -> validate -> train -> evaluate -> promote."""
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
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="HTTP port.")
def serve(host: str, port: int) -> None:
    """BentoML service of models:/tftmon@production (forecasts, risk, alerts, live feed, /metrics).

    Admin endpoints need TFTMON_ADMIN_TOKEN; limits are TFTMON_SERVICE_* variables (tftmon.config.ServiceConfig).
    """
    import subprocess

    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "tftmon.serve.service:Tftmon",
        "--host",
        host,
        "--port",
        str(port),
    ]
    sys.exit(subprocess.call(command))


@main.command()
@click.option("--url", default="http://127.0.0.1:3000", show_default=True, help="The service.")
@click.option(
    "--servers",
    type=click.IntRange(min=1),
    default=DEFAULT_FLEET_SIZE,
    show_default=True,
    help="Fleet size (default proportions of profiles).",
)
@click.option(
    "--scenario",
    type=click.Choice(SCENARIOS),
    default="normal",
    show_default=True,
    help="healthy / degrading / critical: the feeder owns the scenario.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Simulated seconds per wall-clock second.",
)
@click.option("--interval", default="5min", show_default=True, help="Tick interval (any duration >= 5s).")
@click.option(
    "--backfill-hours",
    type=click.FloatRange(min=0),
    default=6.0,
    show_default=True,
    help="History sent at once first, so forecasts start immediately.",
)
@click.option(
    "--ticks",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after N live ticks after the back-fill (default: never).",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Simulator seed.")
def feed(
    url: str,
    servers: int,
    scenario: str,
    speed: float,
    interval: str,
    backfill_hours: float,
    ticks: int | None,
    seed: int,
) -> None:
    """Stream live simulator ticks (the batch simulator's code path) into the service's /feed."""
    from tftmon.serve.feed import FeedOptions, live_config, run

    try:
        config = live_config(servers, scenario, interval, backfill_hours, seed)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    options = FeedOptions(url=url.rstrip("/"), speed=speed, backfill_hours=backfill_hours, max_ticks=ticks)
    try:
        sent = run(config, options)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"sent {sent} ticks for {servers} servers to {url}/feed")


if __name__ == "__main__":
    main()
