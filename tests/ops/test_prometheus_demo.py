"""`make stack-prometheus` on a tiny fleet: the job comes up on Debian's Prometheus, Alertmanager and node_exporter,
the service forecasts every simulated host, Prometheus scrapes each host's risk back, the ramped host's alert
reaches Alertmanager, and a Ctrl-C leaves no process of any of its groups behind.

The job runs in a process of its own, as `tftmon stack-prometheus` does (its supervisor takes SIGINT in its main
thread), from a driver giving it 3 hosts with 36 h of history, tests/serving.py's tiny training and the fast
pulls of tests/service/test_prometheus_live.py. Locally a missing binary skips the test; with CI=true it fails it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.prometheus_stack import require_binaries
from tests.service.test_prometheus_live import EVAL, LIVE
from tests.serving import TINY, free_port
from tftmon.contract import normalise_hostname
from tftmon.ops.prometheus_demo import BINARIES, INSTALL, PORT_NAMES
from tftmon.ops.stack import group_alive

pytestmark = pytest.mark.slow

#: Runs the job from a JSON spec of PrometheusDemoOptions' fields.
DRIVER = r"""
import json, sys
from pathlib import Path
from tftmon.config import EvaluationConfig, TrainConfig
from tftmon.ops.prometheus_demo import PrometheusDemoOptions, run_prometheus_demo

spec = json.loads(sys.argv[1])
spec |= {"workdir": Path(spec["workdir"]), "train": TrainConfig.model_validate(spec["train"]),
         "evaluation": EvaluationConfig.model_validate(spec["evaluation"])}
sys.exit(run_prometheus_demo(PrometheusDemoOptions(**spec)))
"""


def _until(what: str, check: Callable[[], Any], job: subprocess.Popen[bytes], log: Path, timeout: float) -> Any:
    """check()'s first truthy answer; fails with the job's output if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if job.poll() is not None:
            raise AssertionError(f"the job exited ({job.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        try:
            last = check()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})\n{log.read_text()[-3000:]}")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_demo_forecasts_every_host_through_prometheus_and_stops_clean(tmp_path: Path) -> None:
    require_binaries(BINARIES, INSTALL)
    ports = {f"{name}_port": free_port() for name in PORT_NAMES}
    url = {name: f"http://127.0.0.1:{ports[f'{name}_port']}" for name in PORT_NAMES}
    spec = {
        "workdir": str(tmp_path / "demo"), "hosts": 3, "hours": 36, "scrape_interval": "2s", "ready_timeout": 120,
        "train": TINY.model_copy(update={"max_batches_per_epoch": 6}).model_dump(mode="json"),
        "evaluation": EVAL.model_dump(mode="json"), **ports,
    }  # fmt: skip
    log = tmp_path / "job.log"
    job = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(spec)], stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, **LIVE, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    seen: list[psutil.Process] = []
    try:
        hosts = _until("the fleet serves", lambda: httpx.get(f"{url['fleet']}/hosts").json()["hosts"], job, log, 60)
        fleet = {normalise_hostname(host) for host in hosts}

        def forecast() -> bool:
            predictions = httpx.get(f"{url['service']}/predictions/current", timeout=10).json()["predictions"]
            return fleet <= {p["server_name"] for p in predictions}

        def scraped_back() -> bool:
            answer = httpx.get(f"{url['prometheus']}/api/v1/query", params={"query": "tftmon_server_risk_ratio"})
            return fleet <= {series["metric"]["server"] for series in answer.json()["data"]["result"]}

        def alerted() -> list[dict[str, Any]]:
            alerts = httpx.get(f"{url['alertmanager']}/api/v2/alerts", timeout=10).json()
            return [a for a in alerts if a["labels"].get("alertname") == "TftmonForecastCritical"]

        _until("every host forecast", forecast, job, log, 120)
        _until("every host's risk in Prometheus", scraped_back, job, log, 30)
        assert _until("a critical alert in Alertmanager", alerted, job, log, 30)[0]["labels"]["server"] in fleet
        seen = psutil.Process(job.pid).children(recursive=True)
        assert {"prometheus", "prometheus-alertmanager", "prometheus-node-exporter"} <= {p.name() for p in seen}

        job.send_signal(signal.SIGINT)  # Ctrl-C
        assert job.wait(timeout=60) == 0, log.read_text()[-3000:]
        groups = {proc.pid for proc in seen}
        deadline = time.monotonic() + 10
        while (any(map(_alive, seen)) or any(map(group_alive, groups))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [(p.pid, p.cmdline()) for p in seen if _alive(p)]
        assert not [group for group in groups if group_alive(group)]
    finally:
        for proc in [psutil.Process(job.pid) if job.poll() is None else None, *seen]:
            if proc is not None and _alive(proc):
                proc.kill()
