"""Model registry: register, gate, promote, roll back and load the Production model.

Promotion speaks in aliases (`models:/tftmon@production`) and also sets the Production stage the MLflow
UI still shows. The production history is kept as a registered-model tag so `rollback` can restore the
previous champion. A candidate that fails the gate never touches Production.

The gate believes nothing it is told: it needs the version's training run to have finished, its weights
to be the bytes registered (SHA-256 recorded at registration), and it backtests those weights itself on
held-out data kept with the version (`GateSample`) or given to `promote`, against the baselines and the
champion on the same data; the metrics the training run logged play no part.
"""

from __future__ import annotations

import getpass
import json
import logging
import re
import tempfile
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from tftmon.config import EvaluationConfig, Settings
from tftmon.contract import (
    COLUMNS,
    CONTRACT_VERSION,
    METRIC,
    MODEL_STEP,
    ORIGIN,
    PROFILE,
    QUANTILE_NAMES,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    STEP,
    TIMESTAMP,
)
from tftmon.evaluation import backtest
from tftmon.evaluation.metrics import MODEL, aggregate
from tftmon.io import TRAINING_INFO_FILE, file_sha256
from tftmon.ops import tracking
from tftmon.ops.tracking import unreadable

if TYPE_CHECKING:
    from tftmon.evaluation.backtest import EvaluationResults
    from tftmon.model.network import ForecastModel

log = logging.getLogger(__name__)

PRODUCTION = "production"
HISTORY_TAG = "tftmon.production_history"
#: The headline score: mean p50 MASE over horizons (lower is better), logged by every training run.
SCORE_METRIC = "eval_tft_mase_mean"
#: A candidate may be this much worse than the champion and still pass (noise between evaluations).
SCORE_TOLERANCE = 0.02
#: Version tag: SHA-256 of model.safetensors at registration, checked wherever the version is loaded.
WEIGHTS_DIGEST_TAG = "weights_sha256"
#: The pyfunc artifact holding the version's `GateSample`.
GATE_SAMPLE_ARTIFACT = "gate_sample"
GATE_SAMPLE_FILE = "gate_sample.parquet"
#: The gate's backtest: origins every hour over the first `holdout_hours` of held-out time (a few origins,
#: seconds on a CPU), scored as training scores (seasonal MASE, the same baselines).
GATE_EVALUATION = EvaluationConfig(holdout_hours=12, calibration_origins=200)
#: Servers in a gate sample, spread over the fleet's sorted names (so over its profiles).
GATE_SERVERS = 12
#: A candidate whose MASE is more than this times the best baseline's on the same data does not forecast:
#: a trained model scores below 1, one trained for 4 batches ~1.5, its weights scaled by -5 ~2.4 and more.
GATE_MAX_BASELINE_RATIO = 2.0


class PromotionRefused(RuntimeError):
    """The candidate failed the gate; Production is unchanged. The message says which check and why."""


class ModelIntegrityError(RuntimeError):
    """A version's weights are not the bytes registered; the message is one line with the fix."""


@dataclass
class GateReport:
    version: str
    checks: dict[str, str] = field(default_factory=dict)
    passed: bool = True

    def fail(self, check: str, reason: str) -> None:
        self.checks[check] = f"FAILED: {reason}"
        self.passed = False

    def ok(self, check: str, detail: str) -> None:
        self.checks[check] = f"ok: {detail}"

    def to_text(self) -> str:
        lines = [f"promotion gate for {Settings().tftmon_model_name} version {self.version}:"]
        lines += [f"  {name:<14} {result}" for name, result in self.checks.items()]
        return "\n".join(lines)


def _client() -> tuple[MlflowClient, str]:
    """The registry's client and model name; RegistryUnreadable when the store cannot even be opened."""
    settings = Settings()
    try:
        tracking.configure(settings)
        return MlflowClient(), settings.tftmon_model_name
    except Exception as exc:  # whatever the store raises (a sqlite file that is not a database: SQLAlchemy's own)
        raise unreadable(exc) from exc


