"""Benchmark tftmon.data.validate on a large synthetic contract dataset (target: ≤ 1 s per million rows).

Run: python benchmarks/bench_validate.py --rows 10000000 [--parquet]
The frame is built with numpy/pyarrow (valid by construction: CPU split sums to 100, java <= user+sys,
ids are the SHA-256 ids, timestamps increase per server), so the timing is the all-pass path that every
real run pays; GE's import (~4 s, once per process) is timed separately.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `tests` importable
from tests.synthetic import contract_frame, default_fleet_hosts


def synthetic_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """A valid contract frame of `rows` rows for the default 90-server fleet, time-major like the simulator."""
    return contract_frame(default_fleet_hosts(), rows=rows, seed=seed)


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
