"""Writing a simulated dataset: Parquet files (one, or one per UTC day), metadata and server mapping,
all inside an atomic directory so a crash never leaves a partial dataset behind."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from tftmon.config import SimulationConfig
from tftmon.contract import COLUMNS, CONTRACT_VERSION, SERVER_NAME, STATES, TIMESTAMP
from tftmon.data.simulate.episodes import DAY
from tftmon.data.simulate.signals import Block, Cursor, FleetSimulator
from tftmon.encoding import ServerMapping
from tftmon.io import MAPPING_FILE, METADATA_FILE, METRICS_DIR, METRICS_FILE, atomic_directory, write_json_atomic

#: A dataset larger than this (or longer than a day) is partitioned by day.
SINGLE_FILE_MAX_ROWS = 2_000_000
#: Rows per Parquet row group, each a chunk of servers simulated by its own stream: bounds memory whatever
#: the fleet size (two are in memory: one being written, one being simulated), and a day of the default
#: fleet makes two, so writing the first overlaps simulating the second even in a one-file dataset.
ROWS_PER_CHUNK = 1_000_000
#: Rounded floats, counts and strings take few distinct values per row group, so dictionary encoding
#: makes files 2.4x smaller than plain + snappy and costs less to write; on top of it compression would
#: cost more than the ~5 % it saves. Timestamps step evenly: delta encoding stores them in almost nothing.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "none",
    "use_dictionary": [c.name for c in COLUMNS if c.name != TIMESTAMP],
    "column_encoding": {TIMESTAMP: "DELTA_BINARY_PACKED"},
    "write_statistics": [TIMESTAMP, SERVER_NAME],
    "store_schema": False,
}


def _units(sim: FleetSimulator) -> list[tuple[str | None, int, int]]:
    """(date label or None for a single file, first tick, end tick) of each output file."""
    n = sim.n_ticks or 0
    if n * len(sim.fleet) <= SINGLE_FILE_MAX_ROWS and n * sim.interval_s <= DAY:
        return [(None, 0, n)]
    units: list[tuple[str | None, int, int]] = []
    first = pd.Timestamp(sim.start_ns, tz="UTC").normalize()
    lo = 0
    while lo < n:
        day = first + pd.Timedelta(days=len(units))
        next_ns = (day + pd.Timedelta(days=1)).value
        hi = min(n, max(lo, -(-(next_ns - sim.start_ns) // sim.interval_ns)))
        units.append((day.strftime("%Y-%m-%d"), lo, hi))
        lo = hi
    return [u for u in units if u[2] > u[1]]


class _ParquetSink:
    """Writes row groups on a worker thread (pyarrow releases the GIL), so writing one overlaps simulating
    the next. At most one table waits: once `write` returns, the tables before the last are written and
    the memory they viewed may be refilled."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet")
        self._pending: Future[None] | None = None
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None

    def write(self, path: Path, table: pa.Table) -> None:
        """Append `table` to the file `path` as one row group (a new path closes the previous file)."""
        if self._pending is not None:
            self._pending.result()  # re-raises a failed write here
        self._pending = self._pool.submit(self._write, path, table)

    def _write(self, path: Path, table: pa.Table) -> None:
        if path != self._path:
            self._close()
            self._writer = pq.ParquetWriter(path, table.schema, **PARQUET_OPTIONS)
            self._path = path
        assert self._writer is not None
        self._writer.write_table(table, row_group_size=table.num_rows)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> _ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._pending is not None and exc[0] is None:
                self._pending.result()
        finally:
            self._pool.shutdown(wait=True)
            self._close()


def write_dataset(config: SimulationConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Simulate `config` into `out` atomically: Parquet, metrics_metadata.json and server_mapping.json.

    Files: one `metrics.parquet` when the period is at most a day and SINGLE_FILE_MAX_ROWS rows, else
    `metrics/date=YYYY-MM-DD/part-0.parquet` per UTC day. Row groups are chunks of servers (about
    ROWS_PER_CHUNK rows), rows ordered by (server_name, timestamp)."""
    sim = FleetSimulator(config)
    if sim.n_ticks is None:
        raise ValueError("write_dataset needs a finite period (hours)")
    if sim.n_ticks == 0:
        raise ValueError(f"{config.hours} h is shorter than one {config.interval} interval")
    units = _units(sim)
    longest = max(b - a for _, a, b in units)
    per_chunk = min(len(sim.fleet), max(1, ROWS_PER_CHUNK // longest))
    chunks = [range(i, min(i + per_chunk, len(sim.fleet))) for i in range(0, len(sim.fleet), per_chunk)]
    cursors = [Cursor(sim.stream(np.arange(c.start, c.stop))) for c in chunks]
    # Row groups are simulated into these in turn, so memory is reused rather than page-faulted in anew.
    buffers = [Block.empty(per_chunk, longest) for _ in range(2)]
    counts = np.zeros(len(STATES), dtype=np.int64)
    files: list[str] = []
    out = Path(out)
    with (
        tqdm(
            total=sim.n_ticks * len(sim.fleet), unit="row", unit_scale=True, disable=not progress, desc="simulate"
        ) as bar,
        atomic_directory(out) as tmp,
    ):
        with _ParquetSink() as sink:
            for label, a, b in units:
                rel = Path(METRICS_FILE) if label is None else Path(METRICS_DIR) / f"date={label}" / "part-0.parquet"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                for chunk, cursor in zip(chunks, cursors, strict=True):
                    block = cursor.read(buffers[0].reshaped(len(chunk), b - a))
                    buffers.reverse()
                    sink.write(tmp / rel, sim.table(block, chunk.start))
                    counts += np.bincount(block.state.ravel(), minlength=len(STATES))
                    bar.update(block.state.size)
                files.append(rel.as_posix())
        ServerMapping.from_names(s.name for s in sim.fleet).save(tmp / MAPPING_FILE)
        metadata = _metadata(sim, files, counts)
        write_json_atomic(tmp / METADATA_FILE, metadata)
    return metadata


def _metadata(sim: FleetSimulator, files: list[str], counts: np.ndarray) -> dict[str, Any]:
    cfg = sim.config
    start = datetime.fromtimestamp(sim.start_ns / 1e9, tz=UTC)
    n = sim.n_ticks or 0
    return {
        "contract_version": CONTRACT_VERSION,
        "generator": "tftmon.data.simulate",
        "seed": cfg.seed,
        "interval_seconds": sim.interval_s,
        "start": start.isoformat(),
        "end": (start + timedelta(seconds=(n - 1) * sim.interval_s)).isoformat(),
        "ticks": n,
        "rows": int(counts.sum()),
        "config": cfg.model_dump(mode="json"),
        "fleet": [
            {"server_name": s.name, "server_id": s.id, "profile": s.profile, "problem_child": s.problem_child}
            for s in sim.fleet
        ],
        "state_counts": {state: int(c) for state, c in zip(STATES, counts, strict=True)},
        "files": files,
    }
