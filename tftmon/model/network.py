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

from tftmon.config import ModelConfig
from tftmon.contract import (
    CONTRACT_VERSION,
    HORIZONS,
    MODEL_STEP,
    PROFILE,
    PROFILE_NAMES,
    QUANTILE_NAMES,
    QUANTILES,
    SERVER_ID,
    SERVER_NAME,
    STATES,
    TIMESTAMP,
)
from tftmon.encoding import ServerMapping
from tftmon.io import MAPPING_FILE, atomic_directory, read_json, write_bytes_atomic, write_json_atomic
from tftmon.model import features

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DATASET_FILE = "dataset_parameters.json"
INFO_FILE = "training_info.json"


@dataclass
class ForecastModel:
    """A network with everything needed to feed it: its config and the fitted dataset parameters."""

    network: TemporalFusionTransformer
    config: ModelConfig
    dataset_parameters: dict[str, Any]
    training_info: dict[str, Any] = field(default_factory=dict)


def build_network(dataset: TimeSeriesDataSet, config: ModelConfig) -> TemporalFusionTransformer:
    """The TFT for a dataset: one QuantileLoss (contract quantiles) per target."""
    weights = config.loss_weights or [1.0] * len(config.targets)
    loss = MultiLoss([QuantileLoss(quantiles=list(QUANTILES)) for _ in config.targets], weights=weights)
    return TemporalFusionTransformer.from_dataset(
        dataset,
        hidden_size=config.hidden_size,
        attention_head_size=config.attention_head_size,
        lstm_layers=config.lstm_layers,
        dropout=config.dropout,
        hidden_continuous_size=config.hidden_continuous_size,
        learning_rate=config.learning_rate,
        reduce_on_plateau_patience=config.reduce_on_plateau_patience,
        output_size=[len(QUANTILES)] * len(config.targets),
        loss=loss,
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
        "quantiles": list(QUANTILES),
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
        write_json_atomic(tmp / INFO_FILE, model.training_info)
        ServerMapping.from_names(model.training_info.get("servers", [])).save(tmp / MAPPING_FILE)


def load_model(directory: Path) -> ForecastModel:
    """Rebuild the network from config + dataset parameters and load the weights (strictly)."""
    directory = Path(directory)
    config = ModelConfig.model_validate_json((directory / CONFIG_FILE).read_text())
    parameters = features.parameters_from_json(read_json(directory / DATASET_FILE))
    network = build_network(_skeleton_dataset(parameters, config), config)
    safetensors.torch.load_model(network, str(directory / WEIGHTS_FILE))
    network.eval()
    return ForecastModel(network, config, parameters, read_json(directory / INFO_FILE))


def _skeleton_dataset(parameters: dict[str, Any], config: ModelConfig) -> TimeSeriesDataSet:
    """A one-series dataset carrying the stored parameters: from_dataset reads the shape from it."""
    length = config.encoder_steps + config.prediction_steps
    ts = pd.date_range("2026-01-05", periods=length, freq=MODEL_STEP, tz="UTC")
    frame = pd.DataFrame({SERVER_ID: "skeleton", SERVER_NAME: "skeleton", PROFILE: PROFILE_NAMES[0], TIMESTAMP: ts})
    rng = np.random.default_rng(0)
    for target in config.targets:
        frame[target] = rng.normal(size=length)
    return features.build_dataset(parameters, features.add_time_features(frame), predict=True)


def forecast(model: ForecastModel, history: pd.DataFrame, batch_size: int = 128) -> pd.DataFrame:
    """Forecast PREDICTION_STEPS steps after each server's last observation.

    `history` is contract-shaped metrics at any interval for any servers, known or not. Returns one row
    per server x step x metric: server_name, server_id, profile, step, timestamp (last bin + step x
    MODEL_STEP), metric, p10, p50, p90.
    """
    config = model.config
    frame = features.inference_frame(history, config.targets, config.encoder_steps)
    # Object, not Arrow, strings: the dataset's label encoders iterate them element by element.
    frame = frame.astype({SERVER_ID: object, PROFILE: object})
    dataset = features.build_dataset(model.dataset_parameters, frame, predict=True)
    network = model.network.eval()
    # Decoded here, not by x_to_index: pytorch-forecasting's NaNLabelEncoder(add_nan=True) skips a code
    # when it extends itself with new servers, and its inverse transform then fails on the last one.
    group_codes = dataset.get_parameters()["categorical_encoders"][features.GROUP_ID_ENCODER].classes_
    id_of_code = {code: sid for sid, code in group_codes.items()}
    blocks: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    first_steps: list[np.ndarray] = []
    with torch.no_grad():
        for x, _ in dataset.to_dataloader(train=False, batch_size=batch_size, num_workers=0):
            prediction = network(x)["prediction"]
            blocks.append(torch.stack(list(prediction), dim=1).cpu().numpy())  # (batch, target, step, q)
            codes.append(x["groups"][:, 0].cpu().numpy())
            first_steps.append(x["decoder_time_idx"][:, 0].cpu().numpy())
    values = np.concatenate(blocks)
    server_ids = [id_of_code[int(c)] for c in np.concatenate(codes)]
    first_step = np.concatenate(first_steps).astype(np.int64)
    n_servers, n_targets, n_steps, _ = values.shape

    identity = frame.drop_duplicates(SERVER_ID).set_index(SERVER_ID)
    step_ns = int(MODEL_STEP.total_seconds() * 1e9)
    step = np.arange(1, n_steps + 1)
    out = pd.DataFrame(
        {
            SERVER_ID: np.repeat(np.asarray(server_ids, dtype=object), n_targets * n_steps),
            "metric": np.tile(np.repeat(np.asarray(config.targets, dtype=object), n_steps), n_servers),
            "step": np.tile(step, n_servers * n_targets),
        }
    )
    first = np.repeat(first_step, n_targets * n_steps) + out["step"].to_numpy() - 1
    out[TIMESTAMP] = pd.to_datetime(first * step_ns, unit="ns", utc=True)
    for column in (SERVER_NAME, PROFILE):  # looked up once per server; rows are server-major
        out[column] = np.repeat(identity.loc[server_ids, column].to_numpy(), n_targets * n_steps)
    # Quantile heads are trained independently and can cross early in training; p10 <= p50 <= p90.
    flat = np.sort(values.reshape(-1, len(QUANTILES)), axis=1)
    for q, name in enumerate(QUANTILE_NAMES):
        out[name] = flat[:, q]
    return out[[SERVER_NAME, SERVER_ID, PROFILE, "step", TIMESTAMP, "metric", *QUANTILE_NAMES]]


def at_horizons(forecasts: pd.DataFrame) -> pd.DataFrame:
    """Only the contract horizons (30min, 1h, 8h), labelled in a `horizon` column."""
    by_step = {n: name for name, n in HORIZONS.items()}
    picked = forecasts[forecasts["step"].isin(list(by_step))].copy()
    picked.insert(3, "horizon", picked["step"].map(by_step))
    return picked.reset_index(drop=True)
