"""Small valid contract frames built with numpy, so data tests do not depend on the simulator."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from tftmon.contract import (
    COLUMNS,
    CPU_PARTS,
    JAVA_CPU,
    JAVA_CPU_BOUND,
    METRIC_COLUMNS,
    MODEL_STEP,
    PROFILE,
    PROFILES,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    STATES,
    TIMESTAMP,
)
from tftmon.encoding import server_id

#: Upper bound drawn for metrics the contract leaves open (MB/s, counts, load).
OPEN_MAX = 50


def valid_frame(n_servers: int = 6, n_steps: int = 40, seed: int = 0, state: bool = True) -> pd.DataFrame:
    """A frame obeying every contract rule: ranges, dtypes, CPU split = 100, java <= user+sys, ids, order."""
    rng = np.random.default_rng(seed)
    hosts = [(p.hostname(i + 1), p.name) for i in range(n_servers) for p in PROFILES][:n_servers]
    n = n_servers * n_steps
    server = np.tile(np.arange(n_servers), n_steps)
    times = pd.date_range("2026-01-05", periods=n_steps, freq=MODEL_STEP, tz="UTC")
    data: dict[str, object] = {
        TIMESTAMP: times.repeat(n_servers),
        SERVER_NAME: pd.array([hosts[i][0] for i in server], dtype="str"),
        SERVER_ID: pd.array([server_id(hosts[i][0]) for i in server], dtype="str"),
        PROFILE: pd.array([hosts[i][1] for i in server], dtype="str"),
        STATE: pd.array(rng.choice(STATES, n), dtype="str"),
    }
    split = rng.dirichlet([4, 2, 1, 8], size=n) * 100
    split[:, -1] = 100 - split[:, :-1].sum(axis=1)
    data.update({name: split[:, i] for i, name in enumerate(CPU_PARTS)})
    for col in METRIC_COLUMNS:
        if col.name in data:
            continue
        high = OPEN_MAX if col.max is None else col.max
        if col.name == JAVA_CPU:
            data[col.name] = sum(data[c] for c in JAVA_CPU_BOUND) * rng.random(n)
        elif col.type == "int":
            data[col.name] = rng.integers(int(col.min or 0), int(high) + 1, n, dtype=np.int64)
        else:
            data[col.name] = rng.uniform(col.min or 0.0, high, n)
    frame = pd.DataFrame(data)[[c.name for c in COLUMNS]]
    return frame if state else frame.drop(columns=STATE)


@pytest.fixture
def make_frame() -> Callable[..., pd.DataFrame]:
    return valid_frame


@pytest.fixture
def frame() -> pd.DataFrame:
    return valid_frame()
