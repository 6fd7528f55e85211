"""An ingested dataset on disk, laid out as the simulator writes one (tftmon.data.simulate.sink): contract
Parquet (one file, or one per UTC day when large), server_mapping.json and metrics_metadata.json, all in an
atomic directory so a failed ingest never leaves half a dataset where a good one was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tftmon.contract import CONTRACT_VERSION, MODEL_STEP, PROFILE, SERVER_ID, SERVER_NAME, TIMESTAMP
from tftmon.data.ingest.tidy import Tidy
from tftmon.data.simulate.sink import PARQUET_OPTIONS, SINGLE_FILE_MAX_ROWS
from tftmon.encoding import ServerMapping
from tftmon.io import MAPPING_FILE, METADATA_FILE, METRICS_DIR, METRICS_FILE, atomic_directory, write_json_atomic

GENERATOR = "tftmon.data.ingest"


def _write_parquet(frame: pd.DataFrame, tmp: Path) -> list[str]:
    """One metrics.parquet, or metrics/date=YYYY-MM-DD/part-0.parquet per UTC day past SINGLE_FILE_MAX_ROWS."""
    if len(frame) <= SINGLE_FILE_MAX_ROWS:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp / METRICS_FILE, **PARQUET_OPTIONS)
        return [METRICS_FILE]
    files = []
    for day, part in frame.groupby(frame[TIMESTAMP].dt.floor("D"), sort=True):
        rel = Path(METRICS_DIR) / f"date={pd.Timestamp(day):%Y-%m-%d}" / "part-0.parquet"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), tmp / rel, **PARQUET_OPTIONS)
        files.append(rel.as_posix())
    return files


def write_dataset(tidy: Tidy, out: Path, provenance: dict[str, Any]) -> dict[str, Any]:
    """Write the dataset to `out` (replaced atomically) and return its metadata: `provenance` (source, mapping,
    config), the fleet with each profile's origin, and the ingest report."""
    frame = tidy.frame
    fleet = frame.drop_duplicates(SERVER_NAME)[[SERVER_NAME, SERVER_ID, PROFILE]]
    with atomic_directory(Path(out)) as tmp:
        files = _write_parquet(frame, tmp)
        ServerMapping.from_names(fleet[SERVER_NAME]).save(tmp / MAPPING_FILE)
        metadata = {
            "contract_version": CONTRACT_VERSION,
            "generator": GENERATOR,
            **provenance,
            "interval_seconds": int(MODEL_STEP.total_seconds()),
            "start": frame[TIMESTAMP].min().isoformat() if len(frame) else None,
            "end": frame[TIMESTAMP].max().isoformat() if len(frame) else None,
            "rows": len(frame),
            "metrics": tidy.report["metrics"],
            "fleet": [
                {"server_name": name, "server_id": sid, "profile": profile, "profile_from": tidy.profile_sources[name]}
                for name, sid, profile in fleet.itertuples(index=False)
            ],
            "ingest": tidy.report,
            "files": files,
        }
        write_json_atomic(tmp / METADATA_FILE, metadata)
    return metadata
