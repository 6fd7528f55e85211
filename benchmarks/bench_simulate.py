"""Time `write_dataset` end to end (simulation + Parquet) and print one markdown table row.

Usage: python benchmarks/bench_simulate.py --servers 90 --days 30 --interval 5s --out /tmp/x
Peak memory: run it under `/usr/bin/time -v` and read "Maximum resident set size".
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from tftmon.config import SimulationConfig
from tftmon.data.simulate import write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=90)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--interval", default="5s")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep", action="store_true", help="keep the output (deleted by default: it is big)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    config = SimulationConfig(servers=args.servers, hours=args.days * 24, interval=args.interval, seed=args.seed)
    started = time.perf_counter()
    metadata = write_dataset(config, args.out, progress=args.progress)
    seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    if not args.keep:
        shutil.rmtree(args.out)
    rows = metadata["rows"]
    print("| servers | days | interval | rows | seconds | rows/s | MB on disk |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    print(f"| {args.servers} | {args.days:g} | {args.interval} | {rows:,} | {seconds:.1f} | {rows / seconds:,.0f} "
          f"| {size / 1e6:,.0f} |")


if __name__ == "__main__":
    main()
