"""`make stack-prometheus`: tftmon watching a fleet through a real Prometheus and Alertmanager, all on one machine.

What an operator would wire up (node_exporters scraped by Prometheus, `tftmon ingest --prometheus`, train,
promote, `tftmon serve --prometheus --alertmanager`, the forecasts scraped back) shown end to end with nothing
but Debian's binaries, so it can be looked at before it is deployed:

1. `hosts` simulated node_exporters (tftmon.data.simulate.node_exporter) get `hours` of history ending now, one
   database host's I/O wait ramping to 90 % over the last `ramp_hours` (held live, so it alerts), written into
   a TSDB with promtool;
2. one `Supervisor` (tftmon.ops.stack: each child in its own process group, logged to `<workdir>/logs/`, all
   stopped by Ctrl-C) starts this machine's node_exporter, the simulated fleet served live (`python -m
   tftmon.ops.prometheus_demo fleet`), Prometheus (both node_exporters in job `node`, the service's
   `/metrics/forecasts` with honor_labels, deploy/prometheus/tftmon.rules.yml when promtool passes it) and
   Alertmanager (one receiver that notifies no one: alerts are held and listed in its UI and by amtool);
3. then the service child: it ingests the history from Prometheus, trains with the demo's config and promotes
   (`python -m tftmon.ops.prometheus_demo model`), then execs `tftmon serve --prometheus --alertmanager`, so a
   Ctrl-C during training stops it like any child; the dashboard follows, as in `tftmon stack`.

Prometheus has no `alerting:` section: the rules' alerts show on its /alerts page while Alertmanager gets only
tftmon's own, not each one twice (docs/PROMETHEUS.md). Everything lives in the working directory, the MLflow
registry and the BentoML store included, so the demo never replaces the Production model of `make demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from pydantic import BaseModel

from tftmon.config import DemoConfig, EvaluationConfig, SimulationConfig, TrainConfig
from tftmon.contract import CPU_IOWAIT, MODEL_STEP, profile_of
from tftmon.data.simulate.node_exporter import Drive, instance
from tftmon.ops.stack import Child, StackOptions, Supervisor, feed_token, http_ok, say, stack_children

log = logging.getLogger(__name__)

BINARIES = ("prometheus", "promtool", "prometheus-node-exporter", "prometheus-alertmanager")
INSTALL = "apt-get install -y prometheus prometheus-node-exporter prometheus-alertmanager"
#: The rules an operator adds to Prometheus (deploy/README.md), from the source tree tftmon runs from.
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "tftmon.rules.yml"
#: The `job` of every node_exporter, simulated or real: what tftmon's forecasts carry back.
JOB = "node"
#: Where the ramping host's I/O wait goes: far enough past a database's critical 50 % that the demo model, whose
#: band is wide, forecasts it critical from its first forecast on (at 80 % it starts at warning).
RAMP = {CPU_IOWAIT: 90.0}
#: This module run as a child process (`python -m`), whatever name it was imported under.
ENTRY = (sys.executable, "-m", "tftmon.ops.prometheus_demo")
#: What the children read in the working dir: the fleet and the model's training (`Spec`).
SPEC_FILE = "demo.json"
#: What `PrometheusDemoOptions.<name>_port` sets the port of.
PORT_NAMES = ("prometheus", "alertmanager", "node_exporter", "fleet", "service", "dashboard")
#: Width of the name column of the banner's lines.
NAME_WIDTH = 14
DEMO = DemoConfig()
#: The demo's training, a log line per epoch in the service's log instead of progress bars.
TRAIN = DEMO.train.model_copy(update={"progress_bar": False})
#: Alertmanager with one receiver and nothing to notify: alerts are held, listed in its UI and by `amtool`.
ALERTMANAGER_CONFIG = """\
route:
  receiver: held
  group_by: [alertname, server]
receivers:
  - name: held
"""


@dataclass(frozen=True)
class PrometheusDemoOptions:
    """The demo's fleet, training, ports and timeouts; every port 0 means a free one."""

    workdir: Path = Path("demo-prometheus")
    hosts: int = 20
    #: History before now: a week, as `tftmon demo` simulates, enough for the demo's training and evaluation.
    hours: float = DEMO.simulation.hours
    seed: int = DEMO.simulation.seed
    #: The simulator's tick: a gauge changes, and a counter changes rate, this often.
    interval: str = "1min"
    #: CPUs per simulated host: each is 8 series to backfill, and the ingest reads only the modes' shares.
    max_cpus: int = 2
    ramp_hours: float = 1.0
    #: Prometheus scrapes every target, and evaluates the rules, this often.
    scrape_interval: str = "15s"
    train: TrainConfig = TRAIN
    evaluation: EvaluationConfig = DEMO.evaluation
    prometheus_port: int = 0
    alertmanager_port: int = 0
    node_exporter_port: int = 0
    fleet_port: int = 0
    service_port: int = 0
    dashboard_port: int = 0
    #: Seconds each child may take to come up; the service's include ingesting, training and promoting.
    ready_timeout: float = 900.0


