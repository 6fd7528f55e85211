"""The forecast series (tftmon.serve.exporter) read back by prometheus_client's parser, and the deploy files that
use them checked by promtool and against the series the renderer emits.

`fake_records` is also benchmarks/bench_exporter.py's input: records shaped exactly as the live cache holds them
(`payloads`, public, then aged by LiveFleet), which `test_fake_records_are_shaped_as_payloads_builds_them` checks.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.synthetic import hosts
from tftmon.config import ServiceConfig
from tftmon.contract import (
    CPU_IDLE,
    DISK_USAGE,
    HORIZONS,
    MEM_USED,
    METRIC,
    METRICS,
    NET_IN,
    PREDICTION_STEPS,
    PROFILE,
    QUANTILE_NAMES,
    SERVER_NAME,
    STEP,
    STEP_MINUTES,
    STEP_NS,
    TIMESTAMP,
)
from tftmon.data.ingest.prometheus import DEFAULT_QUERIES
from tftmon.risk import SEVERITY_BANDS, SEVERITY_LABELS, Severity, colour_of, severity_of
from tftmon.serve.exporter import (
    AGE,
    ALERT_SCORE,
    FORECAST_SERIES,
    HORIZON_LABELS,
    INFO,
    METRICS_PATH,
    QUANTILE_LABELS,
    RISK,
    SERVER_SERIES,
    SEVERITY,
    STALE,
    ExportOptions,
    ForecastExporter,
    render_forecasts,
    series_per_server,
)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/tftmon.rules.yml"
SCRAPE = ROOT / "deploy/prometheus/scrape-tftmon.yml"
DASHBOARD = ROOT / "deploy/grafana/tftmon-dashboard.json"
ORIGIN = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NOW = ORIGIN + timedelta(minutes=7)
#: The rate window the dashboard renders node_exporter's queries with: the model step, as ingest reads them.
WINDOW = timedelta(minutes=STEP_MINUTES)


def fake_records(servers: int, metrics: tuple[str, ...] = METRICS, seed: int = 0) -> list[dict[str, Any]]:
    """`servers` records as LiveFleet.cache["predictions"] holds them, with random risks and bands; one per-step
    path shared by all (the exporter never reads it, and 1,000 copies would be 4 M floats)."""
    rng = np.random.default_rng(seed)
    p50 = rng.uniform(12, 88, (servers, len(HORIZONS), len(metrics)))  # the band stays within 0-100
    width = rng.uniform(0.5, 10, p50.shape)
    cube = np.stack([p50 - width, p50, p50 + width], axis=-1).round(3).tolist()  # rounded as payloads rounds
    risks = rng.uniform(0, 1, servers).round(4)
    path = {m: dict.fromkeys(QUANTILE_NAMES, [1.0] * PREDICTION_STEPS) for m in metrics}
    records = []
    for i, (name, profile) in enumerate(hosts(servers)):
        severity = Severity(severity_of(risks[i]))
        records.append({
            "server_name": name, "profile": profile, "prediction_time": ORIGIN.isoformat(), "cold_start": i % 10 == 0,
            "model_version": "7", "risk": float(risks[i]), "alert_score": round(float(risks[i]) / 2, 4),
            "severity": severity.value, "severity_label": SEVERITY_LABELS[severity], "colour": colour_of(severity),
            "metric": None, "reason": "nothing crosses", "drivers": [],
            "horizons": {
                h: {m: dict(zip(QUANTILE_NAMES, cube[i][j][k], strict=True)) for k, m in enumerate(metrics)}
                for j, h in enumerate(HORIZONS)
            },
            "step_minutes": STEP_MINUTES, "path": path, "data_age_seconds": 12.5, "stale": False,
        })  # fmt: skip
    return records


def families(text: bytes) -> dict[str, list[Any]]:
    """Samples by family name, through prometheus_client's parser (it refuses malformed text)."""
    return {f.name: f.samples for f in text_string_to_metric_families(text.decode())}


