"""A tiny fleet with a strongly periodic signal, and one briefly trained model shared by the tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tftmon.config import TrainConfig
from tftmon.contract import INTEGER_METRICS, METRICS, PROFILE, PROFILES, SERVER_NAME, STATE, TIMESTAMP
from tftmon.model.network import ForecastModel
from tftmon.model.train import TrainingResult, fit

START = pd.Timestamp("2026-01-05", tz="UTC")
#: The pattern repeats every 2 h, so an encoder of 2 h sees a whole period.
PERIOD = pd.Timedelta(hours=2)


def periodic_fleet(servers: int = 5, days: float = 2.5, interval: str = "5min") -> pd.DataFrame:
    """Every metric a phase-shifted sine of the clock plus a little noise: its future is known."""
    rng = np.random.default_rng(7)
    ts = pd.date_range(START, START + pd.Timedelta(days=days), freq=interval, inclusive="left")
    phase = 2 * np.pi * ((ts - START) / PERIOD).to_numpy(dtype=float)
    frames = []
    for i in range(servers):
        profile = PROFILES[i % len(PROFILES)]
        data: dict[str, object] = {
            TIMESTAMP: ts,
            SERVER_NAME: profile.hostname(i + 1),
            PROFILE: profile.name,
            STATE: "healthy",
        }
        for j, metric in enumerate(METRICS):
            value = 40 + 5 * i + 25 * np.sin(phase + 0.3 * j) + rng.normal(0, 0.5, len(ts))
            data[metric] = np.round(value).astype(np.int64) if metric in INTEGER_METRICS else value
        frames.append(pd.DataFrame(data))
    return pd.concat(frames, ignore_index=True)


def tiny_config(**overrides: object) -> TrainConfig:
    base = dict(
        max_epochs=2,
        max_batches_per_epoch=12,
        max_val_batches=2,
        encoder_hours=2,
        validation_hours=9,
        model={"hidden_size": 8, "attention_head_size": 1, "hidden_continuous_size": 4, "learning_rate": 0.01},
        batch_size=32,
        progress_bar=False,
        accelerator="cpu",
        devices=1,
    )
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def fleet() -> pd.DataFrame:
    return periodic_fleet()


@pytest.fixture(scope="session")
def trained(fleet: pd.DataFrame) -> tuple[ForecastModel, TrainingResult]:
    return fit(fleet, tiny_config())