class MissingBinaries(RuntimeError):
    """A Debian binary the demo runs is not installed: the message names the install command."""


class Spec(BaseModel):
    """What the demo's own children need, written by the parent as JSON: the fleet exactly as backfilled (so
    live carries on from its history) and what the model is trained on."""

    simulation: SimulationConfig
    drives: tuple[Drive, ...]
    max_cpus: int
    fleet_port: int
    prometheus: str
    history: tuple[datetime, datetime]
    data: Path
    train: TrainConfig
    evaluation: EvaluationConfig


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _line(name: str, text: str) -> str:
    return f"{name:<{NAME_WIDTH}}{text}"


def _fresh(workdir: Path) -> None:
    """The working dir, ignoring itself in git, without an earlier run's TSDB and Alertmanager state (a new
    history would overlap the old one's blocks); the registry, BentoML store and dataset stay. Only a dir an
    earlier run wrote its spec in is cleared, and a .gitignore already there is kept."""
    workdir.mkdir(parents=True, exist_ok=True)
    ignore = workdir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    if (workdir / SPEC_FILE).exists():
        for stale in ("tsdb", "alertmanager"):
            shutil.rmtree(workdir / stale, ignore_errors=True)


def _history(
    options: PrometheusDemoOptions, workdir: Path, port: dict[str, int], echo: Callable[[str], None]
) -> tuple[Spec, list[str]]:
    """The fleet, one database host ramping into trouble over the end of its history, backfilled into
    `<workdir>/tsdb` up to now; the spec that serves the same fleet live and trains on that history, and the
    fleet's host names."""
    import pandas as pd

    from tftmon.data.simulate import build_fleet
    from tftmon.data.simulate.node_exporter import ExporterFleet, backfill

    end = datetime.now(UTC)
    start = pd.Timestamp(end - timedelta(hours=options.hours)).floor(MODEL_STEP).to_pydatetime()  # as ingest steps
    config = SimulationConfig(servers=options.hosts, start=start, interval=options.interval, seed=options.seed)
    names = sorted(server.name for server in build_fleet(config))
    ramped = next((name for name in names if profile_of(name) == "database"), names[0])
    ramp = timedelta(hours=options.ramp_hours)
    drives = (Drive(ramped, RAMP, end - ramp, ramp),)
    echo(
        f"Simulating {options.hosts} node_exporters with {options.hours:g} h of history, {ramped}'s I/O wait "
        f"ramping to {RAMP[CPU_IOWAIT]:g} % over the last {options.ramp_hours:g} h; backfilling it with promtool..."
    )
    fleet = ExporterFleet(config, drives=drives, max_cpus=options.max_cpus)
    written = backfill(fleet, workdir / "tsdb", end, job=JOB)
    echo(f"  {written.samples:,} samples in {written.seconds:g} s")
    spec = Spec(
        simulation=config, drives=drives, max_cpus=options.max_cpus, fleet_port=port["fleet"],
        prometheus=f"http://127.0.0.1:{port['prometheus']}", history=(start, end), data=workdir / "data",
        train=options.train, evaluation=options.evaluation,
    )  # fmt: skip
    return spec, fleet.names


def _rule_files(echo: Callable[[str], None]) -> list[str]:
    """deploy/prometheus/tftmon.rules.yml if it is there and promtool passes it; none otherwise, saying why."""
    if not RULES.is_file():
        return []
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    if check.returncode:
        echo(f"Leaving out {RULES}: `promtool check rules` fails:\n{(check.stdout + check.stderr).strip()}")
        return []
    return [str(RULES)]


