"""The one smoke test of a model about to serve: the promotion gate and the service's reload both run it.

Every server the model was trained on, and one it never saw, must get a finite forecast from synthetic
history. The history is built here, deterministic and inside each metric's contract range, so the check
needs neither data files nor the simulator, and it reads the same for the gate and for a reload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from tftmon.contract import (
    METRIC_COLUMNS,
    MODEL_STEP,
    PROFILE,
    QUANTILE_NAMES,
    SERVER_NAME,
    STEP_MINUTES,
    TIMESTAMP,
    profile_of,
)
from tftmon.model.network import ForecastModel, forecast

#: A hostname no fleet uses: the cold-start path (profile from the hostname, no server history).
STRANGER = "tftmon-smoke-stranger"
#: History beyond the encoder window, so the window starts inside the history, not at its edge.
MARGIN_STEPS = 12
#: Where the synthetic history ends: a fixed time, so the test is the same on every run.
END = pd.Timestamp("2026-01-05 12:00", tz="UTC")
#: Upper end of the synthetic range for metrics the contract leaves open (rates, counts, load).
OPEN_RANGE = 10.0


class SmokeTestFailed(RuntimeError):
    """The model did not forecast finite values for every known server and a stranger."""


def smoke_history(servers: Sequence[str], hours: float, seed: int = 7) -> pd.DataFrame:
    """Contract-shaped history at the model step ending at END: a daily wave plus noise per server and
    metric, inside each metric's contract range (integer metrics as integers)."""
    steps = max(1, round(hours * 60 / STEP_MINUTES))
    ts = pd.date_range(end=END, periods=steps, freq=MODEL_STEP)
    day = 2 * np.pi * ((ts - ts[0]) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            TIMESTAMP: np.tile(ts, len(servers)),
            SERVER_NAME: np.repeat(list(servers), steps),
            PROFILE: np.repeat([profile_of(s) for s in servers], steps),
        }
    )
    for column in METRIC_COLUMNS:
        low = column.min if column.min is not None else 0.0
        high = column.max if column.max is not None else low + OPEN_RANGE
        level = rng.uniform(0.2, 0.6, size=(len(servers), 1))
        wave = 0.15 * np.sin(day + rng.uniform(0, 2 * np.pi, size=(len(servers), 1)))
        share = np.clip(level + wave + rng.normal(0, 0.02, size=(len(servers), steps)), 0.0, 1.0)
        values = (low + (high - low) * share).ravel()
        frame[column.name] = np.round(values).astype(np.int64) if column.type == "int" else values
    return frame


def smoke_test(model: ForecastModel, predict: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> str:
    """Forecast every known server and STRANGER; raise SmokeTestFailed unless each gets only finite values.

    `predict` is the path under test (the gate passes the registered pyfunc's); by default the model's
    own `forecast`. Returns what passed, in words.
    """
    servers = [*model.training_info.get("servers", []), STRANGER]
    hours = (model.config.history_steps + MARGIN_STEPS) * STEP_MINUTES / 60
    history = smoke_history(servers, hours)
    try:
        result = predict(history) if predict is not None else forecast(model, history)
    except Exception as exc:  # whatever fails, the model cannot serve
        raise SmokeTestFailed(f"prediction failed: {exc}") from exc
    finite = np.isfinite(result[list(QUANTILE_NAMES)].to_numpy(dtype=np.float64)).all(axis=1)
    failed = sorted(set(servers) - set(result[SERVER_NAME]) | set(result.loc[~finite, SERVER_NAME]))
    if failed:
        raise SmokeTestFailed(f"no finite forecast for {len(failed)} of {len(servers)} servers, e.g. {failed[:5]}")
    return f"finite forecasts for all {len(servers) - 1} known servers and a cold-start server"
