"""The dashboard at fleet scale: 900 live servers in a real service, `tftmon dashboard` in Streamlit, timed
in headless Chromium (page load to heatmap) and in Streamlit's AppTest (a refresh: the server-side rerun of
each tab), with the dashboard process's memory.

Run: `timeout 1800 python benchmarks/bench_dashboard.py [--servers 900] [--loads 5] [--reruns 5]`
(about 10 minutes on 2 cores). Self-contained: trains a model of the default architecture for one batch
(page cost depends on the fleet's size, not on the model's skill), promotes it in a temporary MLflow store,
starts `bentoml serve` with the live-window bound raised to hold the fleet, feeds each server 6.5 h of
5-min samples ending now through `POST /feed`, waits until every server has a live forecast, then starts
`tftmon dashboard`. Needs Chromium and ChromeDriver (Debian: chromium, chromium-driver).
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests
from bench_service import FEED_TOKEN, ROOT, _serve, _setup
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

#: The service's limits opened for one client feeding the whole fleet, and its live-window bound raised
#: (the default bound assumes 5 s samples and holds 765 servers).
SERVICE_ENV = {
    "TFTMON_SERVICE_MAX_LIVE_WINDOW_MIB": "4096",
    "TFTMON_SERVICE_MAX_SERVERS_PER_REQUEST": "1000",
    "TFTMON_SERVICE_MAX_FEED_ROWS": "50000",
}
HEATMAP_CELL = "g.heatmap_marks path"
HISTORY_HOURS = 6.5


def feed_fleet(url: str, servers: int) -> float:
    """Every server's last HISTORY_HOURS of 5-min samples, ending now, through /feed; returns the seconds taken."""
    from tftmon.config import SimulationConfig
    from tftmon.data.simulate import simulate

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=HISTORY_HOURS)
    frame = simulate(SimulationConfig(servers=servers, hours=HISTORY_HOURS, start=start, seed=21))
    frame = frame.drop(columns=["state", "server_id"])
    names = sorted(frame["server_name"].unique())
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {FEED_TOKEN}"}
    per_request = max(1, 40_000 // (len(frame) // len(names)))
    started = time.perf_counter()
    for i in range(0, len(names), per_request):
        chunk = frame[frame["server_name"].isin(names[i : i + per_request])]
        body = f'{{"rows":{chunk.to_json(orient="records", date_format="iso")}}}'.encode()
        requests.post(f"{url}/feed", data=body, headers=headers, timeout=600).raise_for_status()
    return time.perf_counter() - started


def wait_for_forecasts(url: str, servers: int, timeout: float = 900) -> float:
    """Seconds until /predictions/current holds a forecast of every fed server."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        status = requests.get(f"{url}/status", timeout=30).json()
        if status["last_prediction_time"] is not None:
            current = requests.get(f"{url}/predictions/current", timeout=120).json()
            if len({p["server_name"] for p in current["predictions"]}) >= servers:
                return time.perf_counter() - started
        time.sleep(5)
    raise TimeoutError(f"the service did not forecast {servers} servers within {timeout:g} s")


class PeakRss:
    """The resident memory of a process, sampled every 0.2 s in a thread: the latest and the peak, MiB."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.latest = self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.latest = self.process.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, self.latest)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def start_dashboard(service_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`tftmon dashboard` on a free port, once Streamlit answers its health check."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tftmon.cli", "dashboard", "--port", str(port), "--service-url", service_url],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if requests.get(f"{url}/_stcore/health", timeout=2).ok:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"dashboard did not start:\n{log.read_text()[-2000:]}")


def browser() -> webdriver.Chrome:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def load_to_heatmap(driver: webdriver.Chrome, url: str, servers: int, timeout: float = 180) -> tuple[float, float]:
    """Seconds from navigating to the Heatmap tab to its first cell drawn, and to all `servers` cells."""
    started = time.perf_counter()
    driver.get(f"{url}/?tab=Heatmap")
    first = None
    while time.perf_counter() - started < timeout:
        cells = len(driver.find_elements(By.CSS_SELECTOR, HEATMAP_CELL))
        if cells and first is None:
            first = time.perf_counter() - started
        if cells >= servers:
            assert first is not None
            return first, time.perf_counter() - started
        time.sleep(0.05)
    raise TimeoutError(f"the heatmap did not draw {servers} cells within {timeout:g} s")


def rerun_seconds(service_url: str, reruns: int, selected: str) -> dict[str, list[float]]:
    """Per tab, the seconds of each server-side rerun after the first (AppTest: the script as Streamlit runs it)."""
    from streamlit.testing.v1 import AppTest

    from tftmon.dashboard.app import SELECTED, TABS

    os.environ["TFTMON_DASHBOARD_SERVICE_URL"] = service_url
    app = ROOT / "tftmon" / "dashboard" / "app.py"
    seconds: dict[str, list[float]] = {}
    for tab in TABS:
        at = AppTest.from_file(str(app), default_timeout=300)
        at.query_params["tab"] = tab
        at.session_state[SELECTED] = selected
        at.run()
        times = []
        for _ in range(reruns):
            started = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - started)
        if at.exception:
            raise RuntimeError(f"{tab}: {[e.message for e in at.exception]}")
        seconds[tab] = times
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=900)
    parser.add_argument("--loads", type=int, default=5, help="Warm page loads timed after the first.")
    parser.add_argument("--reruns", type=int, default=5, help="Reruns timed per tab.")
    args = parser.parse_args()
    from tftmon.config import NetworkConfig

    result: dict[str, Any] = {"servers": args.servers}
    with tempfile.TemporaryDirectory(prefix="tftmon-bench-") as tmp:
        env = {**_setup(Path(tmp), NetworkConfig()), **SERVICE_ENV}
        service, service_url = _serve(env, Path(tmp) / "serve.log")
        dashboard = driver = None
        try:
            result["feed_s"] = feed_fleet(service_url, args.servers)
            result["forecast_wait_s"] = wait_for_forecasts(service_url, args.servers)
            current = requests.get(f"{service_url}/predictions/current", timeout=120)
            result["predictions_mb"] = len(current.content) / 1e6
            selected = current.json()["predictions"][0]["server_name"]
            dashboard, url = start_dashboard(service_url, Path(tmp) / "dashboard.log")
            rss = PeakRss(dashboard.pid)
            driver = browser()
            result["first_load_s"] = load_to_heatmap(driver, url, args.servers)
            result["warm_loads_s"] = [load_to_heatmap(driver, url, args.servers) for _ in range(args.loads)]
            result["reruns_s"] = rerun_seconds(service_url, args.reruns, selected)
            time.sleep(1)
            rss.stop()
            result["dashboard_rss_mib"], result["dashboard_peak_mib"] = rss.latest, rss.peak
        finally:
            if driver is not None:
                driver.quit()
            for process in (dashboard, service):
                if process is not None and process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=30)
    result["load"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))
    report(result)


