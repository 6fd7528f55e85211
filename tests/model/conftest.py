"""A tiny fleet with a strongly periodic signal, and one briefly trained model shared by the tests."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.synthetic import fleet_frame, sine
from tftmon.config import TrainConfig
from tftmon.model.network import ForecastModel
from tftmon.model.train import TrainingResult, fit

#: The pattern repeats every 2 h, so an encoder of 2 h sees a whole period.
PERIOD = pd.Timedelta(hours=2)


def periodic_fleet(servers: int = 5, days: float = 2.5, interval: str = "5min") -> pd.DataFrame:
    """Every metric a phase-shifted sine of the clock plus a little noise: its future is known."""
    return fleet_frame(servers, pd.Timedelta(days=days), interval, signal=sine(PERIOD / pd.Timedelta(hours=1)), seed=7)


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
