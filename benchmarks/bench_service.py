"""Service latency and throughput: /predict by fleet size, where its time goes (stages in-process), 8
concurrent clients, overhead vs the in-process pyfunc.

Run: `timeout 1500 python benchmarks/bench_service.py [--sizes 9,90,300,900] [--repeats 5] [--duration 60]
[--network '{"hidden_size": 16}'] [--model-dir DIR]` (about 9 minutes on 2 cores).
Self-contained: trains a model of the default architecture (or --network's) for one batch (inference cost
depends mostly on the architecture; --model-dir serves a trained one instead), registers and promotes it
in a temporary MLflow store, starts `bentoml serve` on a free port, measures, and rewrites the tables of
benchmarks/results/service.md atomically (the hand-written part after its first `---` line is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import requests

if TYPE_CHECKING:
    from tftmon.config import ModelConfig, NetworkConfig

ROOT = Path(__file__).resolve().parents[1]
#: Where the results file's hand-written part begins (kept when the tables are rewritten).
HAND_WRITTEN = "\n---\n"
#: The service's /feed token in the benchmark's own store (the feed is off without one).
FEED_TOKEN = "bench-feed-token"


def _history(servers: int, hours: float) -> pd.DataFrame:
    from tftmon.config import SimulationConfig
    from tftmon.data.simulate import simulate

    return simulate(SimulationConfig(servers=servers, hours=hours, seed=11))


def _body(frame: pd.DataFrame, include_path: bool = True) -> bytes:
    clean = frame.drop(columns=["state", "server_id"], errors="ignore")
    rows = clean.to_json(orient="records", date_format="iso")
    return f'{{"rows":{rows},"include_path":{json.dumps(include_path)}}}'.encode()


def promote_in_temporary_store(
    root: Path, model_dir: Path, targets: list[str], example: pd.DataFrame
) -> dict[str, str]:
    """Register and promote a saved model directory in a store under `root`; returns the store's environment."""
    import mlflow

    from tftmon.ops import registry, tracking

    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "TFTMON_ARTIFACT_ROOT": str(root / "mlartifacts"),
        "BENTOML_HOME": str(root / "bentoml"),
        "TFTMON_FEED_TOKEN": FEED_TOKEN,
        # Throughput is measured from one address: the per-client rate limits would cap it.
        "TFTMON_SERVICE_PREDICT_PER_MINUTE": "0",
        "TFTMON_SERVICE_FEED_PER_MINUTE": "0",
    }
    os.environ.update(env)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    with tracking.job_run("bench"):
        version = registry.register(model_dir, targets, example.reset_index(drop=True), {})
    registry.promote(version, force=True, reason="benchmark")  # latency needs a model, not a good one
    return env


def _setup(root: Path, network: NetworkConfig, model_dir: Path | None) -> tuple[dict[str, str], ModelConfig]:
    """A model of that architecture (or the saved one at `model_dir`), promoted in a temporary store;
    returns the store's environment and the model's config."""
    from tftmon.config import TrainConfig
    from tftmon.contract import MODEL_STEP, PREDICTION_STEPS
    from tftmon.model.network import load_model, save_model
    from tftmon.model.train import fit

    config = TrainConfig(max_epochs=1, max_batches_per_epoch=1, max_val_batches=1, progress_bar=False,
                         accelerator="cpu", devices=1, model=network)  # fmt: skip
    # Enough for one training window and the validation hold-out (plus an hour's slack).
    forecast_hours = PREDICTION_STEPS * MODEL_STEP / timedelta(hours=1)
    data = _history(7, config.encoder_hours + forecast_hours + config.validation_hours + 1)
    if model_dir is None:
        model_dir = root / "model_dir"
        save_model(fit(data, config)[0], model_dir)
    model = load_model(model_dir)
    example = data[data["server_name"] == data["server_name"].iloc[0]].tail(model.config.encoder_steps)
    return promote_in_temporary_store(root, model_dir, model.config.targets, example), model.config


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "tftmon.serve.service:Tftmon",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(360):
        try:
            if requests.get(f"{url}/health", timeout=2).json().get("model_loaded"):
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"service did not start:\n{log.read_text()[-2000:]}")


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    return float(np.percentile(seconds, 50)), float(np.percentile(seconds, 99))


