"""Issue 9, defects 3, 4, 6 and 12: what a request may carry, and what the service says when it may not.

One timestamp rule and the contract's row rules, applied by the service (both validation paths) and by
`validate` in the same words; a body-size limit checked before the body is read; errors that say what is
wrong and how to fix it. The HTTP probes run against a real `bentoml serve` (no model needed: requests are
validated before the model is asked for).
"""

from __future__ import annotations

import copy
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import requests
from pydantic import ValidationError

from tests.service.conftest import Served, store_env
from tftmon.config import SimulationConfig
from tftmon.contract import (
    CPU_PARTS,
    CPU_SUM_FIX,
    CPU_SUM_RULE,
    HISTORY_COVERAGE_RULE,
    METRICS,
    PROFILE,
    PROFILE_FIX,
    PROFILE_RULE,
    SERVER_NAME,
    STATE,
    TIMESTAMP,
    TIMESTAMP_FIX,
    TIMESTAMP_RULE,
)
from tftmon.data.validate import validate_frame
from tftmon.serve.schemas import (
    ArrowBody,
    FeedRequest,
    PredictRequest,
    ValidRows,
    coverage_problem,
    fast_rows,
    request_errors,
    row_count_problem,
    row_rule_problems,
)

#: The body limit of the probed service: small, so the probes stay cheap.
BODY_LIMIT = 2**20


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    from tftmon.data.simulate import simulate

    return simulate(SimulationConfig(servers=3, hours=2, seed=3))


@pytest.fixture(scope="module")
def body(history: pd.DataFrame) -> dict[str, Any]:
    """Two servers' last hour as a client sends it."""
    picked = history[history[SERVER_NAME].isin(sorted(history[SERVER_NAME].unique())[:2])]
    picked = picked[picked[TIMESTAMP] > picked[TIMESTAMP].max() - pd.Timedelta(hours=1)]
    return {"rows": json.loads(picked.drop(columns=[STATE, "server_id"]).to_json(orient="records", date_format="iso"))}


def _problems(data: dict[str, Any], model: type[PredictRequest] | type[FeedRequest] = PredictRequest) -> list[Any]:
    """The problems the service answers for `data` (as service._validated does: the fast path, else the
    pydantic model, then the row rules), the same whether the body reached it as Arrow's columns or not."""
    answers = []
    for parsed in (ArrowBody.read(json.dumps(data).encode()), data):
        valid = fast_rows(parsed, model)
        if valid is None:
            try:
                valid = ValidRows.from_request(model.model_validate(data))
            except ValidationError as exc:
                errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
                answers.append(request_errors(errors).problems)
                continue
        answers.append(row_rule_problems(valid))
    assert answers[0] == answers[1]
    return answers[0]


@pytest.mark.parametrize(
    "stamp", ["2262-04-11T20:00:00Z", "2300-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1816-03-29T05:56:08Z",
              "1999-12-31T23:59:59Z"],
)  # fmt: skip
def test_timestamps_outside_the_contract_are_refused_once(body: dict[str, Any], stamp: str) -> None:
    data = copy.deepcopy(body)
    for row in data["rows"][:3]:
        row[TIMESTAMP] = stamp
    (problem,) = _problems(data)
    assert (problem.field, problem.rule, problem.fix) == (f"rows[*].{TIMESTAMP}", TIMESTAMP_RULE, TIMESTAMP_FIX)
    assert (problem.count, problem.rows) == (3, [0, 1, 2])


def test_the_validator_applies_the_same_timestamp_rule(history: pd.DataFrame) -> None:
    frame = history.head(50).copy()
    frame.loc[frame.index[:4], TIMESTAMP] = pd.Timestamp("2262-04-11T20:00:00Z")
    (finding,) = [f for f in validate_frame(frame).failures if TIMESTAMP_RULE in f.fix]
    assert finding.fix == f"{TIMESTAMP_RULE}: {TIMESTAMP_FIX}" and finding.observed.startswith("4 rows")