def _registered_model(client: MlflowClient, name: str) -> RegisteredModel | None:
    """The registered model as the registry has it now; None when the registry was read and has no model of
    that name. RegistryUnreadable when it could not be read: a failure is never taken for an empty registry."""
    try:
        return client.get_registered_model(name)
    except Exception as exc:  # whatever the store raises (a sqlite file that is not a database: SQLAlchemy's own)
        if isinstance(exc, MlflowException) and exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise unreadable(exc) from exc


def production_version() -> str | None:
    """The version alias `production` points at; None when the registry, read, has no such model or alias.
    RegistryUnreadable when it could not be read."""
    client, name = _client()
    return _production_of(_registered_model(client, name))


def _production_of(model: RegisteredModel | None) -> str | None:
    version = None if model is None else model.aliases.get(PRODUCTION)
    return None if version is None else str(version)


def _history_of(model: RegisteredModel | None) -> list[str]:
    """The production history kept on the registered model, oldest first (empty without a model)."""
    return [] if model is None else json.loads(model.tags.get(HISTORY_TAG, "[]"))


def newest_finished_version() -> str:
    """The version `promote` picks by default: the newest whose training run finished (a killed run's never)."""
    client, name = _client()
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
    if not versions:
        raise PromotionRefused(f"no version of model {name!r} is registered; run `tftmon train` first")
    for candidate in versions:
        unfinished = _run_check(client, name, str(candidate.version))
        if unfinished is None:
            return str(candidate.version)
        log.warning("skipping version %s: %s", candidate.version, unfinished)
    raise PromotionRefused(
        f"no version of model {name!r} comes from a training run that finished; run `tftmon train` again"
    )


def _download(version: str) -> Path:
    """A version's MLflow model directory (MLmodel, the pyfunc's code and artifacts), downloaded once."""
    _, name = _client()
    return Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))


def _artifact(root: Path, key: str) -> Path | None:
    """A pyfunc artifact of a downloaded version; None when the version was logged without it."""
    from mlflow.models import Model

    artifacts = Model.load(root).flavors["python_function"].get("artifacts", {})
    return root / artifacts[key]["path"] if key in artifacts else None


def _model_dir(root: Path) -> Path:
    from tftmon.model.pyfunc import MODEL_DIR_ARTIFACT

    directory = _artifact(root, MODEL_DIR_ARTIFACT)
    if directory is None:
        raise FileNotFoundError(f"{root}: no {MODEL_DIR_ARTIFACT} artifact; not a tftmon model")
    return directory


def version_files(version: str) -> Path:
    """Download (or locate) a version's model directory: config, weights, training_info, mapping."""
    return _model_dir(_download(version))


def weights_digest(version: str) -> str | None:
    """The SHA-256 of model.safetensors recorded when the version was registered (None: an older tftmon
    registered it): what a copy of the version (e.g. a BentoML store import) must hash to."""
    client, name = _client()
    return client.get_model_version(name, version).tags.get(WEIGHTS_DIGEST_TAG)


