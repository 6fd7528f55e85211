"""Build, save, load and run the Temporal Fusion Transformer.

A saved model is a directory of plain files, no pickle: `model.safetensors` (weights), `config.json`
(ModelConfig: every hyperparameter), `dataset_parameters.json` (the fitted encoders and scalers,
features.parameters_to_json), `training_info.json` and `server_mapping.json`. Loading rebuilds the
network through the same `from_dataset` call as training, so the two can never disagree on its shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import safetensors.torch
import torch
from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet
from pytorch_forecasting.metrics import MultiLoss, QuantileLoss
from torch import nn

from tftmon.config import ModelConfig
from tftmon.contract import (
    CONTRACT_VERSION,
    HORIZON,
    HORIZONS,
    METRIC,
    MODEL_STEP,
    PROFILE,
    PROFILE_NAMES,
    SERVER_ID,
    SERVER_NAME,
    STATES,
    STEP,
    STEP_NS,
    TIMESTAMP,
    metric_bounds,
    quantile_name,
)
from tftmon.encoding import ServerMapping
from tftmon.io import (
    MAPPING_FILE,
    TRAINING_INFO_FILE,
    atomic_directory,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
)
from tftmon.model import features

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DATASET_FILE = "dataset_parameters.json"


@dataclass
class ForecastModel:
    """A network with everything needed to feed it: its config and the fitted dataset parameters."""

    network: TemporalFusionTransformer
    config: ModelConfig
    dataset_parameters: dict[str, Any]
    training_info: dict[str, Any] = field(default_factory=dict)


def build_network(dataset: TimeSeriesDataSet, config: ModelConfig) -> TemporalFusionTransformer:
    """The TFT for a dataset: one QuantileLoss (the config's quantiles) per target.

    One target is pytorch-forecasting's plain single-target network (its TFT reads a MultiLoss of one as
    a single target and breaks on it), with the same quantile loss; `forecast` reads both the same way.
    No logging metrics: pytorch-forecasting would compute and log five per target on every training step
    (70 with 14 targets), and nothing reads them; accuracy is the evaluation's job.
    """
    n_quantiles, n_targets = len(config.quantiles), len(config.targets)
    loss: MultiLoss | QuantileLoss = QuantileLoss(quantiles=list(config.quantiles))
    output_size: int | list[int] = n_quantiles
    if n_targets > 1:
        weights = config.loss_weights or [1.0] * n_targets
        loss = MultiLoss([QuantileLoss(quantiles=list(config.quantiles)) for _ in config.targets], weights=weights)
        output_size = [n_quantiles] * n_targets
    return TemporalFusionTransformer.from_dataset(
        dataset,
        hidden_size=config.hidden_size,
        attention_head_size=config.attention_head_size,
        lstm_layers=config.lstm_layers,
        dropout=config.dropout,
        hidden_continuous_size=config.hidden_continuous_size,
        learning_rate=config.learning_rate,
        reduce_on_plateau_patience=config.reduce_on_plateau_patience,
        output_size=output_size,
        loss=loss,
        logging_metrics=nn.ModuleList(),
        log_interval=-1,
    )


def training_info(network: TemporalFusionTransformer, frame: pd.DataFrame, config: ModelConfig) -> dict[str, Any]:
    """What a reader of the artifact needs to know about the data the model was trained on."""
    servers = frame.drop_duplicates(SERVER_ID)
    return {
        "contract_version": CONTRACT_VERSION,
        "model_step_seconds": int(MODEL_STEP.total_seconds()),
        "states": list(STATES),
        "profiles": sorted(frame[PROFILE].unique().tolist()),
        "profiles_known_to_encoder": list(PROFILE_NAMES),
        "servers": sorted(servers[SERVER_NAME].astype(str).tolist()),
        "server_ids": dict(zip(servers[SERVER_NAME].astype(str), servers[SERVER_ID].astype(str), strict=True)),
        "targets": list(config.targets),
        "quantiles": list(config.quantiles),
        "encoder_steps": config.encoder_steps,
        "prediction_steps": config.prediction_steps,
        "encoder_sizes": {name: list(size) for name, size in network.hparams.embedding_sizes.items()},
        "rows": len(frame),
        "time_range": [str(frame[TIMESTAMP].min()), str(frame[TIMESTAMP].max())],
    }


def save_model(model: ForecastModel, directory: Path) -> None:
    """Write the model directory atomically: a reader sees the old model or the new, never a mix."""
    with atomic_directory(Path(directory)) as tmp:
        safetensors.torch.save_model(model.network, str(tmp / WEIGHTS_FILE))
        write_bytes_atomic(tmp / CONFIG_FILE, (model.config.model_dump_json(indent=2) + "\n").encode())
        write_json_atomic(tmp / DATASET_FILE, features.parameters_to_json(model.dataset_parameters))
        write_json_atomic(tmp / TRAINING_INFO_FILE, model.training_info)
        ServerMapping.from_names(model.training_info.get("servers", [])).save(tmp / MAPPING_FILE)


def load_model(directory: Path) -> ForecastModel:
    """Rebuild the network from config + dataset parameters and load the weights (strictly)."""
    directory = Path(directory)
    config = ModelConfig.model_validate_json((directory / CONFIG_FILE).read_text())
    parameters = features.parameters_from_json(read_json(directory / DATASET_FILE))
    network = build_network(_skeleton_dataset(parameters, config), config)
    safetensors.torch.load_model(network, str(directory / WEIGHTS_FILE))
    network.eval()
    return ForecastModel(network, config, parameters, read_json(directory / TRAINING_INFO_FILE))


def _skeleton_dataset(parameters: dict[str, Any], config: ModelConfig) -> TimeSeriesDataSet:
    """A one-series dataset carrying the stored parameters: from_dataset reads the shape from it."""
    length = config.encoder_steps + config.prediction_steps
    ts = pd.date_range("2026-01-05", periods=length, freq=MODEL_STEP, tz="UTC")
    frame = pd.DataFrame({SERVER_ID: "skeleton", SERVER_NAME: "skeleton", PROFILE: PROFILE_NAMES[0], TIMESTAMP: ts})
    rng = np.random.default_rng(0)
    for column in [*config.targets, *features.seasonal_columns(config.targets, config.seasonal_lag_hours)]:
        frame[column] = rng.normal(size=length)
    return features.build_dataset(parameters, features.add_time_features(frame), predict=True)


def forecast(model: ForecastModel, history: pd.DataFrame, batch_size: int = 128) -> pd.DataFrame:
    """Forecast PREDICTION_STEPS steps after each server's last observation.

    `history` is contract-shaped metrics at any interval for any servers, known or not. Returns one row
    per server x step x metric: server_name, server_id, profile, step, timestamp (last bin + step x
    MODEL_STEP), metric and one column per model quantile, each within the metric's contract range.
    """
    config = model.config
    frame = features.inference_frame(history, config.targets, config.encoder_steps, config.seasonal_lag_hours)
    batch, window_servers = features.inference_inputs(model.dataset_parameters, frame, config.center_steps)
    network = model.network
    if network.training:  # load_model and fit leave it in eval mode; eval() walks ~1,000 modules
        network.eval()
    blocks: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(batch["groups"]), batch_size):
            part = slice(start, start + batch_size)
            x = {k: [t[part] for t in v] if isinstance(v, list) else v[part] for k, v in batch.items()}
            prediction = features.per_target(network(x)["prediction"])
            blocks.append(torch.stack(prediction, dim=1).cpu().numpy())  # (batch, target, step, q)
    values = np.concatenate(blocks)
    server_ids = [str(sid) for sid in window_servers]
    first_step = batch["decoder_time_idx"][:, 0].numpy().astype(np.int64)
    n_servers, n_targets, n_steps, _ = values.shape

    def repeated(strings: list[str], index: np.ndarray) -> pd.api.extensions.ExtensionArray:
        """Strings taken by index (Arrow), not a million Python objects converted one by one."""
        return pd.array(strings, dtype="str").take(index)

    # An inference frame is one whole window per server: every window's first row names its server.
    identity = frame.iloc[:: len(frame) // n_servers].set_index(SERVER_ID).loc[server_ids]
    server_of_row = np.repeat(np.arange(n_servers), n_targets * n_steps)  # rows are server-major
    step = np.tile(np.arange(1, n_steps + 1), n_servers * n_targets)
    # Quantile heads are trained independently and can cross early in training; p10 <= p50 <= p90.
    names = [quantile_name(q) for q in config.quantiles]
    flat = values.reshape(-1, len(names))
    crossed = np.flatnonzero((np.diff(flat, axis=1) < 0).any(axis=1))
    flat[crossed] = np.sort(flat[crossed], axis=1)
    scale = band_scale(model.training_info, list(config.targets), n_steps)
    if scale is not None:
        flat = widen_bands(flat, config.quantiles, np.tile(scale.ravel(), n_servers))
    lower, upper = (np.repeat(bound, n_steps) for bound in metric_bounds(config.targets))
    flat = np.clip(flat.reshape(n_servers, -1, len(names)), lower[:, None], upper[:, None]).reshape(flat.shape)
    columns = {
        SERVER_NAME: repeated(identity[SERVER_NAME].tolist(), server_of_row),
        SERVER_ID: repeated(server_ids, server_of_row),
        PROFILE: repeated(identity[PROFILE].tolist(), server_of_row),
        STEP: step,
        TIMESTAMP: pd.to_datetime((first_step[server_of_row] + step - 1) * STEP_NS, unit="ns", utc=True),
        METRIC: repeated(list(config.targets), np.tile(np.repeat(np.arange(n_targets), n_steps), n_servers)),
        **{name: flat[:, q] for q, name in enumerate(names)},
    }
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class Explanation:
    """The TFT's own account of one forecast: variable selection weights (each group sums to 1) and the
    first forecast step's attention over the encoder, oldest bin first."""

    static_variables: dict[str, float]
    encoder_variables: dict[str, float]
    decoder_variables: dict[str, float]
    attention: list[float]