def test_cpu_parts_must_add_up_to_100_in_the_service_as_in_validate(
    body: dict[str, Any], history: pd.DataFrame
) -> None:
    data = copy.deepcopy(body)
    for row in data["rows"][:2]:
        row.update(dict.fromkeys(CPU_PARTS, 75.0))  # 300 %
    (problem,) = _problems(data)
    assert (problem.rule, problem.fix, problem.count, problem.rows) == (CPU_SUM_RULE, CPU_SUM_FIX, 2, [0, 1])
    frame = history.head(50).copy()
    frame.loc[frame.index[:2], list(CPU_PARTS)] = 75.0
    fixes = [f.fix for f in validate_frame(frame).failures]
    assert f"{CPU_SUM_RULE}: {CPU_SUM_FIX}" in fixes


def test_one_profile_per_server_in_the_service_as_in_validate(body: dict[str, Any], history: pd.DataFrame) -> None:
    data = copy.deepcopy(body)
    name = data["rows"][0][SERVER_NAME]
    rows = [i for i, row in enumerate(data["rows"]) if row[SERVER_NAME] == name]
    data["rows"][rows[0]][PROFILE] = "database"
    data["rows"][rows[1]][PROFILE] = "web_api"
    (problem,) = _problems(data)
    assert (problem.field, problem.rule, problem.fix) == (f"rows[*].{PROFILE}", PROFILE_RULE, PROFILE_FIX)
    assert problem.count == len(rows)
    frame = history.head(50).copy()
    frame[PROFILE] = frame[PROFILE].astype(object)
    frame.loc[frame.index[0], PROFILE] = "database" if frame[PROFILE].iloc[0] != "database" else "web_api"
    fixes = [f.fix for f in validate_frame(frame).failures]
    assert f"{PROFILE_RULE}: {PROFILE_FIX}" in fixes


def test_valid_rows_break_no_row_rule(body: dict[str, Any]) -> None:
    valid = fast_rows(ArrowBody.read(json.dumps(body).encode()), PredictRequest)
    assert valid is not None and row_rule_problems(valid) == []


def test_row_count_is_checked_before_any_row(body: dict[str, Any]) -> None:
    """One row repeated past the limit, each of them invalid: the answer is the count alone."""
    bad = {**body["rows"][0], METRICS[0]: "not a number"}
    data = {"rows": [bad] * (FeedRequest.max_rows + 1)}
    for parsed in (ArrowBody.read(json.dumps(data).encode()) or data, data):
        problem = row_count_problem(parsed, FeedRequest)
        assert problem is not None and problem.field == "rows"
        assert f"at most {FeedRequest.max_rows} rows" in problem.fix and "MAX_FEED_ROWS" in problem.rule
    assert row_count_problem(body, FeedRequest) is None


def test_history_must_cover_the_window_not_only_span_it(body: dict[str, Any]) -> None:
    """Two samples 6 h apart span a 6 h window (72 steps) but cover 1 step of it: refused by coverage;
    a full hour covers a 1 h window; a history shorter than the window is left to InsufficientHistory."""
    valid = fast_rows(body, PredictRequest)
    assert valid is not None
    frame = valid.frame
    first = frame[frame[SERVER_NAME] == frame[SERVER_NAME].iloc[0]].head(2).copy()
    first[TIMESTAMP] = [pd.Timestamp("2026-01-05T00:00:00Z"), pd.Timestamp("2026-01-05T06:00:00Z")]
    problem = coverage_problem(first.reset_index(drop=True), encoder_steps=72)
    assert problem is not None and problem.rule == HISTORY_COVERAGE_RULE
    assert (problem.count, problem.rows) == (1, [0, 1]) and "1 of 72 steps" in problem.fix
    assert coverage_problem(frame, encoder_steps=12) is None
    assert coverage_problem(frame, encoder_steps=72) is None


