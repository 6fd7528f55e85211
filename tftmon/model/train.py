"""The training job core: split by time, fit the TFT with Lightning, return the model and what it saw.

Experiment tracking is not done here: pass a Lightning callback (e.g. an MLflow one) in `callbacks`; it
finds per-epoch `train_loss_epoch`, `val_loss` and `lr` in `trainer.callback_metrics`.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.loggers import Logger
from pytorch_forecasting import TimeSeriesDataSet
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    WeightedRandomSampler,
)

from tftmon.config import TrainConfig
from tftmon.contract import INCIDENT_STATE, MODEL_STEP, SERVER_ID, SERVER_NAME, STATE
from tftmon.io import CHECKPOINT_PREFIX, owned_temp_dir
from tftmon.model.network import ForecastModel, build_network, features, training_info

log = logging.getLogger(__name__)


class StopReason(StrEnum):
    """Why training ended: a time limit means the model trained less than its config asked for."""

    MAX_EPOCHS = "max epochs"
    EARLY_STOPPING = "early stopping"
    TIME_LIMIT = "time limit"
    INTERRUPTED = "interrupted"


@dataclass
class TrainingResult:
    """What a training run produced besides the model: datasets, trainer, throughput and why it stopped."""

    training: TimeSeriesDataSet
    validation: TimeSeriesDataSet
    trainer: Trainer
    best_val_loss: float
    epochs: int
    seconds: float
    samples_per_second: float
    stopped_by: StopReason


class LearningRateMetric(Callback):
    """Log the optimiser's learning rate each epoch as `lr` so tracking callbacks can record it."""

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.log("lr", trainer.optimizers[0].param_groups[0]["lr"], on_epoch=True)


class BestWeights(Callback):
    """Keep the best validation weights in memory: restoring them needs no checkpoint unpickling."""

    def __init__(self) -> None:
        self.best_loss = float("inf")
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loss = trainer.callback_metrics.get("val_loss")
        if trainer.sanity_checking or loss is None or not float(loss) < self.best_loss:
            return
        self.best_loss = float(loss)
        self.state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}


class AveragedWeights(Callback):
    """Validate, and so keep, an exponential moving average of the weights instead of the last step's.

    The weights after any one step carry that step's noise; their average over the last few hundred steps
    forecasts better. The average is swapped in for the whole validation (BestWeights, earlier in the
    callback list, copies it at `on_validation_end`) and swapped out after it, so training goes on from
    the step's own weights; a checkpoint holds the average too.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.average: list[torch.Tensor] | None = None
        self.current: list[torch.Tensor] | None = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        weights = [p.detach() for p in pl_module.parameters()]
        if self.average is None:
            self.average = [w.clone() for w in weights]
            return
        for average, weight in zip(self.average, weights, strict=True):
            average.lerp_(weight, 1.0 - self.decay)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.average is not None:
            self.current = [p.detach().clone() for p in pl_module.parameters()]
            _copy_into(pl_module, self.average)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.current is not None:
            _copy_into(pl_module, self.current)
            self.current = None

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Lightning saves checkpoints last, after the swap back: store the average its val_loss was scored on.
        if self.average is not None:
            names = [name for name, _ in pl_module.named_parameters()]
            checkpoint["state_dict"].update(zip(names, (a.detach().cpu().clone() for a in self.average), strict=True))


def _copy_into(module: LightningModule, values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for parameter, value in zip(module.parameters(), values, strict=True):
            parameter.copy_(value)


class EpochLog(Callback):
    """One log line per validated epoch, so a run without progress bars (cron, CI) still shows where it is."""

    def __init__(self, best: BestWeights, max_epochs: int) -> None:
        self.best = best
        self.max_epochs = max_epochs
        self.started = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loss = trainer.callback_metrics.get("val_loss")
        if trainer.sanity_checking or loss is None:
            return
        elapsed = timedelta(seconds=round(time.perf_counter() - self.started))
        log.info(
            "epoch %d/%d: val_loss %.3f (best %.3f), %s elapsed",
            trainer.current_epoch + 1, self.max_epochs, float(loss), self.best.best_loss, elapsed,
        )  # fmt: skip


def loss_weights(frame: pd.DataFrame, targets: Sequence[str]) -> list[float]:
    """1/std of each target, mean 1: the loss is in metric units, so MB/s would otherwise drown out %."""
    std = frame[list(targets)].std().to_numpy(dtype=np.float64)
    inverse = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
    return (inverse / inverse.mean()).round(6).tolist()


def split_by_time(frame: pd.DataFrame, config: TrainConfig) -> tuple[pd.DataFrame, pd.Series]:
    """Hold out the last `validation_hours` of every server; returns the training rows and each cutoff.

    Raises ValueError naming the servers too short for an encoder, a forecast and a validation window.
    """
    first = frame.groupby(SERVER_ID)[features.TIME_IDX].min()
    last = frame.groupby(SERVER_ID)[features.TIME_IDX].max()
    cutoff = last - config.validation_steps + 1
    if config.validation_steps < features.PREDICTION_STEPS:
        raise ValueError(f"validation_hours must cover one forecast ({features.PREDICTION_STEPS} steps)")
    need = config.encoder_steps + features.PREDICTION_STEPS + config.validation_steps
    short = (last - first + 1) < need
    if short.all():
        names = frame.drop_duplicates(SERVER_ID).set_index(SERVER_ID)[SERVER_NAME]
        hours = need * MODEL_STEP.total_seconds() / 3600
        raise ValueError(
            f"no server has enough history to train: {', '.join(names[short.index[short]])}; "
            f"need {need} steps ({hours:g} h: encoder + forecast + validation) per server"
        )
    keep = frame[features.TIME_IDX] < frame[SERVER_ID].map(cutoff)
    return frame[keep].reset_index(drop=True), cutoff


class WindowBatches(Dataset):
    """A dataset whose items are whole batches: the sampler yields lists of window positions and each list
    is built at once by `features.window_batch`, the tensors pytorch-forecasting's loader would give one
    window at a time (half of a training step's time on 2 cores)."""

    def __init__(self, dataset: TimeSeriesDataSet, center_steps: int | None) -> None:
        self.dataset = dataset
        self.center_steps = center_steps

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, windows: list[int]) -> tuple[dict[str, Any], tuple[list[torch.Tensor], None]]:
        x = features.window_batch(self.dataset, np.asarray(windows, dtype=np.int64), self.center_steps)
        return x, (x["decoder_target"], None)


