"""A full retrain cycle for the demo fleet: wall time of `run_retrain` and of each of its steps (target ≤ 10 min
on 2 cores).

Run: `python benchmarks/bench_retrain.py [--add-servers 0] [--no-service]`. Everything lives in a temporary
directory: a fresh sqlite MLflow store and, unless --no-service, a real `bentoml serve` (started empty) that the
retrain reloads and verifies over HTTP. The retrain simulates the demo fleet (tftmon.config.DemoConfig: 18
servers, 7 days) as it is now and trains the demo's model on it; the cycle is the whole chain, collect to
verify. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `tests` importable
from tests.serving import ADMIN_TOKEN, FEED_TOKEN, Served, store_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--add-servers", type=int, default=0, help="Simulate the demo fleet with K added servers.")
    parser.add_argument("--no-service", action="store_true", help="Registry only; verify coverage in-process.")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    env = store_env(root)
    os.environ.update(env)
    os.chdir(root)
    import mlflow

    from tftmon.config import DemoConfig, RetrainConfig
    from tftmon.ops.retrain import run_retrain

    service = None
    if not args.no_service:
        service = Served(
            {**env, "TFTMON_ADMIN_TOKEN": ADMIN_TOKEN, "TFTMON_FEED_TOKEN": FEED_TOKEN}, root / "serve.log"
        )
        service.wait_ready()
    try:
        simulation = DemoConfig().simulation.model_copy(update={"add_servers": args.add_servers})
        config = RetrainConfig(
            simulation=simulation,
            out=root / "data",
            service_url=None if service is None else service.url,
            admin_token=ADMIN_TOKEN,
            event_log=root / "events.jsonl",
            lock_file=root / "retrain.lock",
        )
        started = time.perf_counter()
        outcome = run_retrain(config)
        seconds = time.perf_counter() - started
    finally:
        if service is not None:
            service.stop()
    children = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{outcome.run_id}'",
        output_format="list",
    )
    print("| step | seconds |\n|---|---|")
    for run in sorted(children, key=lambda r: r.info.start_time):
        print(f"| {run.info.run_name} | {(run.info.end_time - run.info.start_time) / 1000:.1f} |")
    print(f"| **whole cycle** | **{seconds:.1f}** |")
    print(f"\n{outcome.to_text()}\nload average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
