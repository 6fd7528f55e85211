"""The registered MLflow model, as code (MLflow "models from code"): no pickled Python object.

MLflow logs this file with the run; loading it rebuilds the TFT from the logged `model_dir` artifact
(config.json + dataset_parameters.json + model.safetensors) through tftmon.model.load_model, and
`predict` runs the same feature path as training (tftmon.model.forecast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel, PythonModelContext

from tftmon.contract import STATE, TIMESTAMP

MODEL_DIR_ARTIFACT = "model_dir"


class TftmonForecaster(PythonModel):
    """Recent contract-shaped metrics for any servers in; per server, step and metric p10/p50/p90 out."""

    def load_context(self, context: PythonModelContext) -> None:
        from tftmon.model.network import load_model

        self.model = load_model(Path(context.artifacts[MODEL_DIR_ARTIFACT]))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from tftmon.model.network import forecast

        history = model_input.copy()
        history[TIMESTAMP] = pd.to_datetime(history[TIMESTAMP], utc=True)  # naive means UTC (see to_model_input)
        return forecast(self.model, history)


def to_model_input(history: pd.DataFrame) -> pd.DataFrame:
    """Contract-shaped history -> the pyfunc's input: MLflow schemas only take naive datetimes, so UTC
    timestamps travel without their zone, and the simulator's `state` label is dropped."""
    frame = history.drop(columns=[STATE], errors="ignore").copy()
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True).dt.tz_localize(None)
    return frame


set_model(TftmonForecaster())