def explain(model: ForecastModel, history: pd.DataFrame) -> Explanation:
    """Interpret the forecast of the one server in `history` with `interpret_output`: the same inputs as
    `forecast`, so the weights are those behind the served numbers, not a separate model of them."""
    config = model.config
    frame = features.inference_frame(history, config.targets, config.encoder_steps, config.seasonal_lag_hours)
    batch, servers = features.inference_inputs(model.dataset_parameters, frame, config.center_steps)
    if len(servers) != 1:
        raise ValueError(f"explain reads one server's history, got {len(servers)}")
    network = model.network.eval()
    with torch.no_grad():
        interpretation = network.interpret_output(network(batch), reduction="none")

    def weights(names: list[str], values: torch.Tensor) -> dict[str, float]:
        row = values[0].double()
        total = float(row.sum()) or 1.0
        return {name: float(w) / total for name, w in zip(names, row.tolist(), strict=True)}

    encoder = interpretation["attention"][0, : network.hparams.max_encoder_length].double()
    return Explanation(
        static_variables=weights(network.static_variables, interpretation["static_variables"]),
        encoder_variables=weights(network.encoder_variables, interpretation["encoder_variables"]),
        decoder_variables=weights(network.decoder_variables, interpretation["decoder_variables"]),
        attention=(encoder / (float(encoder.sum()) or 1.0)).tolist(),
    )


