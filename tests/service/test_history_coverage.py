"""Issue 9, defect 4 over HTTP: a history must cover the model's window, not merely span it."""

from __future__ import annotations

import pandas as pd
import requests

from tests.service.conftest import Served
from tests.service.test_service import recent, rows
from tftmon.contract import HISTORY_COVERAGE_RULE


def test_two_samples_a_window_apart_are_no_history(
    service: Served, fleet_history: pd.DataFrame, model_store: dict
) -> None:
    frame = recent(fleet_history, model_store["servers"][:1], hours=1.5)
    response = requests.post(f"{service.url}/predict", json={"rows": rows(frame.iloc[[0, -1]])}, timeout=60)
    assert response.status_code == 422, response.text[:500]
    (problem,) = response.json()["problems"]
    assert problem["rule"] == HISTORY_COVERAGE_RULE and "of 12 steps" in problem["fix"]
    assert requests.post(f"{service.url}/predict", json={"rows": rows(frame)}, timeout=60).status_code == 200
