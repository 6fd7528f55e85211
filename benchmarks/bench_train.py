"""Training throughput (samples/s) for a few model sizes and encoder lengths, and resampling throughput.

Run: `python benchmarks/bench_train.py [--servers 16] [--days 7] [--batches 15] [--resample-rows 5000000]`.
Data is synthetic (daily + weekly pattern and noise) so the benchmark does not depend on the simulator.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch

from tftmon.config import TrainConfig
from tftmon.contract import INTEGER_METRICS, METRICS, PROFILE, PROFILES, SERVER_NAME, STATE, TIMESTAMP
from tftmon.model import features
from tftmon.model.train import fit

START = pd.Timestamp("2026-01-05", tz="UTC")


def synthetic(servers: int, days: float, interval: str) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ts = pd.date_range(START, START + pd.Timedelta(days=days), freq=interval, inclusive="left")
    hours = ((ts - START) / pd.Timedelta(hours=1)).to_numpy(dtype=float)
    frames = []
    for i in range(servers):
        profile = PROFILES[i % len(PROFILES)]
        data: dict[str, object] = {
            TIMESTAMP: ts,
            SERVER_NAME: profile.hostname(i + 1),
            PROFILE: profile.name,
            STATE: "healthy",
        }
        for j, metric in enumerate(METRICS):
            daily = 20 * np.sin(2 * np.pi * hours / 24 + 0.2 * j) + 5 * np.sin(2 * np.pi * hours / 168)
            value = np.clip(40 + daily + rng.normal(0, 2, len(ts)), 0, 100)
            data[metric] = np.round(value).astype(np.int64) if metric in INTEGER_METRICS else value
        frames.append(pd.DataFrame(data))
    return pd.concat(frames, ignore_index=True)


def bench_resample(rows: int) -> None:
    servers = 90
    days = rows / servers * 5 / 86400
    raw = synthetic(servers, days, "5s")
    started = time.perf_counter()
    out = features.resample_to_model_step(raw)
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