def report(r: dict[str, Any]) -> None:
    first, everything = r["first_load_s"]
    warm_first = [w[0] for w in r["warm_loads_s"]]
    warm_all = [w[1] for w in r["warm_loads_s"]]
    print(f"\n{r['servers']} live servers; /predictions/current {r['predictions_mb']:.0f} MB; load {r['load']:.1f}\n")
    print("| measure | seconds | target |\n|---|---:|---:|")
    print(f"| first page load after the dashboard starts: first / all cells | {first:.2f} / {everything:.2f} | ≤ 2 |")
    warm = f"{min(warm_first):.2f}–{max(warm_first):.2f}"
    print(f"| warm page load: first cell, min–max of {len(warm_first)} | {warm} | ≤ 2 |")
    print(f"| warm page load: all cells, min–max | {min(warm_all):.2f}–{max(warm_all):.2f} | ≤ 2 |")
    for tab, times in r["reruns_s"].items():
        print(f"| refresh (server-side rerun), {tab}: median (max) | {np.median(times):.2f} ({max(times):.2f}) | ≤ 2 |")
    print(f"\ndashboard RSS {r['dashboard_rss_mib']:.0f} MiB, peak {r['dashboard_peak_mib']:.0f} MiB")
    print("command: python benchmarks/bench_dashboard.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
