"""Request validation without a server: the column-wise fast path agrees with the pydantic models it
replaces, whether it reads the body as Arrow's columns or as Python data, and their errors read as one
problem per broken rule, each with a real fix."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from pydantic_core import from_json

from tftmon.contract import METRICS, PROFILE, SERVER_NAME, STATE, TIMESTAMP
from tftmon.serve.schemas import (
    LIMITS,
    ArrowBody,
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


def _served(data: Any) -> Any:
    """The body as the service hands it to fast_rows: Arrow's columns where Arrow reads it, else parsed."""
    raw = json.dumps(data).encode()
    return ArrowBody.read(raw) or from_json(raw)


def _python(data: Any) -> Any:
    return data


#: Both ways a body reaches fast_rows.
READERS = {"python": _python, "arrow": _served}


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
    # a fleet reports the metrics it has: a row may leave any out (the loaded model's targets are the service's)
    "a metric left out of one row": lambda b: b["rows"][3].pop(METRICS[0]),
    "an integer metric left out of one row": lambda b: b["rows"][3].pop("uptime_days"),
    "a metric left out of every row": lambda b: [row.pop(METRICS[5]) for row in b["rows"]],
}
#: Valid, but outside the fast path: the model takes them.
UNUSUAL: dict[str, Change] = {
    "unix timestamp": lambda b: b["rows"][0].update(timestamp=1767225600),
    "lax boolean": lambda b: b.update(include_path="yes"),
}
INVALID: dict[str, Change] = {
    "unknown column": lambda b: b["rows"][3].update(bogus=1.0),
    "unknown column instead of profile": lambda b: b["rows"][0].update(bogus=1.0),
    "deprecated column": lambda b: b["rows"][0].update(cpu_pct=5.0),
    "state": lambda b: b["rows"][0].update(state="healthy"),
    "string number": lambda b: b["rows"][0].update({METRICS[0]: "5"}),
    "bool number": lambda b: b["rows"][0].update({METRICS[0]: True}),
    "float for int": lambda b: b["rows"][0].update(uptime_days=2.0),
    "huge int": lambda b: b["rows"][0].update(uptime_days=2**70),
    "NaN": lambda b: b["rows"][0].update({METRICS[0]: float("nan")}),
    "null metric": lambda b: b["rows"][0].update({METRICS[0]: None}),  # left out, never null
    "above range": lambda b: b["rows"][0].update({METRICS[0]: 100.5}),
    "below range": lambda b: b["rows"][0].update(net_in_mb_s=-0.1),
    "open metric above 1e9": lambda b: b["rows"][0].update(load_average=2e9),
    "bad profile": lambda b: b["rows"][1].update(profile="mainframe"),
    "bad hostname": lambda b: b["rows"][0].update(server_name="web 01"),
    "bad timestamp": lambda b: b["rows"][0].update(timestamp="yesterday"),
    "timestamp at the ns limit": lambda b: b["rows"][0].update(timestamp="2262-04-11T20:00:00Z"),
    "timestamp past the ns limit": lambda b: b["rows"][0].update(timestamp="2300-01-01T00:00:00Z"),
    "timestamp before 2000": lambda b: b["rows"][0].update(timestamp="1999-12-31T23:59:59Z"),
    "row not an object": lambda b: b["rows"].append([1, 2]),
    "no rows": lambda b: b.update(rows=[]),
    "extra field": lambda b: b.update(extra=1),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(VALID))
def test_fast_validation_equals_the_model(body: dict[str, Any], case: str, reader: str) -> None:
    data = copy.deepcopy(body)
    VALID[case](data)
    given = READERS[reader](data)
    assert isinstance(given, ArrowBody) == (reader == "arrow")  # plain valid bodies take Arrow's path
    fast = fast_rows(given, PredictRequest)
    assert fast is not None
    _same(fast, _slow(data, PredictRequest))


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(UNUSUAL))
def test_unusual_valid_input_is_left_to_the_model(body: dict[str, Any], case: str, reader: str) -> None:
    data = copy.deepcopy(body)
    UNUSUAL[case](data)
    assert fast_rows(READERS[reader](data), PredictRequest) is None
    PredictRequest.model_validate(data)


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(INVALID))
@pytest.mark.parametrize("model", [PredictRequest, FeedRequest])
def test_invalid_input_is_never_fast(body: dict[str, Any], case: str, model: type[RowsRequest], reader: str) -> None:
    data = copy.deepcopy(body)
    INVALID[case](data)
    assert fast_rows(READERS[reader](data), model) is None
    with pytest.raises(ValueError):
        model.model_validate(data)


@pytest.mark.parametrize("reader", list(READERS))
def test_feed_takes_no_include_path(body: dict[str, Any], reader: str) -> None:
    for include_path in (True, None):
        assert fast_rows(READERS[reader]({**body, "include_path": include_path}), FeedRequest) is None
    fast = fast_rows(READERS[reader](body), FeedRequest)
    assert fast is not None and fast.options == {}


@pytest.mark.parametrize("change", [lambda b: b.update(include_path=None), lambda b: b["rows"].append(None)])
def test_nulls_are_left_to_the_model(body: dict[str, Any], change: Change) -> None:
    """Arrow reads a null and an absent value alike; only an absent profile means the same as a null one."""
    data = copy.deepcopy(body)
    change(data)
    assert fast_rows(_served(data), PredictRequest) is None
    with pytest.raises(ValueError):
        PredictRequest.model_validate(data)


def test_arrow_reads_every_float_as_pydantic_core_does(body: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    rows = [dict(body["rows"][i % len(body["rows"])]) for i in range(2000)]
    values = rng.normal(size=len(rows)) * 10.0 ** rng.integers(-12, 3, size=len(rows))
    texts = [f"{abs(v):.{rng.integers(1, 25)}g}" for v in values]
    texts[:4] = [
        "4.9406564584124654e-324",
        "2.2250738585072011e-308",
        "0.30000000000000004441",
        "999999999.99999999999",
    ]
    for row, text in zip(rows, texts, strict=True):
        row["net_in_mb_s"] = f"@{text}@"
    raw = json.dumps({"rows": rows}).replace('"@', "").replace('@"', "").encode()
    arrow, python = fast_rows(ArrowBody.read(raw), PredictRequest), fast_rows(from_json(raw), PredictRequest)
    assert arrow is not None and python is not None
    assert arrow.frame["net_in_mb_s"].to_numpy().tobytes() == python.frame["net_in_mb_s"].to_numpy().tobytes()
    _same(arrow, python)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"rows": []} {"rows": []}',  # two objects: Arrow reads two rows
        b"\xef\xbb\xbf" + b'{"rows": []}',  # byte-order mark: Arrow skips it, pydantic-core refuses it
        '{"rows": [{"server_name": "ppweb\u00e9"}]}'.encode(),  # non-ASCII bytes: Arrow takes invalid UTF-8 too
        b'{"rows": [{"server_name": "a", "server_name": "b"}]}',  # a repeated key: pydantic-core takes the last
        b'{"rows": [], }',
        b"",
    ],
)
def test_arrow_reads_no_body_it_would_read_otherwise(raw: bytes) -> None:
    """Where Arrow is laxer than pydantic-core, or would read other values, the body is parsed as before
    (so ArrowBody.python never fails, and malformed JSON still answers FastAPI's 422)."""
    assert ArrowBody.read(raw) is None


def test_arrow_body_parses_as_pydantic_core_does(body: dict[str, Any]) -> None:
    raw = json.dumps({**body, "include_path": False}).encode()
    arrow = ArrowBody.read(raw)
    assert arrow is not None and arrow.python() == from_json(raw)


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