def verify_weights(version: str, model_dir: Path) -> str:
    """Check a version's downloaded weights against the digest recorded at registration; returns what was
    checked, raises ModelIntegrityError on a mismatch. A version without a digest passes with a warning."""
    from tftmon.model.network import WEIGHTS_FILE

    path = Path(model_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelIntegrityError(f"version {version}: {WEIGHTS_FILE} is missing from its artifacts")
    expected = weights_digest(version)
    if expected is None:
        log.warning(
            "version %s has no %s tag (an older tftmon registered it): weights not verified",
            version,
            WEIGHTS_DIGEST_TAG,
        )
        return "no digest recorded at registration (an older tftmon registered it): not verified"
    actual = file_sha256(path)
    if actual != expected:
        raise ModelIntegrityError(
            f"version {version}: {WEIGHTS_FILE} has SHA-256 {actual[:12]}… but {expected[:12]}… was registered; "
            "its artifact changed after registration: restore it, or register the model again"
        )
    return f"{WEIGHTS_FILE} is the registered one (SHA-256 {expected[:12]}…)"


def load_version(version: str) -> Any:
    """The registered pyfunc of a version (rebuilt from config.json + safetensors), once its weights are
    verified; ModelIntegrityError when they are not the bytes registered."""
    root = _download(version)
    verify_weights(version, _model_dir(root))
    return mlflow.pyfunc.load_model(str(root))


def load_production() -> Any:
    """The pyfunc that alias `production` points at now (verified as `load_version`); MlflowException when
    there is none."""
    client, name = _client()
    return load_version(str(client.get_model_version_by_alias(name, PRODUCTION).version))


def model_signature(targets: list[str]) -> Any:
    """The pyfunc's schema, from the contract: identity columns, the model's targets (other metrics optional)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    kinds = {"timestamp": "datetime", "string": "string", "float": "double", "int": "long"}
    required = {TIMESTAMP, SERVER_NAME, *targets}
    inputs = Schema([ColSpec(kinds[c.type], c.name, required=c.name in required) for c in COLUMNS if c.role != "label"])
    outputs = Schema(
        [
            ColSpec("string", SERVER_NAME),
            ColSpec("string", SERVER_ID),
            ColSpec("string", PROFILE),
            ColSpec("long", STEP),
            ColSpec("datetime", TIMESTAMP),  # naive UTC, as the input
            ColSpec("string", METRIC),
            *(ColSpec("double", q) for q in QUANTILE_NAMES),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


#: Parquet metadata of a saved GateSample.
_HOLDOUT_KEY = b"tftmon.holdout_start"
_SOURCE_KEY = b"tftmon.source"


@dataclass(frozen=True)
class GateSample:
    """Held-out data the gate backtests a version on: a few servers at the model step, with the history the
    MASE scale, the seasonal baseline and the encoder need before `holdout`, and forecast origins after it."""

    frame: pd.DataFrame
    holdout: pd.Timestamp
    #: Where the data came from, in words (the gate's report says what it scored on).
    source: str

    @classmethod
    def cut(cls, frame: pd.DataFrame, holdout: pd.Timestamp, source: str) -> GateSample:
        """The sample of a model-step frame: up to GATE_SERVERS servers, from two seasonal periods before
        `holdout` to GATE_EVALUATION.holdout_hours after it (no labels: the gate scores accuracy only)."""
        servers = np.sort(frame[SERVER_NAME].astype(str).unique())
        picked = servers[np.unique(np.linspace(0, len(servers) - 1, min(GATE_SERVERS, len(servers))).astype(int))]
        period = GATE_EVALUATION.seasonal_steps * MODEL_STEP
        ts = frame[TIMESTAMP]
        keep = (
            frame[SERVER_NAME].isin(picked)
            & (ts >= holdout - 2 * period)
            & (ts < holdout + pd.Timedelta(hours=GATE_EVALUATION.holdout_hours))
        )
        return cls(frame.loc[keep].drop(columns=[STATE], errors="ignore").reset_index(drop=True), holdout, source)

    @classmethod
    def from_dataset(cls, path: Path) -> GateSample:
        """The sample of a dataset's last GATE_EVALUATION.holdout_hours (e.g. fresh data given to `promote`)."""
        from tftmon.data.resample import resample_to_model_step
        from tftmon.io import read_metrics

        frame = resample_to_model_step(read_metrics(path))
        return cls.cut(frame, backtest.holdout_start(frame, GATE_EVALUATION.holdout_hours), f"the end of {path}")

    def save(self, path: Path) -> None:
        """Parquet, with the held-out start and the source in the file's metadata."""
        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        extra = {_HOLDOUT_KEY: self.holdout.isoformat().encode(), _SOURCE_KEY: self.source.encode()}
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **extra}), path)

    @classmethod
    def load(cls, path: Path) -> GateSample:
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        return cls(table.to_pandas(), pd.Timestamp(meta[_HOLDOUT_KEY].decode()), meta[_SOURCE_KEY].decode())


def _kept_sample(root: Path) -> GateSample | None:
    path = _artifact(root, GATE_SAMPLE_ARTIFACT)
    return None if path is None else GateSample.load(path)


def version_sample(version: str) -> GateSample | None:
    """The held-out sample kept with a version (None: registered without one)."""
    return _kept_sample(_download(version))