# ---------------------------------------------------------------------------------------------
# Over HTTP: a real `bentoml serve`
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A service over an empty registry with a 1 MiB body limit (validation needs no model)."""
    root = tmp_path_factory.mktemp("limits")
    with Served({**store_env(root), "TFTMON_SERVICE_MAX_BODY_BYTES": str(BODY_LIMIT)}, root / "serve.log") as served:
        yield served


def _post(served: Served, data: bytes | str, content_type: str = "application/json") -> requests.Response:
    return requests.post(f"{served.url}/predict", data=data, headers={"Content-Type": content_type}, timeout=30)


def _clean(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    answer = response.json()
    assert answer["error"] and "Traceback" not in response.text
    return answer


def test_a_timestamp_near_2262_is_a_422_not_a_500(served: Served, body: dict[str, Any]) -> None:
    data = copy.deepcopy(body)
    data["rows"][0][TIMESTAMP] = "2262-04-11T20:00:00Z"
    (problem,) = _clean(_post(served, json.dumps(data)), 422)["problems"]
    assert (problem["rule"], problem["fix"]) == (TIMESTAMP_RULE, TIMESTAMP_FIX)


def test_row_rules_over_http(served: Served, body: dict[str, Any]) -> None:
    data = copy.deepcopy(body)
    data["rows"][0].update(dict.fromkeys(CPU_PARTS, 75.0))
    (problem,) = _clean(_post(served, json.dumps(data)), 422)["problems"]
    assert (problem["rule"], problem["fix"], problem["rows"]) == (CPU_SUM_RULE, CPU_SUM_FIX, [0])


def test_an_oversized_body_is_refused_from_its_content_length(served: Served) -> None:
    """The whole body is never sent: the 413 comes back from the declared length alone."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {200 * 2**20}\r\n\r\n".encode()
            + b'{"rows": ['
        )
        head = _response_text(sock)
    assert head.startswith("HTTP/1.1 413"), head
    assert str(BODY_LIMIT) in head and "TFTMON_SERVICE_MAX_BODY_BYTES" in head


def _response_text(sock: socket.socket) -> str:
    """One HTTP response, head and body, read off a raw socket (they may come in separate packets)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            None,
        )
        if sep and length is not None and len(rest) >= length:
            break
    return data.decode(errors="replace")


def test_an_oversized_streamed_body_is_refused_while_it_streams(served: Served) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):  # 4 MiB, chunked: no Content-Length to go by
            yield b" " * 2**16

    started = time.monotonic()
    response = requests.post(
        f"{served.url}/predict", data=chunks(), headers={"Content-Type": "application/json"}, timeout=30
    )
    answer = _clean(response, 413)
    assert f"{BODY_LIMIT} bytes" in answer["error"] and "TFTMON_SERVICE_MAX_BODY_BYTES" in answer["fix"]
    assert time.monotonic() - started < 20


def test_a_wrong_content_type_says_so(served: Served, body: dict[str, Any]) -> None:
    answer = _clean(_post(served, json.dumps(body), "text/plain"), 415)
    assert "text/plain" in answer["error"] and answer["fix"] == "send Content-Type: application/json"


@pytest.mark.parametrize(
    ("data", "words"),
    [('{"rows": [1, 2,}', "line 1 column"), ('{"rows": ' + "[" * 1000 + "]" * 1000 + "}", "nest less deeply")],
    ids=["invalid", "deep"],
)
def test_json_errors_say_where_and_how_to_fix(served: Served, data: str, words: str) -> None:
    answer = _clean(_post(served, data), 422)
    (problem,) = answer["problems"]
    assert problem["field"] == "body" and problem["fix"] and words in json.dumps(problem)
    assert not any(c.isdigit() for c in problem["field"])


def test_a_body_at_the_limit_is_still_read(served: Served, body: dict[str, Any]) -> None:
    """Below the limit the service answers as before: here 503, valid rows and no model."""
    assert len(json.dumps(body)) < BODY_LIMIT
    _clean(_post(served, json.dumps(body)), 503)


def test_the_limit_is_a_service_setting() -> None:
    from tftmon.config import ServiceConfig

    assert ServiceConfig().max_body_bytes >= 300_000 * 400  # a full /predict fits
    assert "max_body_bytes" in ServiceConfig.model_json_schema()["properties"]
