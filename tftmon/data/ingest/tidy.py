"""Long samples into a contract frame: duplicates, the model step, gaps and profiles, each fix-up counted.

The order matters and is fixed: duplicates are resolved on the raw samples (by IngestConfig.duplicates),
samples are pivoted to one row per server and timestamp, binned to the model step by THE resampling function
(tftmon.data.resample), then each server's steps are laid on a regular grid: a metric missing for at most
IngestConfig.max_gap is interpolated linearly between its neighbours, and a step still missing a metric is
left out, which splits that server's series into segments. Nothing is dropped without a count in the report.
Before binning, a percentage column whose raw samples look like two scales (fractions of 1 among percentages, which
a step's mean would blur into plausible values) is reported per server (`unit_mix`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from tftmon.config import DuplicateRule, IngestConfig
from tftmon.contract import (
    COLUMNS_BY_NAME,
    METRIC,
    METRICS,
    PERCENT_METRICS,
    PROFILE,
    PROFILE_FIX,
    PROFILE_NAMES,
    PROFILE_RULE,
    SERVER,
    SERVER_ID,
    SERVER_NAME,
    STEP_NS,
    TIMESTAMP,
    VALUE,
    normalise_hostname,
    profile_conflicts,
    profile_of,
    to_utc,
)
from tftmon.data.ingest.files import IngestError, Samples
from tftmon.data.ingest.mapping import Mapping
from tftmon.data.resample import resample_to_model_step
from tftmon.encoding import ServerMapping

#: A percentage column looks like two scales (percent, and a fraction of 1) on a server when its positive raw
#: samples fall into two groups with no value between them over at least this many decades (a factor of 3),
SCALE_GAP_DECADES = 0.5
#: whose medians are 100 times apart within this many decades (a factor of 3 either way),
SCALE_RATIO_DECADES = 0.5
#: and each group holds at least this share of the server's positive samples, and this many of them: a few
#: outliers are no second scale. (Raw samples: the model step's mean of 0.507 and 50.665 would hide the mix.)
SCALE_MIN_SHARE = 0.05
SCALE_MIN_SAMPLES = 6


@dataclass
class Tidy:
    """The contract frame and the report of everything done to get it (JSON-able)."""

    frame: pd.DataFrame
    report: dict[str, Any]
    #: Where each server's profile came from: mapping, field or hostname.
    profile_sources: dict[str, str]


def _server_codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes of the normalised hostnames (PPWEB001 and ppweb001 are one server); a missing name is an error."""
    codes, names = pd.factorize(column)
    if (codes < 0).any():
        raise IngestError(f"{int((codes < 0).sum())} samples have no server name; give every row its hostname")
    normal = [normalise_hostname(str(n)) for n in names]
    if "" in normal:
        raise IngestError("a server name is blank; give every row its hostname")
    merged, unique = pd.factorize(pd.Index(normal))
    return merged[codes], [str(n) for n in unique]


