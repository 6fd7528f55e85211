"""Issue 31, items 3, 7, 9, 11 (a-c), 12 (echoed names) and 16: requests whose meaning is in doubt are refused
by name, slow or endless bodies are cut off, and the metrics keep one label per route.

The rules run against a real `bentoml serve` of the tiny promoted model (feeding needs a model), with a small
body limit, short body time limits and a /predict rate limit whose burst of 0 turns it off (item 11 b); the
rules themselves also on both validation paths (column-wise and the pydantic models), as the service runs them.
"""

from __future__ import annotations

import copy
import gzip
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import requests
from pydantic import ValidationError

from tests.reliability.test_request_rules import _response_text
from tests.service.conftest import FEED, FEED_TOKEN, Served
from tests.service.test_service import assert_clean_error, recent, rows
from tftmon.config import ServiceConfig
from tftmon.contract import PROFILE, PROFILE_NAMES, PROFILE_RULE, SERVER_NAME, TIMESTAMP
from tftmon.serve.limits import RateLimiter
from tftmon.serve.schemas import (
    SAMPLE_RULE,
    SPELLING_RULE,
    ArrowBody,
    PredictRequest,
    ValidRows,
    fast_rows,
    request_errors,
    row_rule_problems,
    short_history_problem,
)

#: The probed service's body limit and time limits: small, so the probes stay cheap.
BODY_LIMIT = 2**20
IDLE_SECONDS = 1
#: /predict limited to one a minute, with a burst of 0: documented as "off" (docs/SECURITY.md).
SERVICE = {
    "TFTMON_SERVICE_MAX_BODY_BYTES": str(BODY_LIMIT),
    "TFTMON_SERVICE_BODY_IDLE_TIMEOUT_SECONDS": str(IDLE_SECONDS),
    "TFTMON_SERVICE_BODY_TIMEOUT_SECONDS": "30",
    "TFTMON_SERVICE_PREDICT_PER_MINUTE": "1",
    "TFTMON_SERVICE_PREDICT_BURST": "0",
    "TFTMON_FEED_TOKEN": FEED_TOKEN,
}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def served(model_store: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("defects")
    with Served({**model_store["env"], **SERVICE}, root / "serve.log") as served:
        yield served


@pytest.fixture(scope="module")
def body(fleet_history: pd.DataFrame) -> dict[str, Any]:
    """Two servers' last 1.5 h (more than the tiny model's 1 h window) as a client sends them."""
    return {"rows": rows(recent(fleet_history, sorted(fleet_history[SERVER_NAME].unique())[:2]))}


def _post(served: Served, data: bytes | str, path: str = "/predict", **headers: str) -> requests.Response:
    return requests.post(f"{served.url}{path}", data=data, headers={**JSON, **headers}, timeout=60)


def _rule_problems(data: dict[str, Any]) -> list[Any]:
    """The row rules' problems for `data`, the same on the column-wise path (Arrow's columns and Python
    data) and on the pydantic model's, which the service takes when the column-wise path declines."""
    answers = [row_rule_problems(ValidRows.from_request(PredictRequest.model_validate(data)))]
    for parsed in (ArrowBody.read(json.dumps(data).encode()), data):
        valid = fast_rows(parsed, PredictRequest)
        assert valid is not None
        answers.append(row_rule_problems(valid))
    assert answers[0] == answers[1] == answers[2]
    return answers[0]


# ---------------------------------------------------------------------------------------------
# Item 3: JSON nested deep inside a row is the same 422 as at the top
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/predict", "/feed"])
def test_json_nested_inside_a_row_is_a_422(served: Served, path: str) -> None:
    deep = '{"rows": [{"a": ' + '{"a": ' * 1000 + "1" + "}" * 1000 + "}]}"
    answer = assert_clean_error(_post(served, deep, path, **FEED), 422)
    (problem,) = answer["problems"]
    assert problem["field"] == "body" and "nest less deeply" in problem["fix"]


# ---------------------------------------------------------------------------------------------
# Item 7: conflicting input is refused by name
# ---------------------------------------------------------------------------------------------


def test_a_repeated_key_is_refused_by_name(served: Served, body: dict[str, Any]) -> None:
    """pydantic-core keeps the last of two values, so 999 % was never range-checked."""
    row = json.dumps(body["rows"][3])
    repeated = row.replace('"mem_used_pct":', '"mem_used_pct": 999, "mem_used_pct":', 1)
    data = json.dumps({"rows": body["rows"][:3]})[:-2] + ", " + repeated + "]}"
    answer = assert_clean_error(_post(served, data), 422)
    (problem,) = answer["problems"]
    assert problem["field"] == "rows[*].mem_used_pct" and problem["rows"] == [3]
    assert "more than once" in problem["rule"] and problem["fix"].startswith("send each key once")


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_a_compressed_body_is_refused_not_misread(served: Served, body: dict[str, Any], encoding: str) -> None:
    data = json.dumps(body).encode()
    sent = gzip.compress(data) if encoding == "gzip" else data  # br: a plain body labelled br was answered 200
    answer = assert_clean_error(_post(served, sent, **{"Content-Encoding": encoding}), 415)
    assert encoding in answer["error"] and "uncompressed" in answer["fix"]


def test_repeated_samples_that_disagree_are_refused(body: dict[str, Any]) -> None:
    data = copy.deepcopy(body)
    first, second = data["rows"][0], data["rows"][1]
    data["rows"] += [dict(first), {**second, "mem_used_pct": second["mem_used_pct"] / 2}]
    (problem,) = _rule_problems(data)
    assert (problem.field, problem.rule) == (f"rows[*].{TIMESTAMP}", SAMPLE_RULE)
    n = len(body["rows"])
    assert (problem.count, problem.rows) == (2, [1, n + 1])  # the identical repeat of row 0 is read once
    data["rows"].pop()
    assert _rule_problems(data) == []


def test_two_spellings_of_one_server_are_refused(body: dict[str, Any]) -> None:
    data = copy.deepcopy(body)
    name = data["rows"][0][SERVER_NAME]
    data["rows"][0][SERVER_NAME] = name.upper()
    (problem,) = _rule_problems(data)
    assert (problem.field, problem.rule) == (f"rows[*].{SERVER_NAME}", SPELLING_RULE)
    assert f"{name.upper()} and {name}" in problem.fix
    assert problem.count == sum(row[SERVER_NAME].lower() == name for row in data["rows"])


def _feed(served: Served, frame: pd.DataFrame) -> requests.Response:
    return requests.post(f"{served.url}/feed", json={"rows": rows(frame)}, headers=FEED, timeout=60)


def _live(served: Served, name: str) -> dict[str, Any]:
    """The live forecast of `name`, once the live loop made one."""
    deadline = pd.Timestamp.now() + pd.Timedelta(seconds=120)
    while pd.Timestamp.now() < deadline:
        current = requests.get(f"{served.url}/predictions/current", timeout=30).json()
        found = [p for p in current["predictions"] if p["server_name"] == name]
        if found:
            return found[0]
    raise AssertionError(f"{name} was never forecast: {current}")


def test_a_live_server_is_found_by_any_spelling(served: Served, fleet_history: pd.DataFrame) -> None:
    source = sorted(fleet_history[SERVER_NAME].unique())[2]
    assert _feed(served, recent(fleet_history, [source]).assign(server_name="ProbeCase01")).status_code == 200
    _live(served, "probecase01")
    for path in ("/explain/PROBECASE01", "/servers/PROBECASE01/history"):
        answer = requests.get(f"{served.url}{path}", timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["server_name"] == "probecase01"


def test_a_feed_row_may_not_change_a_live_servers_profile(served: Served, fleet_history: pd.DataFrame) -> None:
    source = sorted(fleet_history[SERVER_NAME].unique())[3]
    history = recent(fleet_history, [source]).assign(server_name="probeprofile01")
    assert _feed(served, history.iloc[:-1]).status_code == 200
    live = str(history[PROFILE].iloc[0])
    other = next(p for p in PROFILE_NAMES if p != live)
    answer = assert_clean_error(_feed(served, history.iloc[-1:].assign(profile=other)), 422)
    (problem,) = answer["problems"]
    assert (problem["field"], problem["rule"], problem["rows"]) == (f"rows[*].{PROFILE}", PROFILE_RULE, [0])
    assert f"probeprofile01 is {live}" in problem["fix"]
    fleet = requests.get(f"{served.url}/fleet", timeout=30).json()["servers"]
    (server,) = [s for s in fleet if s["server_name"] == "probeprofile01"]
    assert server["profile"] == live and pd.Timestamp(server["last_seen"]) < history[TIMESTAMP].max()  # not stored
    assert _feed(served, history.iloc[-1:].assign(profile=None)).json()["accepted"] == 1  # no profile: agrees


# ---------------------------------------------------------------------------------------------
# Item 9: slow and endless bodies
# ---------------------------------------------------------------------------------------------


def test_a_body_shorter_than_its_content_length_times_out(served: Served, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=60) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(data) + 10}\r\n\r\n".encode()
            + data
        )
        answer = _response_text(sock)
        assert sock.recv(1) == b""  # and the connection is closed
    assert answer.startswith("HTTP/1.1 408"), answer[:300]
    assert "connection: close" in answer.lower() and "TFTMON_SERVICE_BODY_IDLE_TIMEOUT_SECONDS" in answer