def register(
    model_dir: Path,
    targets: list[str],
    input_example: pd.DataFrame,
    tags: dict[str, str],
    *,
    step: int = 0,
    description: str = "",
    sample: GateSample | None = None,
) -> str:
    """Log the pyfunc (models from code + the model directory) in the active run and register a version.

    `step`: the metrics step the logged model links (the final epoch's, where evaluation is logged too);
    `description`: the version's evaluation table, so a reviewer sees in the registry whether it is fit for
    Production; `sample`: held-out data kept with the version for the gate's backtest (without one, the
    gate needs data given to `promote`). The weights' SHA-256 is recorded as tag WEIGHTS_DIGEST_TAG.
    """
    from tftmon.model import pyfunc as pyfunc_model
    from tftmon.model.network import WEIGHTS_FILE

    settings = tracking.configure()
    input_example = pyfunc_model.to_model_input(input_example)
    tags = {**tags, WEIGHTS_DIGEST_TAG: file_sha256(Path(model_dir) / WEIGHTS_FILE)}
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {pyfunc_model.MODEL_DIR_ARTIFACT: str(model_dir)}
        if sample is not None:
            sample.save(Path(tmp) / GATE_SAMPLE_FILE)
            artifacts[GATE_SAMPLE_ARTIFACT] = str(Path(tmp) / GATE_SAMPLE_FILE)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Path(pyfunc_model.__file__),
            artifacts=artifacts,
            signature=model_signature(targets),
            input_example=input_example,
            pip_requirements=_requirements(),
            registered_model_name=settings.tftmon_model_name,
            step=step,
        )
    client = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(settings.tftmon_model_name, version, key, value)
    if description:
        describe_version(version, description, "training")
    if not client.get_registered_model(settings.tftmon_model_name).description:
        client.update_registered_model(settings.tftmon_model_name, description=MODEL_DESCRIPTION)
    return version


MODEL_DESCRIPTION = (
    "Temporal Fusion Transformer forecasting every server metric 30 min, 1 h and 8 h ahead (p2–p98), with risk "
    "and critical alerts read from the forecast distribution. Each version's description holds its evaluation "
    "against last-value, seasonal-naive and linear-drift baselines: MASE ratio per horizon, p10–p90 coverage and "
    "incident recall at a fitted false-alarm budget — on the training fleet's held-out time, and on held-out "
    "fleets once `tftmon evaluate` has scored it. Promote with `tftmon promote`; serving loads @production."
)


def describe_version(version: str, text: str, section: str) -> None:
    """Set one section ("training", "held-out") of a version's description, keeping the others."""
    client, name = _client()
    parts = re.split(r"(?m)^<!-- ([\w-]+) -->\n", client.get_model_version(name, version).description or "")
    sections = dict(zip(parts[1::2], (p.strip() for p in parts[2::2]), strict=True))
    sections[section] = text.strip()
    body = "\n\n".join(f"<!-- {key} -->\n{value}" for key, value in sections.items())
    client.update_model_version(name, version, description=body)


def _requirements() -> list[str]:
    """Pinned to what trained the model; pinning also spares MLflow loading the model to infer them."""
    from importlib.metadata import version

    packages = ("torch", "pytorch-forecasting", "lightning", "mlflow", "pandas", "numpy", "safetensors", "pyarrow")
    return [f"{name}=={version(name).split('+')[0]}" for name in packages]


def headline_score(results: EvaluationResults) -> float:
    """SCORE_METRIC of an evaluation: the model's p50 MASE averaged over horizons."""
    return float(results.aggregate.loc[results.aggregate[MODEL] == results.model, "mase"].mean())


@dataclass(frozen=True)
class BacktestScore:
    """A model's headline MASE on a gate sample, beside the best baseline's on the same origins."""

    mase: float
    baseline: float
    origins: int
    #: The model's rows of the accuracy table (per metric × horizon), for scores over fewer metrics.
    table: pd.DataFrame

    @property
    def ratio(self) -> float:
        return self.mase / self.baseline

    def mase_on(self, metrics: Collection[str]) -> float:
        """The headline MASE over `metrics` only: two models of different targets compare on the shared ones."""
        return float(aggregate(self.table[self.table[METRIC].isin(list(metrics))])["mase"].mean())


