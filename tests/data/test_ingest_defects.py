"""Ingest and generate defects of issue 31: a unit mix in a percentage column (10), a CSV line too long for the
reader and a binary file named .csv (12), output directories that ignored the umask (11e); and the suite on a
machine without Chromium (14)."""

from __future__ import annotations

import gzip
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tftmon.cli import main
from tftmon.config import IngestConfig, SimulationConfig
from tftmon.contract import PERCENT_METRICS, SERVER_NAME, TIMESTAMP
from tftmon.data.ingest import IngestError, Mapping, ingest_files
from tftmon.data.ingest.files import CSV_BLOCK_BYTES
from tftmon.data.simulate import simulate
from tftmon.io import METADATA_FILE, read_json

START = pd.Timestamp("2026-01-05", tz="UTC")
#: Raw samples a minute apart, as an exporter writes them.
SAMPLES = 600


def _memory_csv(path: Path, fraction_every: int | None) -> None:
    """A long CSV of mem_used_pct around 50 % for two servers, a minute apart; on ppweb001 every
    `fraction_every`-th sample is written as a fraction of 1 (0.507 beside 50.665), as a merged export is."""
    rng = np.random.default_rng(7)
    times = pd.date_range(START, periods=SAMPLES, freq="1min").strftime("%Y-%m-%dT%H:%M:%SZ")
    frames = []
    for server in ("ppweb001", "ppdb002"):
        value = 50 + rng.normal(0, 2, SAMPLES)
        if server == "ppweb001" and fraction_every:
            value[::fraction_every] /= 100
        frames.append(pd.DataFrame({"timestamp": times, "server": server, "metric": "mem_used_pct", "value": value}))
    pd.concat(frames).to_csv(path, index=False)


def _ingest(runner: CliRunner, source: Path, out: Path, *options: str) -> tuple[int, str]:
    result = runner.invoke(main, ["ingest", str(source), "--out", str(out), "--no-progress", *options])
    return result.exit_code, result.output


# ---------------------------------------------------------------------------------------------
# 10: a percentage column on two scales
# ---------------------------------------------------------------------------------------------


def test_a_percentage_mixed_with_fractions_is_warned_of_and_refused_under_strict(tmp_path: Path) -> None:
    _memory_csv(tmp_path / "mixed.csv", fraction_every=2)
    runner = CliRunner()
    code, output = _ingest(runner, tmp_path / "mixed.csv", tmp_path / "warned")
    assert code == 0, output
    assert re.search(
        r"warning: mem_used_pct looks like two scales on 1 servers \(ppweb001\): on ppweb001, 300 "
        r"samples near 0\.(49|50)\d* and 300 near (49|50)\.\d+, 100 times apart",
        output,
    ), output
    assert "map the source that sends fractions of 1 with unit: fraction" in output
    report = read_json(tmp_path / "warned" / METADATA_FILE)["ingest"]["unit_mix"]
    assert list(report) == ["mem_used_pct"] and list(report["mem_used_pct"]) == ["ppweb001"]
    assert report["mem_used_pct"]["ppweb001"]["percent_like"] == 300

    code, output = _ingest(runner, tmp_path / "mixed.csv", tmp_path / "refused", "--strict")
    assert code == 1 and "mem_used_pct looks like two scales" in output and "refused by --strict" in output
    assert "Traceback" not in output and not (tmp_path / "refused").exists()


