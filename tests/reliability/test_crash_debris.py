"""Crashes leave nothing behind (issue 9, defect 10): a writer killed with SIGKILL leaves its hidden temp
directory, and the next writer of the same target sweeps it; a live writer's temp is never touched; a
full disk or another OS error ends the CLI in one line naming the path and the fix."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tftmon.config import SimulationConfig
from tftmon.data.simulate import write_dataset
from tftmon.io import (
    CHECKPOINT_PREFIX,
    METADATA_FILE,
    STALE_TEMP_SECONDS,
    atomic_directory,
    owned_temp_dir,
    read_json,
    write_bytes_atomic,
)

TINY = SimulationConfig(servers=3, hours=2)


def _tftmon(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tftmon.cli", *args],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _debris(directory: Path, name: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}."))


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_killed_generate_leaves_a_temp_dir_that_the_next_generate_sweeps(tmp_path: Path) -> None:
    big = ("--servers", "1000", "--hours", "720")  # 8.6 M rows: killed long before it is done
    process = _tftmon("generate", *big, "--no-progress", "--out", "fleet", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not _debris(tmp_path, "fleet") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    left = _debris(tmp_path, "fleet")
    assert process.returncode == -signal.SIGKILL and len(left) == 1 and left[0].endswith(".tmp"), left

    write_dataset(TINY, tmp_path / "fleet", progress=False)
    assert _debris(tmp_path, "fleet") == []
    assert read_json(tmp_path / "fleet" / METADATA_FILE)["rows"] == 72


def test_a_live_writers_temp_is_kept_and_a_dead_ones_swept(tmp_path: Path) -> None:
    live = tmp_path / f".fleet.{os.getpid()}.abcdefgh.tmp"  # another writer in this very process
    dead = tmp_path / f".fleet.{_dead_pid()}.abcdefgh.tmp"
    other = tmp_path / f".fleet.1.{_dead_pid()}.abcdefgh.tmp"  # a temp of target `fleet.1`, not ours
    for path in (live, dead, other):
        path.mkdir()
    write_dataset(TINY, tmp_path / "fleet", progress=False)
    assert live.is_dir() and other.is_dir() and not dead.exists()


def test_an_older_writers_temp_without_a_pid_goes_only_once_stale(tmp_path: Path) -> None:
    fresh, old = tmp_path / ".out.json.abcdefgh.tmp", tmp_path / ".out.json.ijklmnop.tmp"
    fresh.write_text("{")
    old.write_text("{")
    long_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    write_bytes_atomic(tmp_path / "out.json", b"{}")
    assert fresh.exists() and not old.exists()
    assert (tmp_path / "out.json").read_bytes() == b"{}"


def test_a_writer_killed_between_its_two_renames_gets_the_old_dataset_back(tmp_path: Path) -> None:
    final = tmp_path / "fleet"
    write_dataset(TINY, final, progress=False)
    pid = _dead_pid()
    # What a writer killed after moving the old dataset aside, before moving its new one in, leaves.
    shutil.copytree(final, tmp_path / f".fleet.{pid}.abcdefgh.tmp")
    final.rename(tmp_path / f".fleet.{pid}.abcdefgh.tmp.old")
    with pytest.raises(RuntimeError, match="crash"), atomic_directory(final):
        raise RuntimeError("crash")
    assert read_json(final / METADATA_FILE)["rows"] == 72
    assert _debris(tmp_path, "fleet") == []


def test_checkpoint_dirs_of_killed_trainings_are_swept(tmp_path: Path) -> None:
    live = tmp_path / f"{CHECKPOINT_PREFIX}{os.getpid()}.abcdefgh"
    dead = tmp_path / f"{CHECKPOINT_PREFIX}{_dead_pid()}.abcdefgh"
    old = tmp_path / f"{CHECKPOINT_PREFIX}ijklmnop"  # named before checkpoint dirs carried a pid
    for path in (live, dead, old):
        path.mkdir()
    long_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    made = owned_temp_dir(CHECKPOINT_PREFIX, parent=tmp_path)
    assert made.name.startswith(f"{CHECKPOINT_PREFIX}{os.getpid()}.") and made.is_dir()
    assert live.is_dir() and not dead.exists() and not old.exists()


def _one_line_error(process: subprocess.Popen[str]) -> str:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return lines[0]


def test_a_full_disk_ends_generate_in_one_line_naming_the_path_and_the_fix(tmp_path: Path) -> None:
    """A real full disk: a 1 MiB tmpfs in a private mount namespace (needs unprivileged user namespaces)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        shutil.which("unshare") is None
        or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "mount", "-t", "tmpfs", "none", str(disk)],
            capture_output=True,
        ).returncode
    ):
        pytest.skip("cannot mount a small tmpfs here (unshare with user namespaces is unavailable)")
    script = (
        f"mount -t tmpfs -o size=1m none {disk} && exec {sys.executable} -m tftmon.cli generate --servers 50 "
        f"--hours 72 --no-progress --out {disk / 'fleet'}"
    )
    process = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    line = _one_line_error(process)
    assert f"{disk / 'fleet'}:" in line and "No space left on device" in line and "free space" in line


def test_another_os_error_is_one_line_too(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "fleet"
    line = _one_line_error(_tftmon("generate", "--no-progress", "--out", str(out), cwd=tmp_path))
    assert f"Error: {tmp_path / 'a-file'}: File exists; check that path" in line
