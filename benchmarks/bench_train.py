"""Training throughput (samples/s) for a few model sizes and encoder lengths, and resampling throughput.

Run: `python benchmarks/bench_train.py [--servers 16] [--days 7] [--batches 15] [--resample-rows 5000000]`.
Data is synthetic (daily + weekly pattern and noise) so the benchmark does not depend on the simulator.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `tests` importable
from tests.synthetic import daily, fleet_frame
from tftmon.config import TrainConfig
from tftmon.data.resample import resample_to_model_step
from tftmon.model.train import fit


def synthetic(servers: int, days: float, interval: str) -> pd.DataFrame:
    return fleet_frame(servers, pd.Timedelta(days=days), interval, signal=daily())


def bench_resample(rows: int) -> None:
    servers = 90
    days = rows / servers * 5 / 86400
    raw = synthetic(servers, days, "5s")
    started = time.perf_counter()
    out = resample_to_model_step(raw)
    seconds = time.perf_counter() - started
    print(
        f"| resample 5 s -> 5 min | {len(raw):,} rows -> {len(out):,} | {seconds:.2f} s | "
        f"{len(raw) / seconds:,.0f} rows/s |"
    )


def bench_training(servers: int, days: float, batches: int) -> None:
    data = synthetic(servers, days, "5min")
    print(f"| hidden | encoder | batch | samples/s | s/epoch of {batches} batches | best val_loss |")
    print("|---|---|---|---|---|---|")
    for hidden, encoder_hours in ((8, 6), (16, 6), (16, 12), (16, 24), (32, 24)):
        config = TrainConfig(
            max_epochs=2,
            max_batches_per_epoch=batches,
            max_val_batches=5,
            encoder_hours=encoder_hours,
            model={"hidden_size": hidden},
            batch_size=64,
            progress_bar=False,
            accelerator="cpu",
            devices=1,
        )
        _, result = fit(data, config)
        print(
            f"| {hidden} | {encoder_hours} h | 64 | {result.samples_per_second:.0f} | "
            f"{result.seconds / max(result.epochs, 1):.1f} | {result.best_val_loss:.2f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, default=16)
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--resample-rows", type=int, default=5_000_000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    bench_resample(args.resample_rows)
    bench_training(args.servers, args.days, args.batches)


if __name__ == "__main__":
    main()
