"""`tftmon drift` on a large fleet: 900 servers × 30 days at 5 min (7.8 M rows; target ≤ 10 s on 2 cores).

Run: `python benchmarks/bench_drift.py [--servers 900] [--days 30] [--cache DIR] [--repeats 2]`
Setup, once per cache directory (default: the system temp directory's tftmon-bench-drift): the fleet's first
20 h simulated as the training data, a tiny model trained on it (one batch: the check's cost does not depend on
training) and registered and promoted in a store of its own with that dataset recorded on its run, as `tftmon
train` records it; then the fleet over `--days` with 1 % of servers added and 1 % retired. Each timed check is a
fresh process (`tftmon drift PATH --json`, so MLflow's and torch's imports are paid as a user pays them), under
GNU time for the peak RSS. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup(cache: Path, servers: int, days: int) -> tuple[dict[str, str], Path]:
    """The store with a promoted model and the drifted dataset, built once per cache directory."""
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{cache / 'mlflow.db'}",
        "TFTMON_ARTIFACT_ROOT": str(cache / "mlartifacts"),
    }
    drifted = cache / f"fleet-{servers}x{days}d"
    if (cache / "ready").exists():
        return env, drifted
    os.environ.update(env)
    import mlflow

    from tftmon.config import NetworkConfig, SimulationConfig, TrainConfig
    from tftmon.data.resample import resample_to_model_step
    from tftmon.data.simulate import write_dataset
    from tftmon.io import read_metrics
    from tftmon.model.network import save_model
    from tftmon.model.train import fit
    from tftmon.ops import registry, tracking
    from tftmon.ops.tracking import DATASET_PATH_TAG

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    fleet = SimulationConfig(servers=servers, hours=20, seed=11)
    trained = cache / "trained"
    write_dataset(fleet, trained)
    extra = max(1, servers // 100)
    write_dataset(fleet.model_copy(update={"hours": days * 24, "add_servers": extra, "retire_servers": extra}), drifted)
    config = TrainConfig(
        max_epochs=1, max_batches_per_epoch=1, max_val_batches=1, encoder_hours=1, validation_hours=9, batch_size=32,
        model=NetworkConfig(hidden_size=8, attention_head_size=1, hidden_continuous_size=4), progress_bar=False,
        accelerator="cpu", devices=1,
    )  # fmt: skip
    frame = resample_to_model_step(read_metrics(trained))
    model, _ = fit(frame, config)
    save_model(model, cache / "model_dir")
    example = frame[frame["server_name"] == frame["server_name"].iloc[0]].tail(model.config.encoder_steps)
    with tracking.job_run("train"):
        mlflow.set_tag(DATASET_PATH_TAG, str(trained.resolve()))
        version = registry.register(cache / "model_dir", model.config.targets, example.reset_index(drop=True), {})
    registry.promote(version, force=True, reason="benchmark")
    (cache / "ready").touch()
    return env, drifted


def _timed_check(env: dict[str, str], data: Path, flags: list[str]) -> tuple[float, float, dict]:
    """One `tftmon drift` process: wall seconds, peak RSS (GiB) and its JSON report."""
    with tempfile.NamedTemporaryFile(suffix=".time") as stats:
        argv = ["/usr/bin/time", "-f", "%M", "-o", stats.name, sys.executable, "-m", "tftmon.cli", "drift", str(data),
                "--json", "--no-progress", *flags]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode > 3:
            raise SystemExit(f"drift failed ({done.returncode}):\n{done.stderr[-3000:]}")
        peak_kib = int(Path(stats.name).read_text().split()[-1])
    return seconds, peak_kib / 2**20, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=900)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tftmon-bench-drift")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cache = args.cache / f"{args.servers}x{args.days}d"
    cache.mkdir(parents=True, exist_ok=True)
    env, data = _setup(cache, args.servers, args.days)

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| check | wall s | peak RSS GiB | new | retired | priority | shift scores | forecast MASE |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    checks = {"default (fleet + data drift)": [], "with --forecast-error": ["--forecast-error"]}
    for name, flags in checks.items():
        for _ in range(args.repeats):
            seconds, peak, report = _timed_check(env, data, flags)
            error = report["forecast_error"]
            mase = "–" if error is None else f"{error['recent_mase']:.3f}"
            print(
                f"| {name} | {seconds:.1f} | {peak:.2f} | {len(report['new_servers'])} | {len(report['retired'])} | "
                f"{report['priority']} | {len(report['shifts'])} | {mase} |"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
