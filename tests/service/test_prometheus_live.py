"""End to end on real parts: a fleet of 20 simulated node_exporters and this host's own in Debian's Prometheus
(history backfilled with promtool), a model trained from `tftmon ingest --prometheus` on it and promoted,
`tftmon serve --prometheus --alertmanager` forecasting every host, a real Alertmanager delivering to a webhook,
and the same Prometheus scraping the forecasts back.

One database host's I/O wait ramps to 85 % in 15 min and holds there for the last hour of its history (a steady
window: even a barely trained model's band is narrow around it): the service raises its alert at once, Alertmanager
delivers it, and it resolves once the host's I/O wait falls. (A model trained on real telemetry has no incident
labels to fit its alert threshold on, so it alerts at the uncalibrated critical band.) A restart forecasts every
host again after one pull; two shards of the service cover the fleet exactly once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.alertmanager_stack import Receiver, alertmanager, receiver, require_alertmanager
from tests.prometheus_fleet import PrometheusFleet, prometheus_fleet
from tests.serving import Served, environment, free_port, store_env
from tftmon.cli import main
from tftmon.config import EvaluationConfig
from tftmon.contract import CPU_IOWAIT, normalise_hostname
from tftmon.serve.prometheus_source import Shard

pytestmark = pytest.mark.slow

HOSTS = 20
#: Where the ramped host's metrics go, an hour before its history ends, held live until it recovers: past the
#: database's critical 50 %.
RAMP = {CPU_IOWAIT: 85.0}
#: Live settings for a test that cannot wait 5-minute steps: pull every 2 s at a 5 s resolution.
LIVE = {
    "TFTMON_SERVICE_PROMETHEUS_PULL_SECONDS": "2",
    "TFTMON_SERVICE_PROMETHEUS_RESOLUTION_SECONDS": "5",
    "TFTMON_SERVICE_FORECAST_EVERY_SECONDS": "2",
    "TFTMON_SERVICE_REFRESH_SECONDS": "0.5",
    "TFTMON_SERVICE_ALERTMANAGER_RESEND_SECONDS": "5",
}
EVAL = EvaluationConfig(holdout_hours=10, origin_every=timedelta(hours=2), calibration_origins=50, alert_fit_hours=4)


@dataclass
class World:
    fleet: PrometheusFleet
    alertmanager: str
    webhook: Receiver
    env: dict[str, str]
    service_port: int
    ramped: str
    tmp: Path


def _train_from_prometheus(fleet: PrometheusFleet, out: Path) -> None:
    """`tftmon ingest --prometheus` over the history, then a tiny model trained on it and promoted."""
    from tests.serving import TINY
    from tftmon.ops import registry
    from tftmon.ops.jobs import run_train

    start, end = (t.isoformat() for t in fleet.history)
    result = CliRunner().invoke(
        main, ["ingest", "--prometheus", fleet.url, "--start", start, "--end", end, "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    trained = run_train(out, TINY.model_copy(update={"max_batches_per_epoch": 6}), EVAL)
    registry.promote(trained["version"], force=True, reason="end-to-end test")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_alertmanager()
    tmp = tmp_path_factory.mktemp("prometheus-live")
    service_port = free_port()
    forecasts = {
        "job_name": "tftmon",
        "honor_labels": True,
        "metrics_path": "/metrics/forecasts",
        "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}],
    }
    env = store_env(tmp / "store")
    with environment(env), contextlib.ExitStack() as stack:
        probe = _database_host(HOSTS)
        fleet = stack.enter_context(
            prometheus_fleet(
                tmp / "fleet", hosts=HOSTS, hours=36, interval="60s", max_cpus=2, ramps={probe: RAMP},
                ramp_hours=0.25, hold_hours=1.0, scrape_configs=[forecasts],
            )
        )  # fmt: skip
        webhook = stack.enter_context(receiver())
        am = stack.enter_context(alertmanager(tmp / "alertmanager", webhook.url))
        _train_from_prometheus(fleet, tmp / "ingested")
        yield World(fleet, am, webhook, env, service_port, normalise_hostname(probe), tmp)


def _database_host(hosts: int) -> str:
    """Which simulated host to drive: a database server (I/O wait critical at 50 %) when the fleet has one."""
    from tftmon.config import SimulationConfig
    from tftmon.data.simulate import build_fleet

    names = sorted(s.name for s in build_fleet(SimulationConfig(servers=hosts, seed=42)))
    return next((n for n in names if n.startswith("ppdb")), names[0])


def _until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError):
            last = check()
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


def _predictions(url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/predictions/current", timeout=10).json()["predictions"]


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()["data"]["result"]


def test_every_host_forecast_alerted_through_alertmanager_and_scraped_back(world: World) -> None:
    fleet, ramped = world.fleet, world.ramped
    everyone = {normalise_hostname(h) for h in fleet.instances}
    env = {
        "TFTMON_SERVICE_ALERTMANAGER_URLS": f'["{world.alertmanager}"]',
        "TFTMON_SERVICE_DASHBOARD_URL": "http://127.0.0.1:8501",
    }
    with Served({**world.env, **LIVE, "TFTMON_SERVICE_PROMETHEUS_URL": fleet.url, **env}, world.tmp / "serve.log",
                port=world.service_port) as served:  # fmt: skip
        started = time.monotonic()
        _until(
            "every host forecast",
            lambda: {p["server_name"] for p in _predictions(served.url)} >= everyone,
            timeout=120,
        )
        first_forecast = time.monotonic() - started
        assert first_forecast < 300  # within one model step of start
        status = httpx.get(f"{served.url}/status", timeout=10).json()
        source = status["prometheus"]
        assert source["hosts"] == len(everyone) and source["failed_pulls"] == 0 and source["last_error"] is None
        assert not status["servers_stale"]

        # The ramped host's critical alert reaches the webhook through Alertmanager, labelled to join its series.
        try:
            firing = _until("the ramped host's alert delivered", lambda: world.webhook.alerts(ramped), timeout=120)
        except AssertionError:
            mine = [p for p in _predictions(served.url) if p["server_name"] == ramped]
            active = httpx.get(f"{served.url}/alerts/active", timeout=10).json()
            status = httpx.get(f"{served.url}/status", timeout=10).json()
            raise AssertionError(f"{mine}\n{active}\n{status}\n{world.webhook.posts()}") from None
        labels = firing[0]["labels"]
        assert firing[0]["status"] == "firing" and labels["alertname"] == "TftmonForecastCritical"
        assert labels["instance"] == fleet.instances[ramped] and labels["job"] == fleet.job
        assert labels["severity"] == "critical" and labels["metric"] == CPU_IOWAIT
        annotations = firing[0]["annotations"]
        assert annotations["model_version"] and annotations["predicted_for"] and float(annotations["probability"]) > 0
        assert annotations["dashboard"].startswith("http://127.0.0.1:8501")

        # The forecasts come back as series of the same Prometheus, joined to node_exporter's by instance and job.
        band = _until(
            "the 1 h I/O wait band scraped back",
            lambda: _query(
                fleet.url,
                f'tftmon_forecast_cpu_iowait_percent{{instance="{fleet.instances[ramped]}",horizon="1h"}}'
                f" and on (instance, job) node_uname_info",
            ),
            timeout=60,
        )
        quantiles = {s["metric"]["quantile"]: float(s["value"][1]) for s in band}
        assert set(quantiles) == {"0.1", "0.5", "0.9"} and quantiles["0.1"] <= quantiles["0.5"] <= quantiles["0.9"]
        risk = _query(fleet.url, "count(tftmon_server_risk_ratio)")
        assert int(float(risk[0]["value"][1])) == len(everyone)

        # The host recovers: its alert resolves, and Alertmanager says so.
        fleet.drive(ramped, {CPU_IOWAIT: 0.0}, ramp_seconds=0)
        resolved = _until(
            "the alert resolved",
            lambda: [a for a in world.webhook.alerts(ramped) if a["status"] == "resolved"],
            timeout=420,
            every=2,
        )
        assert resolved[0]["labels"] == labels
        fleet.recover(ramped, ramp_seconds=0)


def test_a_restart_is_back_to_every_host_within_one_pull(world: World) -> None:
    everyone = {normalise_hostname(h) for h in world.fleet.instances}
    with Served({**world.env, **LIVE, "TFTMON_SERVICE_PROMETHEUS_URL": world.fleet.url}, world.tmp / "r.log") as a:
        _until("every host forecast", lambda: {p["server_name"] for p in _predictions(a.url)} >= everyone, 120)
    started = time.monotonic()
    with Served({**world.env, **LIVE, "TFTMON_SERVICE_PROMETHEUS_URL": world.fleet.url}, world.tmp / "r2.log") as b:
        _until("every host forecast again", lambda: {p["server_name"] for p in _predictions(b.url)} >= everyone, 120)
        assert httpx.get(f"{b.url}/status", timeout=10).json()["prometheus"]["pulls"] >= 1
    assert time.monotonic() - started < 300


def test_two_shards_cover_the_fleet_exactly_once(world: World) -> None:
    everyone = {normalise_hostname(h) for h in world.fleet.instances}
    base = {**world.env, **LIVE, "TFTMON_SERVICE_PROMETHEUS_URL": world.fleet.url}
    with (
        Served({**base, "TFTMON_SERVICE_SHARD": "0/2"}, world.tmp / "s0.log") as zero,
        Served({**base, "TFTMON_SERVICE_SHARD": "1/2"}, world.tmp / "s1.log") as one,
    ):
        expected = [{h for h in everyone if Shard(i, 2).owns(h)} for i in (0, 1)]
        for served, want in zip((zero, one), expected, strict=True):
            _until(
                "the shard's hosts forecast", lambda url=served.url: {p["server_name"] for p in _predictions(url)}, 120
            )
            got = {p["server_name"] for p in _predictions(served.url)}
            assert got == want
        assert expected[0] and expected[1] and not expected[0] & expected[1] and expected[0] | expected[1] == everyone
        assert httpx.get(f"{zero.url}/status", timeout=10).json()["shard"] == "0/2"


def test_serve_command_refuses_a_bad_shard_or_url_in_one_line() -> None:
    for args, message in (
        (["--shard", "2/2"], "shard 2/2: give i/N"),
        (["--prometheus", "prometheus:9090"], "not an http(s) URL"),
        (["--alertmanager", "http://:x/"], "cannot parse the URL"),
    ):
        result = CliRunner().invoke(main, ["serve", *args])
        assert result.exit_code == 2 and message in result.output, result.output
