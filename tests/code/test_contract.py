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
    assert set(c.METRICS) <= set(c.required_columns("simulated"))
    # real telemetry must carry identity columns and at least one metric, not every metric
    assert c.required_columns("telemetry") == (c.TIMESTAMP, c.SERVER_NAME)
    assert c.present_metrics(["mem_used_pct", c.TIMESTAMP, "cpu_user_pct"]) == ("cpu_user_pct", "mem_used_pct")


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


def test_state_severity_orders_exactly_the_states() -> None:
    assert sorted(c.STATE_SEVERITY) == sorted(c.STATES)
    assert c.STATE_SEVERITY[-1] == c.INCIDENT_STATE


def test_quantile_names_and_columns() -> None:
    assert c.QUANTILE_NAMES == ("p10", "p50", "p90")
    assert [c.quantile_name(q) for q in (0.02, 0.25, 0.975)] == ["p2", "p25", "p97.5"]
    assert set(c.QUANTILES) <= set(c.MODEL_QUANTILES)
    assert c.quantile_columns(["p90", "metric", "p2", "p50", "p100", "px"]) == {0.02: "p2", 0.5: "p50", 0.9: "p90"}


def test_probability_words_cover_zero_to_one_without_gaps_and_in_order() -> None:
    lowers = [lower for lower, _ in c.PROBABILITY_WORDS]
    words = [word for _, word in c.PROBABILITY_WORDS]
    assert lowers == sorted(lowers, reverse=True) and len(set(lowers)) == len(lowers) and lowers[-1] == 0.0
    assert len(set(words)) == len(words)
    grid = [i / 1000 for i in range(1001)]
    said = [c.probability_word(p) for p in grid]
    ranks = [words.index(w) for w in said]
    assert ranks == sorted(ranks, reverse=True)  # a higher probability never gets a weaker word
    assert set(said) == set(words)  # every word is said of some probability: no empty band
    for lower, word in c.PROBABILITY_WORDS:
        assert c.probability_word(lower) == word
    assert (c.probability_word(0.0), c.probability_word(1.0)) == ("very unlikely", "very likely")
    for bad in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError, match="between 0 and 1"):
            c.probability_word(bad)


@pytest.mark.parametrize(
    ("p", "text"),
    [(0.0, "very unlikely (0 %)"), (0.004, "very unlikely (< 1 %)"), (0.04, "very unlikely (4 %)"),
     (0.29, "unlikely (29 %)"), (0.6599, "about as likely as not (65 %)"), (0.66, "likely (66 %)"),
     (0.999, "very likely (99 %)"), (1.0, "very likely (100 %)")],
)  # fmt: skip
def test_probability_text_says_the_word_and_a_percent_that_agrees_with_it(p: float, text: str) -> None:
    assert c.probability_text(p) == text


def test_to_utc_takes_naive_as_utc_and_converts_aware() -> None:
    import pandas as pd

    assert str(c.to_utc("2026-01-05 12:00")) == "2026-01-05 12:00:00+00:00"
    assert str(c.to_utc("2026-01-05T13:00:00+01:00")) == "2026-01-05 12:00:00+00:00"
    series = c.to_utc(pd.Series(pd.to_datetime(["2026-01-05 12:00"])))
    assert str(series.dt.tz) == "UTC"
    assert int(c.MODEL_STEP.total_seconds() * 1e9) == c.STEP_NS and c.STEP_MINUTES == 5


def test_to_utc_gives_what_parsing_every_series_gives() -> None:
    """Series of pandas datetimes skip pd.to_datetime; the result is the one parsing them gives."""
    import pandas as pd
    import pyarrow as pa

    naive = pd.Series(pd.to_datetime(["2026-01-05 12:00", "2026-07-05 13:30"]), index=[3, 7], name="timestamp")
    for series in (
        naive,
        naive.dt.tz_localize("UTC"),
        naive.dt.tz_localize("Europe/Paris"),
        naive.astype("datetime64[s]"),
        naive.astype(str),
        naive.astype(object),
        naive.astype(pd.ArrowDtype(pa.timestamp("us", tz="UTC"))),
    ):
        parsed = pd.to_datetime(series)
        expected = parsed.dt.tz_localize("UTC") if parsed.dt.tz is None else parsed.dt.tz_convert("UTC")
        pd.testing.assert_series_equal(c.to_utc(series), expected)
