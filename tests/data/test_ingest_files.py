"""`tftmon ingest` for files: long, wide and per-series CSV / Parquet into contract datasets, every fix-up
(conversion, duplicate, interpolated gap, split series, left-out field) reported, every bad input refused
with an error that names the field and the fix. Inputs are tiny files written by each test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tftmon.cli import main
from tftmon.config import IngestConfig
from tftmon.contract import (
    COLUMNS_BY_NAME,
    MODEL_STEP,
    PROFILE,
    SERVER_ID,
    SERVER_NAME,
    TIMESTAMP,
)
from tftmon.data.ingest import (
    IngestError,
    Mapping,
    MappingError,
    Samples,
    ingest_files,
    ingest_samples,
    load_mapping,
)
from tftmon.data.ingest.units import UNITS
from tftmon.encoding import ServerMapping, server_id
from tftmon.io import MAPPING_FILE, METADATA_FILE, read_json, read_metrics

START = pd.Timestamp("2026-01-05", tz="UTC")
ISO_Z = "%Y-%m-%dT%H:%M:%SZ"


STEP = pd.Timedelta(MODEL_STEP)


def _times(steps: int, every: pd.Timedelta = STEP) -> pd.DatetimeIndex:
    return pd.date_range(START, periods=steps, freq=every)


def _long_csv(path: Path, servers: list[str], metrics: dict[str, float], steps: int = 24) -> pd.DataFrame:
    """A long CSV (timestamp with Z, server, metric, value): each metric's value plus the step number."""
    rows = [
        (t.strftime(ISO_Z), server, metric, base + i)
        for server in servers
        for i, t in enumerate(_times(steps))
        for metric, base in metrics.items()
    ]
    frame = pd.DataFrame(rows, columns=["timestamp", "server", "metric", "value"])
    frame.to_csv(path, index=False)
    return frame


def _ingest(source: Path, tmp_path: Path, mapping: Mapping | None = None, **config: Any) -> tuple[pd.DataFrame, dict]:
    out = tmp_path / "out"
    metadata = ingest_files(source, mapping or Mapping(), IngestConfig(**config), out, progress=False)
    return read_metrics(out), metadata


def _assert_contract_shaped(frame: pd.DataFrame, metrics: list[str]) -> None:
    assert list(frame.columns) == [TIMESTAMP, SERVER_NAME, SERVER_ID, PROFILE, *metrics]
    for name in frame.columns:
        assert str(frame[name].dtype) == COLUMNS_BY_NAME[name].pandas_dtype, name
    assert (frame[SERVER_ID] == frame[SERVER_NAME].map(server_id)).all()
    assert (frame[TIMESTAMP].dt.minute % 5 == 0).all() and (frame[TIMESTAMP].dt.second == 0).all()
    assert not frame.duplicated([SERVER_NAME, TIMESTAMP]).any()


def test_a_long_file_with_contract_names_needs_no_mapping(tmp_path: Path) -> None:
    _long_csv(tmp_path / "m.csv", ["ppweb001", "PPDB002"], {"cpu_user_pct": 10.0, "mem_used_pct": 40.0})
    frame, metadata = _ingest(tmp_path / "m.csv", tmp_path)
    _assert_contract_shaped(frame, ["cpu_user_pct", "mem_used_pct"])
    assert len(frame) == 48 and sorted(frame[SERVER_NAME].unique()) == ["ppdb002", "ppweb001"]
    assert dict(zip(frame[SERVER_NAME], frame[PROFILE], strict=True)) == {"ppdb002": "database", "ppweb001": "web_api"}
    assert metadata["ingest"]["source_interval_seconds"] == 300
    saved = read_json(tmp_path / "out" / METADATA_FILE)
    assert saved["generator"] == "tftmon.data.ingest" and saved["source"]["format"] == "long"
    assert {f["profile_from"] for f in saved["fleet"]} == {"hostname"}
    assert ServerMapping.load(tmp_path / "out" / MAPPING_FILE).id_of("ppweb001") == server_id("ppweb001")