def _post(url: str, body: bytes) -> float:
    started = time.perf_counter()
    response = requests.post(f"{url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=300)
    response.raise_for_status()
    return time.perf_counter() - started


def bench_sizes(url: str, sizes: list[int], repeats: int, hours: float) -> list[dict]:
    rows = []
    for size in sizes:
        frame = _history(size, hours)
        for include_path in (True, False):
            body = _body(frame, include_path)
            _post(url, body)  # warm-up
            times = [_post(url, body) for _ in range(repeats if size <= 300 else max(2, repeats // 2))]
            p50, p99 = _percentiles(times)
            rows.append({"servers": size, "path": include_path, "rows": len(frame), "mb": len(body) / 1e6, "p50": p50,
                         "p99": p99, "per_server_ms": 1000 * p50 / size, "load": os.getloadavg()[0]})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def bench_concurrent(url: str, path: str, body: bytes | None, clients: int, duration: float) -> dict:
    times: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def client() -> None:
        nonlocal errors
        session = requests.Session()
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                if body is None:
                    ok = session.get(f"{url}{path}", timeout=120).status_code == 200
                else:
                    response = session.post(f"{url}{path}", data=body, headers={"Content-Type": "application/json"},
                                            timeout=120)  # fmt: skip
                    ok = response.status_code == 200
            except requests.RequestException:
                ok = False
            with lock:
                times.append(time.perf_counter() - started) if ok else None
                errors += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    p50, p99 = _percentiles(times or [float("nan")])
    return {"endpoint": path, "clients": clients, "seconds": duration, "requests": len(times),
            "rps": len(times) / duration, "p50": p50, "p99": p99, "errors": errors,
            "load": os.getloadavg()[0]}  # fmt: skip


def bench_in_process(frame: pd.DataFrame, repeats: int) -> tuple[float, float]:
    """The registered pyfunc called in-process on the same history (no HTTP, no JSON)."""
    from tftmon.model.pyfunc import to_model_input
    from tftmon.ops import registry

    pyfunc = registry.load_production()
    data = to_model_input(frame)
    pyfunc.predict(data)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        pyfunc.predict(data)
        times.append(time.perf_counter() - started)
    return _percentiles(times)


def bench_stages(frame: pd.DataFrame, repeats: int) -> dict[str, float]:
    """Median seconds of each /predict stage, run in-process with the service's own functions."""
    import torch
    from pydantic_core import to_json

    from tftmon.config import ServiceConfig
    from tftmon.model.features import check_interval
    from tftmon.model.network import forecast
    from tftmon.ops import registry
    from tftmon.serve.live import LoadedModel, payloads, public, utcnow
    from tftmon.serve.schemas import PredictRequest
    from tftmon.serve.service import _freeze_heap, _read_body, _validated

    torch.set_num_threads(ServiceConfig().torch_threads)
    model = registry.load_production().unwrap_python_model().model
    loaded = LoadedModel("bench", model, utcnow())
    _freeze_heap()  # as the service does once its model is installed
    body = _body(frame)
    stages: dict[str, list[float]] = {}

    def timed(name: str, call: Any, *args: Any) -> Any:
        started = time.perf_counter()
        result = call(*args)
        stages.setdefault(name, []).append(time.perf_counter() - started)
        return result

    for _ in range(repeats + 1):  # the first is a warm-up, dropped below
        data = timed("JSON read (Arrow's columns, as the service)", _read_body, body)
        valid = timed("validate rows (column-wise)", _validated, data, PredictRequest)
        timed("interval check", check_interval, valid.frame)
        tidy = timed("model.forecast (encoder span, features, batch, network)", forecast, model, valid.frame)
        records = timed("risk + records (payloads)", payloads, tidy, loaded)
        timed("encode response", to_json, {"model_version": "bench", "predictions": [public(r) for r in records]})
    return {name: float(np.median(values[1:])) for name, values in stages.items()}


def _feed_fleet(url: str, frame: pd.DataFrame) -> None:
    """Fill the live windows so /predictions/current serves a 90-server cache."""
    for _, chunk in frame.groupby(pd.Grouper(key="timestamp", freq="2h")):
        requests.post(f"{url}/feed", data=_body(chunk).replace(b',"include_path":true', b""),
                      headers={"Content-Type": "application/json", "Authorization": f"Bearer {FEED_TOKEN}"},
                      timeout=120).raise_for_status()  # fmt: skip
    servers = frame["server_name"].nunique()
    for _ in range(120):
        if len(requests.get(f"{url}/predictions/current", timeout=10).json()["predictions"]) >= servers:
            return
        time.sleep(1)


def report(sizes: list[dict], stages: dict[str, float], concurrent: list[dict], in_process: tuple[float, float],
           service_90: dict, command: str, load: float, model: ModelConfig) -> str:  # fmt: skip
    from tftmon.contract import MODEL_STEP

    torch_threads = os.environ.get("TFTMON_SERVICE_TORCH_THREADS", "1")
    encoder_hours = model.encoder_steps * MODEL_STEP / timedelta(hours=1)
    lines = [
        "# Service benchmarks (2-core CPU, torch 2.13 CPU, one BentoML worker)",
        "",
        f"Command: `{command}`. Model: {encoder_hours:g} h encoder, hidden {model.hidden_size}, "
        f"{len(model.targets)} targets, {len(model.quantiles)} quantiles, torch threads {torch_threads}. "
        "Load average (1 min) at start: "
        f"{load:.1f}; per row below as measured (other sessions share the 2 cores, so times are upper bounds).",
        "",
        "## /predict latency by fleet size (24 h of 5-min history per server)",
        "",
        "| servers | rows | full path | body MB | p50 s | p99 s | ms / server (p50) | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['servers']} | {r['rows']:,} | {'yes' if r['path'] else 'no'} | {r['mb']:.1f} | {r['p50']:.2f} | "
              f"{r['p99']:.2f} | {r['per_server_ms']:.1f} | {r['load']:.1f} |" for r in sizes]  # fmt: skip
    lines += [
        "",
        f"## Where the time goes (90 servers, 24 h, full path; in-process median, load {stages.pop('load'):.1f})",
        "",
        "| stage | s |",
        "|---|---|",
        *(f"| {name} | {seconds:.3f} |" for name, seconds in stages.items()),
        f"| **sum** | **{sum(stages.values()):.3f}** |",
        "",
        "## Service overhead (90 servers, 24 h each)",
        "",
        "| path | p50 s | p99 s |",
        "|---|---|---|",
        f"| pyfunc in-process (`registry.load_production().predict`) | {in_process[0]:.2f} | {in_process[1]:.2f} |",
        f"| POST /predict, no full path | {service_90['p50']:.2f} | {service_90['p99']:.2f} |",
        "",
        "## 8 concurrent clients",
        "",
        "| endpoint | seconds | requests | req/s | p50 s | p99 s | errors | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {c['endpoint']} | {c['seconds']:g} | {c['requests']} | {c['rps']:.1f} | {c['p50']:.3f} | "
              f"{c['p99']:.3f} | {c['errors']} | {c['load']:.1f} |" for c in concurrent]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="9,90,300,900")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--concurrent-servers", type=int, default=9, help="Fleet size of the concurrent /predict.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service.md")
    parser.add_argument(
        "--network", default="{}", help='The architecture as NetworkConfig JSON, e.g. {"hidden_size": 16}.'
    )
    parser.add_argument(
        "--model-dir", type=Path, help="A saved model directory (e.g. bench_warning.py's) instead of a one-batch one."
    )
    args = parser.parse_args()
    import torch

    from tftmon.config import NetworkConfig, ServiceConfig
    from tftmon.io import write_bytes_atomic

    network = NetworkConfig.model_validate_json(args.network)
    load = os.getloadavg()[0]
    torch.set_num_threads(ServiceConfig().torch_threads)  # in-process figures with the service's setting
    with tempfile.TemporaryDirectory(prefix="tftmon-bench-") as tmp:
        env, model = _setup(Path(tmp), network, args.model_dir)
        process, url = _serve(env, Path(tmp) / "serve.log")
        try:
            sizes = bench_sizes(url, [int(s) for s in args.sizes.split(",")], args.repeats, args.hours)
            fleet_90 = _history(90, args.hours)
            stages = {**bench_stages(fleet_90, args.repeats), "load": os.getloadavg()[0]}
            in_process = bench_in_process(fleet_90, args.repeats)
            service_90 = next(r for r in sizes if r["servers"] == 90 and not r["path"])
            _feed_fleet(url, fleet_90)
            concurrent = [
                bench_concurrent(url, "/predictions/current", None, 8, args.duration),
                bench_concurrent(url, "/predict", _body(_history(args.concurrent_servers, 7), False), 8, args.duration),
            ]
            concurrent[1]["endpoint"] = f"/predict ({args.concurrent_servers} servers, 7 h)"
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    command = "python benchmarks/bench_service.py " + " ".join(sys.argv[1:])
    text = report(sizes, stages, concurrent, in_process, service_90, command.strip(), load, model)
    # The hand-written sections after the first rule are kept; the tables above it are replaced.
    previous = args.out.read_text() if args.out.exists() else ""
    kept = previous[previous.index(HAND_WRITTEN) + 1 :] if HAND_WRITTEN in previous else ""
    write_bytes_atomic(args.out, (text + ("\n" + kept if kept else "")).encode())
    print(text)


if __name__ == "__main__":
    main()