def backtest_score(model: ForecastModel, sample: GateSample) -> BacktestScore:
    """Backtest a model's own weights on a gate sample, scored as training scores (same metrics, baselines)."""
    predictions = backtest.run(backtest.model_forecaster(model), sample.frame, sample.holdout, GATE_EVALUATION)
    results = backtest.evaluate(predictions, sample.frame, sample.holdout, config=GATE_EVALUATION)
    baseline = float(results.ratio["best_baseline_mase"].mean())
    origins = len(predictions[[SERVER_NAME, ORIGIN]].drop_duplicates())
    own = results.metrics[results.metrics[MODEL] == results.model]
    return BacktestScore(headline_score(results), baseline, origins, own)


def _run_check(client: MlflowClient, name: str, version: str) -> str | None:
    """Why the version's training run rules it out (None: it finished). An orphaned run is marked FAILED."""
    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        return "no training run is recorded for it; register versions from a run (`tftmon train`)"
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return f"its training run {run_id} is gone from the tracking store"
    status = tracking.settle(run)
    if status == "FINISHED":
        return None
    owner = f"process {run.data.tags.get(tracking.PID_TAG, '?')} on {run.data.tags.get(tracking.HOST_TAG, '?')}"
    if status == "RUNNING":
        return f"its training run {run_id} is still RUNNING ({owner}); promote it once that run has finished"
    return f"its training run {run_id} ended {status} ({owner}): a version of an unfinished run never serves"


def _backtest(model: ForecastModel, sample: GateSample | None) -> BacktestScore | str:
    """The candidate's score on the sample, or why it has none."""
    if sample is None:
        return "no held-out data to backtest it on: the version keeps no gate sample (registered without one)"
    try:
        score = backtest_score(model, sample)
    except ValueError as exc:
        return f"cannot backtest on {sample.source}: {exc}"
    if not np.isfinite(score.ratio):
        return f"MASE on {sample.source} is not finite (it needs a day of history before the held-out time)"
    return score


def _score_check(
    report: GateReport, version: str, model: ForecastModel, sample: GateSample | None, force: bool
) -> None:
    """The gate's backtest: the candidate against the baselines and the champion on the same held-out data."""
    score = _backtest(model, sample)
    if isinstance(score, str):
        if force:
            report.ok("backtest", f"not scored, forced: {score}")
        else:
            report.fail("backtest", f"{score}; pass --data PATH (a dataset of >= 2 days) to score it, or --force")
        return
    assert sample is not None
    scored = f"MASE {score.mase:.3f} on {score.origins} held-out origins of {sample.source}"
    limit = f"best baseline {score.baseline:.3f}, ratio {score.ratio:.2f} (limit {GATE_MAX_BASELINE_RATIO:g})"
    broken = score.ratio > GATE_MAX_BASELINE_RATIO
    if broken and not force:
        report.fail("backtest", f"{scored}; {limit}: the weights do not forecast (use --force to promote anyway)")
    else:
        report.ok("backtest", f"{scored}; {limit}{': forced' if broken else ''}")

    champion = production_version()
    if champion is None or champion == version:
        report.ok("champion", "no other champion to beat")
        return
    try:
        rival = load_version(champion).unwrap_python_model().model
        # A mean over other metrics is another score: compare on the metrics both forecast.
        shared = [m for m in model.config.targets if m in rival.config.targets]
        if not shared:
            report.ok("champion", f"v{champion} forecasts none of this version's metrics; not compared")
            return
        champion_mase = backtest_score(rival, sample).mase_on(shared)
    except Exception as exc:  # a broken champion must not block its replacement
        report.ok("champion", f"v{champion} cannot be scored ({exc}); not compared")
        return
    same = shared == list(model.config.targets) and shared == list(rival.config.targets)
    candidate_mase = score.mase_on(shared)
    worse = candidate_mase > champion_mase * (1 + SCORE_TOLERANCE)
    on = "the same data" if same else f"the same data, on the metrics both forecast ({', '.join(shared)})"
    versus = f"MASE {candidate_mase:.3f} vs champion v{champion}'s {champion_mase:.3f} on {on}"
    if worse and not force:
        report.fail("champion", f"{versus}: worse than champion (use --force to promote anyway)")
    else:
        report.ok("champion", f"{versus}: {'forced past a worse score' if worse else 'not worse'}")


