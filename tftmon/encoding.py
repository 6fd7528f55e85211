"""Stable server identity: hostnames map to SHA-256 ids that never change and never collide silently.

The predecessor took 8 hex digits mod 1,000,000 (39 % odds of a collision at 1,000 servers). Here an id
is the first SERVER_ID_HEX_DIGITS hex digits of SHA-256 of the normalised hostname: 64 bits, so a
collision in a million-server fleet has odds of about 1 in 37 million, and if one ever happens the
mapping refuses it, naming both servers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tftmon.contract import CONTRACT_VERSION, normalise_hostname
from tftmon.io import read_json, write_json_atomic

SERVER_ID_HEX_DIGITS = 16


class ServerIdCollision(RuntimeError):
    """Two different hostnames hashed to the same id."""


def server_id(hostname: str) -> str:
    """Deterministic id of a hostname, the same in every process, fleet and run."""
    name = normalise_hostname(hostname)
    if not name:
        raise ValueError("server_name must not be empty")
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:SERVER_ID_HEX_DIGITS]


@dataclass
class ServerMapping:
    """Bidirectional hostname <-> id map, as stored in server_mapping.json beside data and models."""

    name_to_id: dict[str, str] = field(default_factory=dict)
    id_to_name: dict[str, str] = field(default_factory=dict)
    contract_version: str = CONTRACT_VERSION

    @classmethod
    def from_names(cls, names: Iterable[str]) -> ServerMapping:
        mapping = cls()
        mapping.add(names)
        return mapping

    def add(self, names: Iterable[str]) -> None:
        """Add servers; existing ids never change. Raises ServerIdCollision naming both servers."""
        for name in names:
            key = normalise_hostname(name)
            if key in self.name_to_id:
                continue
            sid = server_id(key)
            other = self.id_to_name.get(sid)
            if other is not None and other != key:
                raise ServerIdCollision(f"servers {other!r} and {key!r} share id {sid}")
            self.name_to_id[key] = sid
            self.id_to_name[sid] = key

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            sid = self.name_to_id.pop(normalise_hostname(name), None)
            if sid is not None:
                del self.id_to_name[sid]

    def id_of(self, name: str) -> str:
        """Id of a known or unknown server: unknown names still get their own, never a shared one."""
        return self.name_to_id.get(normalise_hostname(name)) or server_id(name)

    def name_of(self, sid: str) -> str:
        return self.id_to_name[sid]

    def __contains__(self, name: str) -> bool:
        return normalise_hostname(name) in self.name_to_id

    def __len__(self) -> int:
        return len(self.name_to_id)

    def to_json(self) -> dict:
        return {
            "contract_version": self.contract_version,
            "id_digits": SERVER_ID_HEX_DIGITS,
            "name_to_id": dict(sorted(self.name_to_id.items())),
            "id_to_name": dict(sorted(self.id_to_name.items())),
        }

    @classmethod
    def from_json(cls, data: dict) -> ServerMapping:
        mapping = cls(contract_version=data["contract_version"])
        mapping.add(data["name_to_id"])
        if mapping.name_to_id != data["name_to_id"]:
            raise ValueError("server_mapping.json ids do not match SHA-256 of their names; regenerate it")
        return mapping

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> ServerMapping:
        return cls.from_json(read_json(path))
