"""The background poller behind the current predictions: reads only on a new version, says when the source
fails, and stops when nobody asks."""

from __future__ import annotations

import time

import pytest

from tests.dashboard.conftest import wait_for
from tftmon.dashboard.poller import Poller


class Source:
    """A source whose version and failure the test sets; it counts its reads."""

    def __init__(self) -> None:
        self.version, self.reads, self.failing = 1, 0, False

    def current(self) -> int:
        if self.failing:
            raise ConnectionError("down")
        return self.version

    def read(self) -> str:
        self.reads += 1
        return f"v{self.version}"


def test_reads_once_per_version_and_in_the_background() -> None:
    source = Source()
    poller = Poller(source.current, source.read, every=0.05)
    assert poller.latest() == "v1" and source.reads == 1  # the first ask reads now
    time.sleep(0.3)
    assert source.reads == 1  # the version did not change: no new read
    source.version = 2
    assert wait_for(lambda: poller.latest() == "v2", "the new version", timeout=5)
    assert source.reads == 2


def test_a_failing_source_is_an_error_not_stale_data() -> None:
    source = Source()
    poller = Poller(source.current, source.read, every=0.05)
    assert poller.latest() == "v1"
    source.failing = True
    with pytest.raises(ConnectionError):
        wait_for(lambda: poller.latest() is None, "the failure", timeout=5)
    source.failing = False

    def recovered() -> bool:
        try:
            return poller.latest() == "v1"
        except ConnectionError:  # until the next poll
            return False

    assert wait_for(recovered, "the recovery", timeout=5)


def test_stops_when_nobody_asks_and_restarts_on_the_next_ask() -> None:
    source = Source()
    poller = Poller(source.current, source.read, every=0.05, idle_after=0.2)
    poller.latest()
    thread = poller._thread
    assert thread is not None
    thread.join(timeout=5)
    assert not thread.is_alive()
    source.version = 3
    assert poller.latest() == "v3"  # read at once: the value may be old after an idle stop