def test_a_chunked_body_past_the_limit_is_not_read_on(served: Served) -> None:
    """The 413 comes while the body streams in, and the connection is closed: the 64 MiB the client goes on
    sending are never read (before, the server read, and dropped, all of them)."""
    piece = b" " * 2**16
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    total, sent, received = 64 * BODY_LIMIT, 0, bytearray()

    def read(sock: socket.socket) -> None:
        try:
            while chunk := sock.recv(65536):
                received.extend(chunk)
        except OSError:
            pass

    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        reader = threading.Thread(target=read, args=(sock,))
        reader.start()
        try:
            while sent < total:
                sock.sendall(frame)
                sent += len(piece)
        except OSError:  # reset by the server (or blocked, had it stopped reading without closing)
            pass
        reader.join(60)
    assert bytes(received).startswith(b"HTTP/1.1 413"), bytes(received[:300])
    assert b"connection: close" in bytes(received).lower()
    assert sent < total


# ---------------------------------------------------------------------------------------------
# Item 11 (a-c): behaviour as documented
# ---------------------------------------------------------------------------------------------


def test_a_body_without_content_type_is_a_415(served: Served, body: dict[str, Any]) -> None:
    response = requests.post(f"{served.url}/predict", data=json.dumps(body), timeout=60)
    answer = assert_clean_error(response, 415)
    assert "without a Content-Type" in answer["error"] and answer["fix"] == "send Content-Type: application/json"


def test_a_burst_of_0_turns_the_rate_limit_off(served: Served) -> None:
    assert ServiceConfig(predict_burst=0, feed_burst=0).predict_burst == 0
    limiter = RateLimiter(per_minute=1, burst=0)
    assert not limiter.enabled and [limiter.acquire("client", now=0.0) for _ in range(3)] == [None] * 3
    codes = [_post(served, '{"rows": []}').status_code for _ in range(3)]  # 1 a minute, were it on
    assert codes == [422, 422, 422]


def test_too_little_history_names_the_servers(served: Served, body: dict[str, Any]) -> None:
    """Half an hour of one server, where the model reads an hour: a problem naming it, not problems: []."""
    name = body["rows"][0][SERVER_NAME]
    mine = [row for row in body["rows"] if row[SERVER_NAME] == name]
    newest = pd.Timestamp(mine[-1][TIMESTAMP])
    short = [row for row in mine if pd.Timestamp(row[TIMESTAMP]) > newest - pd.Timedelta(minutes=30)]
    answer = assert_clean_error(_post(served, json.dumps({"rows": short})), 422)
    (problem,) = answer["problems"]
    assert problem["field"] == "rows" and problem["count"] == 1 and problem["rows"] == [0, 1, 2, 3, 4]
    assert "span what the model reads" in problem["rule"] and f"{name} has " in problem["fix"]


