"""The ingest job: a source (files, or Prometheus samples) -> tidy -> dataset, and the summary it prints.

Files and Prometheus meet in `ingest_samples`, so both take exactly the same path from long samples on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tftmon.config import IngestConfig
from tftmon.data.ingest.files import IngestError, Samples, read_files
from tftmon.data.ingest.mapping import Mapping
from tftmon.data.ingest.output import write_dataset
from tftmon.data.ingest.tidy import tidy

#: How many servers the summary names per fix-up before it says "and N more".
SUMMARY_NAMES = 5


def unit_mix_text(unit_mix: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One line per percentage metric whose samples look like two scales: the servers, the two groups, the fix."""
    lines = []
    for metric, servers in unit_mix.items():
        first, groups = next(iter(servers.items()))
        lines.append(
            f"{metric} looks like two scales on {len(servers)} servers ({_names(sorted(servers))}): on {first}, "
            f"{groups['fraction_like']:,} samples near {groups['fraction_median']:g} and {groups['percent_like']:,} "
            f"near {groups['percent_median']:g}, 100 times apart; a percentage is in percent (0-100) throughout: "
            "export it so, or map the source that sends fractions of 1 with unit: fraction (docs/INGEST.md)"
        )
    return lines


def ingest_samples(
    samples: Samples, mapping: Mapping, config: IngestConfig, out: Path, progress: bool = True, strict: bool = False
) -> dict[str, Any]:
    """Tidy long samples into a contract dataset at `out`; returns its metadata (report included). `strict`
    refuses a percentage column that looks like two scales (a warning in the summary otherwise), before
    anything is written."""
    started = time.perf_counter()
    provenance = {
        "source": samples.source,
        "mapping": mapping.model_dump(mode="json", exclude_defaults=True),
        "config": config.model_dump(mode="json"),
    }
    with tqdm(total=2, desc="ingest", unit="stage", disable=not progress) as bar:
        bar.set_postfix_str("tidy")
        result = tidy(samples, mapping, config)
        if strict and result.report["unit_mix"]:
            raise IngestError("; ".join(unit_mix_text(result.report["unit_mix"])) + " (refused by --strict)")
        bar.update()
        bar.set_postfix_str("write")
        metadata = write_dataset(result, out, provenance)
        bar.update()
    metadata["ingest"]["seconds"] = round(time.perf_counter() - started, 3)
    return metadata


def ingest_files(
    source: str | Path, mapping: Mapping, config: IngestConfig, out: Path, progress: bool = True, strict: bool = False
) -> dict[str, Any]:
    """Read SOURCE (file, directory or glob; long, wide or per-series) and write the contract dataset at `out`."""
    samples = read_files(source, mapping, config.format, progress=progress)
    return ingest_samples(samples, mapping, config, out, progress=progress, strict=strict)


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:SUMMARY_NAMES])
    return shown + (f" and {len(items) - SUMMARY_NAMES} more" if len(items) > SUMMARY_NAMES else "")


def summary(metadata: dict[str, Any], out: Path) -> str:
    """What ingest did, in a few lines: kept, merged, filled, dropped, split and left out."""
    report = metadata["ingest"]
    lines = [
        f"wrote {report['rows']:,} rows of {report['servers']} servers x {len(report['metrics'])} metrics "
        f"({', '.join(report['metrics'])}) from {report['samples_read']:,} samples to {out}"
    ]
    if report["source_interval_seconds"]:
        lines.append(f"  source interval: {report['source_interval_seconds']:g} s, resampled to 5-min steps")
    dup = report["duplicates"]
    if dup["values"]:
        lines.append(f"  duplicates: {dup['values']:,} samples merged (rule: {dup['rule']})")
    filled = report["interpolated"]
    if filled["steps"]:
        lines.append(
            f"  interpolated: {filled['steps']:,} steps (gaps up to {filled['max_gap']}) on "
            f"{len(filled['by_server'])} servers: {_names(sorted(filled['by_server']))}"
        )
    dropped = report["dropped"]
    if dropped["rows"]:
        lines.append(
            f"  dropped: {dropped['rows']:,} steps ({dropped['reason']}): {_names(sorted(dropped['by_server']))}"
        )
    split = sorted(name for name, parts in report["segments"].items() if len(parts) > 1)
    if split:
        lines.append(f"  split at gaps longer than {filled['max_gap']}: {len(split)} servers: {_names(split)}")
    if report["servers_without_rows"]:
        lines.append(f"  servers with no complete step, left out: {_names(report['servers_without_rows'])}")
    for reason, count in sorted(report["left_out"].items()):
        lines.append(f"  left out: {count:,} values ({reason})")
    for metric, count in report["out_of_range"].items():
        lines.append(
            f"  warning: {count:,} values of {metric} outside the contract's range (validate will refuse them)"
        )
    for line in unit_mix_text(report["unit_mix"]):
        lines.append(f"  warning: {line} (tftmon ingest --strict refuses it)")
    lines.append(f"  details: {out}/metrics_metadata.json; next: tftmon validate {out}")
    return "\n".join(lines)
