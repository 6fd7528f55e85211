"""A lock file so one job (a retrain) never runs twice at once, and a crash never blocks it for good.

The lock is a small JSON file (pid, host, start time) created with O_CREAT|O_EXCL: of two processes that
try at once, exactly one creates it. A second caller is refused at once with the holder's name, never made
to wait. A lock whose process is gone (a killed retrain; `tftmon.io.pid_alive`, on this host) is stale: it
is reported and taken over. A lock from another host cannot be judged from here and is never taken over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from tftmon.io import pid_alive

log = logging.getLogger(__name__)

#: A lock file without a readable holder is a writer caught between creating and writing it (a moment), or
#: the debris of one killed there: the latter once it is this old.
UNREADABLE_STALE_SECONDS = 60.0


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it and what to do."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: enough to tell whether it still can finish, and to name it to a refused caller."""

    pid: int
    host: str
    started_at: str

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), datetime.now(UTC).isoformat(timespec="seconds"))

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}, started {self.started_at}"

    def gone(self) -> bool:
        """True only when it is known to be gone: a process of this host that no longer exists."""
        return self.host == socket.gethostname() and not pid_alive(self.pid)


@dataclass(frozen=True)
class Grant:
    """The lock, held: who we are, and the stale holder we took it over from, in words (None: it was free)."""

    path: Path
    holder: Holder
    replaced: str | None


def _read(path: Path) -> Holder | None:
    """The holder written in a lock file; None when it has none readable (or the file went meanwhile)."""
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _create(path: Path, holder: Holder) -> bool:
    """Create the lock file holding `holder` atomically; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps(asdict(holder)).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _take_over(path: Path, stale: Holder | None) -> None:
    """Move a stale lock aside, atomically; if what moved is not the stale lock (another process took it over
    and locked meanwhile), put that one back and refuse."""
    aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another process moved it first; the next create decides
        return
    moved = _read(aside)
    if moved != stale and moved is not None and not moved.gone():
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink()
        raise LockHeld(_held_text(path, moved))
    aside.unlink()


def _held_text(path: Path, holder: Holder | None) -> str:
    who = holder.describe() if holder is not None else "a process that has not written its name yet"
    fix = (
        f"wait for it to finish; if that process is gone (on {holder.host}), remove {path}"
        if holder is not None
        else "run again in a moment"
    )
    return f"a retrain is already running: {who} holds the lock {path}; {fix}"


def _stale(path: Path, holder: Holder | None) -> bool:
    if holder is not None:
        return holder.gone()
    try:
        return time.time() - path.stat().st_mtime > UNREADABLE_STALE_SECONDS
    except FileNotFoundError:
        return True


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[Grant]:
    """Hold the lock at `path` for the block; LockHeld at once when a live process holds it. A stale lock is
    logged as a warning, taken over and named in the grant (so the caller can record it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = Holder.me()
    replaced: str | None = None
    for _ in range(3):  # free, or stale then free; a third try only after a lost take-over race
        if _create(path, me):
            break
        holder = _read(path)
        if not _stale(path, holder):
            raise LockHeld(_held_text(path, holder))
        who = holder.describe() if holder is not None else "an unknown process (no holder written)"
        log.warning("stale lock %s of %s, which is gone: taking it over", path, who)
        _take_over(path, holder)
        replaced = f"{who}, gone"
    else:
        raise LockHeld(_held_text(path, _read(path)))
    try:
        yield Grant(path, me, replaced)
    finally:
        if _read(path) == me:
            path.unlink()
