"""Issue 9: per-client rate limits on /predict and /feed (429 with Retry-After, refused before the body is
read) and one structured log line per prediction request, never the body. A real `bentoml serve` over an
empty registry: the limiter and the log sit in front of the model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from tests.service.conftest import FEED, FEED_TOKEN, Served, store_env

#: 3 at once, then one every 2 s per client.
RATE = {"TFTMON_SERVICE_PREDICT_PER_MINUTE": "30", "TFTMON_SERVICE_PREDICT_BURST": "3",
        "TFTMON_SERVICE_FEED_PER_MINUTE": "30", "TFTMON_SERVICE_FEED_BURST": "3"}  # fmt: skip
SECRET = "do-not-log-this-host"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("rate")
    with Served({**store_env(root), "TFTMON_FEED_TOKEN": FEED_TOKEN, **RATE}, root / "serve.log") as served:
        yield served


def _burst(url: str, n: int, **kwargs: object) -> list[requests.Response]:
    body = json.dumps({"rows": [{"server_name": SECRET}]})
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return [requests.post(url, data=body, headers=headers, timeout=10) for _ in range(n)]


@pytest.mark.parametrize(("path", "headers"), [("/predict", {}), ("/feed", FEED)])
def test_over_the_limit_is_429_with_retry_after(limited: Served, path: str, headers: dict[str, str]) -> None:
    answers = _burst(f"{limited.url}{path}", 6, headers=headers)
    codes = [r.status_code for r in answers]
    assert codes[:3] == [422, 422, 422], codes  # within the burst: validated (and refused) as usual
    refused = [r for r in answers if r.status_code == 429]
    assert refused, codes
    body = refused[0].json()
    assert "rate limit" in body["error"] and path in body["error"] and "PER_MINUTE" in body["fix"]
    wait = int(refused[0].headers["Retry-After"])
    assert 1 <= wait <= 2
    time.sleep(wait)
    assert _burst(f"{limited.url}{path}", 1, headers=headers)[0].status_code == 422  # let in again


def test_limit_refuses_before_reading_the_body(limited: Served) -> None:
    while _burst(f"{limited.url}/predict", 1)[0].status_code != 429:
        pass
    started = time.perf_counter()
    big = requests.post(
        f"{limited.url}/predict", data=b"x" * (64 << 20), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert big.status_code == 429
    assert time.perf_counter() - started < 5


def test_one_structured_log_line_per_prediction_request(limited: Served) -> None:
    time.sleep(2.1)  # one token back
    body = json.dumps({"rows": [{"server_name": SECRET}]})
    requests.post(f"{limited.url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=10)
    decoder = json.JSONDecoder()  # BentoML appends its trace ids after the JSON object
    lines = [decoder.raw_decode(line[line.index("{") :])[0] for line in limited.log.read_text().splitlines()
             if '"event": "predict"' in line]  # fmt: skip
    assert lines and {"client", "status", "latency_ms"} <= set(lines[-1])
    assert lines[-1]["client"] == "127.0.0.1" and lines[-1]["status"] in (422, 429)
    assert {line["status"] for line in lines} >= {422, 429}
    assert SECRET not in limited.log.read_text()