def window_loader(
    dataset: TimeSeriesDataSet, sampler: Iterable[int], batch_size: int, config: TrainConfig, drop_last: bool
) -> DataLoader:
    """Batches of `batch_size` windows drawn by `sampler` (or taken in a given order); worker processes kept
    alive across epochs."""
    return DataLoader(
        WindowBatches(dataset, config.model.center_steps),
        sampler=BatchSampler(sampler, batch_size, drop_last=drop_last),
        batch_size=None,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
    )


def _training_loader(training: TimeSeriesDataSet, frame: pd.DataFrame, config: TrainConfig) -> DataLoader:
    """Shuffled batches, or incident-weighted draws with replacement when `incident_oversampling` > 0."""
    sampler: Sampler[int]
    if config.incident_oversampling <= 0:
        sampler = RandomSampler(range(len(training)))
    else:
        weights = incident_weights(training, frame, config.incident_oversampling, config.incident_lead_steps)
        batches = config.max_batches_per_epoch or int(np.ceil(len(weights) / config.batch_size))
        sampler = WeightedRandomSampler(weights.tolist(), config.batch_size * batches, replacement=True)
    return window_loader(training, sampler, config.batch_size, config, drop_last=len(training) > config.batch_size)


def validation_dataset(parameters: dict, frame: pd.DataFrame, cutoff: pd.Series, stride: int) -> TimeSeriesDataSet:
    """Windows whose forecast lies wholly in each server's held-out tail, one every `stride` steps."""
    dataset = features.build_dataset(parameters, frame, predict=False, min_prediction_idx=int(cutoff.min()))

    def held_out(index: pd.DataFrame) -> pd.Series:
        start = index[SERVER_ID].map(cutoff)
        offset = index["time_idx_first_prediction"] - start
        return (offset >= 0) & (offset % stride == 0)

    return dataset.filter(held_out)


def validation_windows(n_windows: int, config: TrainConfig) -> list[int]:
    """The validation windows scored each epoch: all of them, or `max_val_batches` batches' worth spread evenly
    over the dataset's order (server by server, time within each), so early stopping and the kept weights
    are judged on every server, not on the first few in id order."""
    if config.max_val_batches is None or n_windows <= config.max_val_batches * config.batch_size:
        return list(range(n_windows))
    return np.linspace(0, n_windows - 1, config.max_val_batches * config.batch_size).round().astype(int).tolist()


