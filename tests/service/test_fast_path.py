"""Request validation without a server: the column-wise fast path agrees with the pydantic models it
replaces, and their errors read as one problem per broken rule, each with a real fix."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from tftmon.contract import METRICS, PROFILE, SERVER_NAME, STATE, TIMESTAMP
from tftmon.serve.schemas import (
    LIMITS,
    ErrorResponse,
    FeedRequest,
    PredictRequest,
    RowsRequest,
    ValidRows,
    fast_rows,
    request_errors,
)

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
    assert (
        fast.frame[TIMESTAMP].to_numpy("datetime64[ns]").tolist()
        == slow.frame[TIMESTAMP].to_numpy("datetime64[ns]").tolist()
    )
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


def _errors(data: dict[str, Any], model: type[RowsRequest] = PredictRequest) -> ErrorResponse:
    """The 422 body the service answers for `data` (errors located under "body", as FastAPI's are)."""
    with pytest.raises(ValidationError) as raised:
        model.model_validate(data)
    return request_errors([{**e, "loc": ("body", *e["loc"])} for e in raised.value.errors()])


@pytest.mark.parametrize("case", list(INVALID))
def test_every_invalid_input_gets_a_specific_fix(body: dict[str, Any], case: str) -> None:
    data = copy.deepcopy(body)
    INVALID[case](data)
    answer = _errors(data)
    assert answer.problems and answer.error.startswith(f"{len(answer.problems)} problem")
    for problem in answer.problems:
        assert problem.fix and problem.fix != problem.rule, problem
        assert "as the rule says" not in problem.fix and "/docs.json describes" not in problem.fix, problem


def test_one_problem_however_many_rows_break_it(body: dict[str, Any]) -> None:
    rows = [{**body["rows"][0], "server_id": "0123456789abcdef"} for _ in range(1080)]
    rows += [{**body["rows"][1], METRICS[0]: 140.0} for _ in range(3)]
    answer = _errors({"rows": rows})
    refused, above = answer.problems
    assert (refused.field, refused.count, refused.rows) == ("rows[*].server_id", 1080, [0, 1, 2, 3, 4])
    assert refused.fix == "remove server_id from every row"
    assert (above.field, above.count, above.rows) == (f"rows[*].{METRICS[0]}", 3, [1080, 1081, 1082])
    assert "at most 100" in above.fix
    assert answer.error.startswith(f"2 problems in the request: rows[*].server_id: {refused.rule}, 1080 rows; ")


def test_request_level_problems_name_their_field(body: dict[str, Any]) -> None:
    servers = LIMITS.max_servers_per_request + 1
    many = [{**body["rows"][0], SERVER_NAME: f"ppgen{i:05d}"} for i in range(servers)]
    (limit,) = _errors({"rows": many}).problems
    assert (limit.field, limit.count, limit.rows) == ("body", 1, [])
    assert f"at most {servers - 1} servers" in limit.fix
    empty, lax = _errors({"rows": [], "include_path": "maybe"}).problems
    assert (empty.field, empty.fix) == ("rows", "send at least one row")
    assert lax.field == "include_path" and "true or false" in lax.fix
