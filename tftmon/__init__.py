"""tftmon: predictive monitoring for a server fleet with a Temporal Fusion Transformer."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tftmon")
except PackageNotFoundError:  # running from a source tree without `pip install -e .`
    __version__ = "0.0.0"
