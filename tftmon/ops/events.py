"""Retraining events: one JSON line each in an append-only log, and a tag on the active (parent) MLflow run.

The log is what cron, an operator or `tftmon monitor` reads back (when did the last retrain start, since
when has drift been pending); the tags put the same story on the retrain's run in the MLflow UI. Each
line is appended with one `write` on an O_APPEND descriptor, then fsync'd: concurrent writers interleave
whole lines, and a crash loses at most the line being written, never an earlier one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import mlflow

Event = Literal[
    "drift_detected",
    "retrain_started",
    "stale_lock",
    "collected",
    "validated",
    "trained",
    "evaluated",
    "promoted",
    "reloaded",
    "verified",
    "rolled_back",
    "failed",
]
#: Parent-run tag of an event: `tftmon.event.<event>`; its value is the event's JSON line.
TAG_PREFIX = "tftmon.event."
#: MLflow keeps tag values up to this many characters.
MAX_TAG_CHARS = 5000


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to `path` with a single write, flushed to disk before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class EventLog:
    """Events written to `path` and tagged on run `run_id` (a retrain's parent run, whichever child step is
    active when they happen); without a run id, on the run active then, if any."""

    def __init__(self, path: Path, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id

    def emit(self, event: Event, **detail: Any) -> dict[str, Any]:
        """Record `event` now; returns the record written."""
        active = mlflow.active_run()
        run_id = self.run_id or (None if active is None else active.info.run_id)
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "pid": os.getpid(),
            "run_id": run_id,
            **detail,
        }
        append_line(self.path, record)
        if run_id is not None:
            tag = json.dumps(record, default=str)[:MAX_TAG_CHARS]
            mlflow.MlflowClient().set_tag(run_id, f"{TAG_PREFIX}{event}", tag)
        return record

    def read(self) -> Iterator[dict[str, Any]]:
        """Every record so far, oldest first; a torn last line (a crash mid-write) is skipped."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return
        for line in text.splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue
