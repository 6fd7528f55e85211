"""What the service's limits cost and hold (issue 9): refusing oversized bodies, the live windows' memory
bound, and 8 clients on /predict while the model is swapped twice.

Run: `timeout 1200 python benchmarks/bench_hardening.py [--duration 60]` (about 6 minutes on 2 cores).
Self-contained like bench_service.py (a one-batch model promoted in a temporary store, `bentoml serve` on a
free port); prints a markdown table. Peak RSS is the worker's VmHWM (the kernel's high-water mark of its
resident memory), read before and after each probe.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import FEED_TOKEN, _body, _history, _serve, _setup

ADMIN = "bench-admin-token"
MIB = 2**20


def _worker(pid: int) -> psutil.Process:
    """The BentoML worker: the descendant of `bentoml serve` holding the most memory (it has the model)."""
    return max(psutil.Process(pid).children(recursive=True), key=lambda p: p.memory_info().rss)


def _memory(worker: psutil.Process) -> tuple[float, float]:
    """(RSS, high-water mark) in MiB from /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def refuse(url: str, worker: psutil.Process, name: str, body: bytes) -> dict:
    rss, peak = _memory(worker)
    started = time.perf_counter()
    response = requests.post(f"{url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=600)
    seconds = time.perf_counter() - started
    _, peak_after = _memory(worker)
    row = {"probe": name, "mb": len(body) / 1e6, "status": response.status_code, "seconds": seconds,
           "rss_before": rss, "peak_after": peak_after, "peak_growth": max(0.0, peak_after - max(peak, rss)),
           "error": response.json().get("error", "")[:90]}  # fmt: skip
    print(row, flush=True)
    return row


def rows_body(n: int) -> bytes:
    """n valid contract rows (a 90-server day, repeated): refused for their count, not their content."""
    frame = _history(90, 24).drop(columns=["state", "server_id"])
    one = json.loads(frame.to_json(orient="records", date_format="iso"))
    rows = [one[i % len(one)] for i in range(n)]
    return json.dumps({"rows": rows}).encode()


def fill_windows(url: str, worker: psutil.Process) -> dict:
    """Feed full 5 s windows (the densest the contract allows) for new servers until the memory bound refuses."""
    from tftmon.config import SimulationConfig
    from tftmon.data.simulate import simulate

    status = requests.get(f"{url}/status", timeout=10).json()
    hours = 6.2  # the default model's 6 h encoder, plus the bin still filling
    dense = simulate(SimulationConfig(servers=1000, hours=hours, interval="5s", seed=5))
    dense = dense.drop(columns=["state", "server_id"])
    names = sorted(dense["server_name"].unique())
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {FEED_TOKEN}"}
    per_request = max(1, 50_000 // (len(dense) // len(names)))
    started, stored, refused = time.perf_counter(), 0, None
    for i in range(0, len(names), per_request):
        chunk = dense[dense["server_name"].isin(names[i : i + per_request])]
        body = json.dumps({"rows": json.loads(chunk.to_json(orient="records", date_format="iso"))}).encode()
        response = requests.post(f"{url}/feed", data=body, headers=headers, timeout=600)
        if response.status_code == 409:
            refused = response.json()["error"][:120]
            break
        response.raise_for_status()
        stored += chunk["server_name"].nunique()
    seconds = time.perf_counter() - started
    time.sleep(5)
    rss, peak = _memory(worker)
    row = {"servers_live": stored, "rows_per_server": len(dense) // len(names), "feed_seconds": seconds,
           "rss": rss, "peak": peak, "refused": refused, "live_before": status["servers_live"]}  # fmt: skip
    print(row, flush=True)
    return row


def clients_during_reloads(url: str, model_dir: Path, clients: int, duration: float) -> dict:
    """`clients` threads on /predict; after a third and two thirds of `duration`, promote another version and
    POST /admin/reload (the swap), then back."""
    from tftmon.model.network import load_model
    from tftmon.ops import registry, tracking

    current = requests.get(f"{url}/status", timeout=10).json()["model_version"]
    model = load_model(model_dir)
    example = _history(1, 7).tail(model.config.encoder_steps).reset_index(drop=True)
    with tracking.job_run("bench"):  # the same weights as a new version: a swap all the same
        other = registry.register(model_dir, model.config.targets, example, {})
    body = _body(_history(9, 7), False)
    times: list[float] = []
    errors: list[str] = []
    reloads: list[dict] = []
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = session.post(f"{url}/predict", data=body, headers={"Content-Type": "application/json"},
                                        timeout=120)  # fmt: skip
                ok, why = response.status_code == 200, str(response.status_code)
            except requests.RequestException as exc:
                ok, why = False, exc.__class__.__name__
            with lock:
                if ok:
                    times.append(time.perf_counter() - started)
                else:
                    errors.append(why)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for target in (other, current):
        time.sleep(duration / 3)
        registry.promote(target, force=True, reason="benchmark swap")
        response = requests.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=300)
        reloads.append({"to": target, "status": response.status_code, "body": response.json()})
    for thread in threads:
        thread.join()
    row = {"clients": clients, "seconds": duration, "requests": len(times), "errors": len(errors),
           "error_kinds": sorted(set(errors)), "p50": float(np.percentile(times, 50)),
           "p99": float(np.percentile(times, 99)), "reloads": [(r["to"], r["status"]) for r in reloads]}  # fmt: skip
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    from tftmon.config import NetworkConfig

    with tempfile.TemporaryDirectory(prefix="tftmon-bench-") as tmp:
        env = _setup(Path(tmp), NetworkConfig())
        env["TFTMON_ADMIN_TOKEN"] = ADMIN
        os.environ["TFTMON_ADMIN_TOKEN"] = ADMIN
        process, url = _serve(env, Path(tmp) / "serve.log")
        try:
            worker = _worker(process.pid)
            print({"worker_rss_idle_mib": _memory(worker)[0]}, flush=True)
            probes = [
                refuse(url, worker, "200 MB body", b"[" + b" " * (200 * 10**6 - 2) + b"]"),
                refuse(url, worker, "300,001 rows", rows_body(300_001)),
            ]
            windows = fill_windows(url, worker)
            swaps = clients_during_reloads(url, Path(tmp) / "model_dir", args.clients, args.duration)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    print("\n| probe | body MB | status | seconds | worker RSS before, MiB | peak after, MiB | peak growth, MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in probes:
        print(f"| {r['probe']} | {r['mb']:.0f} | {r['status']} | {r['seconds']:.2f} | {r['rss_before']:.0f} | "
              f"{r['peak_after']:.0f} | {r['peak_growth']:.0f} |")  # fmt: skip
    print(f"\nlive windows: {windows}\nreloads: {swaps}\nload {os.getloadavg()[0]:.1f}")
    print("command: python benchmarks/bench_hardening.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
