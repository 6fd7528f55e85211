"""Versions registered before the 0.4 package layout still load and forecast."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np

from tests.model.conftest import periodic_fleet
from tftmon.contract import QUANTILE_NAMES, SERVER_NAME
from tftmon.model.pyfunc import to_model_input

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pyfunc_0_3_0"


def test_model_saved_by_0_3_0_loads_and_predicts() -> None:
    model = mlflow.pyfunc.load_model(str(FIXTURE))
    history = periodic_fleet(servers=3, days=0.5)
    out = model.predict(to_model_input(history))
    assert set(out[SERVER_NAME]) == set(history[SERVER_NAME])
    assert np.isfinite(out[list(QUANTILE_NAMES)].to_numpy()).all()
