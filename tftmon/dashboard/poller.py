"""The latest value of a slow read, kept fresh by a background thread, so a page never waits for it.

The current predictions of 900 servers are 25 MB of JSON, over a second to fetch and parse on a busy
machine: read on the page's path, every refresh and every first load would wait for it. A poller reads
them in the background instead, and only when the service says it forecast anew (a cheap version check
first), so pages and refreshes read memory, and an unchanged fleet costs no download. It stops polling
when nobody asked for a while, and starts again on the next ask.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Poller(Generic[T]):
    """`latest()` is the newest value of `read`, re-read every `every` seconds when `version` changed."""

    def __init__(
        self, version: Callable[[], object], read: Callable[[], T], every: float, idle_after: float = 120.0
    ) -> None:
        self._version, self._read, self.every, self.idle_after = version, read, every, idle_after
        self._lock = threading.Lock()
        self._value: T | None = None
        self._seen: object = None
        self._error: Exception | None = None
        self._asked = time.monotonic()
        self._thread: threading.Thread | None = None

    def latest(self) -> T:
        """The newest value; the first ask (and the first after an idle stop) reads it now. Raises the last
        poll's error while the source fails, rather than pass stale data off as current."""
        with self._lock:
            self._asked = time.monotonic()
            running = self._thread is not None and self._thread.is_alive()
        if not running:
            self.poll()
            with self._lock:
                self._thread = threading.Thread(target=self._run, name="tftmon-dashboard-poller", daemon=True)
                self._thread.start()
        with self._lock:
            if self._error is not None:
                raise self._error
            assert self._value is not None  # a poll either set a value or an error
            return self._value

    def poll(self) -> None:
        """One round: check the version, read when it changed (or nothing was read yet)."""
        try:
            version = self._version()
            if self._value is None or version != self._seen:
                value = self._read()
                with self._lock:
                    self._value, self._seen = value, version
            with self._lock:
                self._error = None
        except Exception as exc:  # kept for the next ask; the thread goes on polling
            with self._lock:
                self._error = exc

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            with self._lock:
                if time.monotonic() - self._asked > self.idle_after:
                    return
            self.poll()