def test_one_short_server_is_listed_while_the_others_are_forecast(served: Served, body: dict[str, Any]) -> None:
    """Item 5: servers with a full window are forecast; one with half an hour is named with what it needs."""
    name = body["rows"][0][SERVER_NAME]
    newest = max(pd.Timestamp(row[TIMESTAMP]) for row in body["rows"])
    late = [{**row, SERVER_NAME: "ppweb777"} for row in body["rows"] if row[SERVER_NAME] == name
            and pd.Timestamp(row[TIMESTAMP]) > newest - pd.Timedelta(minutes=30)]  # fmt: skip
    response = _post(served, json.dumps({"rows": body["rows"] + late}))
    assert response.status_code == 200, response.text
    answer = response.json()
    full = {row[SERVER_NAME] for row in body["rows"]}
    assert {p[SERVER_NAME] for p in answer["predictions"]} == full
    (warming,) = answer["warming_up"]
    assert warming["server_name"] == "ppweb777" and 5 <= warming["have_steps"] <= 7
    assert warming["need_minutes"] == warming["need_steps"] * 5 and warming["have_steps"] + warming["need_steps"] > 6


def test_short_history_counts_steps_as_the_model_does(body: dict[str, Any]) -> None:
    valid = fast_rows(body, PredictRequest)
    assert valid is not None
    assert short_history_problem(valid.frame, history_steps=12) is None
    problem = short_history_problem(valid.frame, history_steps=48)
    assert problem is not None and problem.count == 2 and "of 48 steps" in problem.fix


# ---------------------------------------------------------------------------------------------
# Item 12: a name echoed back is short and escaped
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a" * 10_000, "%00", "bad%09name%1B[31m"])
def test_an_unknown_name_is_echoed_short_and_escaped(served: Served, name: str) -> None:
    for path in (f"/explain/{name}", f"/servers/{name}/history"):
        answer = assert_clean_error(requests.get(f"{served.url}{path}", timeout=30), 404)
        assert len(answer["error"]) < 160, answer["error"]
        assert answer["error"].isprintable(), answer["error"]


def test_an_unknown_column_is_named_short_and_escaped(body: dict[str, Any]) -> None:
    data = copy.deepcopy(body)
    data["rows"][0]["bad\x00" * 100] = 1.0
    with pytest.raises(ValidationError) as raised:
        PredictRequest.model_validate(data)
    (problem,) = request_errors([{**e, "loc": ("body", *e["loc"])} for e in raised.value.errors()]).problems
    assert problem.field.isprintable() and len(problem.field) < 200 and "\\x00" in problem.field
    assert problem.rule.isprintable() and len(problem.rule) < 250


# ---------------------------------------------------------------------------------------------
# Item 16: one metrics label per route
# ---------------------------------------------------------------------------------------------


def test_bentoml_request_metrics_are_labelled_by_route(served: Served) -> None:
    for name in ("ppdb901", "ppdb902", "ppdb903"):
        requests.get(f"{served.url}/explain/{name}", timeout=30)
        requests.get(f"{served.url}/servers/{name}/history", timeout=30)
    requests.get(f"{served.url}/no/such/path", timeout=30)
    text = requests.get(f"{served.url}/metrics", timeout=30).text
    endpoints = {line.split('endpoint="', 1)[1].split('"', 1)[0] for line in text.splitlines() if 'endpoint="' in line}
    assert not any("ppdb90" in e or "/no/such" in e for e in endpoints), sorted(endpoints)
    bentoml_lines = [line for line in text.splitlines() if line.startswith("bentoml_") and 'endpoint="' in line]
    assert any('endpoint="/explain/{name}"' in line for line in bentoml_lines), bentoml_lines[:20]
    assert any('endpoint="/servers/{name}"' in line for line in bentoml_lines)
    assert any('endpoint="other"' in line for line in bentoml_lines)