def incident_weights(dataset: TimeSeriesDataSet, frame: pd.DataFrame, boost: float, lead_steps: int) -> np.ndarray:
    """Sampling weight per training window: 1 + `boost` when an incident (the simulator's critical state)
    falls in the first `lead_steps` of the window's forecast, else 1.

    Incidents are rare (a few percent of windows), so uniform sampling lets the loss ignore the ramps that
    precede them; oversampling those windows teaches the tails to rise. `state` only weights samples: it is
    never an input, and data without it (real telemetry) samples uniformly.
    """
    index = dataset.decoded_index
    weights = np.ones(len(index))
    if boost <= 0 or STATE not in frame:
        return weights
    incident = frame.loc[frame[STATE] == INCIDENT_STATE, [SERVER_ID, features.TIME_IDX]]
    steps_by_server = {sid: np.sort(g.to_numpy()) for sid, g in incident.groupby(SERVER_ID)[features.TIME_IDX]}
    for sid, rows in index.groupby(SERVER_ID).indices.items():
        steps = steps_by_server.get(sid)
        if steps is None:
            continue
        first = index["time_idx_first_prediction"].to_numpy()[rows]
        last = np.minimum(index["time_idx_last"].to_numpy()[rows], first + lead_steps - 1)
        hits = np.searchsorted(steps, last, side="right") - np.searchsorted(steps, first, side="left")
        weights[rows] += boost * (hits > 0)
    return weights


def stop_reason(trainer: Trainer, early_stopping: EarlyStopping, timer: Timer | None) -> StopReason:
    """What ended a finished fit."""
    if trainer.interrupted:
        return StopReason.INTERRUPTED
    if early_stopping.stopped_epoch > 0:
        return StopReason.EARLY_STOPPING
    remaining = None if timer is None else timer.time_remaining("train")
    if remaining is not None and remaining <= 0:
        return StopReason.TIME_LIMIT
    return StopReason.MAX_EPOCHS


def fit(
    data: pd.DataFrame,
    config: TrainConfig,
    callbacks: Sequence[Callback] = (),
    logger: Logger | bool = False,
) -> tuple[ForecastModel, TrainingResult]:
    """Train a TFT on contract-shaped metrics (any interval); returns the best-validation model."""
    seed_everything(config.seed, workers=True)
    targets = features.resolve_targets(config.targets, data.columns)
    lag_hours = config.model.seasonal_lag_hours
    frame = features.seasonal_training_frame(features.prepare_frame(data, targets), targets, lag_hours)
    train_frame, cutoff = split_by_time(frame, config)
    training = features.training_dataset(train_frame, targets, config.encoder_steps, lag_hours=lag_hours)
    parameters = training.get_parameters()
    validation = validation_dataset(parameters, frame, cutoff, config.validation_stride)

    model_config = config.to_model_config(targets, loss_weights(train_frame, targets))
    network = build_network(training, model_config)
    best = BestWeights()
    early_stopping = EarlyStopping(monitor="val_loss", mode="min", patience=config.early_stopping_patience)
    timer = None if config.max_fit_minutes is None else Timer(timedelta(minutes=config.max_fit_minutes))
    checkpoint_dir = config.checkpoint_dir or owned_temp_dir(CHECKPOINT_PREFIX)
    try:  # from the directory's creation: a stop while the trainer is built still removes it
        trainer = Trainer(
            max_epochs=config.max_epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            gradient_clip_val=config.gradient_clip_val,
            limit_train_batches=config.max_batches_per_epoch or 1.0,
            callbacks=[
                early_stopping,
                *([] if timer is None else [timer]),
                ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val_loss", mode="min"),
                LearningRateMetric(),
                best,
                *([] if config.progress_bar else [EpochLog(best, config.max_epochs)]),
                *([] if config.weight_average_decay is None else [AveragedWeights(config.weight_average_decay)]),
                *callbacks,
            ],
            logger=logger,
            enable_progress_bar=config.progress_bar,
            enable_model_summary=False,
            default_root_dir=checkpoint_dir,
        )
        started = time.perf_counter()
        trainer.fit(
            network,
            train_dataloaders=_training_loader(training, train_frame, config),
            val_dataloaders=window_loader(
                validation,
                validation_windows(len(validation), config),
                config.batch_size,
                config,
                drop_last=False,
            ),
        )
    finally:
        if config.checkpoint_dir is None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    seconds = time.perf_counter() - started
    if best.state is not None:
        network.load_state_dict(best.state)
    network.eval()

    samples = trainer.global_step * config.batch_size
    model = ForecastModel(network, model_config, parameters, training_info(network, train_frame, model_config))
    result = TrainingResult(
        training=training,
        validation=validation,
        trainer=trainer,
        best_val_loss=best.best_loss,
        epochs=trainer.current_epoch,
        seconds=seconds,
        samples_per_second=samples / seconds if seconds > 0 else 0.0,
        stopped_by=stop_reason(trainer, early_stopping, timer),
    )
    log.info(
        "training stopped by %s after %d of %d epochs (%s): best val_loss %.3f",
        result.stopped_by, result.epochs, config.max_epochs, timedelta(seconds=round(seconds)), result.best_val_loss,
    )  # fmt: skip
    return model, result