def test_a_block_of_fractions_after_an_exporter_change_is_found(tmp_path: Path) -> None:
    """Not only alternating samples: the first sixth of a server's history in fractions is a second scale too."""
    _memory_csv(tmp_path / "mixed.csv", fraction_every=None)
    frame = pd.read_csv(tmp_path / "mixed.csv")
    frame.loc[frame.index[: SAMPLES // 6], "value"] /= 100
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(IngestError, match=r"mem_used_pct looks like two scales on 1 servers \(ppweb001\)"):
        ingest_files(tmp_path / "mixed.csv", Mapping(), IngestConfig(), tmp_path / "out", progress=False, strict=True)


@pytest.mark.parametrize("scenario", ["healthy", "critical"])
def test_one_scale_is_never_taken_for_two(tmp_path: Path, scenario: str) -> None:
    """Every percentage of a simulated fleet (idle iowait near 0, swap and disk ramps, incidents) passes --strict,
    and a plain file warns of nothing."""
    frame = simulate(SimulationConfig(servers=24, hours=48, interval="1min", scenario=scenario, seed=4))
    metrics = [m for m in PERCENT_METRICS if m in frame.columns]
    frame[[TIMESTAMP, SERVER_NAME, *metrics]].to_parquet(tmp_path / "fleet.parquet")
    metadata = ingest_files(
        tmp_path / "fleet.parquet", Mapping(), IngestConfig(), tmp_path / "out", progress=False, strict=True
    )
    assert metadata["ingest"]["unit_mix"] == {}
    _memory_csv(tmp_path / "plain.csv", fraction_every=None)
    code, output = _ingest(CliRunner(), tmp_path / "plain.csv", tmp_path / "plain")
    assert code == 0 and "warning" not in output, output


# ---------------------------------------------------------------------------------------------
# 12: error text that names the line and never echoes raw bytes
# ---------------------------------------------------------------------------------------------


def test_a_line_longer_than_the_reader_takes_is_named_with_a_fix(tmp_path: Path) -> None:
    _memory_csv(tmp_path / "long.csv", fraction_every=None)
    lines = (tmp_path / "long.csv").read_text().splitlines()
    lines[4] += "9" * (3 * CSV_BLOCK_BYTES)  # a value whose line breaks were lost (the was a gigabyte)
    (tmp_path / "long.csv").write_text("\n".join(lines) + "\n")
    with gzip.open(tmp_path / "long.csv.gz", "wt") as packed:
        packed.write((tmp_path / "long.csv").read_text())
    for source in (tmp_path / "long.csv", tmp_path / "long.csv.gz"):
        code, output = _ingest(CliRunner(), source, tmp_path / "out")
        assert code == 1, output
        assert f"{source}: line 5 is over 1 MiB long" in output and "end each row with a line break" in output
        assert "straddl" not in output and len(output) < 500


def test_a_binary_file_is_said_to_be_no_text_and_none_of_it_is_echoed(tmp_path: Path) -> None:
    binary = bytes(range(256)) * 64 + b"\x00,\x00\n" * 100
    (tmp_path / "export.csv").write_bytes(binary)
    (tmp_path / "utf16.csv").write_text("timestamp,server,metric,value\n", encoding="utf-16")
    for name, reason in (("export.csv", "byte 0x00 at offset 0"), ("utf16.csv", "byte 0xff at offset 0 is not UTF-8")):
        code, output = _ingest(CliRunner(), tmp_path / name, tmp_path / "out")
        assert code == 1
        assert f"{name}: not a text file ({reason}" in output and "export it as UTF-8 CSV" in output
        assert all(ch.isprintable() or ch == "\n" for ch in output), repr(output)


def test_a_parser_error_deep_in_a_text_file_is_quoted_escaped_and_short(tmp_path: Path) -> None:
    """Past the part looked at for binary data, Arrow may quote a broken row: escaped, and cut short."""
    _memory_csv(tmp_path / "broken.csv", fraction_every=None)
    with (tmp_path / "broken.csv").open("a") as fh:
        fh.write("2026-01-06T00:00:00Z,ppweb001,\x1b[31m" + "x" * 1000 + ",1,2,3\n")
    code, output = _ingest(CliRunner(), tmp_path / "broken.csv", tmp_path / "out")
    assert code == 1 and "broken.csv: not readable as csv (CSV parse error" in output
    assert "\x1b" not in output and "\\x1b[31m" in output and len(output) < 600


# ---------------------------------------------------------------------------------------------
# 11 (e): output directories as mkdir makes them
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_generate_and_ingest_create_their_directory_as_the_umask_says(tmp_path: Path, umask: int) -> None:
    runner = CliRunner()
    generated = runner.invoke(
        main, ["generate", "--servers", "2", "--hours", "1", "--out", str(tmp_path / "fleet"), "--no-progress"]
    )
    assert generated.exit_code == 0, generated.output
    _memory_csv(tmp_path / "m.csv", fraction_every=None)
    code, output = _ingest(runner, tmp_path / "m.csv", tmp_path / "ingested")
    assert code == 0, output
    for out in (tmp_path / "fleet", tmp_path / "ingested"):
        assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask, out
    files = [f for f in (tmp_path / "ingested").iterdir() if f.is_file()]  # written atomically one by one too
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask for f in files), files
    # Written again (the replace path) the same; and nothing of the temp directory is left beside it.
    assert _ingest(runner, tmp_path / "m.csv", tmp_path / "ingested")[0] == 0
    assert stat.S_IMODE((tmp_path / "ingested").stat().st_mode) == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet", "ingested", "m.csv"]


# ---------------------------------------------------------------------------------------------
# 14: the browser tests on a machine without Chromium
# ---------------------------------------------------------------------------------------------


def _plan_browser_tests(ci: bool) -> str:
    """pytest's setup plan of the browser tests (nothing started) on a PATH that holds only the venv, so neither
    chromium nor chromedriver is found; with or without CI=true."""
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PATH": str(Path(sys.executable).parent)}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-ra", "--setup-plan"]
    result = subprocess.run(
        [*command, "tests/dashboard/test_browser.py"],
        cwd=ROOT,
        env=env | ({"CI": "true"} if ci else {}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.stdout + result.stderr


def test_without_chromium_the_browser_tests_skip_in_one_line_naming_the_packages_but_fail_in_ci() -> None:
    local = _plan_browser_tests(ci=False)
    skipped = [line for line in local.splitlines() if line.startswith("SKIPPED")]
    assert skipped == [
        "SKIPPED [2] tests/dashboard/test_browser.py: chromium, chromedriver not installed: apt-get install chromium "
        "chromium-driver (`make test` installs them when it runs as root on Debian, as .ci/run does)"
    ], local
    assert "2 skipped" in local and "SETUP    S stack" not in local, local
    in_ci = _plan_browser_tests(ci=True)
    assert "SKIPPED" not in in_ci and "SETUP    M browser" in in_ci, in_ci
