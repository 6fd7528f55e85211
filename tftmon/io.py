"""Everything that touches the disk for datasets: atomic writes and one way to read a dataset.

A crash must never leave a half-written file or dataset behind, so every writer goes through a temp
path in the same directory and an atomic rename. A temp name carries its writer's pid, so the next
writer of the same target can tell a killed writer's debris (swept) from a live one's work (kept).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import string
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow.parquet as pq

METADATA_FILE = "metrics_metadata.json"
MAPPING_FILE = "server_mapping.json"
#: What a saved model knows of its training (servers, targets, calibration), next to its weights.
TRAINING_INFO_FILE = "training_info.json"
METRICS_FILE = "metrics.parquet"
METRICS_DIR = "metrics"


class DatasetError(ValueError):
    """A dataset path that cannot be read as contract Parquet; the message says why and what to do."""


#: A temp entry whose name carries no pid (written by tftmon <= 0.4) counts as debris once untouched this long.
STALE_TEMP_SECONDS = 24 * 3600
#: Where training keeps Lightning checkpoints (under the system temp directory), see `owned_temp_dir`.
CHECKPOINT_PREFIX = "tftmon-ckpt-"
#: Suffixes of an atomic writer's temp entries: the one being written, and a replaced target about to go.
TEMP_SUFFIX = ".tmp"
OLD_SUFFIX = f"{TEMP_SUFFIX}.old"
#: The random part of a temp name is 8 of these, as tempfile draws them (and `stale_temps` matches them).
TEMP_NAME_CHARACTERS = string.ascii_lowercase + string.digits + "_"
#: What `_new_temp`'s maker returns: nothing for a directory, a file descriptor for a file.
_Made = TypeVar("_Made")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (another user's process counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owned(prefix: str) -> str:
    """`prefix` + this process's pid + '.': the start of a temp name that says who owns it."""
    return f"{prefix}{os.getpid()}."


def stale_temps(directory: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Entries of `directory` named `prefix<pid>.<random><suffix>` whose pid is gone, and `prefix<random><suffix>`
    (no pid: an older writer) untouched for STALE_TEMP_SECONDS. A live writer's temp is never listed."""
    pattern = re.compile(rf"{re.escape(prefix)}(?:(\d+)\.)?[a-z0-9_]{{8}}{re.escape(suffix)}")
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None:
                continue
            if match[1] is not None:
                stale = not pid_alive(int(match[1]))
            else:
                try:
                    stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
                except FileNotFoundError:  # removed meanwhile
                    stale = False
            if stale:
                found.append(Path(entry.path))
    return sorted(found)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def sweep_stale_temps(directory: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove what `stale_temps` lists (the debris of killed writers); returns the paths removed."""
    stale = stale_temps(directory, prefix, suffix)
    for path in stale:
        _remove(path)
    return stale


def owned_temp_dir(prefix: str, parent: Path | None = None) -> Path:
    """A new temp directory `prefix<pid>.<random>` (default under the system temp directory), after sweeping
    the stale ones of the same prefix: e.g. training checkpoints (CHECKPOINT_PREFIX) a killed run left."""
    parent = Path(parent or tempfile.gettempdir())
    sweep_stale_temps(parent, prefix)
    return Path(tempfile.mkdtemp(prefix=_owned(prefix), dir=parent))


def _name_the_target(exc: BaseException, path: Path) -> None:
    """An OSError raised without a path (a full disk in a write) names the target, so the error can say where."""
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = str(path)


def _open_new(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so readers see the old content or the new, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path.parent, f".{path.name}.", TEMP_SUFFIX)
    tmp, fd = _new_temp(path.parent, _owned(f".{path.name}."), TEMP_SUFFIX, _open_new)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _name_the_target(exc, path)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def _sweep_directory_debris(final: Path) -> None:
    """Remove killed writers' temp directories of `final`. A replaced target left by a writer killed between
    its two renames is put back when `final` is missing (the old content is complete; the new may not be)."""
    prefix = f".{final.name}."
    sweep_stale_temps(final.parent, prefix, TEMP_SUFFIX)
    for old in stale_temps(final.parent, prefix, OLD_SUFFIX):
        if final.exists():
            _remove(old)
        else:
            os.replace(old, final)


def _new_temp(parent: Path, prefix: str, suffix: str, create: Callable[[Path], _Made]) -> tuple[Path, _Made]:
    """A new `prefix<8 random>suffix` in `parent` made by `create` (which fails if it exists) as mkdir and open
    make one, 0777 / 0666 less the umask: it becomes the output itself, which tempfile's 0700 / 0600 would hide
    from every other user."""
    draw = random.SystemRandom()
    for _ in range(tempfile.TMP_MAX):
        path = parent / f"{prefix}{''.join(draw.choices(TEMP_NAME_CHARACTERS, k=8))}{suffix}"
        try:
            return path, create(path)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temp name found", str(parent / prefix))


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temp directory beside `final`; on success it replaces `final` in one rename.

    On any error the temp directory is removed and an existing `final` is left untouched; what a killed
    writer of the same `final` left behind is swept first.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_directory_debris(final)
    tmp, _ = _new_temp(final.parent, _owned(f".{final.name}."), TEMP_SUFFIX, Path.mkdir)
    try:
        yield tmp
        if final.exists():
            old = tmp.with_name(tmp.name.removesuffix(TEMP_SUFFIX) + OLD_SUFFIX)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _name_the_target(exc, final)
        raise


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a dataset: a single file, or a directory (day partitions included)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory; run `tftmon generate --out {path}` first")
    if path.is_file():
        return [path]
    # Skip hidden entries (temp files of an interrupted writer) below the dataset root.
    files = sorted(
        p for p in path.rglob("*.parquet") if not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise DatasetError(f"{path}: no .parquet files found; point at a dataset written by `tftmon generate`")
    return files


def read_metrics(path: Path, columns: list[str] | None = None, categories: list[str] | None = None) -> pd.DataFrame:
    """Read a dataset (file or directory) into one DataFrame, with a clear error for non-Parquet input.

    `categories` names string columns to read as pandas categoricals: several times faster for
    readers that only compare values (validation), at the cost of the contract's plain `str` dtype.
    """
    frames = []
    for file in parquet_files(path):
        try:
            frames.append(pq.read_table(file, columns=columns, read_dictionary=categories).to_pandas())
        except Exception as exc:  # pyarrow raises several types for corrupt or foreign files
            raise DatasetError(f"{file}: not a readable Parquet file ({exc}); write data as Parquet") from exc
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def dataset_fingerprint(path: Path, frame: pd.DataFrame) -> dict[str, str | int]:
    """What a model was trained on: a hash of the dataset's Parquet bytes, rows, servers and time span."""
    from tftmon.contract import SERVER_NAME, TIMESTAMP

    digest = hashlib.sha256()
    for file in parquet_files(path):
        _hash_file(digest, file)
    return {
        "data_sha256": digest.hexdigest()[:16],
        "data_rows": len(frame),
        "data_servers": int(frame[SERVER_NAME].nunique()),
        "data_start": str(frame[TIMESTAMP].min()),
        "data_end": str(frame[TIMESTAMP].max()),
    }


def _hash_file(digest: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(partial(fh.read, 1 << 20), b""):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in chunks: e.g. a model's weights, to know them again."""
    digest = hashlib.sha256()
    _hash_file(digest, Path(path))
    return digest.hexdigest()
