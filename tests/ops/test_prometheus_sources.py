"""`tftmon retrain`, `drift` and `monitor --prometheus`: the live fleet read from a real Prometheus (Debian's, scraping
this host's node_exporter every second over a TSDB whose history was backfilled with promtool:
tests/prometheus_stack.py). Nothing is stubbed but the retrain the monitor triggers (the full chain has its own test).

Besides this host's history, Prometheus holds two servers of the tiny Production model's fleet (tests/serving.py)
that fell silent 2 and 10 days ago: drift must call them offline and a sunset candidate, the model's other servers
(absent) sunset, and this host new. Locally a missing binary skips these tests; with CI=true it fails them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.ops.test_retrain import EVAL, TRAIN
from tests.prometheus_stack import JOB, backfill, node_exporter, prometheus, require_binaries, wait_for_samples
from tests.serving import FLEET, free_port
from tftmon.cli import main
from tftmon.config import RetrainConfig
from tftmon.contract import MODEL_STEP, SERVER_NAME, TIMESTAMP, normalise_hostname, profile_of, to_utc
from tftmon.data.simulate import build_fleet, write_dataset
from tftmon.data.validate import validate_path
from tftmon.io import METADATA_FILE, read_metrics
from tftmon.ops import registry, retrain, tracking
from tftmon.ops.retrain import SETTLE, collect, run_retrain

HOST = normalise_hostname(os.uname().nodename)
#: This host's backfilled history: as long as tests/ops/test_retrain.py's fleet, which a tiny model trains on.
HISTORY = timedelta(hours=42)
#: The tiny Production model's servers; two of them last reported this long ago, the rest never.
KNOWN = sorted(server.name for server in build_fleet(FLEET))
OFFLINE, CANDIDATE = KNOWN[:2]
SILENT = {OFFLINE: timedelta(days=2), CANDIDATE: timedelta(days=10)}
#: What the collect test reads: half a day, so neither silent server is in it.
DAYS = 0.5


def _silent_servers(storage: Path, now: datetime) -> None:
    """node_uname_info and node_load1 of each SILENT server for a day up to when it fell silent, as promtool blocks
    (the survey reads node_load1; hosts are named by node_uname_info, as for a real node_exporter)."""
    lines = []
    for name in ("node_load1", "node_uname_info"):
        for server, silent in SILENT.items():
            named = f',nodename="{server}"' if name == "node_uname_info" else ""
            labels = f'instance="{server}:9100",job="{JOB}"{named}'
            last = (now - silent).timestamp()
            lines += [f"{name}{{{labels}}} 1.0 {t:.3f}" for t in np.arange(last - 86_400, last, 60.0)]
    source = storage.parent / "silent.om"
    source.write_text("\n".join(lines) + "\n# EOF\n")
    storage.mkdir(parents=True, exist_ok=True)
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(storage)], check=True,
                   capture_output=True)  # fmt: skip


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus over this host's history (HISTORY up to its start, then scraped live) and the SILENT servers'."""
    require_binaries()
    tmp = tmp_path_factory.mktemp("prometheus")
    with contextlib.ExitStack() as daemons:
        target = daemons.enter_context(node_exporter(tmp))
        started = datetime.now(UTC)
        backfill(target, tmp / "tsdb", started - HISTORY, started, interval=timedelta(minutes=1))
        _silent_servers(tmp / "tsdb", started)
        url = daemons.enter_context(prometheus(tmp, tmp / "tsdb", [target]))
        wait_for_samples(url, 3)
        yield url


def _files(root: Path) -> list[str]:
    """The options that keep a retrain's event log and lock under `root`."""
    return ["--event-log", str(root / "events.jsonl"), "--lock-file", str(root / "lock"), "--no-progress"]


def _credentials(url: str) -> str:
    """The URL with a user and password in it: Prometheus asks for none, so only their absence from records shows."""
    return url.replace("http://", "http://tftmon:s3cret@")


def test_collect_writes_the_last_days_of_prometheus_as_a_contract_dataset(
    prometheus_url: str, tmp_path: Path, mlflow_store: str
) -> None:
    config = RetrainConfig(prometheus_url=_credentials(prometheus_url), days=DAYS, min_history_hours=1, out=tmp_path)
    now = datetime.now(UTC)
    with tracking.job_run("collect") as run:
        path, frame, found = collect(config, now)

    assert path == tmp_path / "prometheus"
    report = validate_path(path, suite="telemetry", strict=True)
    assert report.success, report.to_text()
    assert set(frame[SERVER_NAME]) == {HOST} and found.training == [HOST] and found.offline == []
    # Every whole model step of [now - DAYS, now - SETTLE], none missing.
    end = pd.Timestamp(now - SETTLE)
    first, last = pd.Timestamp(end - timedelta(days=DAYS)).ceil(MODEL_STEP), end.floor(MODEL_STEP) - MODEL_STEP
    stamps = to_utc(frame[TIMESTAMP])
    assert (stamps.min(), stamps.max()) == (first, last) and len(frame) == (last - first) / MODEL_STEP + 1

    recorded = mlflow.get_run(run.info.run_id).data
    assert recorded.params["collect.prometheus"] == prometheus_url
    assert recorded.params["collect.start"] == first.isoformat() and recorded.metrics["prometheus_hosts"] == 1
    metadata = (path / METADATA_FILE).read_text()
    assert json.loads(metadata)["source"]["url"] == prometheus_url
    assert "s3cret" not in metadata and "s3cret" not in json.dumps(recorded.params)