#: Key in training_info.json: per target, per step, the factor that widens the forecast distribution
#: around its median so p10–p90 covers 80 % on validation origins (split-conformal, tftmon.evaluation).
BAND_SCALE_KEY = "band_scale"


def band_scale(info: dict[str, Any], targets: list[str], n_steps: int) -> np.ndarray | None:
    """The stored widening factors as [target, step], or None for a model saved without them."""
    stored = info.get(BAND_SCALE_KEY)
    if not stored:
        return None
    return np.array([stored[t][:n_steps] for t in targets], dtype=float)


def widen_bands(values: np.ndarray, quantiles: tuple[float, ...], scale: np.ndarray) -> np.ndarray:
    """Quantile forecasts [row, quantile] stretched about their median by `scale` [row]: order is kept."""
    median = values[:, [quantiles.index(0.5)]]
    return median + scale[:, None] * (values - median)


def at_horizons(forecasts: pd.DataFrame) -> pd.DataFrame:
    """Only the contract horizons (30min, 1h, 8h), labelled in a `horizon` column."""
    by_step = {n: name for name, n in HORIZONS.items()}
    picked = forecasts[forecasts[STEP].isin(list(by_step))].copy()
    picked.insert(3, HORIZON, picked[STEP].map(by_step))
    return picked.reset_index(drop=True)