def _metric_codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes in contract order (so columns come out in contract order)."""
    codes, names = pd.factorize(column)
    unknown = sorted({str(n) for n in names} - set(METRICS))
    if unknown:
        raise IngestError(f"metric(s) {', '.join(unknown)} are not contract metrics; map them (docs/INGEST.md)")
    order = sorted(range(len(names)), key=lambda i: METRICS.index(str(names[i])))
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return rank[codes], [str(names[i]) for i in order]


def _sorted(*keys: np.ndarray) -> bool:
    """True when rows are already ordered by keys (first key most significant): skips a sort of millions."""
    if len(keys[0]) < 2:
        return True
    ordered = np.zeros(len(keys[0]) - 1, dtype=bool)
    tied = np.ones(len(keys[0]) - 1, dtype=bool)
    for key in keys:
        step = np.diff(key)
        ordered |= tied & (step > 0)
        tied &= step == 0
    return bool((ordered | tied).all())


def _resolve_duplicates(
    s: np.ndarray, t: np.ndarray, m: np.ndarray, v: np.ndarray, rule: str, servers: list[str], metrics: list[str]
) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
    """One value per (server, timestamp, metric) by `rule`; arrays sorted by those keys. Counts what merged."""
    same = (s[1:] == s[:-1]) & (t[1:] == t[:-1]) & (m[1:] == m[:-1])
    count = int(same.sum())
    report: dict[str, Any] = {"rule": rule, "values": count, "by_metric": {}}
    if not count:
        return (s, t, m, v), report
    extra = np.flatnonzero(same) + 1
    report["by_metric"] = {metrics[i]: int(c) for i, c in enumerate(np.bincount(m[extra], minlength=len(metrics))) if c}
    if rule == "error":
        i = extra[0]
        when = pd.Timestamp(int(t[i]), unit="ns", tz="UTC").isoformat()
        raise IngestError(
            f"{count} duplicate samples (same server, metric and timestamp), e.g. {servers[s[i]]} {metrics[m[i]]} at "
            f"{when}; remove them, or pick a rule with --duplicates last|mean"
        )
    last = np.append(~same, True)  # the last sample of each run of equal keys
    if rule == "last":
        return (s[last], t[last], m[last], v[last]), report
    starts = np.flatnonzero(np.insert(~same, 0, True))
    means = np.add.reduceat(v, starts) / np.diff(np.append(starts, len(v)))
    return (s[starts], t[starts], m[starts], means), report


def _pivot(
    s: np.ndarray, t: np.ndarray, m: np.ndarray, v: np.ndarray, servers: list[str], metrics: list[str]
) -> pd.DataFrame:
    """Sorted unique long samples into one row per (server, timestamp), a column per metric (NaN: no sample)."""
    new_row = np.ones(len(s), dtype=bool)
    new_row[1:] = (s[1:] != s[:-1]) | (t[1:] != t[:-1])
    row = np.cumsum(new_row) - 1
    values = np.full((int(row[-1]) + 1 if len(row) else 0, len(metrics)), np.nan)
    values[row, m] = v
    frame = pd.DataFrame(values, columns=metrics)
    frame.insert(0, TIMESTAMP, pd.to_datetime(t[new_row], unit="ns", utc=True))
    frame.insert(1, SERVER_NAME, pd.Series(pd.Categorical.from_codes(s[new_row], categories=pd.Index(servers))))
    return frame


def _source_interval(rows: pd.DataFrame) -> float | None:
    """Median spacing (s) of a server's samples, pivoted rows sorted by server and time: tells an operator what
    max_gap has to bridge."""
    t = rows[TIMESTAMP].to_numpy(dtype="datetime64[ns]").view(np.int64)
    s = rows[SERVER_NAME].cat.codes.to_numpy()
    step = np.diff(t)
    within = (s[1:] == s[:-1]) & (step > 0)
    return float(np.median(step[within])) / 1e9 if within.any() else None


@dataclass
class _Grid:
    """Each server's model steps from its first to its last, one after another."""

    server: np.ndarray  # server code of each grid position
    offset: np.ndarray  # first position of each server
    first_bin: np.ndarray  # bin number (timestamp // step) of each server's first position

    @property
    def size(self) -> int:
        return len(self.server)


def _grid(codes: np.ndarray, bins: np.ndarray, n_servers: int) -> _Grid:
    first = np.full(n_servers, np.iinfo(np.int64).max)
    last = np.full(n_servers, np.iinfo(np.int64).min)
    np.minimum.at(first, codes, bins)
    np.maximum.at(last, codes, bins)
    lengths = np.where(last >= first, last - first + 1, 0)
    offset = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return _Grid(np.repeat(np.arange(n_servers), lengths), offset, first)


