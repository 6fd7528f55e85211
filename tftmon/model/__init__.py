"""The model: features shared by training and serving, the network, training, the MLflow pyfunc.

`load_model` and `forecast` are importable from here because registered versions of tftmon ≤ 0.3 carry a
pyfunc file that imports them as `tftmon.model.load_model` / `tftmon.model.forecast`; they resolve lazily
so importing `tftmon.model.features` does not pull in the network.
"""

from __future__ import annotations

from typing import Any

__all__ = ["forecast", "load_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tftmon.model import network

        return getattr(network, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
