"""Training throughput when the machine is shared: why a fit slows far more than the load explains.

Run: `python benchmarks/bench_train_contention.py [--busy 2] [--batches 30]`. Each row trains the default network
(3-h encoder, batch 64) for `--batches` batches in a fresh process, once on an idle machine and once beside
`--busy` processes that spin on a core each (what another job does to a 2-core machine), for each setting of
torch's intra-op threads and OpenMP's wait policy. Samples per second are the fit's own (`TrainingResult`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import torch
sys.path.insert(0, {root!r})
from tests.synthetic import daily, fleet_frame
import pandas as pd
from tftmon.config import TrainConfig
from tftmon.model.train import fit
threads = {threads}
if threads:
    torch.set_num_threads(threads)
data = fleet_frame(16, pd.Timedelta(days=3), "5min", signal=daily())
config = TrainConfig(max_epochs=1, max_batches_per_epoch={batches}, max_val_batches=1, progress_bar=False,
                     accelerator="cpu", devices=1)
_, result = fit(data, config)
print(json.dumps({{"samples_per_second": result.samples_per_second, "threads": torch.get_num_threads()}}))
"""
SPIN = "while True: pass"


def measure(threads: int, policy: str | None, busy: int, batches: int) -> dict[str, float]:
    env = {**os.environ}
    env.pop("OMP_WAIT_POLICY", None)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    try:
        code = CHILD.format(root=str(ROOT), threads=threads, batches=batches)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=2, help="spinning processes beside the loaded runs")
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    print(f"| torch threads | OMP_WAIT_POLICY | samples/s idle | samples/s beside {args.busy} busy | loaded / idle |")
    print("|---|---|---:|---:|---:|")
    for threads, policy in ((0, None), (0, "PASSIVE"), (1, None)):
        idle = measure(threads, policy, 0, args.batches)
        loaded = measure(threads, policy, args.busy, args.batches)
        shown = idle["threads"] if threads == 0 else threads
        print(f"| {shown:g}{' (default)' if threads == 0 else ''} | {policy or 'default'} | "
              f"{idle['samples_per_second']:.0f} | {loaded['samples_per_second']:.0f} | "
              f"{loaded['samples_per_second'] / idle['samples_per_second']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