def gate(version: str, force: bool = False, data: GateSample | None = None) -> GateReport:
    """Check a candidate: its run finished, files and contract, weights are the registered bytes and load,
    every server (and a stranger) forecasts, and a backtest of its weights on held-out data (`data`, else
    the sample kept with it) is within the baselines' bound and no worse than the champion. `force` passes
    a worse or missing score, never an unfinished run nor changed or broken weights."""
    from tftmon.model.pyfunc import to_model_input
    from tftmon.model.smoke import SmokeTestFailed, smoke_test

    report = GateReport(version)
    client, name = _client()
    try:
        unfinished = _run_check(client, name, version)
    except MlflowException as exc:  # no such version
        report.fail("version", str(exc))
        return report
    if unfinished is not None:
        report.fail("run", unfinished)
        return report
    report.ok("run", "its training run finished")

    try:
        root = _download(version)
        directory = _model_dir(root)
        info = json.loads((directory / TRAINING_INFO_FILE).read_text())
        if not (directory / "server_mapping.json").exists():
            raise FileNotFoundError("server_mapping.json is missing")
        sample = data or _kept_sample(root)
    except (MlflowException, OSError, ValueError, KeyError) as exc:
        report.fail("files", str(exc))
        return report
    report.ok("files", "config, weights, training_info.json and server_mapping.json present")

    try:
        report.ok("weights", verify_weights(version, directory))
    except ModelIntegrityError as exc:
        report.fail("weights", str(exc))
        return report

    model_major = str(info.get("contract_version", "?")).split(".")[0]
    if model_major != CONTRACT_VERSION.split(".")[0]:
        report.fail("contract", f"model built for contract {info.get('contract_version')}, code is {CONTRACT_VERSION}")
        return report
    report.ok("contract", f"{info['contract_version']} (code {CONTRACT_VERSION})")

    try:
        model = mlflow.pyfunc.load_model(str(root))
    except Exception as exc:  # whatever the loader raises, the candidate is unusable
        report.fail("load", f"weights do not load: {exc}")
        return report
    report.ok("load", "pyfunc rebuilt from config.json + model.safetensors")

    try:  # through the registered pyfunc: what serving will load
        coverage = smoke_test(model.unwrap_python_model().model, lambda h: model.predict(to_model_input(h)))
    except SmokeTestFailed as exc:
        report.fail("coverage", str(exc))
        return report
    report.ok("coverage", coverage)
    _score_check(report, version, model.unwrap_python_model().model, sample, force)
    return report


def _set_production(client: MlflowClient, name: str, version: str, why: str) -> None:
    client.set_registered_model_alias(name, PRODUCTION, version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, version, "Production", archive_existing_versions=True)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in {"promoted_by": getpass.getuser(), "promoted_at": now, "promotion_reason": why}.items():
        client.set_model_version_tag(name, version, key, value)


def promote(version: str | None = None, force: bool = False, reason: str = "", data: Path | None = None) -> GateReport:
    """Gate a version (by default the newest whose training run finished) and make it Production; raises
    PromotionRefused on failure. `data`: a dataset to backtest on instead of the sample kept with the version."""
    client, name = _client()
    version = str(version) if version is not None else newest_finished_version()
    report = gate(version, force=force, data=GateSample.from_dataset(data) if data is not None else None)
    if not report.passed:
        raise PromotionRefused(report.to_text())
    registered = _registered_model(client, name)
    current, history = _production_of(registered), _history_of(registered)
    if current is not None and (not history or history[-1] != current):
        history.append(current)
    if not history or history[-1] != version:
        history.append(version)
    why = reason or ("forced" if force else "passed the gate")
    _set_production(client, name, version, why)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    log.info("version %s of %s is now production (%s)", version, name, why)
    return report


def rollback(reason: str = "rollback") -> str:
    """Restore the previous champion; returns its version. Refuses when there is none."""
    client, name = _client()
    model = _registered_model(client, name)
    if model is None:
        raise PromotionRefused(
            f"no version of model {name!r} is registered, so none to roll back to; run `tftmon train` first"
        )
    current, history = _production_of(model), _history_of(model)
    if current is not None and history and history[-1] == current:
        history.pop()
    if not history:
        raise PromotionRefused("no previous production version to roll back to")
    previous = history[-1]
    _set_production(client, name, previous, reason)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    log.info("rolled back %s from version %s to %s", name, current, previous)
    return previous