def test_short_gaps_are_interpolated_and_long_ones_split_the_series(tmp_path: Path) -> None:
    frame = _long_csv(tmp_path / "full.csv", ["ppweb001"], {"cpu_user_pct": 10.0, "mem_used_pct": 40.0}, steps=40)
    step = frame["timestamp"].map(lambda t: (pd.Timestamp(t) - START) // pd.Timedelta(MODEL_STEP))
    short = (step == 5) | (step == 6)  # 10 min missing: within the 15-min default
    long = step.between(20, 27)  # 40 min missing: splits
    memory_only = (step == 12) & (frame["metric"] == "mem_used_pct")  # one metric missing one step
    frame[~(short | long | memory_only)].to_csv(tmp_path / "gaps.csv", index=False)

    out, metadata = _ingest(tmp_path / "gaps.csv", tmp_path)
    report = metadata["ingest"]
    assert len(out) == 40 - 8
    by_step = out.set_index(out[TIMESTAMP].sub(START) // pd.Timedelta(MODEL_STEP))
    assert by_step.loc[5, "cpu_user_pct"] == pytest.approx(15.0) and by_step.loc[6, "mem_used_pct"] == pytest.approx(46)
    assert by_step.loc[12, "mem_used_pct"] == pytest.approx(52.0)
    assert report["interpolated"]["by_server"] == {"ppweb001": {"cpu_user_pct": 2, "mem_used_pct": 3}}
    assert [s["steps"] for s in report["segments"]["ppweb001"]] == [20, 12]
    assert report["segments"]["ppweb001"][1]["start"] == (START + 28 * MODEL_STEP).isoformat()

    none, metadata = _ingest(tmp_path / "gaps.csv", tmp_path, max_gap="0min")
    assert len(none) == 40 - 8 - 2 - 1
    assert metadata["ingest"]["dropped"]["by_server"] == {"ppweb001": {"mem_used_pct": 1}}
    assert [s["steps"] for s in metadata["ingest"]["segments"]["ppweb001"]] == [5, 5, 7, 12]


@pytest.mark.parametrize(("rule", "expected"), [("last", 99.0), ("mean", (10.0 + 99.0) / 2)])
def test_duplicates_are_resolved_by_the_stated_rule_and_counted(tmp_path: Path, rule: str, expected: float) -> None:
    frame = _long_csv(tmp_path / "m.csv", ["ppweb001"], {"cpu_user_pct": 10.0}, steps=4)
    pd.concat([frame, frame.iloc[[0]].assign(value=99.0)]).to_csv(tmp_path / "dup.csv", index=False)
    out, metadata = _ingest(tmp_path / "dup.csv", tmp_path, duplicates=rule)
    assert len(out) == 4 and out["cpu_user_pct"].iloc[0] == pytest.approx(expected)
    assert metadata["ingest"]["duplicates"] == {"rule": rule, "values": 1, "by_metric": {"cpu_user_pct": 1}}


def test_duplicates_can_be_refused(tmp_path: Path) -> None:
    frame = _long_csv(tmp_path / "m.csv", ["ppweb001"], {"cpu_user_pct": 10.0}, steps=4)
    pd.concat([frame, frame.iloc[[0]]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(IngestError, match=r"1 duplicate samples .* ppweb001 cpu_user_pct at 2026-01-05T00:00:00"):
        _ingest(tmp_path / "dup.csv", tmp_path, duplicates="error")


def test_a_wide_file_is_converted_by_the_mapping(tmp_path: Path) -> None:
    times = _times(12, pd.Timedelta(minutes=1)).tz_convert("Europe/Berlin").tz_localize(None)  # naive local time
    n = len(times)
    pd.DataFrame(
        {
            "time": times.strftime("%Y-%m-%d %H:%M:%S"),
            "host": ["db-1"] * n,
            "role": ["database"] * n,
            "cpu_busy": np.full(n, 0.25),  # fraction -> percent
            "rx_bytes": np.full(n, 2_500_000.0),  # bytes/s -> MB/s
            "boot_seconds": np.arange(n) * 60 + 3 * 86_400 + 100,  # seconds -> whole days
            "packets": np.ones(n),  # not mapped: left out, reported
        }
    ).to_csv(tmp_path / "wide.csv", index=False)
    (tmp_path / "map.yaml").write_text(
        "timezone: Europe/Berlin\n"
        "fields: {timestamp: time, server: host, profile: role}\n"
        "metrics:\n"
        "  cpu_busy: {column: cpu_user_pct, unit: fraction}\n"
        "  rx_bytes: {column: net_in_mb_s, unit: bytes/s}\n"
        "  boot_seconds: {column: uptime_days, unit: seconds}\n"
    )
    out, metadata = _ingest(tmp_path / "wide.csv", tmp_path, load_mapping(tmp_path / "map.yaml"))
    _assert_contract_shaped(out, ["cpu_user_pct", "net_in_mb_s", "uptime_days"])
    assert out[TIMESTAMP].tolist() == [START, START + MODEL_STEP, START + 2 * MODEL_STEP]  # 1-min -> 5-min, UTC
    assert out["cpu_user_pct"].tolist() == [25.0] * 3 and out["net_in_mb_s"].tolist() == [2.5] * 3
    assert out["uptime_days"].tolist() == [3, 3, 3] and (out[PROFILE] == "database").all()
    assert metadata["ingest"]["left_out"] == {"unmapped column packets": n}
    assert metadata["ingest"]["source_interval_seconds"] == 60
    assert metadata["mapping"]["metrics"]["rx_bytes"] == {"column": "net_in_mb_s", "unit": "bytes/s"}
    assert metadata["fleet"][0]["profile_from"] == "field"


def _cloudwatch_export(directory: Path, servers: int = 8, steps: int = 36) -> None:
    """CloudWatch-style: one `timestamp,value` CSV per EC2 instance, 5-min, ISO 8601 with Z, CPU percent."""
    directory.mkdir()
    rng = np.random.default_rng(0)
    for k in range(servers):
        times = _times(steps)
        values = np.clip(20 + 10 * np.sin(np.arange(steps) / 6 + k) + rng.normal(0, 2, steps), 0, 100)
        keep = np.ones(steps, dtype=bool)
        keep[k + 3] = False  # each export misses one sample
        pd.DataFrame({"Timestamp": times.strftime(ISO_Z)[keep], "Value": values[keep]}).to_csv(
            directory / f"i-0abc{k:04d}.csv", index=False
        )


def test_a_cloudwatch_per_series_export_ingests_and_validates(tmp_path: Path) -> None:
    _cloudwatch_export(tmp_path / "export")
    (tmp_path / "cloudwatch.yaml").write_text(
        "fields: {timestamp: Timestamp, value: Value}\n"
        "series: {pattern: '{server}', metric: CPUUtilization}\n"
        "metrics:\n"
        "  CPUUtilization: {column: cpu_user_pct, unit: percent}\n"
        "profiles: {i-0abc0000: web_api}\n"
    )
    out, metadata = _ingest(tmp_path / "export", tmp_path, load_mapping(tmp_path / "cloudwatch.yaml"))
    _assert_contract_shaped(out, ["cpu_user_pct"])
    assert out[SERVER_NAME].nunique() == 8 and len(out) == 8 * 36
    assert metadata["ingest"]["interpolated"]["steps"] == 8
    assert metadata["source"]["format"] == "series" and len(metadata["source"]["files"]) == 8
    assert out.groupby(SERVER_NAME)[PROFILE].first().to_dict()["i-0abc0000"] == "web_api"
    assert set(out.loc[out[SERVER_NAME] != "i-0abc0000", PROFILE]) == {"generic"}

    from tftmon.data.validate import validate_path

    report = validate_path(tmp_path / "out", suite="telemetry", strict=True)
    assert report.success, report.to_text()


def test_per_series_files_named_by_server_and_metric(tmp_path: Path) -> None:
    (tmp_path / "series").mkdir()
    for server in ("ppml0001", "ppml0002"):
        for metric in ("cpu_iowait_pct", "load_average"):
            times = _times(6)
            pd.DataFrame({"timestamp": times.strftime(ISO_Z), "value": np.arange(6.0)}).to_parquet(
                tmp_path / "series" / f"{server}_{metric}.parquet"
            )
    out, _ = _ingest(tmp_path / "series" / "*.parquet", tmp_path)
    assert sorted(out.columns[4:]) == ["cpu_iowait_pct", "load_average"] and len(out) == 12
    assert set(out[PROFILE]) == {"ml_compute"}


def test_a_parquet_long_file_at_10s_is_resampled_by_the_contract_rule(tmp_path: Path) -> None:
    times = _times(60, pd.Timedelta(seconds=10))  # 10 minutes of 10-s samples
    frame = pd.concat(
        [
            pd.DataFrame(
                {"timestamp": times, "server": "ppweb001", "metric": "cpu_user_pct", "value": np.arange(60.0)}
            ),
            pd.DataFrame(
                {"timestamp": times, "server": "ppweb001", "metric": "back_close_wait", "value": np.arange(60.0)}
            ),
        ]
    )
    frame.to_parquet(tmp_path / "long.parquet")
    out, _ = _ingest(tmp_path / "long.parquet", tmp_path)
    assert out["cpu_user_pct"].tolist() == [14.5, 44.5]  # mean of each 5-min bin
    assert out["back_close_wait"].tolist() == [29, 59] and str(out["back_close_wait"].dtype) == "int64"  # max


def test_samples_from_elsewhere_take_the_same_path(tmp_path: Path) -> None:
    """What prometheus.query_prometheus returns (plain columns, contract names and units) goes through the
    pipeline files use, its source description recorded."""
    times = _times(6)
    long = pd.DataFrame(
        {
            "timestamp": times.append(times),
            "server": ["ppetl001"] * 12,
            "metric": ["swap_used_pct"] * 6 + ["uptime_days"] * 6,
            "value": [1.0] * 6 + [2.0] * 6,
        }
    )
    out = tmp_path / "out"
    source = {"kind": "prometheus", "url": "http://127.0.0.1:9090"}
    metadata = ingest_samples(Samples(long, source=source), Mapping(), IngestConfig(), out)
    frame = read_metrics(out)
    _assert_contract_shaped(frame, ["swap_used_pct", "uptime_days"])
    assert frame["uptime_days"].tolist() == [2] * 6 and metadata["source"] == source


# ---------------------------------------------------------------------------------------------
# Refused input: one clear error naming the field, the rule and the fix
# ---------------------------------------------------------------------------------------------


def _mapping_refused(tmp_path: Path, text: str) -> str:
    """The MappingError message loading a mapping file of `text` gives."""
    (tmp_path / "map.yaml").write_text(text)
    with pytest.raises(MappingError) as caught:
        load_mapping(tmp_path / "map.yaml")
    return str(caught.value)


def test_an_unknown_mapping_field_is_named_with_the_valid_ones(tmp_path: Path) -> None:
    message = _mapping_refused(tmp_path, "timezone: UTC\nmetric: {CPU: cpu_user_pct}\n")
    assert "unknown field metric (did you mean metrics?) in Mapping" in message
    assert "valid fields: format, fields, timezone, metrics," in message and "\n" not in message


def test_a_unit_that_does_not_fit_the_column_is_refused(tmp_path: Path) -> None:
    message = _mapping_refused(tmp_path, "metrics:\n  NetworkIn: {column: cpu_user_pct, unit: bytes/s}\n")
    assert "metrics.NetworkIn: Value error, unit 'bytes/s' converts to MB/s, but cpu_user_pct is in %" in message
    assert "cpu_user_pct accepts: %, percent, fraction, percent_complement, fraction_complement" in message


def test_an_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown time zone 'Mars/Olympus'; use an IANA name"):
        Mapping(timezone="Mars/Olympus")


def test_naive_timestamps_need_a_zone(tmp_path: Path) -> None:
    pd.DataFrame(
        {"timestamp": ["2026-01-05 00:00:00"], "server": ["a"], "metric": ["cpu_user_pct"], "value": [1.0]}
    ).to_csv(tmp_path / "naive.csv", index=False)
    with pytest.raises(IngestError, match=r"naive.csv: timestamps have no time zone .* or with --timezone"):
        _ingest(tmp_path / "naive.csv", tmp_path)
    out, _ = _ingest(tmp_path / "naive.csv", tmp_path, Mapping(timezone="America/New_York"))
    assert out[TIMESTAMP].tolist() == [START + pd.Timedelta(hours=5)]


def test_a_local_time_repeated_by_daylight_saving_is_refused(tmp_path: Path) -> None:
    pd.DataFrame(
        {"timestamp": ["2026-10-25 02:30:00"], "server": ["a"], "metric": ["cpu_user_pct"], "value": [1.0]}
    ).to_csv(tmp_path / "dst.csv", index=False)
    with pytest.raises(IngestError, match=r"dst.csv: a local time is repeated or skipped .* in Europe/Berlin"):
        _ingest(tmp_path / "dst.csv", tmp_path, Mapping(timezone="Europe/Berlin"))


def test_timestamps_mixing_zoned_and_naive_are_refused(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "timestamp": ["2026-01-05T00:00:00Z", "2026-01-05T00:05:00"],
            "server": "a",
            "metric": "mem_used_pct",
            "value": 1,
        }
    ).to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(IngestError, match=r"mix values with a zone .* write every one with an offset or Z"):
        _ingest(tmp_path / "mixed.csv", tmp_path)


def test_a_deprecated_metric_name_names_its_replacement(tmp_path: Path) -> None:
    _long_csv(tmp_path / "old.csv", ["a"], {"mem_pct": 1.0}, steps=2)
    with pytest.raises(
        MappingError, match=r"column mem_pct is deprecated since contract 2\.0: replace it with mem_used"
    ):
        _ingest(tmp_path / "old.csv", tmp_path)


def test_a_file_not_matching_the_series_pattern_is_named(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    pd.DataFrame({"timestamp": ["2026-01-05T00:00:00Z"], "value": [1.0]}).to_csv(
        tmp_path / "s" / "cpu.csv", index=False
    )
    with pytest.raises(
        IngestError, match=r"cpu.csv: its name 'cpu' does not match the series pattern '\{server\}_\{metric\}'"
    ):
        _ingest(tmp_path / "s", tmp_path)


def test_the_docs_name_every_unit() -> None:
    text = (ROOT / "docs" / "INGEST.md").read_text()
    assert [name for name in UNITS if f"`{name}`" not in text] == []


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def test_the_command_ingests_a_long_csv_and_prints_what_it_did(tmp_path: Path) -> None:
    frame = _long_csv(tmp_path / "metrics.csv", ["ppweb001"], {"cpu_user_pct": 10.0}, steps=12)
    frame.drop(index=[3]).to_csv(tmp_path / "metrics.csv", index=False)
    out = tmp_path / "data" / "mine"
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "metrics.csv"), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"wrote 12 rows of 1 servers x 1 metrics (cpu_user_pct) from 11 samples to {out}" in result.output
    assert "interpolated: 1 steps (gaps up to 15min) on 1 servers: ppweb001" in result.output
    assert json.loads((out / METADATA_FILE).read_text())["config"]["max_gap"] == "PT15M"


def test_the_command_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    _long_csv(tmp_path / "metrics.csv", ["ppweb001"], {"cpu_user_pct": 10.0}, steps=2)
    runner = CliRunner()
    bad_rule = runner.invoke(main, ["ingest", str(tmp_path / "metrics.csv"), "--duplicates", "first"])
    assert (
        bad_rule.exit_code == 2
        and "invalid IngestConfig: duplicates: Input should be 'last', 'mean'" in bad_rule.output
    )
    both = runner.invoke(main, ["ingest", str(tmp_path / "metrics.csv"), "--prometheus", "http://127.0.0.1:9090"])
    assert both.exit_code == 2 and "give either SOURCE (files) or --prometheus URL" in both.output
    missing = runner.invoke(main, ["ingest", str(tmp_path / "nothing.csv"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "nothing.csv: no such file, directory or matching files" in missing.output
    assert "Traceback" not in missing.output and not (tmp_path / "o").exists()
