"""Time `tftmon ingest` on a simulated fleet written as a wide CSV and as a long Parquet; print a markdown table.

Usage: python benchmarks/bench_ingest.py --servers 90 --days 30 [--work /tmp/bench-ingest]
The inputs come from the simulator (tftmon.data.simulate) at the 5-min step, without its state column: a
wide CSV (a column per metric, ISO 8601 timestamps with Z) and a long Parquet (timestamp, server, metric,
value). Each ingest runs in its own process, so its peak RSS is its own (os.wait4); the seconds are the
ingest call's wall clock (read, tidy, write), imports excluded. The machine may be shared: the table gives
the 1-minute load average before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tftmon.config import IngestConfig, SimulationConfig
from tftmon.contract import LONG_COLUMNS, METRICS, SERVER, SERVER_NAME, TIMESTAMP
from tftmon.data.ingest import Mapping, ingest_files
from tftmon.data.simulate import write_dataset
from tftmon.io import read_metrics


def make_inputs(servers: int, days: float, work: Path) -> dict[str, tuple[Path, int]]:
    """Simulate the fleet, then write it as a wide CSV and a long Parquet: {name: (path, input rows)}."""
    write_dataset(SimulationConfig(servers=servers, hours=days * 24, interval="5min"), work / "fleet", progress=False)
    frame = read_metrics(work / "fleet", columns=[TIMESTAMP, SERVER_NAME, *METRICS])
    wide = frame.rename(columns={SERVER_NAME: SERVER})
    pacsv.write_csv(pa.Table.from_pandas(wide, preserve_index=False), work / "wide.csv")
    n, k = len(frame), len(METRICS)
    codes, names = pd.factorize(frame[SERVER_NAME])
    long = pa.table(
        {
            TIMESTAMP: pa.array(np.repeat(frame[TIMESTAMP].to_numpy(dtype="datetime64[ns]"), k)).cast(
                pa.timestamp("ns", "UTC")
            ),
            SERVER: pa.DictionaryArray.from_arrays(np.repeat(codes, k), list(names)),
            "metric": pa.DictionaryArray.from_arrays(np.tile(np.arange(k, dtype=np.int32), n), list(METRICS)),
            "value": pa.array(frame[list(METRICS)].to_numpy(dtype=np.float64).ravel()),
        }
    )
    assert long.column_names == list(LONG_COLUMNS)
    pq.write_table(long, work / "long.parquet")
    return {"wide CSV": (work / "wide.csv", n), "long Parquet": (work / "long.parquet", n * k)}


def child(source: Path, out: Path) -> None:
    """One ingest, timed; prints its seconds and rows as JSON (the parent reads RSS from wait4)."""
    started = time.perf_counter()
    metadata = ingest_files(source, Mapping(), IngestConfig(), out, progress=False)
    print(json.dumps({"seconds": time.perf_counter() - started, "rows": metadata["rows"]}))


def run(source: Path, out: Path) -> tuple[dict, float]:
    """Ingest in a child process: its JSON line and its peak RSS in MiB."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", str(source), "--out", str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"ingest of {source} failed (status {status})")
    return json.loads(line.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=90)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--work", type=Path, default=None, help="where inputs and outputs go (default: a temp dir)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.out)
        return
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        inputs = make_inputs(args.servers, args.days, work)
        print(f"{args.servers} servers x {args.days:g} days at 5 min, {len(METRICS)} metrics; input rows below\n")
        print("| input | size | input rows | output rows | seconds | input rows/s | values/s | peak RSS | load |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, (path, rows) in inputs.items():
            load = os.getloadavg()[0]
            result, rss = run(path, work / f"out-{path.stem}")
            values = result["rows"] * len(METRICS)
            print(
                f"| {name} | {path.stat().st_size / 2**20:,.0f} MiB | {rows:,} | {result['rows']:,} "
                f"| {result['seconds']:.1f} | {rows / result['seconds']:,.0f} | {values / result['seconds']:,.0f} "
                f"| {rss:,.0f} MiB | {load:.1f} |"
            )
        print(f"\n(pandas {pd.__version__}, pyarrow {pa.__version__}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
