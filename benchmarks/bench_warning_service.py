"""Early warning through the running service: a held-out fleet posted to `POST /predict`, origin by origin.

What an operator would see: the Production model behind `bentoml serve`, every server's recent metrics
posted once an hour over the held-out period, and severity `critical` counted as the alert. The same
incident scores as `tftmon evaluate`, so the two can be compared line by line.

    python benchmarks/bench_warning.py --data /tmp/warn --out /tmp/warnrun          # trains, saves the model
    python benchmarks/bench_warning_service.py --model-dir /tmp/warnrun/model-defaults --data /tmp/warn/heldout

Self-contained: registers and promotes the saved model in a temporary MLflow store and starts the
service on a free loopback port (benchmarks/bench_service.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import _body, _serve, promote_in_temporary_store

from tftmon.config import EvaluationConfig
from tftmon.contract import ORIGIN, SERVER_NAME, STEP_NS, TIMESTAMP
from tftmon.data.resample import resample_to_model_step
from tftmon.evaluation.actuals import origins
from tftmon.evaluation.backtest import holdout_start
from tftmon.evaluation.incidents import episodes, incident_scores
from tftmon.io import read_json, read_metrics
from tftmon.model.network import CONFIG_FILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the held-out fleet (raw, as generated)")
    parser.add_argument("--holdout-hours", type=float, default=72.0)
    args = parser.parse_args()

    raw = read_metrics(args.data)
    frame = resample_to_model_step(raw)
    encoder = read_json(args.model_dir / CONFIG_FILE)["encoder_steps"]
    config = EvaluationConfig(holdout_hours=args.holdout_hours)
    at = origins(frame, holdout_start(frame, args.holdout_hours), config.origin_every)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        example = raw[raw[SERVER_NAME] == raw[SERVER_NAME].iloc[0]].tail(encoder)
        targets = read_json(args.model_dir / CONFIG_FILE)["targets"]
        env = promote_in_temporary_store(root, args.model_dir, targets, example)
        process, url = _serve(env, root / "service.log")
        try:
            rows, seconds = [], []
            for origin, servers in at.groupby(ORIGIN)[SERVER_NAME]:
                ts = raw[TIMESTAMP]
                window = raw[raw[SERVER_NAME].isin(servers) & (ts > origin - pd.Timedelta(encoder * STEP_NS))]
                window = window[window[TIMESTAMP] < origin + pd.Timedelta(STEP_NS)]
                started = time.perf_counter()
                response = requests.post(
                    f"{url}/predict", data=_body(window, include_path=False),
                    headers={"Content-Type": "application/json"}, timeout=300,
                )  # fmt: skip
                response.raise_for_status()
                seconds.append(time.perf_counter() - started)
                for record in response.json()["predictions"]:
                    rows.append({SERVER_NAME: record["server_name"], ORIGIN: origin,
                                 "alert": record["severity"] == "critical"})  # fmt: skip
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    scores = incident_scores(pd.DataFrame(rows), episodes(frame), lead=config.warning_lead)
    print(json.dumps({
        "origins": len(seconds), "requests_p50_s": round(float(pd.Series(seconds).median()), 3),
        "episodes": scores.episodes, "warned": scores.warned, "recall": round(scores.recall, 3),
        "median_lead_min": scores.median_lead_min, "precision": round(scores.precision, 3),
        "false_alarms_per_server_day": round(scores.false_alarms_per_server_day, 3),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
