"""Reading telemetry files (CSV or Parquet; long, wide or one file per series) into long samples.

Every reader ends in the same long frame (contract.LONG_COLUMNS: UTC timestamps, hostname, contract metric,
value in the contract's unit) that Prometheus also yields, so one pipeline (tidy.py) handles both. Whatever a
reader leaves out (an unmapped column or metric, an empty value) is counted in `Samples.left_out`.
"""

from __future__ import annotations

import codecs
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from tftmon.config import IngestFormat
from tftmon.contract import METRIC, METRICS, PROFILE, SERVER, SERVER_NAME, TIMESTAMP, VALUE, to_utc
from tftmon.data.ingest.mapping import Mapping

#: File types ingest reads, by suffix (compressed CSV is read as CSV).
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")
#: A server field named neither in the mapping nor `server` is looked for under these names, in order.
SERVER_FIELDS = (SERVER, SERVER_NAME)
#: The profile field used when the mapping names none and the file has it.
PROFILE_FIELD = PROFILE
_ZONED = re.compile(r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)\s*$")
#: Arrow reads a CSV in blocks of this many bytes; a line longer than one may not fit (and is a broken export).
CSV_BLOCK_BYTES = 1 << 20
#: How much of a CSV (decompressed) is looked at to tell text from binary before Arrow parses it.
TEXT_SNIFF_BYTES = 64 << 10
#: Control characters no CSV text holds (tab, line feed, vertical tab, form feed and carriage return are text).
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
#: The most characters of a parser's message repeated in an error (it may quote a whole row).
QUOTED_CHARS = 300


class IngestError(ValueError):
    """Input that cannot be ingested as it is; the message names the file or field, the rule and the fix."""


@dataclass
class Samples:
    """Long samples (contract.LONG_COLUMNS) with the profile a source gave each server, if any."""

    long: pd.DataFrame
    #: One row per (server, profile) pair a profile field gave; None when the source has no profile field.
    profiles: pd.DataFrame | None = None
    #: What the source was: kind, format, files, rows read (recorded in metrics_metadata.json).
    source: dict[str, Any] = field(default_factory=dict)
    #: Counts of what was left out and why, e.g. {"unmapped column NetworkPacketsIn": 8640}.
    left_out: dict[str, int] = field(default_factory=dict)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in (*CSV_SUFFIXES, *PARQUET_SUFFIXES) if name.endswith(s)), "")


def _glob_base(pattern: str) -> Path:
    """The directory a glob searches below: its leading path parts that hold no wildcard."""
    fixed: list[str] = []
    for part in Path(pattern).parts[:-1]:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def find_files(source: str | Path) -> tuple[Path, list[Path]]:
    """The data files of SOURCE (a file, a directory searched recursively, or a glob) and the directory their
    relative paths start from (what a per-series pattern is matched against)."""
    text = str(source)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True))
        base = _glob_base(text)
    elif Path(text).is_dir():
        base = Path(text)
        files = sorted(
            p
            for p in base.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
        )
    elif Path(text).is_file():
        base, files = Path(text).parent, [Path(text)]
    else:
        raise IngestError(f"{text}: no such file, directory or matching files; check the path")
    data = [p for p in files if _suffix(p)]
    if not data:
        kinds = ", ".join((*CSV_SUFFIXES, *PARQUET_SUFFIXES))
        raise IngestError(f"{text}: no data files found; ingest reads {kinds}")
    return base, data


def printable(text: str, limit: int = QUOTED_CHARS) -> str:
    """`text` safe to print: control and other unprintable characters escaped, cut to `limit` characters."""
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[: limit + 1])
    return shown if len(shown) <= limit else f"{shown[:limit]}..."


def _not_text(head: bytes) -> str | None:
    """Why a file starting with `head` is not UTF-8 text (the first bad byte and its offset), or None."""
    found: list[tuple[int, str]] = []
    if (control := _CONTROL.search(head)) is not None:
        found.append((control.start(), "a control character"))
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # not final: a character cut at the end is fine
    except UnicodeDecodeError as exc:
        found.append((exc.start, "not UTF-8"))
    if not found:
        return None
    offset, what = min(found)
    return f"byte 0x{head[offset]:02x} at offset {offset} is {what}"


def _check_text(path: Path) -> None:
    """Refuse a CSV that is not text (a binary file, or UTF-16) before Arrow quotes its bytes in an error."""
    with pa.input_stream(str(path), compression="detect") as stream:
        head = stream.read(TEXT_SNIFF_BYTES)
    reason = _not_text(head)
    if reason is not None:
        raise IngestError(
            f"{path}: not a text file ({reason}): binary data, or text in another encoding such as UTF-16; "
            "ingest reads CSV as UTF-8 text: export it as UTF-8 CSV, or name a Parquet file .parquet"
        )


