"""Fleet topology: which servers exist, their profiles, and which server each one depends on.

Every per-server random choice derives from (seed, server) through a counter-based hash, so a server
keeps its character, episodes and upstreams whatever else is in the fleet (drift keeps survivors identical).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tftmon.config import SimulationConfig
from tftmon.contract import (
    DEPENDENCIES,
    PROFILE_NAMES,
    PROFILES,
    PROFILES_BY_NAME,
    SERVER_NAME,
    normalise_hostname,
    profile_of,
)
from tftmon.encoding import server_id

# ---------------------------------------------------------------------------------------------
# Counter-based randomness (splitmix64): random access by (seed, server, counter)
# ---------------------------------------------------------------------------------------------

GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
MASK64 = (1 << 64) - 1
#: Tags keep the draws of different quantities of one (server, counter) independent.
(T_PROBLEM, T_SCENARIO, T_KIND, T_ESC, T_RAMP, T_CRIT, T_REC, T_OFF, T_POS, T_PEAK, T_MJIT, T_MDUR) = range(1, 13)


def mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (uint64 arrays; callers silence overflow)."""
    x = x + GOLD
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    x = x ^ (x >> np.uint64(31))
    return x


def server_key(seed: int, name: str) -> np.uint64:
    """A server's 64-bit key: every hash-based draw of the server starts from it."""
    with np.errstate(over="ignore"):
        key: np.uint64 = mix(np.array([(seed & MASK64) ^ int(server_id(name), 16)], dtype=np.uint64))[0]
    return key


def uniform(key: np.ndarray | np.uint64, counter: np.ndarray | int, tag: int) -> np.ndarray:
    """Uniform [0, 1) floats, a pure function of (key, counter, tag)."""
    with np.errstate(over="ignore"):
        c = np.asarray(counter).astype(np.uint64) * GOLD
        h = mix(mix(np.asarray(key, dtype=np.uint64) ^ c) + np.uint64(tag))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    name: str
    profile: str
    problem_child: bool

    @property
    def id(self) -> str:
        return server_id(self.name)


def _largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights`; ties go to the earlier (contract-order) profile."""
    quotas = [total * w / sum(weights) for w in weights]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def default_fleet_names(servers: int) -> list[tuple[str, str]]:
    """`servers` hosts in the default proportions (90 = the default fleet); every profile once N allows."""
    counts = _largest_remainder(servers, [p.default_count for p in PROFILES])
    if servers >= len(PROFILES):
        for i, count in enumerate(counts):
            if count == 0:
                counts[counts.index(max(counts))] -= 1
                counts[i] = 1
    return [(p.hostname(n), p.name) for p, count in zip(PROFILES, counts, strict=True) for n in range(1, count + 1)]


def _host_number(name: str, profile: str) -> int:
    match = re.fullmatch(rf"{re.escape(PROFILES_BY_NAME[profile].prefix)}(\d+)", name)
    return int(match.group(1)) if match else 0


def load_fleet_file(path: Path) -> list[tuple[str, str | None]]:
    """Read `server_name[,profile]` lines (header and '#' comments optional; blank profile = infer)."""
    fleet: list[tuple[str, str | None]] = []
    seen: dict[str, int] = {}
    with Path(path).open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            fields = [f.strip() for f in row]
            if not fields or not fields[0] or fields[0].startswith("#"):
                continue
            if not fleet and not seen and fields[0].lower() == SERVER_NAME:
                continue
            name = normalise_hostname(fields[0])
            profile = fields[1] if len(fields) > 1 and fields[1] else None
            if profile is not None and profile not in PROFILES_BY_NAME:
                raise ValueError(
                    f"{path}:{lineno}: unknown profile {profile!r} for {name}; known: {', '.join(PROFILE_NAMES)}"
                )
            if name in seen:
                raise ValueError(f"{path}:{lineno}: duplicate server {name} (first on line {seen[name]})")
            seen[name] = lineno
            fleet.append((name, profile))
    if not fleet:
        raise ValueError(f"{path}: no servers listed")
    return fleet


def build_fleet(config: SimulationConfig) -> list[ServerSpec]:
    """The configured fleet, drift applied: base minus the last `retire_servers`, plus `add_servers` new."""
    base: list[tuple[str, str]]
    if config.fleet is not None:
        base = [(normalise_hostname(n), p or profile_of(n)) for n, p in config.fleet]
    else:
        base = default_fleet_names(config.servers)
    names = [n for n, _ in base]
    for name, profile in base:
        if profile not in PROFILES_BY_NAME:
            raise ValueError(f"server {name}: unknown profile {profile!r}; known: {', '.join(PROFILE_NAMES)}")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate servers in fleet: {', '.join(dupes)}")
    if config.retire_servers > len(base) or len(base) - config.retire_servers + config.add_servers == 0:
        raise ValueError(f"cannot retire {config.retire_servers} of {len(base)} servers and keep a fleet")
    taken = set(names)
    added: list[tuple[str, str]] = []
    counts = _largest_remainder(config.add_servers, [p.default_count for p in PROFILES])
    for prof, count in zip(PROFILES, counts, strict=True):
        number = max((_host_number(n, prof.name) for n, p in base if p == prof.name), default=0)
        for _ in range(count):
            number += 1
            while prof.hostname(number) in taken:
                number += 1
            taken.add(prof.hostname(number))
            added.append((prof.hostname(number), prof.name))
    kept = base[: len(base) - config.retire_servers] + added
    return [
        ServerSpec(name, profile, bool(uniform(server_key(config.seed, name), 0, T_PROBLEM) < config.problem_fraction))
        for name, profile in kept
    ]


# ---------------------------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------------------------


def assign_upstreams(fleet: list[ServerSpec], pidx: np.ndarray, key: np.ndarray) -> np.ndarray:
    """(N, 2) upstream server per dependant (-1: none): one server per upstream profile, chosen by
    rendezvous hashing so adding or retiring servers only moves the dependants of the servers that changed."""
    ups = np.full((len(fleet), 2), -1, dtype=np.int64)
    by_profile = {p: np.flatnonzero(pidx == PROFILE_NAMES.index(p)) for p in PROFILE_NAMES}
    for i, spec in enumerate(fleet):
        sources = [u for u, deps in DEPENDENCIES.items() if spec.profile in deps and len(by_profile[u])]
        for slot, upstream in enumerate(sources[:2]):
            cand = by_profile[upstream]
            with np.errstate(over="ignore"):
                score = mix(key[cand] ^ (key[i] * GOLD))
            ups[i, slot] = cand[int(np.argmax(score))]
    return ups


def depths(upstreams: np.ndarray) -> np.ndarray:
    """Hops from each server up to a server with no upstream (cascades flow level by level)."""
    depth = np.zeros(len(upstreams), dtype=np.int64)
    for _ in range(len(PROFILES)):
        up = np.where(upstreams >= 0, depth[upstreams] + 1, 0)
        depth = np.maximum(depth, up.max(axis=1))
    return depth


def closure(upstreams: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """idx plus every server upstream of it (transitively), sorted."""
    need = set(idx.tolist())
    frontier = idx
    while len(frontier):
        ups = upstreams[frontier].ravel()
        new = [u for u in ups.tolist() if u >= 0 and u not in need]
        need.update(new)
        frontier = np.array(new, dtype=np.int64)
    return np.array(sorted(need), dtype=np.int64)
