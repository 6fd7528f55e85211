"""Time Prometheus ingest of 1 day of this host's node_exporter: `query_prometheus` and the dataset it makes.

Run: python benchmarks/bench_ingest_prometheus.py [--days 1] [--interval 15s] [--steps 5min,15s] [--repeat 3]
A fresh Prometheus has no day of history, so one is backfilled with promtool (tests/prometheus_stack.py:
this host's node_exporter scraped once, its series carried back over the day at --interval), then Debian's
prometheus serves that TSDB on 127.0.0.1 while scraping the live exporter. Each measurement runs in a
fresh child process: wall time of `query_prometheus` over the whole day, long rows per second, then the
same samples through `ingest_samples` to a contract dataset, and the child's peak RSS (with its RSS after
imports, so the query's own share shows). The machine may be shared: the 1-minute load is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make `tests` importable
from tests.prometheus_stack import BINARIES, INSTALL, backfill, node_exporter, prometheus  # noqa: E402
from tftmon.contract import MODEL_STEP  # noqa: E402

#: Ends the backfilled day this long before Prometheus starts, so no live sample falls inside it.
GAP = timedelta(minutes=10)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(url: str, start: str, end: str, step: str) -> dict[str, float | int]:
    """One timed query (in this process, a fresh child): the figures as JSON-able numbers."""
    from tftmon.config import IngestConfig
    from tftmon.data.ingest import Mapping, Samples, ingest_samples
    from tftmon.data.ingest.prometheus import query_prometheus

    after_imports = _rss_mib()
    since, until = datetime.fromisoformat(start), datetime.fromisoformat(end)
    started = time.perf_counter()
    frame, described = query_prometheus(url, since, until, step=pd.Timedelta(step).to_pytimedelta(), progress=False)
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        metadata = ingest_samples(Samples(frame, source=described), Mapping(), IngestConfig(), Path(out) / "ds")
        to_dataset = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": len(frame),
        "points": described["points_per_series"],
        "chunks": described["chunks"],
        "queries": len(described["queries"]),
        "dataset_rows": metadata["rows"],
        "dataset_seconds": to_dataset,
        "rss_after_imports_mib": after_imports,
        "peak_rss_mib": _rss_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=1.0, help="history backfilled and queried")
    parser.add_argument("--interval", default="15s", help="scrape interval of the backfilled history")
    parser.add_argument("--steps", default="5min,15s", help="query steps to time (the model step first)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per step (best wall time kept)")
    parser.add_argument("--measure", nargs=4, metavar=("URL", "START", "END", "STEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        sys.exit(f"{', '.join(missing)} not installed: {INSTALL}")

    with tempfile.TemporaryDirectory(prefix="bench-prometheus-") as tmp, ExitStack() as daemons:
        target = daemons.enter_context(node_exporter(Path(tmp)))
        end = pd.Timestamp(datetime.now(UTC) - GAP).floor(MODEL_STEP).to_pydatetime()  # whole model steps
        start = end - timedelta(days=args.days)
        started = time.perf_counter()
        samples = backfill(target, Path(tmp) / "tsdb", start, end, pd.Timedelta(args.interval).to_pytimedelta())
        print(f"backfilled {samples:,} samples ({args.days:g} day(s) at {args.interval}) in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        url = daemons.enter_context(prometheus(Path(tmp), Path(tmp) / "tsdb", [target]))
        load = os.getloadavg()[0]
        rows = []
        for step in args.steps.split(","):
            runs = []
            for _ in range(args.repeat):
                child = subprocess.run(
                    [sys.executable, __file__, "--measure", url, start.isoformat(), end.isoformat(), step],
                    check=True, capture_output=True, text=True, cwd=ROOT,
                )  # fmt: skip
                runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
            best = min(runs, key=lambda r: r["seconds"])
            rows.append((step, best, max(r["peak_rss_mib"] for r in runs)))
    print(f"\n1-minute load before: {load:.2f}, after: {os.getloadavg()[0]:.2f}; best of {args.repeat} runs\n")
    print("| step | points/series | queries | chunks | long rows | query wall s | rows/s | to dataset s | "
          "dataset rows | peak RSS MiB (after imports) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for step, r, peak in rows:
        print(f"| {step} | {r['points']:,} | {r['queries']} | {r['chunks']} | {r['rows']:,} | {r['seconds']:.3f} | "
              f"{r['rows'] / r['seconds']:,.0f} | {r['dataset_seconds']:.3f} | {r['dataset_rows']:,} | "
              f"{peak:.0f} ({r['rss_after_imports_mib']:.0f}) |")  # fmt: skip


if __name__ == "__main__":
    main()