def _prometheus_config(
    hosts: Sequence[str], address: dict[str, str], scrape_interval: str, rule_files: list[str]
) -> str:
    """prometheus.yml: the simulated fleet's job with this machine's node_exporter added, and tftmon's forecasts."""
    from tftmon.data.simulate.node_exporter import scrape_config

    nodes = scrape_config(address["fleet"], hosts, job=JOB)
    nodes["static_configs"].append({"targets": [address["node_exporter"]]})
    forecasts = {
        "job_name": "tftmon-forecasts",  # deploy/prometheus/scrape-tftmon.yml's name, which the rules read
        "metrics_path": "/metrics/forecasts",
        "honor_labels": True,  # each host's forecasts keep the instance and job of its node_exporter
        "static_configs": [{"targets": [address["service"]]}],
    }
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": rule_files,
        "scrape_configs": [nodes, forecasts],
    }
    return json.dumps(config, indent=2)  # JSON is YAML


def _daemons(
    options: PrometheusDemoOptions,
    spec: Spec,
    hosts: Sequence[str],
    workdir: Path,
    port: dict[str, int],
    echo: Callable[[str], None],
) -> list[Child]:
    """This machine's node_exporter, the simulated fleet, Prometheus and Alertmanager, in start order; writes
    the configs of the last two."""
    address = {name: f"127.0.0.1:{number}" for name, number in port.items()}
    url = {name: f"http://{where}" for name, where in address.items()}
    prometheus_yml, alertmanager_yml = workdir / "prometheus.yml", workdir / "alertmanager.yml"
    prometheus_yml.write_text(_prometheus_config(hosts, address, options.scrape_interval, _rule_files(echo)))
    alertmanager_yml.write_text(ALERTMANAGER_CONFIG)
    ramped = spec.drives[0].host
    promql = f'tftmon_forecast_cpu_iowait_percent{{instance="{instance(ramped)}", horizon="1h"}}'
    graph = f"{url['prometheus']}/graph?" + urlencode({"g0.expr": promql, "g0.tab": "0", "g0.range_input": "6h"})
    retention = f"{math.ceil(options.hours / 24) + 1}d"  # past the history's start: Prometheus keeps all of it
    return [
        Child(
            "node_exporter",
            ("prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{port['node_exporter']}"),
            http_ok(f"{url['node_exporter']}/metrics"),
            shown=_line("node_exporter", f"{url['node_exporter']}/metrics  (this machine, {os.uname().nodename}: "
                                         f"forecast once it has {options.train.encoder_hours:g} h of data)"),
            port=port["node_exporter"],
        ),
        Child(
            "fleet",
            (*ENTRY, "fleet", str(workdir / SPEC_FILE)),
            http_ok(f"{url['fleet']}/hosts"),
            shown=_line("fleet", f"{url['fleet']}/hosts  ({options.hosts} simulated node_exporters; POST or DELETE "
                                 "/hosts/<name>/drive to drive one into trouble and back)"),
            port=port["fleet"],
        ),
        Child(
            "prometheus",
            ("prometheus", f"--config.file={prometheus_yml}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port['prometheus']}", f"--storage.tsdb.retention.time={retention}"),
            http_ok(f"{url['prometheus']}/-/ready"),
            shown="\n  ".join((
                _line("prometheus", f"{url['prometheus']}  (targets: /targets, the rules' alerts: /alerts)"),
                _line("try", f"{promql}  ({ramped}'s I/O wait 1 h ahead, p10/p50/p90):"),
                _line("", graph),
            )),
            port=port["prometheus"],
        ),
        Child(
            "alertmanager",
            ("prometheus-alertmanager", f"--config.file={alertmanager_yml}",
             f"--storage.path={workdir / 'alertmanager'}", f"--web.listen-address=127.0.0.1:{port['alertmanager']}",
             "--cluster.listen-address="),
            http_ok(f"{url['alertmanager']}/-/ready"),
            shown=_line("alertmanager", f"{url['alertmanager']}  (tftmon's critical alerts, held: no notifications)"),
            port=port["alertmanager"],
        ),
    ]  # fmt: skip


def _stack(stack: StackOptions, workdir: Path) -> list[Child]:
    """`tftmon stack --prometheus --alertmanager`'s children, the service's first training the model it serves,
    in the demo's own registry and BentoML store."""
    service, dashboard = stack_children(stack, feed_token())
    store = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "TFTMON_ARTIFACT_ROOT": str(workdir / "mlartifacts"),
        "BENTOML_HOME": str(workdir / "bentoml"),
    }
    model_then_service = dataclasses.replace(
        service,
        argv=(*ENTRY, "model", str(workdir / SPEC_FILE), *service.argv),
        shown="\n  ".join((
            _line("service", f"{stack.service_url}  (API docs {stack.service_url}/docs)"),
            _line("forecasts", f"{stack.service_url}/metrics/forecasts  (scraped by Prometheus, honor_labels)"),
        )),
        hint="its log says whether ingest, training, promotion or loading the model failed",
        env={**service.env, **store},
    )  # fmt: skip
    return [model_then_service, dataclasses.replace(dashboard, shown=_line("dashboard", stack.dashboard_url))]


