"""The /predict fast paths agree with the slow ones they replace: column-wise validation with the pydantic
models, and the encoder-span cut with the full history."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tftmon.contract import METRICS, PROFILE, SERVER_NAME, STATE, TIMESTAMP
from tftmon.serve.schemas import FeedRequest, PredictRequest, RowsRequest, ValidRows, fast_rows
from tftmon.serve.service import _encoder_span, _frame

Change = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def body(fleet_history: pd.DataFrame) -> dict[str, Any]:
    """Three servers' last hour as a client sends it, profile given on some rows only."""
    picked = fleet_history[fleet_history[SERVER_NAME].isin(sorted(fleet_history[SERVER_NAME].unique())[:3])]
    picked = picked[picked[TIMESTAMP] > picked[TIMESTAMP].max() - pd.Timedelta(hours=1)]
    rows = json.loads(picked.drop(columns=[STATE, "server_id"]).to_json(orient="records", date_format="iso"))
    for row in rows[::2]:
        del row[PROFILE]
    return {"rows": rows}


def _slow(data: dict[str, Any], model: type[RowsRequest]) -> ValidRows:
    return ValidRows.from_request(model.model_validate(data))


def _same(fast: ValidRows, slow: ValidRows) -> None:
    pd.testing.assert_frame_equal(
        fast.frame.astype({SERVER_NAME: object, PROFILE: object}),
        slow.frame.astype({SERVER_NAME: object, PROFILE: object}),
        check_dtype=False,
    )
    assert fast.frame[TIMESTAMP].to_numpy("datetime64[ns]").tolist() == slow.frame[TIMESTAMP].to_numpy(
        "datetime64[ns]"
    ).tolist()
    assert fast.options == slow.options


VALID: dict[str, Change] = {
    "as sent": lambda b: None,
    "upper-case FQDN": lambda b: b["rows"][0].update(server_name=b["rows"][0]["server_name"].upper() + ".corp"),
    "offset timestamp": lambda b: b["rows"][0].update(timestamp="2026-01-05T03:00:00+02:00"),
    "naive timestamp": lambda b: b["rows"][1].update(timestamp="2026-01-05 01:00:00"),
    "int for float": lambda b: b["rows"][0].update({METRICS[0]: 5}),
    "explicit null profile": lambda b: b["rows"][0].update(profile=None),
    "include_path false": lambda b: b.update(include_path=False),
}
#: Valid, but outside the fast path: the model takes them.
UNUSUAL: dict[str, Change] = {
    "unix timestamp": lambda b: b["rows"][0].update(timestamp=1767225600),
    "lax boolean": lambda b: b.update(include_path="yes"),
}
INVALID: dict[str, Change] = {
    "missing column": lambda b: b["rows"][3].pop(METRICS[0]),
    "unknown column": lambda b: b["rows"][3].update(bogus=1.0),
    "unknown column instead of profile": lambda b: b["rows"][0].update(bogus=1.0),
    "deprecated column": lambda b: b["rows"][0].update(cpu_pct=5.0),
    "state": lambda b: b["rows"][0].update(state="healthy"),
    "string number": lambda b: b["rows"][0].update({METRICS[0]: "5"}),
    "bool number": lambda b: b["rows"][0].update({METRICS[0]: True}),
    "float for int": lambda b: b["rows"][0].update(uptime_days=2.0),
    "huge int": lambda b: b["rows"][0].update(uptime_days=2**70),
    "NaN": lambda b: b["rows"][0].update({METRICS[0]: float("nan")}),
    "above range": lambda b: b["rows"][0].update({METRICS[0]: 100.5}),
    "below range": lambda b: b["rows"][0].update(net_in_mb_s=-0.1),
    "open metric above 1e9": lambda b: b["rows"][0].update(load_average=2e9),
    "bad profile": lambda b: b["rows"][1].update(profile="mainframe"),
    "bad hostname": lambda b: b["rows"][0].update(server_name="web 01"),
    "bad timestamp": lambda b: b["rows"][0].update(timestamp="yesterday"),
    "row not an object": lambda b: b["rows"].append([1, 2]),
    "no rows": lambda b: b.update(rows=[]),
    "extra field": lambda b: b.update(extra=1),
}


@pytest.mark.parametrize("case", list(VALID))
def test_fast_validation_equals_the_model(body: dict[str, Any], case: str) -> None:
    data = copy.deepcopy(body)
    VALID[case](data)
    fast = fast_rows(data, PredictRequest)
    assert fast is not None
    _same(fast, _slow(data, PredictRequest))


@pytest.mark.parametrize("case", list(UNUSUAL))
def test_unusual_valid_input_is_left_to_the_model(body: dict[str, Any], case: str) -> None:
    data = copy.deepcopy(body)
    UNUSUAL[case](data)
    assert fast_rows(data, PredictRequest) is None
    PredictRequest.model_validate(data)


@pytest.mark.parametrize("case", list(INVALID))
@pytest.mark.parametrize("model", [PredictRequest, FeedRequest])
def test_invalid_input_is_never_fast(body: dict[str, Any], case: str, model: type[RowsRequest]) -> None:
    data = copy.deepcopy(body)
    INVALID[case](data)
    assert fast_rows(data, model) is None
    with pytest.raises(ValueError):
        model.model_validate(data)


def test_feed_takes_no_include_path(body: dict[str, Any]) -> None:
    assert fast_rows({**body, "include_path": True}, FeedRequest) is None
    fast = fast_rows(body, FeedRequest)
    assert fast is not None and fast.options == {}


def test_encoder_span_forecasts_as_the_full_history(fleet_history: pd.DataFrame, model_store: dict) -> None:
    """Gaps across and inside the window, shuffled rows, a profile that differs on a server's earliest rows
    (resampling takes the earliest): the same forecast."""
    from tftmon.model.network import forecast, load_model

    model = load_model(model_store["model_dir"])
    servers = sorted(fleet_history[SERVER_NAME].unique())[:3]
    history = fleet_history[fleet_history[SERVER_NAME].isin(servers)].drop(columns=[STATE, "server_id"])
    history = history[history[TIMESTAMP] > history[TIMESTAMP].max() - pd.Timedelta(hours=5)].reset_index(drop=True)
    last = history[TIMESTAMP].max()
    encoder = pd.Timedelta(minutes=5) * model.config.encoder_steps
    # Server 0: a gap across the window's start (carried forward from before it); server 1: a gap inside it.
    name, ts = history[SERVER_NAME], history[TIMESTAMP]
    minutes = pd.Timedelta(minutes=1)
    gap0 = (name == servers[0]) & ts.between(last - encoder - 40 * minutes, last - encoder + 10 * minutes)
    gap1 = (name == servers[1]) & ts.between(last - 30 * minutes, last - 15 * minutes)
    history = history[~(gap0 | gap1)].copy()
    history[PROFILE] = history[PROFILE].astype(object)
    history.loc[history.index[history[SERVER_NAME] == servers[2]][-5:], PROFILE] = None  # inferred
    history.loc[history.index[history[SERVER_NAME] == servers[1]][:5], PROFILE] = "database"  # the earliest rows
    frame = _frame(ValidRows(history.sample(frac=1.0, random_state=0).reset_index(drop=True), {}))
    cut = _encoder_span(frame, model.config.encoder_steps)
    assert len(cut) < len(frame)
    full, short = forecast(model, frame), forecast(model, cut)
    pd.testing.assert_frame_equal(full, short)
    assert np.isfinite(short[["p10", "p50", "p90"]].to_numpy()).all()