def _overlong_line(path: Path) -> int | None:
    """The number (from 1) of the first line longer than CSV_BLOCK_BYTES, or None; read in blocks and stopped
    there, so a line of a gigabyte costs one block past the limit."""
    number, length = 1, 0
    with pa.input_stream(str(path), compression="detect") as stream:
        while block := stream.read(CSV_BLOCK_BYTES):
            start = 0
            while (end := block.find(b"\n", start)) >= 0:
                if length + end - start > CSV_BLOCK_BYTES:
                    return number
                number, length, start = number + 1, 0, end + 1
            length += len(block) - start
            if length > CSV_BLOCK_BYTES:
                return number
    return None


def read_table(path: Path) -> pa.Table:
    """A CSV or Parquet file as an Arrow table (CSV timestamps are parsed by Arrow: ISO 8601, with or without
    an offset; a column mixing the two stays text and is sorted out by `utc_timestamps`). Errors name the file
    and never print its raw bytes."""
    suffix = _suffix(path)
    try:
        if suffix in PARQUET_SUFFIXES:
            return pq.read_table(path)
        _check_text(path)
        return pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES))
    except (pa.ArrowInvalid, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        # Arrow's own words for a line past its block ("straddling object ...") name neither line nor fix.
        if isinstance(exc, pa.ArrowInvalid) and suffix in CSV_SUFFIXES and (line := _overlong_line(path)):
            raise IngestError(
                f"{path}: line {line} is over {CSV_BLOCK_BYTES >> 20} MiB long, more than a CSV line may hold (lines "
                "are read in blocks of that size); a line this long is a broken export (line breaks lost, or a blob "
                "in a field): end each row with a line break, or leave the field out"
            ) from None
        raise IngestError(f"{path}: not readable as {suffix[1:]} ({printable(str(exc))})") from None


def utc_timestamps(column: pa.ChunkedArray, timezone: str | None, where: str) -> pd.Series:
    """Timestamps as UTC: with an offset or Z as given; naive ones in `timezone`, refused when it is None;
    numbers as Unix epoch seconds (UTC by definition)."""
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        seconds = column.to_numpy().astype(np.float64)
        return pd.Series(pd.to_datetime(np.round(seconds * 1e9).astype(np.int64), unit="ns", utc=True))
    if pa.types.is_timestamp(kind):
        values = column.to_pandas()
        zoned = kind.tz is not None
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = column.to_pandas()
        has_zone = text.str.contains(_ZONED)
        if has_zone.any() and not has_zone.all():
            naive, aware = text[~has_zone].iloc[0], text[has_zone].iloc[0]
            raise IngestError(
                f"{where}: timestamps mix values with a zone ({aware!r}) and without ({naive!r}); "
                "write every one with an offset or Z"
            )
        zoned = bool(has_zone.all())
        try:
            values = pd.to_datetime(text, format="ISO8601", utc=zoned)
        except (ValueError, TypeError) as exc:
            raise IngestError(
                f"{where}: timestamps are not ISO 8601 ({exc}); write e.g. 2026-01-05T10:00:00Z"
            ) from None
    else:
        raise IngestError(
            f"{where}: timestamps of type {kind} cannot be read; write ISO 8601 text, e.g. 2026-01-05T10:00:00Z"
        )
    if zoned:
        return to_utc(values)
    if timezone is None:
        example = values.iloc[0] if len(values) else ""
        raise IngestError(
            f"{where}: timestamps have no time zone (e.g. {example}); write them with an offset or Z, "
            "or name their zone in the mapping (timezone: Europe/Berlin) or with --timezone"
        )
    try:
        return values.dt.tz_localize(timezone, ambiguous="raise", nonexistent="raise").dt.tz_convert("UTC")
    except ValueError as exc:  # a local time repeated or skipped by a daylight-saving change
        raise IngestError(
            f"{where}: a local time is repeated or skipped by a daylight-saving change in {timezone} ({exc}); "
            "export timestamps with their offset or in UTC"
        ) from None


def _field(table: pa.Table, name: str, where: str, key: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise IngestError(
            f"{where}: no field {name!r} (fields: {', '.join(table.column_names)}); "
            f"name the right one in the mapping under fields: {key}:"
        )
    return table.column(name)


def _server_field(table: pa.Table, mapping: Mapping, where: str) -> str:
    if mapping.fields.server is not None:
        _field(table, mapping.fields.server, where, "server")
        return mapping.fields.server
    found = next((name for name in SERVER_FIELDS if name in table.column_names), None)
    if found is None:
        raise IngestError(
            f"{where}: no server field ({' or '.join(SERVER_FIELDS)}; fields: {', '.join(table.column_names)}); "
            "name it in the mapping under fields: server:"
        )
    return found


def _profile_field(table: pa.Table, mapping: Mapping, where: str) -> str | None:
    if mapping.fields.profile is not None:
        _field(table, mapping.fields.profile, where, "profile")
        return mapping.fields.profile
    return PROFILE_FIELD if PROFILE_FIELD in table.column_names else None


def _numbers(column: pa.ChunkedArray, where: str) -> np.ndarray:
    try:
        return np.asarray(column.to_numpy(), dtype=np.float64)
    except (ValueError, TypeError):
        raise IngestError(f"{where}: values are not numbers (type {column.type}); write plain numbers") from None


def detect_format(table: pa.Table, mapping: Mapping) -> IngestFormat:
    """long when the file has the metric and value fields, series when it has only timestamp and value, else
    wide."""
    names = set(table.column_names)
    fields = mapping.fields
    if {fields.metric, fields.value} <= names:
        return "long"
    if names == {fields.timestamp, fields.value}:
        return "series"
    return "wide"


def _categorical(values: pa.ChunkedArray | np.ndarray | list[str], codes: np.ndarray | None = None) -> pd.Categorical:
    """Server or metric names as a categorical: a few distinct names over millions of rows."""
    if codes is not None:
        return pd.Categorical.from_codes(codes, categories=pd.Index(values, dtype=object))
    return pd.Categorical(values.to_pandas() if isinstance(values, pa.ChunkedArray) else values)


def _ns(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as plain datetime64[ns] (a tz-aware column's to_numpy() would make Timestamp objects)."""
    return ts.to_numpy(dtype="datetime64[ns]")


def _long_frame(ns: np.ndarray, server: pd.Categorical, metric: pd.Categorical, value: np.ndarray) -> pd.DataFrame:
    """The long samples; `ns` holds UTC times as datetime64[ns]."""
    return pd.DataFrame(
        {TIMESTAMP: pd.DatetimeIndex(ns).tz_localize("UTC"), SERVER: server, METRIC: metric, VALUE: value}
    )


def _read_long(table: pa.Table, mapping: Mapping, where: str, left_out: dict[str, int]) -> pd.DataFrame:
    fields = mapping.fields
    ts = utc_timestamps(_field(table, fields.timestamp, where, "timestamp"), mapping.timezone, where)
    server = _categorical(_field(table, _server_field(table, mapping, where), where, "server"))
    names = _field(table, fields.metric, where, "metric").dictionary_encode().combine_chunks()
    value = _numbers(_field(table, fields.value, where, "value"), f"{where}, field {fields.value}")
    source_codes = names.indices.to_numpy(zero_copy_only=False)
    source_names = names.dictionary.to_pylist()
    targets = [mapping.contract_metric(str(name)) for name in source_names]
    scale = np.array([t[1].scale if t else np.nan for t in targets])
    offset = np.array([t[1].offset if t else np.nan for t in targets])
    contract = [t[0] if t else "" for t in targets]
    known = np.array([t is not None for t in targets])
    counts = np.bincount(source_codes, minlength=len(source_names))
    for name, ok, count in zip(source_names, known, counts, strict=True):
        if not ok:
            left_out[f"unmapped metric {name}"] = left_out.get(f"unmapped metric {name}", 0) + int(count)
    keep = known[source_codes]
    columns = sorted({c for c in contract if c}, key=METRICS.index)
    metric_codes = np.array([columns.index(c) if c else -1 for c in contract], dtype=np.int64)[source_codes]
    value = value * scale[source_codes] + offset[source_codes]
    frame = _long_frame(_ns(ts), server, _categorical(columns, metric_codes), value)
    return frame[keep] if not keep.all() else frame


def _read_wide(table: pa.Table, mapping: Mapping, where: str, left_out: dict[str, int]) -> pd.DataFrame:
    ts = utc_timestamps(_field(table, mapping.fields.timestamp, where, "timestamp"), mapping.timezone, where)
    server_field = _server_field(table, mapping, where)
    identity = {mapping.fields.timestamp, server_field, _profile_field(table, mapping, where)}
    metrics: list[tuple[str, np.ndarray]] = []
    for name in table.column_names:
        if name in identity:
            continue
        target = mapping.contract_metric(name)
        if target is None:
            left_out[f"unmapped column {name}"] = left_out.get(f"unmapped column {name}", 0) + table.num_rows
            continue
        column, unit = target
        metrics.append((column, np.asarray(unit.convert(_numbers(table.column(name), f"{where}, column {name}")))))
    if not metrics:
        raise IngestError(
            f"{where}: no column is a contract metric or mapped to one (columns: {', '.join(table.column_names)}); "
            "map them in the mapping under metrics: (see docs/INGEST.md)"
        )
    metrics.sort(key=lambda item: METRICS.index(item[0]))
    n, k = table.num_rows, len(metrics)
    server_codes, server_names = pd.factorize(_field(table, server_field, where, "server").to_pandas())
    values = np.column_stack([v for _, v in metrics]).ravel()
    frame = _long_frame(
        np.repeat(_ns(ts), k),
        _categorical(list(server_names), np.repeat(server_codes, k)),
        _categorical([c for c, _ in metrics], np.tile(np.arange(k), n)),
        values,
    )
    return frame


def _series_key(path: Path, base: Path, mapping: Mapping) -> tuple[str, str]:
    """(server, source metric) of a per-series file, from the pattern on its path below `base`."""
    relative = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.name
    stem = relative[: -len(_suffix(path))]
    series = mapping.series
    match = series.regex().fullmatch(stem)
    if match is None:
        raise IngestError(
            f"{path}: its name {stem!r} does not match the series pattern {series.pattern!r}; name files like the "
            'pattern, or set series: pattern: in the mapping (e.g. "{server}" with series: metric:)'
        )
    groups = match.groupdict()
    return groups.get("server") or str(series.server), groups.get("metric") or str(series.metric)


def _read_series(
    table: pa.Table, path: Path, base: Path, mapping: Mapping, where: str, left_out: dict[str, int]
) -> pd.DataFrame:
    server, source_metric = _series_key(path, base, mapping)
    target = mapping.contract_metric(source_metric)
    if target is None:
        left_out[f"unmapped metric {source_metric}"] = left_out.get(f"unmapped metric {source_metric}", 0) + len(table)
        return _long_frame(np.array([], dtype="datetime64[ns]"), _categorical([]), _categorical([]), np.array([]))
    column, unit = target
    ts = utc_timestamps(_field(table, mapping.fields.timestamp, where, "timestamp"), mapping.timezone, where)
    value = np.asarray(unit.convert(_numbers(_field(table, mapping.fields.value, where, "value"), where)))
    n = len(value)
    return _long_frame(
        _ns(ts), _categorical([server], np.zeros(n, np.int64)), _categorical([column], np.zeros(n, np.int64)), value
    )


def _profile_pairs(table: pa.Table, mapping: Mapping, where: str) -> pd.DataFrame | None:
    name = _profile_field(table, mapping, where)
    if name is None:
        return None
    pairs = pa.table({SERVER: table.column(_server_field(table, mapping, where)), PROFILE: table.column(name)})
    return pairs.group_by([SERVER, PROFILE]).aggregate([]).to_pandas()


def read_files(
    source: str | Path, mapping: Mapping, file_format: IngestFormat = "auto", progress: bool = True
) -> Samples:
    """Every data file of SOURCE as long samples; the format is `file_format`, the mapping's, or detected."""
    base, files = find_files(source)
    wanted = file_format if file_format != "auto" else mapping.format
    frames: list[pd.DataFrame] = []
    pairs: list[pd.DataFrame] = []
    left_out: dict[str, int] = {}
    formats: set[str] = set()
    rows = 0
    for path in tqdm(files, desc="read", unit="file", disable=not progress or len(files) < 2):
        table = read_table(path)
        rows += table.num_rows
        kind = wanted if wanted != "auto" else detect_format(table, mapping)
        formats.add(kind)
        where = str(path)
        if kind == "series":
            frames.append(_read_series(table, path, base, mapping, where, left_out))
            continue
        frames.append((_read_long if kind == "long" else _read_wide)(table, mapping, where, left_out))
        if (found := _profile_pairs(table, mapping, where)) is not None:
            pairs.append(found)
    if len(formats) > 1:
        raise IngestError(
            f"{source}: files come in different formats ({', '.join(sorted(formats))}); ingest one kind at a time"
        )
    long = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    for col in (SERVER, METRIC):  # concatenated categoricals of different categories become objects
        if not isinstance(long[col].dtype, pd.CategoricalDtype):
            long[col] = long[col].astype("category")
    return Samples(
        long=long,
        profiles=pd.concat(pairs, ignore_index=True) if pairs else None,
        source={
            "kind": "files",
            "source": str(source),
            "format": formats.pop(),
            "files": [str(p) for p in files],
            "rows_read": rows,
        },
        left_out=left_out,
    )