def test_drift_follows_the_fleet_prometheus_sees(prometheus_url: str, model_store: dict, tmp_path: Path) -> None:
    assert sorted(model_store["servers"]) == KNOWN
    reference = tmp_path / "trained"  # the model's training data: every profile, this host's among them
    write_dataset(FLEET, reference, progress=False)
    argv = ["drift", "--prometheus", prometheus_url, "--reference", str(reference), "--json", "--no-track"]
    result = CliRunner().invoke(main, [*argv, "--no-progress"])
    assert result.exit_code == 3, result.output
    body = json.loads(result.stdout)
    assert body["active"] == body["new_servers"] == [HOST]
    assert body["offline"] == [OFFLINE] and body["sunset_candidates"] == [CANDIDATE]
    assert body["sunset"] == body["retired"] == sorted(set(KNOWN) - set(SILENT))
    assert body["priority"] == "high" and body["drift_pct"] == pytest.approx(100 * 6 / 7)
    assert body["source"] == f"{prometheus_url} (Prometheus)"
    # Data drift of this host's last day, read from Prometheus, against its profile in the training data.
    assert {row["profile"] for row in body["shifts"]} == {profile_of(HOST)}
    assert {"cpu_idle_pct", "mem_used_pct", "load_average"} <= {row["metric"] for row in body["shifts"]}


class _Recorded:
    """What the monitor prints of a retrain: the recorder's retrain never runs the chain."""

    def to_text(self) -> str:
        return "recorded"


def test_monitor_checks_prometheus_and_retrains_from_it(
    prometheus_url: str, model_store: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    triggered: dict[str, Any] = {}

    def recorder(config: RetrainConfig, *, trigger: dict[str, Any] | None = None, **_: Any) -> _Recorded:
        triggered.update(config=config, trigger=trigger)
        return _Recorded()

    monkeypatch.setattr(retrain, "run_retrain", recorder)
    argv = ["monitor", "--once", "--prometheus", prometheus_url, "--days", "1.5", "--min-history-hours", "1"]
    result = CliRunner().invoke(main, [*argv, *_files(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "drift high: retrain" in result.output and "recorded" in result.output
    config = triggered["config"]
    assert (config.prometheus_url, config.days, config.data) == (prometheus_url, 1.5, None)
    assert triggered["trigger"]["priority"] == "high" and triggered["trigger"]["new_servers"] == 1


def _one_line_error(output: str, url: str) -> None:
    """The failure is one line naming the URL and how to check it, and no traceback."""
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert f"cannot reach Prometheus at {url} " in errors[0] and f"curl {url}/-/ready" in errors[0]


def test_drift_from_an_unreachable_prometheus_says_what_to_check(model_store: dict) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["drift", "--prometheus", url, "--no-track", "--no-progress"])
    assert result.exit_code == 4
    _one_line_error(result.output, url)


def test_retrain_from_an_unreachable_prometheus_fails_at_collect(tmp_path: Path, mlflow_store: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    argv = ["retrain", "--prometheus", _credentials(url), "--days", "8", "--out", str(tmp_path / "work")]
    result = CliRunner().invoke(main, [*argv, *_files(tmp_path)])
    assert result.exit_code == 1 and "retrain failed at collect" in result.output
    _one_line_error(result.output, url)
    assert "s3cret" not in result.output and "s3cret" not in (tmp_path / "events.jsonl").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prometheus", "http://127.0.0.1:1", "--data", "data/fleet"], "give one data source"),
        (["--prometheus", "http://127.0.0.1:1", "--simulate"], "give one data source"),
        (["--prometheus", "http://127.0.0.1:1", "--days", "0"], "days: Input should be greater than 0"),
        (["--prometheus", "http://127.0.0.1:1", "--days", "-1"], "days: Input should be greater than 0"),
        (["--prometheus", "http://127.0.0.1:1", "--days", "2"], "days 2 is shorter than min_history_hours 168"),
    ],
)
def test_retrain_refuses_a_second_source_and_too_few_days(argv: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["retrain", *argv])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.slow
def test_retrain_from_prometheus_promotes_a_version_that_forecasts_this_host(
    prometheus_url: str, tmp_path: Path, mlflow_store: str
) -> None:
    config = RetrainConfig(
        prometheus_url=_credentials(prometheus_url), days=(HISTORY - timedelta(hours=1)) / timedelta(days=1),
        min_history_hours=24, train=TRAIN, evaluation=EVAL, out=tmp_path / "work",
        event_log=tmp_path / "events.jsonl", lock_file=tmp_path / "lock",
    )  # fmt: skip
    outcome = run_retrain(config, progress=False)
    assert registry.production_version() == outcome.version
    assert outcome.survey.training == [HOST] and outcome.coverage.forecast == [HOST] and outcome.coverage.complete
    assert set(read_metrics(config.out / "prometheus")[SERVER_NAME]) == {HOST}
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[0]["source"] == f"{prometheus_url} (last {config.days:g} d)" and events[-1]["event"] == "verified"
    params = mlflow.get_run(outcome.run_id).data.params
    assert (params["retrain.prometheus_url"], params["retrain.days"]) == (prometheus_url, str(config.days))
    assert "s3cret" not in json.dumps(mlflow.get_run(outcome.run_id).data.to_dictionary())
    assert "s3cret" not in (tmp_path / "events.jsonl").read_text()
