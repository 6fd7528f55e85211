from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tftmon.encoding import SERVER_ID_HEX_DIGITS, ServerIdCollision, ServerMapping, server_id

hostnames = st.from_regex(r"[a-z][a-z0-9\-]{0,20}[0-9]{1,4}", fullmatch=True)


@given(hostnames)
def test_ids_are_deterministic_and_hex(name: str) -> None:
    sid = server_id(name)
    assert sid == server_id(name) == server_id(name.upper())
    assert len(sid) == SERVER_ID_HEX_DIGITS
    int(sid, 16)


def test_ids_are_stable_across_processes() -> None:
    code = "from tftmon.encoding import server_id; print(server_id('ppdb001'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == server_id("ppdb001")


@given(st.lists(hostnames, unique=True, min_size=1, max_size=50))
def test_mapping_round_trips(names: list[str]) -> None:
    mapping = ServerMapping.from_names(names)
    for name in names:
        assert mapping.name_of(mapping.id_of(name)) == name.lower()
    restored = ServerMapping.from_json(json.loads(json.dumps(mapping.to_json())))
    assert restored.to_json() == mapping.to_json()


@settings(max_examples=50)
@given(
    st.lists(hostnames, unique=True, min_size=1, max_size=30),
    st.lists(hostnames, unique=True, max_size=30),
)
def test_fleet_changes_never_change_existing_ids(base: list[str], added: list[str]) -> None:
    mapping = ServerMapping.from_names(base)
    before = dict(mapping.name_to_id)
    mapping.add(added)
    mapping.remove(base[: len(base) // 2])
    for name in base[len(base) // 2 :]:
        assert mapping.id_of(name) == before[name.lower()]


def test_unknown_servers_get_their_own_ids() -> None:
    mapping = ServerMapping.from_names(["ppweb001"])
    assert mapping.id_of("stranger-1") != mapping.id_of("stranger-2")
    assert "stranger-1" not in mapping


def test_no_collisions_in_100k_names() -> None:
    names = [f"host{i:06d}" for i in range(100_000)]
    mapping = ServerMapping.from_names(names)
    assert len(mapping.id_to_name) == 100_000


def test_a_collision_raises_naming_both_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    import tftmon.encoding as encoding

    monkeypatch.setattr(encoding, "server_id", lambda name: "0" * SERVER_ID_HEX_DIGITS)
    with pytest.raises(ServerIdCollision, match=r"ppweb001.*ppweb002"):
        ServerMapping.from_names(["ppweb001", "ppweb002"])


def test_tampered_mapping_is_refused() -> None:
    data = ServerMapping.from_names(["ppweb001"]).to_json()
    data["name_to_id"]["ppweb001"] = "f" * SERVER_ID_HEX_DIGITS
    with pytest.raises(ValueError, match="regenerate"):
        ServerMapping.from_json(data)
