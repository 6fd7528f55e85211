"""Per-client rate limits: a token bucket per client address, refused before the body is read.

A bucket holds `burst` requests and refills at `per_minute`; a request that finds it empty is told how
long until one request is allowed again (the Retry-After of the 429). A rate or a burst of 0 turns the
limit off (docs/SECURITY.md): a bucket that holds nothing would refuse every request. Memory is bounded: past
`max_clients` buckets, the ones that have refilled completely (idle clients) are forgotten first.
"""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    """`per_minute` requests per client on average, `burst` at once; either 0 = no limit."""

    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000) -> None:
        self.per_second = per_minute / 60
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0 and self.burst > 0

    def acquire(self, client: str, now: float | None = None) -> float | None:
        """Take one request from the client's bucket: None when allowed, else seconds to wait."""
        if not self.enabled:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return (1 - tokens) / self.per_second
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > self.max_clients:
                self._forget_idle(now)
            return None

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.per_second
        idle = [c for c, (_, at) in self._buckets.items() if now - at >= full_after]
        for client in idle or list(self._buckets)[: len(self._buckets) - self.max_clients]:
            del self._buckets[client]


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds (RFC 9110), rounded up so a client that obeys it is let in."""
    return str(max(1, math.ceil(seconds)))
