"""Everything that touches the disk for datasets: atomic writes and one way to read a dataset.

A crash must never leave a half-written file or dataset behind, so every writer goes through a temp
path in the same directory and an atomic rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

METADATA_FILE = "metrics_metadata.json"
MAPPING_FILE = "server_mapping.json"
METRICS_FILE = "metrics.parquet"
METRICS_DIR = "metrics"


class DatasetError(ValueError):
    """A dataset path that cannot be read as contract Parquet; the message says why and what to do."""


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so readers see the old content or the new, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temp directory beside `final`; on success it replaces `final` in one rename.

    On any error the temp directory is removed and an existing `final` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
        with open(file, "rb") as fh:
            for chunk in iter(partial(fh.read, 1 << 20), b""):
                digest.update(chunk)
    return {
        "data_sha256": digest.hexdigest()[:16],
        "data_rows": len(frame),
        "data_servers": int(frame[SERVER_NAME].nunique()),
        "data_start": str(frame[TIMESTAMP].min()),
        "data_end": str(frame[TIMESTAMP].max()),
    }