def run_prometheus_demo(options: PrometheusDemoOptions | None = None, echo: Callable[[str], None] = say) -> int:
    """Simulate and backfill the fleet, then supervise both node_exporters, Prometheus, Alertmanager, the model's
    training and the stack until Ctrl-C or SIGTERM; the exit code (1: a child failed, said in one line)."""
    options = options or PrometheusDemoOptions()
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        raise MissingBinaries(f"{', '.join(missing)} not installed: {INSTALL}")
    workdir = options.workdir.resolve()
    _fresh(workdir)
    port = {name: getattr(options, f"{name}_port") or _free_port() for name in PORT_NAMES}
    spec, hosts = _history(options, workdir, port, echo)
    (workdir / SPEC_FILE).write_text(spec.model_dump_json(indent=2))
    daemons = _daemons(options, spec, hosts, workdir, port, echo)
    stack = StackOptions(
        service_port=port["service"], dashboard_port=port["dashboard"], log_dir=workdir / "logs",
        ready_timeout=options.ready_timeout, prometheus=spec.prometheus,
        alertmanagers=(f"http://127.0.0.1:{port['alertmanager']}",),
    )  # fmt: skip
    echo(
        "Starting node_exporter, the fleet, Prometheus and Alertmanager; then the service ingests, trains and "
        f"promotes its model (minutes: tail -f {stack.log_dir / 'service.log'}) before it serves..."
    )
    return Supervisor([*daemons, *_stack(stack, workdir)], stack, echo).run()


# ---------------------------------------------------------------------------------------------
# The demo's own children: `python -m tftmon.ops.prometheus_demo fleet|model SPEC`
# ---------------------------------------------------------------------------------------------


def serve_fleet(spec: Spec) -> None:
    """The simulated node_exporters, live from where their backfilled history ends, until terminated."""
    from tftmon.data.simulate.node_exporter import serve_forever

    serve_forever(spec.simulation, port=spec.fleet_port, drives=spec.drives, max_cpus=spec.max_cpus)


def train_model(spec: Spec) -> str:
    """`tftmon ingest --prometheus` over the history, `tftmon train` with the spec's config, `tftmon promote`:
    the Production version the service then loads. Run in the working dir, where validation's Data Docs land."""
    from tftmon.config import IngestConfig
    from tftmon.data.ingest import Mapping, Samples, ingest_samples, summary
    from tftmon.data.ingest.prometheus import query_prometheus
    from tftmon.ops import registry
    from tftmon.ops.jobs import run_train

    start, end = spec.history
    with contextlib.chdir(spec.data.parent):
        long, described = query_prometheus(spec.prometheus, start, end, step=MODEL_STEP, progress=False)
        metadata = ingest_samples(Samples(long, source=described), Mapping(), IngestConfig(), spec.data, progress=False)
        log.info("ingested from %s: %s", spec.prometheus, summary(metadata, spec.data))
        outcome = run_train(spec.data, spec.train, spec.evaluation)
        log.info("trained:\n%s", outcome["summary"])
        # As `tftmon demo` does: the demo's newest model replaces the last one, whatever the gate says of it.
        report = registry.promote(outcome["version"], force=True, reason="prometheus demo")
    log.info("%s", report.to_text())
    return str(outcome["version"])


def main(argv: Sequence[str] | None = None) -> None:
    """The children's entry point: serve the fleet, or train the model and then exec the service's command."""
    parser = argparse.ArgumentParser(prog="python -m tftmon.ops.prometheus_demo", description=main.__doc__)
    parser.add_argument("role", choices=("fleet", "model"))
    parser.add_argument("spec", type=Path, help="The JSON the demo wrote (Spec).")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="model: what to exec once the model is Production.")
    args = parser.parse_args(argv)
    # Our own steps at INFO (ingest, an epoch a line, the gate), everyone else's only when it matters.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for name in ("tftmon", log.name):
        logging.getLogger(name).setLevel(logging.INFO)
    spec = Spec.model_validate_json(args.spec.read_text())
    if args.role == "fleet":
        serve_fleet(spec)
        return
    version = train_model(spec)
    log.info("version %s is production; starting %s", version, " ".join(args.command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(args.command[0], args.command)


if __name__ == "__main__":
    main()
