"""Yesterday in view: the TFT with and without seasonal lags (each target's value 24 h / 168 h before every step
as a known-future input), trained alike on one simulated fleet and scored on a held-out fleet of another seed
and start: p50 MASE at each horizon, and its ratio to the best naive baseline.

Run: `python benchmarks/bench_seasonal_lags.py [--servers 90] [--days 30] [--epochs 30] [--lags none 24 24,168]`.
Each variant trains for exactly `--epochs` epochs (no wall-clock limit), so a busy machine changes the time, not
the model. The held-out fleet's last `--holdout-hours` are scored from hourly origins, with the history before
them (at least a week, so last week's lag has its values).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tftmon.config import EvaluationConfig, NetworkConfig, SimulationConfig, TrainConfig
from tftmon.contract import HORIZONS, TIMESTAMP
from tftmon.data.simulate import simulate
from tftmon.evaluation.backtest import evaluate, model_forecaster, run
from tftmon.model.train import fit


def lags(text: str) -> tuple[int, ...]:
    return () if text == "none" else tuple(int(hours) for hours in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=90)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--holdout-hours", type=float, default=72)
    parser.add_argument("--heldout-seed", type=int, default=29)
    parser.add_argument("--lags", nargs="+", default=["none", "24"], help="variants: none, or hours like 24,168")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)  # epoch lines
    train = simulate(SimulationConfig(servers=args.servers, hours=args.days * 24, seed=42))
    heldout = simulate(
        SimulationConfig(
            servers=args.servers,
            hours=7 * 24 + 4 + args.holdout_hours,
            seed=args.heldout_seed,
            start=datetime(2026, 3, 2, tzinfo=UTC),
        )
    )
    holdout = heldout[TIMESTAMP].max() - pd.Timedelta(hours=args.holdout_hours) + pd.Timedelta(minutes=5)
    config = EvaluationConfig(holdout_hours=args.holdout_hours, page_hours=0)
    print(f"{args.servers} servers x {args.days:g} days (seed 42); held out: seed {args.heldout_seed}, "
          f"{args.holdout_hours:g} h from {holdout}; {args.epochs} epochs each")  # fmt: skip
    horizons = list(HORIZONS)
    print(f"| lags | fit | best val loss | {' | '.join(f'p50 MASE {h}' for h in horizons)} | "
          f"{' | '.join(f'vs best naive {h}' for h in horizons)} |")  # fmt: skip
    print("|---" * (3 + 2 * len(horizons)) + "|")
    for text in args.lags:
        started = time.perf_counter()
        model, result = fit(
            train,
            TrainConfig(
                max_epochs=args.epochs,
                max_fit_minutes=None,
                early_stopping_patience=args.epochs,
                progress_bar=False,
                model=NetworkConfig(seasonal_lag_hours=lags(text)),
            ),
        )
        fitted = time.perf_counter() - started
        predictions = run(model_forecaster(model), heldout, holdout, config)
        results = evaluate(predictions, heldout, holdout, seen_servers=[], config=config)
        tft = results.aggregate[results.aggregate["model"] == "tft"].set_index("horizon")
        ratio = results.ratio.set_index("horizon")
        mase = [float(tft.loc[h, "mase"]) for h in horizons]
        best = [float(ratio.loc[h, "ratio"]) for h in horizons]
        cells = [text, f"{fitted / 60:.1f} min", f"{result.best_val_loss:.3f}", *(f"{v:.3f}" for v in mase + best)]
        print(f"| {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
