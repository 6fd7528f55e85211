"""The unit vocabulary of ingest: every unit a mapping may name, the contract unit it converts to, and how.

One table, so a mapping that names `bytes/s` for a percentage column fails saying which units that column
accepts, instead of writing numbers a million times off. Conversions are affine (value × scale + offset);
integer columns are floored after conversion (whole days since boot, whole connections).
"""

from __future__ import annotations

from dataclasses import dataclass

from tftmon.contract import COLUMNS_BY_NAME, METRICS

SECONDS_PER_DAY = 86_400.0
BYTES_PER_MB = 1e6


@dataclass(frozen=True)
class Unit:
    """A source unit: what it is called, the contract unit it becomes, and the affine conversion."""

    name: str
    contract_unit: str
    scale: float = 1.0
    offset: float = 0.0
    note: str = ""

    def convert(self, values: object) -> object:
        """values × scale + offset (numpy arrays, pandas columns or scalars)."""
        if self.scale == 1.0 and self.offset == 0.0:
            return values
        return values * self.scale + self.offset  # type: ignore[operator]


UNITS: dict[str, Unit] = {
    u.name: u
    for u in (
        Unit("%", "%", note="percent, 0-100"),
        Unit("percent", "%", note="percent, 0-100"),
        Unit("fraction", "%", 100.0, note="0-1, e.g. 0.42 -> 42 %"),
        Unit("percent_complement", "%", -1.0, 100.0, note="the rest of 100 %, e.g. CPU used -> cpu_idle_pct"),
        Unit("fraction_complement", "%", -100.0, 100.0, note="the rest of 1, as a percentage"),
        Unit("MB/s", "MB/s", note="10^6 bytes per second"),
        Unit("bytes/s", "MB/s", 1 / BYTES_PER_MB),
        Unit("KB/s", "MB/s", 1e-3),
        Unit("KiB/s", "MB/s", 1024 / BYTES_PER_MB),
        Unit("MiB/s", "MB/s", 2**20 / BYTES_PER_MB),
        Unit("bits/s", "MB/s", 1 / (8 * BYTES_PER_MB)),
        Unit("Mbit/s", "MB/s", 1 / 8),
        Unit("connections", "connections"),
        Unit("count", "connections"),
        Unit("load", "", note="run-queue length (load average), no unit"),
        Unit("days", "days"),
        Unit("hours", "days", 1 / 24),
        Unit("seconds", "days", 1 / SECONDS_PER_DAY, note="e.g. seconds since boot -> days since boot"),
    )
}

#: The vocabulary name of each contract unit: what a mapping means when it names no unit.
DEFAULT_UNIT: dict[str, str] = {"%": "%", "MB/s": "MB/s", "connections": "connections", "": "load", "days": "days"}


def units_for(column: str) -> list[str]:
    """The unit names a contract metric accepts."""
    target = COLUMNS_BY_NAME[column].unit
    return [u.name for u in UNITS.values() if u.contract_unit == target]


def resolve_unit(column: str, unit: str | None) -> Unit:
    """The conversion into contract metric `column` from `unit` (None: the column's own unit).

    Raises ValueError naming the column, the unit and the units it accepts."""
    if column not in METRICS:
        raise ValueError(f"{column!r} is not a contract metric; use one of: {', '.join(METRICS)}")
    if unit is None:
        return UNITS[DEFAULT_UNIT[COLUMNS_BY_NAME[column].unit]]
    accepted = ", ".join(units_for(column))
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r} for {column}; {column} accepts: {accepted}")
    found = UNITS[unit]
    if found.contract_unit != COLUMNS_BY_NAME[column].unit:
        shown = found.contract_unit or "no unit"
        raise ValueError(
            f"unit {unit!r} converts to {shown}, but {column} is in {COLUMNS_BY_NAME[column].unit or 'no unit'}; "
            f"{column} accepts: {accepted}"
        )
    return found
