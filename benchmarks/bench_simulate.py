"""Time `write_dataset` end to end (simulation + Parquet) and print one markdown table row.

Usage: python benchmarks/bench_simulate.py --servers 90 --days 30 --interval 5s --out /tmp/x
The machine may be shared: the row gives the 1-minute load average before and after the run, and the
process's CPU time (user + sys, start-up included) beside the wall clock. Peak RSS is the process's
(the same figure as "Maximum resident set size" from `/usr/bin/time -v`).
"""

from __future__ import annotations

import argparse
import os
import resource
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
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    metadata = write_dataset(config, args.out, progress=args.progress)
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    if not args.keep:
        shutil.rmtree(args.out)
    rows = metadata["rows"]
    print("| servers | days | interval | rows | seconds | rows/s | CPU s | peak RSS | MB on disk | load |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
    print(
        f"| {args.servers} | {args.days:g} | {args.interval} | {rows:,} | {seconds:.1f} | {rows / seconds:,.0f} "
        f"| {usage.ru_utime + usage.ru_stime:.1f} | {usage.ru_maxrss / 1024:,.0f} MiB | {size / 1e6:,.0f} "
        f"| {load_before:.2f} → {load_after:.2f} |"
    )


if __name__ == "__main__":
    main()
