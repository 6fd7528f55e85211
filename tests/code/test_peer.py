"""The LightGBM peer: the baselines' forecast format, no look-ahead, a pickle-free round trip, and skill."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import START, daily, fleet_frame
from tftmon.config import PeerConfig
from tftmon.contract import (
    METRICS,
    ORIGIN,
    PREDICTION_STEPS,
    QUANTILE_NAMES,
    SERVER_NAME,
    TIMESTAMP,
    metric_bounds,
    quantile_name,
)
from tftmon.evaluation.actuals import origins
from tftmon.evaluation.baselines import LAST_VALUE, baseline_forecast
from tftmon.evaluation.peer import PEER_FILE, PeerModel, fit_peer, load_peer, peer_forecast, save_peer

#: Few, fast trees on one thread: the tests check the plumbing, and skill where it is plain.
CONFIG = PeerConfig(trees=20, learning_rate=0.3, leaves=15, min_rows_in_leaf=20, threads=1)
HELD_OUT = START + pd.Timedelta(days=4)


@pytest.fixture(scope="module")
def fleet() -> pd.DataFrame:
    """Four servers, five days of a strong daily pattern (plus a weekly one and noise) in every metric."""
    return fleet_frame(4, "5D", signal=daily(noise=2.0))


@pytest.fixture(scope="module")
def peer(fleet: pd.DataFrame) -> PeerModel:
    return fit_peer(fleet[fleet[TIMESTAMP] < HELD_OUT], CONFIG)


@pytest.fixture(scope="module")
def at(fleet: pd.DataFrame) -> pd.DataFrame:
    return origins(fleet, HELD_OUT)


@pytest.fixture(scope="module")
def forecast(peer: PeerModel, fleet: pd.DataFrame, at: pd.DataFrame) -> pd.DataFrame:
    return peer_forecast(peer, fleet, at)


def test_forecast_has_the_baselines_format(forecast: pd.DataFrame, fleet: pd.DataFrame, at: pd.DataFrame) -> None:
    baseline = baseline_forecast(fleet, at, LAST_VALUE)
    tails = [quantile_name(q) for q in CONFIG.quantiles if quantile_name(q) not in QUANTILE_NAMES]
    assert tails == ["p2", "p98"]  # the tails the risk scale reads low crossing probabilities from
    assert list(forecast.columns) == [*baseline.columns[:-3], *[quantile_name(q) for q in CONFIG.quantiles]]
    assert forecast[list(baseline.columns)].dtypes.equals(baseline.dtypes)
    key = [SERVER_NAME, ORIGIN, "metric", "step"]
    pd.testing.assert_frame_equal(
        forecast[[*key, TIMESTAMP]].sort_values(key).reset_index(drop=True),
        baseline[[*key, TIMESTAMP]].sort_values(key).reset_index(drop=True),
    )
    steps = forecast.groupby([SERVER_NAME, ORIGIN, "metric"])["step"].agg(list)
    assert len(steps) == len(at) * len(METRICS)
    assert all(s == list(range(1, PREDICTION_STEPS + 1)) for s in steps)
    assert not forecast[list(QUANTILE_NAMES)].isna().any().any()


def test_quantiles_do_not_cross_and_stay_in_the_contract_ranges(forecast: pd.DataFrame) -> None:
    p10, p50, p90 = (forecast[name].to_numpy() for name in QUANTILE_NAMES)
    assert (p10 <= p50).all() and (p50 <= p90).all()
    lower, upper = metric_bounds(METRICS)
    bounds = forecast["metric"].map(dict(zip(METRICS, zip(lower, upper, strict=True), strict=True)))
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    assert (p10 >= lo).all() and (p90 <= hi).all()


def test_reads_nothing_after_the_origin(peer: PeerModel, fleet: pd.DataFrame) -> None:
    origin = HELD_OUT + pd.Timedelta(hours=3)
    at = pd.DataFrame({SERVER_NAME: fleet[SERVER_NAME].unique(), ORIGIN: origin})
    before = peer_forecast(peer, fleet, at)
    changed = fleet.copy()
    after = changed[TIMESTAMP] > origin
    rng = np.random.default_rng(1)
    for metric in METRICS:
        changed.loc[after, metric] = rng.integers(0, 100, int(after.sum())).astype(changed[metric].dtype)
    pd.testing.assert_frame_equal(peer_forecast(peer, changed, at), before)
    pd.testing.assert_frame_equal(peer_forecast(peer, fleet[~after], at), before)


def test_save_and_load_give_the_same_forecast_without_pickle(
    peer: PeerModel, fleet: pd.DataFrame, at: pd.DataFrame, forecast: pd.DataFrame, tmp_path: Path
) -> None:
    save_peer(peer, tmp_path / "peer")
    files = sorted(p.name for p in (tmp_path / "peer").iterdir())
    assert PEER_FILE in files and len(files) == 1 + len(peer.boosters)
    for file in (tmp_path / "peer").iterdir():
        assert file.suffix in {".json", ".txt"}
        assert not file.read_bytes().startswith(b"\x80")  # a pickle's protocol opcode
    loaded = load_peer(tmp_path / "peer")
    assert loaded.metrics == peer.metrics and loaded.config == peer.config
    assert loaded.feature_names == peer.feature_names and loaded.history_steps == peer.history_steps
    pd.testing.assert_frame_equal(peer_forecast(loaded, fleet, at), forecast)


@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated"])
def test_load_refuses_a_damaged_booster_naming_it(peer: PeerModel, tmp_path: Path, damage: str) -> None:
    save_peer(peer, tmp_path / "peer")
    booster = tmp_path / "peer" / "mem_used_pct.p90.txt"
    if damage == "missing":
        booster.unlink()
    elif damage == "corrupt":
        booster.write_text("not a model\n")
    else:
        booster.write_text(booster.read_text()[:-200])
    with pytest.raises(ValueError, match=r"mem_used_pct\.p90\.txt"):
        load_peer(tmp_path / "peer")


def test_load_refuses_a_directory_without_a_valid_description(peer: PeerModel, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=PEER_FILE):
        load_peer(tmp_path)
    save_peer(peer, tmp_path / "peer")
    (tmp_path / "peer" / PEER_FILE).write_text("{")
    with pytest.raises(ValueError, match=PEER_FILE):
        load_peer(tmp_path / "peer")


def test_beats_the_last_value_eight_hours_ahead_on_a_daily_pattern(
    forecast: pd.DataFrame, fleet: pd.DataFrame, at: pd.DataFrame
) -> None:
    truth = fleet.melt(id_vars=[TIMESTAMP, SERVER_NAME], value_vars=list(METRICS), var_name="metric", value_name="y")

    def mae_8h(fc: pd.DataFrame) -> float:
        last = fc[fc["step"] == PREDICTION_STEPS].merge(truth, on=[TIMESTAMP, SERVER_NAME, "metric"])
        assert len(last) == len(at) * len(METRICS)
        return float((last["p50"] - last["y"]).abs().mean())

    # The last value misses the daily swing (~20 points); the peer reads yesterday at the target time.
    assert mae_8h(forecast) < 0.5 * mae_8h(baseline_forecast(fleet, at, LAST_VALUE))


def test_too_little_history_is_an_error_naming_the_metric(fleet: pd.DataFrame) -> None:
    short = fleet[fleet[TIMESTAMP] < START + pd.Timedelta(hours=36)]
    with pytest.raises(ValueError, match="cpu_user_pct: only"):
        fit_peer(short, CONFIG, metrics=["cpu_user_pct"])


def test_ratio_to_peer_is_a_geometric_mean_over_metrics_and_counts_where_the_model_is_better() -> None:
    from tftmon.evaluation.metrics import ratio_to_peer

    rows = [
        {"model": name, "horizon": horizon, "metric": metric, "mase": mase, "quantile_loss": loss}
        for horizon in ("30min", "1h", "8h")
        for name, metric, mase, loss in (
            ("tft", "a", 2.0, 1.0), ("tft", "b", 0.5, 1.0),
            ("lightgbm", "a", 1.0, 2.0), ("lightgbm", "b", 1.0, 2.0),
        )
    ]  # fmt: skip
    table = ratio_to_peer(pd.DataFrame(rows), "tft", "lightgbm")
    assert list(table["horizon"].astype(str)) == ["30min", "1h", "8h"]
    assert table["mase_ratio"].tolist() == pytest.approx([1.0] * 3)  # sqrt(2 × 0.5)
    assert table["quantile_loss_ratio"].tolist() == pytest.approx([0.5] * 3)
    assert set(table["mase_better"]) == {"1/2"} and set(table["quantile_loss_better"]) == {"2/2"}
