"""Small valid contract frames (tests/synthetic.py), so data tests do not depend on the simulator."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from tests.synthetic import contract_frame


@pytest.fixture
def make_frame() -> Callable[..., pd.DataFrame]:
    return contract_frame


@pytest.fixture
def frame() -> pd.DataFrame:
    return contract_frame()
