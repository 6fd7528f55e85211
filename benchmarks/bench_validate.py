"""Benchmark tftmon.data.validate on a large synthetic contract dataset (target: ≤ 1 s per million rows).

Run: python benchmarks/bench_validate.py --rows 10000000 [--parquet]
The frame is built with numpy/pyarrow (valid by construction: CPU split sums to 100, java <= user+sys,
ids are the SHA-256 ids, timestamps increase per server), so the timing is the all-pass path that every
real run pays; GE's import (~4 s, once per process) is timed separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tftmon.contract import (
    COLUMNS,
    CPU_PARTS,
    DEFAULT_FLEET_SIZE,
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

OPEN_MAX = 50


def _strings(values: list[str], codes: np.ndarray) -> pd.Series:
    """values[codes] as a pandas str column, built in Arrow (a Python loop over 10 M rows takes minutes)."""
    return pd.Series(pa.array(values).take(pa.array(codes)).to_pandas())


def synthetic_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """A valid contract frame of `rows` rows for the default 90-server fleet, time-major like the simulator."""
    rng = np.random.default_rng(seed)
    hosts = [(p.hostname(i + 1), p.name) for p in PROFILES for i in range(p.default_count)]
    n_servers = DEFAULT_FLEET_SIZE
    steps = -(-rows // n_servers)
    server = np.tile(np.arange(n_servers), steps)[:rows]
    times = pd.date_range("2026-01-05", periods=steps, freq=MODEL_STEP, tz="UTC").repeat(n_servers)[:rows]
    data: dict[str, object] = {
        TIMESTAMP: times,
        SERVER_NAME: _strings([h for h, _ in hosts], server),
        SERVER_ID: _strings([server_id(h) for h, _ in hosts], server),
        PROFILE: _strings([p for _, p in hosts], server),
        STATE: _strings(list(STATES), rng.integers(0, len(STATES), rows)),
    }
    split = rng.dirichlet([4, 2, 1, 8], size=rows) * 100
    split[:, -1] = 100 - split[:, :-1].sum(axis=1)
    data.update({name: split[:, i] for i, name in enumerate(CPU_PARTS)})
    for col in METRIC_COLUMNS:
        if col.name in data:
            continue
        high = OPEN_MAX if col.max is None else col.max
        if col.name == JAVA_CPU:
            data[col.name] = sum(data[c] for c in JAVA_CPU_BOUND) * rng.random(rows)
        elif col.type == "int":
            data[col.name] = rng.integers(int(col.min or 0), int(high) + 1, rows, dtype=np.int64)
        else:
            data[col.name] = rng.uniform(col.min or 0.0, high, rows)
    return pd.DataFrame(data)[[c.name for c in COLUMNS]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of validate_frame (best is kept)")
    parser.add_argument("--parquet", action="store_true", help="also write Parquet and time validate_path")
    args = parser.parse_args()

    start = time.perf_counter()
    from tftmon.data import validate

    validate.build_suite("simulated")  # imports Great Expectations
    print(f"import tftmon.data.validate + Great Expectations: {time.perf_counter() - start:.2f} s")

    start = time.perf_counter()
    frame = synthetic_frame(args.rows)
    print(f"built {len(frame):,} rows x {frame.shape[1]} columns in {time.perf_counter() - start:.1f} s")

    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        report = validate.validate_frame(frame, strict=True)
        times.append(time.perf_counter() - start)
        assert report.success, report.to_text()
    best = min(times)
    per_m = best / (args.rows / 1e6)
    print(f"validate_frame (simulated, strict): best {best:.2f} s of {args.repeat} = {per_m:.3f} s per M rows")

    if args.parquet:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "metrics.parquet"
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
            del frame
            start = time.perf_counter()
            report = validate.validate_path(path, strict=True)
            took = time.perf_counter() - start
            assert report.success, report.to_text()
            print(f"validate_path (read Parquet + validate): {took:.2f} s = {took / (args.rows / 1e6):.3f} s per M")


if __name__ == "__main__":
    main()