def per_server(text: bytes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for samples in families(text).values():
        for sample in samples:
            counts[sample.labels["server"]] = counts.get(sample.labels["server"], 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------
# The series
# ---------------------------------------------------------------------------------------------


def test_names_units_and_labels_derive_from_the_contract() -> None:
    assert FORECAST_SERIES[MEM_USED] == "tftmon_forecast_mem_used_percent"
    assert FORECAST_SERIES[NET_IN] == "tftmon_forecast_net_in_megabytes_per_second"
    assert FORECAST_SERIES["uptime_days"] == "tftmon_forecast_uptime_days"
    assert FORECAST_SERIES["back_close_wait"] == "tftmon_forecast_back_close_wait_connections"
    assert FORECAST_SERIES["load_average"] == "tftmon_forecast_load_average"
    assert len(set(FORECAST_SERIES.values())) == len(METRICS)
    assert HORIZON_LABELS == {"30min": "30m", "1h": "1h", "8h": "8h"}
    assert QUANTILE_LABELS == {"p10": "0.1", "p50": "0.5", "p90": "0.9"}


def test_every_server_gets_its_series_with_its_values_and_labels() -> None:
    records = fake_records(3)
    first, second, third = (r["server_name"] for r in records)
    records[1]["severity"] = "critical"
    targets = {records[0]["server_name"]: {"instance": "ppweb001:9100", "job": "node", "nodename": "ppweb001"}}
    ages = {first: 12.0, second: 900.0, third: 900.5}  # seconds since each one's newest sample; stale above 900
    text = render_forecasts(records, targets, ages, now=NOW)
    parsed = families(text)
    assert series_per_server() == 14 * 3 * 3 + 6 == 132
    assert per_server(text) == {r["server_name"]: 132 for r in records}
    assert text.count(b"# TYPE ") == len(METRICS) + len(SERVER_SERIES)  # HELP/TYPE once per family
    by_server = {name: {s.name: s for s in parsed[name] if s.labels["server"] == first} for name in SERVER_SERIES}
    assert by_server[RISK][RISK].value == records[0]["risk"]
    assert by_server[ALERT_SCORE][ALERT_SCORE].value == records[0]["alert_score"]
    assert by_server[AGE][AGE].value == 7 * 60
    target = {"instance": "ppweb001:9100", "job": "node"}
    assert by_server[INFO][INFO].labels == {
        "server": first, "profile": records[0]["profile"], **target, "model_version": "7", "cold_start": "true"
    }  # fmt: skip
    assert {s.labels["server"]: s.value for s in parsed[SEVERITY]}[second] == 2
    assert {s.labels["server"]: s.value for s in parsed[STALE]} == {first: 0, second: 0, third: 1}
    records[2]["stale"] = True  # as LiveFleet last stamped it: read for a server without an age
    assert render_forecasts(records, targets, {first: 1.0}, now=NOW) == text
    assert render_forecasts(records, targets, ages, ExportOptions(stale_after_seconds=900.6), now=NOW) != text
    mem = {
        (s.labels["server"], s.labels["horizon"], s.labels["quantile"]): s.value
        for s in parsed["tftmon_forecast_mem_used_percent"]
    }
    assert mem[(second, "1h", "0.9")] == records[1]["horizons"]["1h"][MEM_USED]["p90"]
    assert mem[(third, "30m", "0.1")] == records[2]["horizons"]["30min"][MEM_USED]["p10"]
    labelled = [s.labels for samples in parsed.values() for s in samples]
    assert all(("instance" in labels) == (labels["server"] == first) for labels in labelled)  # only where given
    assert all(("job" in labels) == (labels["server"] == first) for labels in labelled)


def test_options_bound_the_series_and_refuse_unknown_names() -> None:
    records = fake_records(2)
    few = ExportOptions(metrics=(MEM_USED, DISK_USAGE), horizons=("1h",), quantiles=("p10", "p90"))
    assert set(per_server(render_forecasts(records, options=few, now=NOW)).values()) == {2 * 1 * 2 + 6}
    assert series_per_server(few) == 10
    assert series_per_server(ExportOptions(forecasts=False)) == len(SERVER_SERIES) == 6
    assert set(per_server(render_forecasts(records, options=ExportOptions(forecasts=False), now=NOW)).values()) == {6}
    subset = fake_records(2, metrics=(MEM_USED, CPU_IDLE))  # a model of two metrics
    two = series_per_server(forecast=(MEM_USED, CPU_IDLE))
    assert set(per_server(render_forecasts(subset, now=NOW)).values()) == {two} == {2 * 9 + 6}
    with pytest.raises(ValueError, match="30m unknown; choose from 30min, 1h, 8h"):
        ExportOptions(horizons=("30m",))
    configured = ServiceConfig(export_metrics=(MEM_USED,), export_quantiles=("p90",), stale_after_seconds=60)
    assert ExportOptions.from_config(configured) == ExportOptions((MEM_USED,), None, ("p90",), stale_after_seconds=60)


def test_non_finite_values_are_left_out_and_label_values_escaped() -> None:
    records = fake_records(2)
    records[0]["horizons"]["1h"][MEM_USED]["p90"] = math.nan
    records[0]["horizons"]["8h"][MEM_USED]["p10"] = math.inf
    records[1]["risk"] = math.nan
    records[1]["alert_score"] = None
    records[1]["server_name"] = 'odd"host\\name\n2'
    text = render_forecasts(records, now=NOW)
    values = [line.rsplit(" ", 1)[1] for line in text.decode().splitlines() if not line.startswith("#")]
    assert all(math.isfinite(float(v)) and v.lower().lstrip("+-") not in ("nan", "inf") for v in values)
    counts = per_server(text)
    assert counts == {records[0]["server_name"]: 130, 'odd"host\\name\n2': 130}
    assert render_forecasts([], now=NOW) == b""


def test_a_clock_behind_the_data_never_gives_a_negative_age() -> None:
    text = render_forecasts(fake_records(1), now=ORIGIN - timedelta(minutes=1))
    assert [s.value for s in families(text)[AGE]] == [0.0]


def test_the_exporter_keeps_the_forecast_text_until_the_records_or_labels_change() -> None:
    records = fake_records(3)
    exporter = ForecastExporter()
    assert exporter.render(records, now=NOW) == render_forecasts(records, now=NOW)
    later = exporter.render(records, now=NOW + timedelta(minutes=1))
    assert later == render_forecasts(records, now=NOW + timedelta(minutes=1))  # ages move on every scrape
    records[0]["horizons"]["1h"][MEM_USED]["p50"] = 12345.678  # never done in place: LiveFleet replaces the list
    assert b"12345.678" not in exporter.render(records, now=NOW)
    assert b"12345.678" in exporter.render(list(records), now=NOW)
    targets = {records[0]["server_name"]: {"instance": "a:9100", "job": "node"}}
    assert exporter.render(records, targets, now=NOW) == render_forecasts(records, targets, now=NOW)


def test_fake_records_are_shaped_as_payloads_builds_them() -> None:
    """The records the benchmark and these tests render have the live cache's keys and layout; and the renderer
    takes payloads' own output."""
    from tftmon.serve.live import LoadedModel, payloads, public

    names = [name for name, _ in hosts(2)]
    steps = np.arange(1, PREDICTION_STEPS + 1)
    grid = pd.MultiIndex.from_product([names, METRICS, steps], names=[SERVER_NAME, METRIC, STEP]).to_frame(index=False)
    value = np.linspace(10, 60, len(grid))
    tidy = grid.assign(
        **{PROFILE: grid[SERVER_NAME].map(dict(hosts(2))), TIMESTAMP: pd.Timestamp(ORIGIN) + pd.to_timedelta(
            grid[STEP] * STEP_NS, unit="ns"), "p10": value - 5, "p50": value, "p90": value + 5}
    )  # fmt: skip
    loaded = LoadedModel("7", SimpleNamespace(training_info={"servers": names[:1]}), NOW)  # type: ignore[arg-type]
    real = [public(r) for r in payloads(tidy, loaded)]
    aged = {"data_age_seconds", "stale"}  # added by LiveFleet to the cached records
    fake = fake_records(2)[0]
    assert set(fake) == set(real[0]) | aged
    layout = [{h: {m: list(q) for m, q in by.items()} for h, by in r["horizons"].items()} for r in (fake, real[0])]
    assert layout[0] == layout[1]
    assert per_server(render_forecasts(real, now=NOW)) == dict.fromkeys(names, 132)


# ---------------------------------------------------------------------------------------------
# The deploy files: promtool, and the names they use
# ---------------------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """promtool's answer; skips (fails with CI=true, as tests/prometheus_stack does) when it is missing."""
    if shutil.which("promtool") is None:
        message = "promtool not installed: apt-get install -y prometheus (.ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def emitted() -> set[str]:
    """Every series name the renderer can emit."""
    return {*FORECAST_SERIES.values(), *SERVER_SERIES}


def node_series() -> set[str]:
    return set(re.findall(r"\bnode_\w+", " ".join(q.promql for q in DEFAULT_QUERIES.values())))


def series_in(expr: str) -> set[str]:
    """The tftmon_ and node_ series names an expression reads (quoted label values aside)."""
    return set(re.findall(r"(?<![\w:])(?:tftmon|node)_\w+(?![\w:])", re.sub(r'"[^"]*"', "", expr)))


def test_rules_pass_promtool_and_read_only_emitted_series() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    for rule in rules:
        assert series_in(rule["expr"]) <= emitted() | node_series(), rule
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert {"TftmonForecastCritical", "TftmonForecastStale", "TftmonServiceDown"} <= alerts
    assert "instance:tftmon_forecast_mem_used_percent:p90_1h" in recorded
    assert DEFAULT_QUERIES[DISK_USAGE].promql in RULES.read_text()  # predict_linear on the same disk query


def test_the_alerts_fire_on_the_series_as_rendered(tmp_path: Path) -> None:
    """promtool's rule unit test, fed one host's series as render_forecasts writes them: critical for 5 min
    alerts with its risk in words, a forecast over 15 min old for 5 min is stale, forecasts keep NoForecasts quiet."""
    host = {"server": "ppdb001", "profile": "database", "instance": "ppdb001:9100", "job": "node"}
    labels = ",".join(f'{k}="{v}"' for k, v in host.items())
    series = {SEVERITY: "2x20", RISK: "0.83x20", STALE: "0x20", INFO: "1x20", AGE: "300+60x20"}
    up = [
        {"series": f'up{{job="{job}",instance="tftmon:3000"}}', "values": "1x20"}
        for job in ("tftmon", "tftmon-forecasts")
    ]
    case = {
        "interval": "1m",
        "input_series": [{"series": f"{name}{{{labels}}}", "values": v} for name, v in series.items()] + up,
        "alert_rule_test": [
            {"alertname": "TftmonForecastCritical", "eval_time": "4m", "exp_alerts": []},
            {"alertname": "TftmonForecastCritical", "eval_time": "6m", "exp_alerts": [{
                "exp_labels": {**host, "severity": "critical"},
                "exp_annotations": {
                    "summary": "ppdb001 is forecast to reach a critical level soon",
                    "description": "tftmon forecasts ppdb001 (database) critical: risk 0.83. The metric, the reason "
                    "and the forecast bands are on tftmon's dashboard.",
                },
            }]},
            {"alertname": "TftmonForecastStale", "eval_time": "15m", "exp_alerts": []},  # over 15 min for 4 min
            {"alertname": "TftmonForecastStale", "eval_time": "16m", "exp_alerts": [{
                "exp_labels": {**host, "severity": "warning"},
                "exp_annotations": {
                    "summary": "tftmon's forecast of ppdb001 is 21m 0s old",
                    "description": "No new data for ppdb001: check its exporter and tftmon's source (GET /status on "
                    "the service shows the Prometheus pulls and the stale hosts).",
                },
            }]},
            {"alertname": "TftmonNoForecasts", "eval_time": "20m", "exp_alerts": []},
            {"alertname": "TftmonServiceDown", "eval_time": "20m", "exp_alerts": []},
        ],
    }  # fmt: skip
    tests = tmp_path / "tftmon.test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [case]}))
    checked = promtool("test", "rules", str(tests))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_config_with_the_scrape_snippet_passes_promtool(tmp_path: Path) -> None:
    snippet = yaml.safe_load(SCRAPE.read_text())
    forecasts = next(job for job in snippet["scrape_configs"] if job.get("metrics_path") == METRICS_PATH)
    assert forecasts["honor_labels"] is True
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1m"}, "rule_files": [str(RULES)], **snippet}))
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_reads_only_emitted_series_and_the_ingest_queries(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["definition"] == "label_values(tftmon_server_risk_ratio, instance)"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    targets = [t for p in panels for t in p["targets"]]
    used: set[str] = set()
    for target in targets:
        assert series_in(target["expr"]) <= emitted() | node_series(), target["expr"]
        assert set(re.findall(r"\$(\w+)", target["expr"])) <= set(variables), target["expr"]
        used |= series_in(target["expr"])
    assert {RISK, SEVERITY, STALE} <= used
    # Valid PromQL: promtool parses each query as a recording rule's, the variable replaced by a value.
    rules = [{"record": f"panel_query_{i}", "expr": t["expr"].replace("$instance", "ppdb001:9100")}
             for i, t in enumerate(targets)]  # fmt: skip
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(tmp_path / "queries.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {p["datasource"]["uid"] for p in panels} == {"${datasource}"}
    # The actual on each forecast panel is ingest's query, at the model step, for the chosen instance.
    actuals = [t["expr"] for t in targets if t.get("legendFormat") == "actual"]
    unfiltered = [a.replace('{instance="$instance",', "{").replace('{instance="$instance"}', "") for a in actuals]
    rendered = {m: q.render(WINDOW) for m, q in DEFAULT_QUERIES.items()}
    assert all(any(q in a for q in rendered.values()) for a in unfiltered), unfiltered
    assert {m for m, q in rendered.items() if any(q in a for a in unfiltered)} >= {CPU_IDLE, MEM_USED, DISK_USAGE}
    for panel in panels:  # the band fills between two series the panel draws
        names = {t.get("legendFormat") for t in panel["targets"]}
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "custom.fillBelowTo":
                    assert {override["matcher"]["options"], prop["value"]} <= names
    risk = next(p for p in panels if p["title"].startswith("Risk"))
    steps = risk["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps][1:] == [b.lower for b in SEVERITY_BANDS[1:]]


def test_docs_name_every_series_and_the_count() -> None:
    docs = (ROOT / "docs/PROMETHEUS.md").read_text()
    assert all(name in docs for name in emitted())
    assert f"{series_per_server()} series per server" in docs
