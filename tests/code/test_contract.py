from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import ROOT
from tftmon import contract as c
from tftmon.data.contract_doc import render_markdown


def test_horizons_derive_from_the_model_step() -> None:
    assert timedelta(minutes=5) == c.MODEL_STEP
    assert c.HORIZONS == {"30min": 6, "1h": 12, "8h": 96}
    assert c.PREDICTION_STEPS == 96
    with pytest.raises(ValueError, match="whole number"):
        c.steps(timedelta(minutes=7))


def test_every_metric_has_an_aggregation_and_fourteen_metrics() -> None:
    assert len(c.METRICS) == 14
    assert all(col.aggregation for col in c.METRIC_COLUMNS)
    assert set(c.CPU_PARTS) <= set(c.PERCENT_METRICS)
    assert set(c.INTEGER_METRICS) == {"back_close_wait", "front_close_wait", "uptime_days"}


def test_state_is_never_required_in_telemetry() -> None:
    assert c.STATE in c.required_columns("simulated")
    assert c.STATE not in c.required_columns("telemetry")
    assert set(c.METRICS) <= set(c.required_columns("telemetry"))


def test_default_fleet_matches_the_brief() -> None:
    assert c.DEFAULT_FLEET_SIZE == 90
    assert len(c.STATES) == 8 and len(c.PROFILES) == 7
    assert all(dst in c.PROFILE_NAMES for dsts in c.DEPENDENCIES.values() for dst in dsts)


@pytest.mark.parametrize(
    ("hostname", "profile"),
    [
        ("ppweb001", "web_api"),
        ("PPML0042", "ml_compute"),
        ("ppdb015.prod.example.com", "database"),
        ("ppetl003", "data_ingest"),
        ("pprisk008", "risk_analytics"),
        ("ppcon05", "conductor_mgmt"),
        ("ppgen001", "generic"),
        ("mail-relay-1", "generic"),
        ("ppweb", "generic"),
    ],
)
def test_profile_of(hostname: str, profile: str) -> None:
    assert c.profile_of(hostname) == profile


def test_generated_hostnames_map_back_to_their_profile() -> None:
    for profile in c.PROFILES:
        assert c.profile_of(profile.hostname(7)) == profile.name


def test_deprecation_message_names_the_replacement() -> None:
    message = c.deprecation_message("cpu_pct")
    assert "deprecated since contract 2.0" in message
    assert all(part in message for part in c.CPU_PARTS)
    assert set(c.DEPRECATED_COLUMNS).isdisjoint(c.COLUMNS_BY_NAME)


def test_committed_contract_doc_matches_the_contract() -> None:
    committed = (ROOT / "docs" / "DATA_CONTRACT.md").read_text()
    assert committed == render_markdown(), "docs/DATA_CONTRACT.md is stale: run `make contract`"