def _fill_gaps(grid: _Grid, values: np.ndarray, max_steps: int) -> np.ndarray:
    """Interpolate, per column and server, each run of at most `max_steps` missing steps between two samples;
    returns where it filled (values are filled in place)."""
    idx = np.arange(grid.size)
    start = grid.offset[grid.server]
    end = np.append(grid.offset[1:], grid.size)[grid.server] - 1
    filled = np.zeros(values.shape, dtype=bool)
    if max_steps == 0:
        return filled
    for j in range(values.shape[1]):
        col = values[:, j]
        valid = ~np.isnan(col)
        prev = np.maximum.accumulate(np.where(valid, idx, -1))
        nxt = np.minimum.accumulate(np.where(valid, idx, grid.size)[::-1])[::-1]
        fill = ~valid & (prev >= start) & (nxt <= end) & (nxt - prev - 1 <= max_steps)
        p, n = prev[fill], nxt[fill]
        col[fill] = col[p] + (col[n] - col[p]) * (idx[fill] - p) / (n - p)
        filled[:, j] = fill
    return filled


def _segments(grid: _Grid, keep: np.ndarray, servers: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each server's runs of kept steps, as ISO start, end and step count."""
    pos = np.flatnonzero(keep)
    if not len(pos):
        return {}
    breaks = np.flatnonzero((np.diff(pos) != 1) | (np.diff(grid.server[pos]) != 0)) + 1
    starts, ends = pos[np.insert(breaks, 0, 0)], pos[np.append(breaks - 1, len(pos) - 1)]
    out: dict[str, list[dict[str, Any]]] = {}
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        code = int(grid.server[a])
        first = grid.first_bin[code] - grid.offset[code]
        out.setdefault(servers[code], []).append(
            {
                "start": pd.Timestamp(int((first + a) * STEP_NS), unit="ns", tz="UTC").isoformat(),
                "end": pd.Timestamp(int((first + b) * STEP_NS), unit="ns", tz="UTC").isoformat(),
                "steps": b - a + 1,
            }
        )
    return out


def _per_server(grid: _Grid, mask: np.ndarray, servers: list[str], metrics: list[str]) -> dict[str, dict[str, int]]:
    """Counts of a (positions × metrics) mask by server and metric, non-zero ones only."""
    counts = np.zeros((len(servers), len(metrics)), dtype=np.int64)
    for j in range(len(metrics)):
        counts[:, j] = np.bincount(grid.server[mask[:, j]], minlength=len(servers))
    return {
        servers[i]: {metrics[j]: int(counts[i, j]) for j in range(len(metrics)) if counts[i, j]}
        for i in np.flatnonzero(counts.sum(axis=1))
    }


def _profiles(servers: list[str], samples: Samples, mapping: Mapping) -> tuple[list[str], dict[str, str]]:
    """Each server's profile: the mapping's per-server entry, the mapping's one profile, the source's profile
    field, else inferred from the hostname (contract.profile_of). Returns profiles and where each came from."""
    given: dict[str, str] = {}
    if samples.profiles is not None and len(samples.profiles):
        pairs = samples.profiles.dropna()
        names = pairs[SERVER].astype(str).map(normalise_hostname)
        values = pairs[PROFILE].astype(str).str.strip()
        names, values = names[values != ""], values[values != ""]
        conflicts = profile_conflicts(names, values)
        if conflicts:
            shown = ", ".join(map(str, conflicts[:5]))
            raise IngestError(f"profile field: {PROFILE_RULE}, but {shown} have several; {PROFILE_FIX}")
        unknown = sorted(set(values) - set(PROFILE_NAMES))
        if unknown:
            raise IngestError(
                f"profile field: unknown profile(s) {', '.join(unknown)}; use one of {', '.join(PROFILE_NAMES)}"
            )
        given = dict(zip(names, values, strict=True))
    per_server = {normalise_hostname(k): v for k, v in mapping.profiles.items()}
    out, source = [], {}
    for name in servers:
        if name in per_server:
            out.append(per_server[name])
            source[name] = "mapping"
        elif mapping.profile is not None:
            out.append(mapping.profile)
            source[name] = "mapping"
        elif name in given:
            out.append(given[name])
            source[name] = "field"
        else:
            out.append(profile_of(name))
            source[name] = "hostname"
    return out, source


def _out_of_range(frame: pd.DataFrame, metrics: list[str]) -> dict[str, int]:
    """Values outside the contract's range per metric: reported (validation refuses them), never changed."""
    found = {}
    for name in metrics:
        col = COLUMNS_BY_NAME[name]
        values = frame[name].to_numpy()
        bad = np.zeros(len(values), dtype=bool)
        if col.min is not None:
            bad |= values < col.min
        if col.max is not None:
            bad |= values > col.max
        if bad.any():
            found[name] = int(bad.sum())
    return found


def _two_scales(decades: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The fraction-scale and percent-scale groups of one server's sorted log10 values, or None when they look
    like one scale (see SCALE_GAP_DECADES): the widest gap that leaves enough values on each side splits them."""
    n = len(decades)
    least = max(SCALE_MIN_SAMPLES, int(np.ceil(SCALE_MIN_SHARE * n)))
    gaps = np.diff(decades)[least - 1 : n - least]
    if not len(gaps):
        return None
    split = least + int(np.argmax(gaps))
    if gaps[split - least] < SCALE_GAP_DECADES:
        return None
    low, high = decades[:split], decades[split:]
    if abs(np.median(high) - np.median(low) - 2.0) > SCALE_RATIO_DECADES:  # 2 decades: 100 times
        return None
    return low, high


def _unit_mix(rows: pd.DataFrame, metrics: list[str]) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per percentage metric, the servers whose raw samples look like two scales (a fraction of 1 mixed into
    percentages), with each group's size and median: warned of, and refused by `tftmon ingest --strict`."""
    codes = rows[SERVER_NAME].cat.codes.to_numpy()
    servers = rows[SERVER_NAME].cat.categories
    found: dict[str, dict[str, dict[str, float | int]]] = {}
    for name in (m for m in metrics if m in PERCENT_METRICS):
        values = rows[name].to_numpy(dtype=np.float64)
        positive = values > 0
        decades, owner = np.log10(values[positive]), codes[positive]
        order = np.lexsort((decades, owner))
        decades, owner = decades[order], owner[order]
        bounds = np.flatnonzero(np.diff(owner)) + 1
        for start, end in zip(np.insert(bounds, 0, 0), np.append(bounds, len(owner)), strict=True):
            if (groups := _two_scales(decades[start:end])) is not None:
                low, high = groups
                found.setdefault(name, {})[str(servers[owner[start]])] = {
                    "fraction_like": len(low),
                    "fraction_median": round(float(10 ** np.median(low)), 6),
                    "percent_like": len(high),
                    "percent_median": round(float(10 ** np.median(high)), 6),
                }
    return found


def _minutes(duration: timedelta) -> str:
    return f"{duration.total_seconds() / 60:g}min"


def wide_rows(long: pd.DataFrame, value: np.ndarray, rule: DuplicateRule) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Long samples (`value`: their values, none empty) as one row per normalised server and timestamp, a column
    per metric present in contract order, duplicates resolved by `rule` (counted): ingest's first step, and
    all the live Prometheus source needs before the service's windows resample them as training's did."""
    s, servers = _server_codes(long[SERVER])
    m, metrics = _metric_codes(long[METRIC])
    t = to_utc(long[TIMESTAMP]).to_numpy(dtype="datetime64[ns]").view(np.int64)
    if not _sorted(s, t, m):
        order = np.lexsort((m, t, s))  # stable: among equal keys, input order is kept (for "last wins")
        s, t, m, value = s[order], t[order], m[order], value[order]
    (s, t, m, value), duplicates = _resolve_duplicates(s, t, m, value, rule, servers, metrics)
    return _pivot(s, t, m, value, servers, metrics), duplicates


def tidy(samples: Samples, mapping: Mapping, config: IngestConfig) -> Tidy:
    """Long samples into a contract frame (contract dtypes and column order, sorted by server and time)."""
    long = samples.long
    value = long[VALUE].to_numpy(dtype=np.float64)
    empty = np.isnan(value)
    left_out = dict(samples.left_out)
    if empty.any():
        left_out["empty value"] = int(empty.sum())
        long, value = long[~empty], value[~empty]
    if not len(long):
        raise IngestError("no samples of any contract metric left to ingest; check the mapping (docs/INGEST.md)")
    rows, duplicates = wide_rows(long, value, config.duplicates)
    servers = list(rows[SERVER_NAME].cat.categories)
    metrics = [str(c) for c in rows.columns[2:]]
    interval = _source_interval(rows)
    unit_mix = _unit_mix(rows, metrics)
    binned = resample_to_model_step(rows)
    del rows
    names = sorted(servers)
    codes = pd.Categorical(binned[SERVER_NAME], categories=names).codes.astype(np.int64)
    bins = binned[TIMESTAMP].to_numpy(dtype="datetime64[ns]").view(np.int64) // STEP_NS
    grid = _grid(codes, bins, len(names))
    values = np.full((grid.size, len(metrics)), np.nan)
    values[grid.offset[codes] + (bins - grid.first_bin[codes])] = binned[metrics].to_numpy(dtype=np.float64)
    had_data = ~np.isnan(values).all(axis=1)
    filled = _fill_gaps(grid, values, config.max_gap_steps)
    missing = np.isnan(values)
    keep = ~missing.any(axis=1)
    dropped = had_data & ~keep

    pos = np.flatnonzero(keep)
    server_of = grid.server[pos]
    profiles, profile_sources = _profiles(names, samples, mapping)
    ids = ServerMapping.from_names(names)
    frame = pd.DataFrame(
        {
            TIMESTAMP: pd.to_datetime(
                (grid.first_bin[server_of] + pos - grid.offset[server_of]) * STEP_NS, unit="ns", utc=True
            ),
            SERVER_NAME: np.asarray(names, dtype=object)[server_of],
            SERVER_ID: np.asarray([ids.id_of(n) for n in names], dtype=object)[server_of],
            PROFILE: np.asarray(profiles, dtype=object)[server_of],
        }
    )
    for j, name in enumerate(metrics):
        column = values[pos, j]
        frame[name] = np.floor(column).astype(np.int64) if COLUMNS_BY_NAME[name].type == "int" else column
    for name in (TIMESTAMP, SERVER_NAME, SERVER_ID, PROFILE):
        frame[name] = frame[name].astype(COLUMNS_BY_NAME[name].pandas_dtype)

    kept_servers = set(frame[SERVER_NAME].unique())
    report: dict[str, Any] = {
        "samples_read": len(samples.long),
        "left_out": left_out,
        "duplicates": duplicates,
        "source_interval_seconds": interval,
        "interpolated": {
            "max_gap": _minutes(config.max_gap),
            "steps": int(filled.any(axis=1).sum()),
            "by_metric": {n: int(filled[:, j].sum()) for j, n in enumerate(metrics) if filled[:, j].any()},
            "by_server": _per_server(grid, filled, names, metrics),
        },
        "dropped": {
            "rows": int(dropped.sum()),
            "reason": f"a metric missing for longer than max_gap ({_minutes(config.max_gap)}) at that step",
            "by_server": _per_server(grid, missing & dropped[:, None], names, metrics),
        },
        "segments": _segments(grid, keep, names),
        "servers_without_rows": [n for n in names if n not in kept_servers],
        "out_of_range": _out_of_range(frame, metrics),
        "unit_mix": unit_mix,
        "rows": len(frame),
        "servers": len(kept_servers),
        "metrics": metrics,
    }
    return Tidy(frame, report, profile_sources)
