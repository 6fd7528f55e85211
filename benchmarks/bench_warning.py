"""Early warning and accuracy on a held-out fleet: train as `tftmon train` does, score on a fleet never seen.

The recommended held-out recipe (docs/BENCHMARKS.md): the training fleet is `tftmon generate` with its
defaults and --seed 11; the held-out fleet another seed and start, one week, 9 servers added that no
training saw (cold start), scored over its last 72 h from hourly origins (≥ 60 eligible incidents). Every
forecaster (the TFT, each baseline, the oracle) goes through the same risk scale and alert rule, with its
threshold fitted on validation origins before the held-out period.

    python benchmarks/bench_warning.py --data /tmp/warn                     # defaults, CPU
    python benchmarks/bench_warning.py --data /tmp/warn --accelerator gpu --set max_epochs=12 \\
        --set encoder_hours=24 --set model.hidden_size=48 --label gpu-full

Runs without MLflow (the GPU machine has none); the same functions back `tftmon train` / `evaluate`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tftmon.config import EvaluationConfig, SimulationConfig, TrainConfig
from tftmon.contract import TIMESTAMP
from tftmon.data.resample import resample_to_model_step
from tftmon.data.simulate import write_dataset
from tftmon.evaluation import backtest
from tftmon.evaluation.report import summary_markdown
from tftmon.io import read_metrics
from tftmon.model.network import load_model, save_model
from tftmon.model.train import fit

TRAIN_FLEET = SimulationConfig(seed=11)
HELDOUT_FLEET = SimulationConfig(seed=29, start="2026-03-02", hours=7 * 24, add_servers=9)
HELDOUT_HOURS = 72.0


def fleet(config: SimulationConfig, path: Path) -> pd.DataFrame:
    """The dataset at `path` (simulated there first if missing), resampled to the model step."""
    if not path.exists():
        write_dataset(config, path, progress=False)
    return resample_to_model_step(read_metrics(path))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`name=value` (JSON values; `model.x` for the nested network config) -> TrainConfig keyword arguments."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if name.startswith("model."):
            out.setdefault("model", {})[name.removeprefix("model.")] = value
        else:
            out[name] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/tftmon-warning"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="TrainConfig field=value")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--label", default="defaults")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON and the model here")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="score a model an earlier run saved (--out) instead of training one; its bands and thresholds are "
        "fitted again on the training fleet's validation origins",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%X")  # one line per epoch

    started = time.perf_counter()
    train_frame = fleet(TRAIN_FLEET, args.data / "train")
    heldout = fleet(HELDOUT_FLEET, args.data / "heldout")
    config = TrainConfig(progress_bar=False, accelerator=args.accelerator, devices=1, **parse_overrides(args.overrides))
    eval_config = EvaluationConfig()
    holdout = backtest.holdout_start(train_frame, eval_config.holdout_hours)

    result = None
    if args.model is None:
        model, result = fit(train_frame[train_frame[TIMESTAMP] < holdout], config)
    else:
        model = load_model(args.model)
    calibration = backtest.calibrate(model, train_frame, holdout, eval_config)
    train_seconds = time.perf_counter() - started

    evaluation = EvaluationConfig(holdout_hours=HELDOUT_HOURS)
    heldout_start = backtest.holdout_start(heldout, HELDOUT_HOURS)
    _, results = backtest.evaluate_model(model, heldout, heldout_start, evaluation)
    summary = summary_markdown(results)
    record = {
        "label": args.label,
        "config": (config if result is not None else model.config).model_dump(mode="json"),
        "model": None if args.model is None else str(args.model),
        "fit_seconds": None if result is None else round(result.seconds, 1),
        "train_and_calibrate_seconds": round(train_seconds, 1),
        "samples_per_second": None if result is None else round(result.samples_per_second, 1),
        "epochs": None if result is None else result.epochs,
        "stopped_by": None if result is None else result.stopped_by.value,
        "best_val_loss": None if result is None else result.best_val_loss,
        "alert_threshold": calibration.threshold if calibration else None,
        "warnings": results.warnings.table.to_dict(orient="records") if results.warnings else None,
        "curves": results.warnings.curves.round(4).to_dict(orient="list") if results.warnings else None,
        "ratio": results.ratio.to_dict(orient="records"),
        "coverage": results.aggregate[results.aggregate["model"] == "tft"][["horizon", "coverage"]].to_dict("records"),
        "cold_start": None if results.cold_start is None else results.cold_start.to_dict(orient="records"),
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.label}.json").write_text(json.dumps(record, indent=2, default=str))
        (args.out / f"{args.label}.md").write_text(summary)
        save_model(model, args.out / f"model-{args.label}")
    print(summary.split("## `tft` per metric")[0])
    print(json.dumps({k: record[k] for k in ("label", "fit_seconds", "train_and_calibrate_seconds",
                                             "samples_per_second", "epochs", "alert_threshold")}))  # fmt: skip


if __name__ == "__main__":
    main()
