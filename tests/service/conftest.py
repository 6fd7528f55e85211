"""The service suites' helpers and fixtures live in tests/serving.py, shared with tests/dashboard and registered
as a plugin in tests/conftest.py, so the tiny model is trained once per run. The helpers are re-exported here
for the modules that import them from here; the fixtures too, but only on import (module `__getattr__`), so
this conftest does not register them a second time (a second registration would train a second model)."""

from __future__ import annotations

from typing import Any

import tests.serving
from tests.serving import ADMIN_TOKEN, FEED, FEED_TOKEN, FLEET, LIMITS, TINY, Served, register_version, store_env

__all__ = ["ADMIN_TOKEN", "FEED", "FEED_TOKEN", "FLEET", "LIMITS", "TINY", "Served", "register_version", "store_env"]
_FIXTURES = ("fleet_history", "model_store", "service", "bare_service")


def __getattr__(name: str) -> Any:
    if name in _FIXTURES:
        return getattr(tests.serving, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
