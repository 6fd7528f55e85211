"""Model registry: register, gate, promote, roll back and load the Production model.

Promotion speaks in aliases (`models:/tftmon@production`) and also sets the Production stage the MLflow
UI still shows. The production history is kept as a registered-model tag so `rollback` can restore the
previous champion. A candidate that fails the gate never touches Production.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tftmon.config import Settings
from tftmon.contract import (
    COLUMNS,
    CONTRACT_VERSION,
    METRIC,
    PROFILE,
    QUANTILE_NAMES,
    SERVER_ID,
    SERVER_NAME,
    STEP,
    TIMESTAMP,
)
from tftmon.ops import tracking

log = logging.getLogger(__name__)

PRODUCTION = "production"
HISTORY_TAG = "tftmon.production_history"
#: The gate's headline score: mean p50 MASE over horizons (lower is better), logged by every training run.
SCORE_METRIC = "eval_tft_mase_mean"
#: A candidate may be this much worse than the champion and still pass (noise between evaluations).
SCORE_TOLERANCE = 0.02


class PromotionRefused(RuntimeError):
    """The candidate failed the gate; Production is unchanged. The message says which check and why."""


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
    settings = tracking.configure()
    return MlflowClient(), settings.tftmon_model_name


def production_version() -> str | None:
    client, name = _client()
    try:
        return str(client.get_model_version_by_alias(name, PRODUCTION).version)
    except MlflowException:
        return None


def _newest_version(client: MlflowClient, name: str) -> str:
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise PromotionRefused(f"no version of model {name!r} is registered; run `tftmon train` first")
    return str(max(int(v.version) for v in versions))


def _history(client: MlflowClient, name: str) -> list[str]:
    tags = client.get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def version_files(version: str) -> Path:
    """Download (or locate) a version's model directory: config, weights, training_info, mapping."""
    from mlflow.models import Model

    from tftmon.model.pyfunc import MODEL_DIR_ARTIFACT

    _, name = _client()
    root = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    artifacts = Model.load(root).flavors["python_function"]["artifacts"]
    return root / artifacts[MODEL_DIR_ARTIFACT]["path"]


def load_version(version: str) -> Any:
    """The registered pyfunc of a version (rebuilt from config.json + safetensors)."""
    _, name = _client()
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def load_production() -> Any:
    """The pyfunc that alias `production` points at now; MlflowException when there is none."""
    _, name = _client()
    return mlflow.pyfunc.load_model(f"models:/{name}@{PRODUCTION}")


def version_score(version: str) -> float | None:
    client, name = _client()
    run_id = client.get_model_version(name, version).run_id
    value = client.get_run(run_id).data.metrics.get(SCORE_METRIC) if run_id else None
    return None if value is None or math.isnan(value) else float(value)


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


def register(
    model_dir: Path,
    targets: list[str],
    input_example: pd.DataFrame,
    tags: dict[str, str],
    *,
    step: int = 0,
    description: str = "",
) -> str:
    """Log the pyfunc (models from code + the model directory) in the active run and register a version.

    `step`: the metrics step the logged model links (the final epoch's, where evaluation is logged too);
    `description`: the version's evaluation table, so a reviewer sees in the registry whether it is fit for
    Production.
    """
    from tftmon.model import pyfunc as pyfunc_model

    settings = tracking.configure()
    input_example = pyfunc_model.to_model_input(input_example)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=Path(pyfunc_model.__file__),
        artifacts={pyfunc_model.MODEL_DIR_ARTIFACT: str(model_dir)},
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


def gate(version: str, force: bool = False) -> GateReport:
    """Check a candidate: files and contract, weights load, every server (and a stranger) forecasts."""
    from tftmon.model.pyfunc import to_model_input
    from tftmon.model.smoke import SmokeTestFailed, smoke_test

    report = GateReport(version)
    try:
        directory = version_files(version)
        info = json.loads((directory / "training_info.json").read_text())
        if not (directory / "server_mapping.json").exists():
            raise FileNotFoundError("server_mapping.json is missing")
    except (MlflowException, OSError, ValueError) as exc:
        report.fail("files", str(exc))
        return report
    report.ok("files", "config, weights, training_info.json and server_mapping.json present")

    model_major = str(info.get("contract_version", "?")).split(".")[0]
    if model_major != CONTRACT_VERSION.split(".")[0]:
        report.fail("contract", f"model built for contract {info.get('contract_version')}, code is {CONTRACT_VERSION}")
        return report
    report.ok("contract", f"{info['contract_version']} (code {CONTRACT_VERSION})")

    try:
        model = load_version(version)
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

    champion = production_version()
    candidate_score = version_score(version)
    if champion is None or champion == version:
        report.ok("champion", "no other champion to beat")
    else:
        champion_score = version_score(champion)
        if candidate_score is None or champion_score is None:
            report.ok("champion", "no comparable score logged; not compared")
        elif candidate_score > champion_score * (1 + SCORE_TOLERANCE) and not force:
            report.fail(
                "champion",
                f"MASE {candidate_score:.3f} is worse than champion v{champion}'s {champion_score:.3f} "
                "(use --force to promote anyway)",
            )
        else:
            verdict = "forced past a worse score" if candidate_score > champion_score else "not worse"
            report.ok("champion", f"MASE {candidate_score:.3f} vs v{champion} {champion_score:.3f}: {verdict}")
    return report


def _set_production(client: MlflowClient, name: str, version: str, why: str) -> None:
    client.set_registered_model_alias(name, PRODUCTION, version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, version, "Production", archive_existing_versions=True)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in {"promoted_by": getpass.getuser(), "promoted_at": now, "promotion_reason": why}.items():
        client.set_model_version_tag(name, version, key, value)


def promote(version: str | None = None, force: bool = False, reason: str = "") -> GateReport:
    """Gate a version (newest by default) and make it Production; raises PromotionRefused on failure."""
    client, name = _client()
    version = str(version) if version is not None else _newest_version(client, name)
    report = gate(version, force=force)
    if not report.passed:
        raise PromotionRefused(report.to_text())
    current = production_version()
    history = _history(client, name)
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
    history = _history(client, name)
    current = production_version()
    if current is not None and history and history[-1] == current:
        history.pop()
    if not history:
        raise PromotionRefused("no previous production version to roll back to")
    previous = history[-1]
    _set_production(client, name, previous, reason)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    log.info("rolled back %s from version %s to %s", name, current, previous)
    return previous
