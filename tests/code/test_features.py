"""The shared feature path: resampling rules, time features, and training == serving tensors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.synthetic import fleet_frame, uniform
from tftmon.contract import (
    COLUMNS_BY_NAME,
    INTEGER_METRICS,
    METRICS,
    MODEL_STEP,
    PROFILE,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    TIMESTAMP,
    UPTIME,
    profile_of,
)
from tftmon.data.resample import resample_to_model_step
from tftmon.model import features

START = pd.Timestamp("2026-01-09 00:00", tz="UTC")  # a Friday: the weekend starts a day later
#: A target held flat in some tests (a value float32 cannot hold exactly).
CONSTANT = "swap_used_pct"


def raw(servers: int = 2, hours: float = 1.0, interval: str = "5s", seed: int = 0) -> pd.DataFrame:
    """Contract-shaped random metrics at any interval, sorted by time like a live feed."""
    span = pd.Timedelta(hours=hours)
    return fleet_frame(servers, span, interval, signal=uniform(), seed=seed, start=START, time_major=True)


def test_resample_5s_applies_each_columns_aggregation() -> None:
    df = raw(servers=2, hours=0.5)
    df.loc[df.index[7], STATE] = "critical_issue"
    out = resample_to_model_step(df)

    assert len(out) == 2 * 6
    assert str(out[TIMESTAMP].dt.tz) == "UTC"
    assert (out[TIMESTAMP].dt.floor(MODEL_STEP) == out[TIMESTAMP]).all()
    bins = df[TIMESTAMP].dt.floor(MODEL_STEP)
    expected = df.groupby([SERVER_NAME, bins])
    for metric in METRICS:
        rule = COLUMNS_BY_NAME[metric].aggregation
        want = getattr(expected[metric], rule)().to_numpy()
        np.testing.assert_allclose(out[metric].to_numpy(), want, err_msg=metric)
    assert {COLUMNS_BY_NAME[m].aggregation for m in METRICS} == {"mean", "max", "last"}
    for metric in INTEGER_METRICS:
        assert out[metric].dtype == np.int64, metric
    # the critical sample wins its bin; the other bins stay healthy
    critical = out[out[STATE] == "critical_issue"]
    assert len(critical) == 1
    assert critical[SERVER_NAME].iloc[0] == df.loc[df.index[7], SERVER_NAME]
    assert (out[PROFILE] == out[SERVER_NAME].map(profile_of)).all()


def test_resample_last_is_by_time_not_by_row_order() -> None:
    df = raw(servers=2, hours=0.25, interval="1min")
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(resample_to_model_step(df), features.resample_to_model_step(shuffled))
    bins = resample_to_model_step(shuffled)
    last = df.sort_values(TIMESTAMP).groupby([SERVER_NAME, df[TIMESTAMP].dt.floor(MODEL_STEP)])[UPTIME].last()
    np.testing.assert_array_equal(bins[UPTIME].to_numpy(), last.to_numpy())


def test_data_at_model_step_passes_through_unchanged() -> None:
    df = raw(servers=3, hours=2, interval="5min")
    out = resample_to_model_step(df)
    expected = df.sort_values([SERVER_NAME, TIMESTAMP]).reset_index(drop=True)
    expected[TIMESTAMP] = expected[TIMESTAMP].astype(COLUMNS_BY_NAME[TIMESTAMP].pandas_dtype)
    pd.testing.assert_frame_equal(out[expected.columns], expected, check_dtype=True)


def test_unknown_state_is_refused() -> None:
    df = raw(servers=1, hours=0.1)
    df.loc[0, STATE] = "on_fire"
    with pytest.raises(ValueError, match="on_fire"):
        resample_to_model_step(df)


def test_time_idx_comes_from_timestamps_so_gaps_stay_gaps() -> None:
    df = raw(servers=1, hours=1, interval="5min")
    df = df.drop(index=[3, 4]).reset_index(drop=True)
    frame = features.prepare_frame(df, METRICS)
    diffs = np.diff(frame[features.TIME_IDX].to_numpy())
    assert sorted(set(diffs.tolist())) == [1, 3]
    step_minutes = MODEL_STEP.total_seconds() / 60
    assert frame[features.TIME_IDX].iloc[0] == START.value // 60_000_000_000 // step_minutes


def test_known_covariates_follow_the_clock() -> None:
    df = raw(servers=1, hours=36, interval="5min")
    frame = features.prepare_frame(df, METRICS)
    six = frame[frame[TIMESTAMP] == START + pd.Timedelta(hours=6)].iloc[0]
    assert six["hour_sin"] == pytest.approx(1.0)
    assert six["hour_cos"] == pytest.approx(0.0, abs=1e-12)
    weekend = frame[TIMESTAMP].dt.dayofweek >= 5
    assert weekend.any() and (~weekend).any()
    np.testing.assert_array_equal(frame["is_weekend"].to_numpy(), weekend.astype(float).to_numpy())


def test_known_covariates_match_the_calendar_at_any_date() -> None:
    ts = pd.Series(pd.date_range("1969-12-28 23:55", "2028-03-01", freq="4321min", tz="UTC"))
    frame = features.add_time_features(pd.DataFrame({TIMESTAMP: ts}))
    hour = ts.dt.hour + ts.dt.minute / 60.0
    dow = ts.dt.dayofweek + hour / 24.0
    np.testing.assert_array_equal(frame["hour_sin"], np.sin(2 * np.pi * hour / 24.0))
    np.testing.assert_array_equal(frame["dow_cos"], np.cos(2 * np.pi * dow / 7.0))
    np.testing.assert_array_equal(frame["is_weekend"], (ts.dt.dayofweek >= 5).astype(float))


def test_identity_columns_are_derived_and_state_is_never_an_input() -> None:
    df = raw(servers=2, hours=12, interval="5min").drop(columns=[PROFILE])
    frame = features.prepare_frame(df, METRICS)
    assert set(frame[PROFILE]) == {"web_api", "ml_compute"}
    dataset = features.training_dataset(frame, METRICS, encoder_steps=12)
    inputs = set(dataset.reals) | set(dataset.flat_categoricals)
    assert STATE not in inputs
    assert SERVER_ID not in inputs
    assert SERVER_NAME not in inputs
    assert dataset.static_categoricals == [PROFILE]


def test_targets_default_to_all_metrics_and_subsets_are_checked() -> None:
    assert features.resolve_targets(None) == list(METRICS)
    assert features.resolve_targets(["mem_used_pct", "cpu_user_pct"]) == ["cpu_user_pct", "mem_used_pct"]
    with pytest.raises(ValueError, match="cpu_pct"):
        features.resolve_targets(["cpu_pct"])


def test_dataset_parameters_round_trip_through_json() -> None:
    frame = features.prepare_frame(raw(servers=2, hours=12, interval="5min"), METRICS)
    params = features.training_dataset(frame, METRICS, encoder_steps=12).get_parameters()
    text = json.dumps(features.parameters_to_json(params))
    back = features.parameters_from_json(json.loads(text))
    for name, encoder in params["categorical_encoders"].items():
        assert back["categorical_encoders"][name].classes_ == encoder.classes_
    for name, scaler in params["scalers"].items():
        np.testing.assert_array_equal(back["scalers"][name].mean_, scaler.mean_)
        np.testing.assert_array_equal(back["scalers"][name].scale_, scaler.scale_)
    assert json.dumps(features.parameters_to_json(back)) == text


def test_training_and_inference_paths_give_identical_tensors() -> None:
    """A window drawn for training and the same window built for serving are the same tensors."""
    encoder = 12
    df = raw(servers=2, hours=24, interval="1min")
    df[CONSTANT] = 2.65  # a flat window: its normalisation depends on how the spread is summed
    frame = features.prepare_frame(df, METRICS)
    training = features.training_dataset(frame, METRICS, encoder_steps=encoder)
    params = features.parameters_from_json(
        json.loads(json.dumps(features.parameters_to_json(training.get_parameters())))
    )

    server = frame[SERVER_ID].iloc[0]
    first_prediction = int(frame[features.TIME_IDX].min()) + 100
    index = training.decoded_index
    row = index[(index[SERVER_ID] == server) & (index["time_idx_first_prediction"] == first_prediction)]
    x_train, _ = training._collate_fn([training[int(row.index[0])]])

    cut = START + (first_prediction - int(frame[features.TIME_IDX].min())) * MODEL_STEP
    history = df[(df[SERVER_NAME] == frame[SERVER_NAME].iloc[0]) & (df[TIMESTAMP] < cut)]
    serving = features.build_dataset(params, features.inference_frame(history, METRICS, encoder), predict=True)
    x_serve = features.window_batch(serving)

    known = [serving.reals.index(name) for name in [*features.KNOWN_REALS, "relative_time_idx"]]
    for key in ("encoder_cont", "encoder_cat", "decoder_cat", "encoder_lengths", "decoder_time_idx"):
        torch_equal(x_train[key], x_serve[key], key)
    torch_equal(x_train["decoder_cont"][..., known], x_serve["decoder_cont"][..., known], "decoder_cont")
    for a, b in zip(x_train["target_scale"], x_serve["target_scale"], strict=True):
        torch_equal(a, b, "target_scale")


def torch_equal(a: object, b: object, what: str) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)


def assert_same_batch(fast: dict, slow: dict) -> None:
    assert fast.keys() == slow.keys()
    for key, value in slow.items():
        for i, (a, b) in enumerate(
            zip(value, fast[key], strict=True) if isinstance(value, list) else [(value, fast[key])]
        ):
            assert a.dtype == b.dtype, key
            torch_equal(a, b, f"{key}[{i}]")


def test_window_batch_is_the_datasets_own_batching() -> None:
    """One batch for all windows equals pytorch-forecasting's per-sample __getitem__ + collate, bit for bit:
    gaps, integer metrics, a flat series, a server never seen in training."""
    encoder = 12
    train = raw(servers=3, hours=12, interval="5min")
    params = features.training_dataset(features.prepare_frame(train, METRICS), METRICS, encoder).get_parameters()
    live = raw(servers=4, hours=3, interval="1min", seed=5)
    live.loc[live[SERVER_NAME] == live[SERVER_NAME].iloc[0], CONSTANT] = 2.65
    live = live[~live[TIMESTAMP].between(START + pd.Timedelta(minutes=150), START + pd.Timedelta(minutes=161))]
    dataset = features.build_dataset(params, features.inference_frame(live, METRICS, encoder), predict=True)
    slow, _ = dataset._collate_fn([dataset[i] for i in range(len(dataset))])
    assert len(dataset) == 4
    assert_same_batch(features.window_batch(dataset), slow)


def test_inference_inputs_are_the_datasets_batch() -> None:
    """The forecast path's batch, built without from_parameters, equals the dataset's batch bit for bit:
    servers never seen in training (codes appended after the known ones), gaps inside the window, integer
    metrics, a flat series; windows come in the dataset's order and name their servers."""
    encoder = 12
    train = raw(servers=3, hours=12, interval="5min")
    params = features.training_dataset(features.prepare_frame(train, METRICS), METRICS, encoder).get_parameters()
    live = raw(servers=6, hours=3, interval="1min", seed=5)
    live.loc[live[SERVER_NAME] == live[SERVER_NAME].iloc[0], CONSTANT] = 2.65
    live = live[~live[TIMESTAMP].between(START + pd.Timedelta(minutes=150), START + pd.Timedelta(minutes=161))]
    frame = features.inference_frame(live, METRICS, encoder)
    dataset = features.build_dataset(params, frame, predict=True)
    fast, servers = features.inference_inputs(params, frame)
    assert_same_batch(fast, features.window_batch(dataset))
    codes = dataset.get_parameters()["categorical_encoders"][features.GROUP_ID_ENCODER].classes_
    assert [codes[s] for s in servers] == fast["groups"][:, 0].tolist()
    assert len(set(servers) - set(params["categorical_encoders"][features.GROUP_ID_ENCODER].classes_)) == 3
    with pytest.raises(ValueError, match="whole windows"):
        features.inference_inputs(params, frame.iloc[1:])


def test_a_recent_centre_moves_only_the_centre_and_both_paths_share_it() -> None:
    """center_steps: each window's centre is the mean of its last K encoder steps, the scale the whole
    encoder's as before; the normalised encoder still maps back to the observations, and serving's batch
    equals training's."""
    encoder, recent = 12, 3
    train = raw(servers=3, hours=12, interval="5min")
    params = features.training_dataset(features.prepare_frame(train, METRICS), METRICS, encoder).get_parameters()
    frame = features.inference_frame(raw(servers=4, hours=3, interval="1min", seed=5), METRICS, encoder)
    dataset = features.build_dataset(params, frame, predict=True)
    mean_centred = features.window_batch(dataset)
    fast, _ = features.inference_inputs(params, frame, center_steps=recent)
    assert_same_batch(fast, features.window_batch(dataset, center_steps=recent))
    reals = dataset.reals
    for t, target in enumerate(METRICS):
        observed = fast["encoder_target"][t]
        centre, scale = fast["target_scale"][t].unbind(-1)
        torch_equal(centre, observed[:, -recent:].mean(dim=-1), f"{target} centre")
        torch_equal(scale, mean_centred["target_scale"][t][:, 1], f"{target} scale")
        normalised = fast["encoder_cont"][..., reals.index(target)]
        restored = normalised * scale[:, None] + centre[:, None]
        assert np.allclose(restored.numpy(), observed.numpy(), rtol=1e-4, atol=1e-3 * float(scale.max())), target


def test_training_windows_across_gaps_are_the_datasets_own() -> None:
    """Drawn training windows, some spanning missing steps (repeated from the row before, as __getitem__
    fills them), equal the per-sample path bit for bit, in the order drawn."""
    frame = features.prepare_frame(raw(servers=2, hours=12, interval="5min"), METRICS)
    gappy = frame.drop(index=[60, 61, 62, 200]).reset_index(drop=True)
    dataset = features.training_dataset(gappy, METRICS, encoder_steps=12)
    whole = dataset.index["index_end"] - dataset.index["index_start"] + 1 == 12 + features.PREDICTION_STEPS
    assert not whole.all()
    windows = np.random.default_rng(0).choice(len(dataset), size=40, replace=False)
    slow, (target, weight) = dataset._collate_fn([dataset[int(i)] for i in windows])
    fast = features.window_batch(dataset, windows)
    assert_same_batch(fast, slow)
    assert weight is None
    for a, b in zip(target, fast["decoder_target"], strict=True):
        torch_equal(a, b, "y")


def test_window_batch_refuses_what_it_does_not_mirror() -> None:
    frame = features.prepare_frame(raw(servers=1, hours=12, interval="5min"), METRICS)
    params = features.training_dataset(frame, METRICS, encoder_steps=12).get_parameters()
    dataset = features.build_dataset(params, frame, predict=False, min_encoder_length=6)
    with pytest.raises(ValueError, match="shorter than encoder"):
        features.window_batch(dataset)


def test_window_carries_the_last_bin_across_gaps() -> None:
    """A bin missing inside the window, or at its first step, takes the server's last bin before it."""
    df = raw(servers=1, hours=3, interval="5min")
    last = df[TIMESTAMP].max()
    window_start = last - 11 * MODEL_STEP
    gaps = [window_start, window_start + MODEL_STEP, last - 3 * MODEL_STEP]
    frame = features.inference_frame(df[~df[TIMESTAMP].isin(gaps)], METRICS, encoder_steps=12)
    encoder = frame.iloc[:12].set_index(TIMESTAMP)
    assert list(encoder.index) == list(pd.date_range(window_start, last, freq=MODEL_STEP))
    observed = df.set_index(TIMESTAMP)[list(METRICS)].astype(float)
    for gap, source in zip(gaps, [window_start - MODEL_STEP] * 2 + [last - 4 * MODEL_STEP], strict=True):
        pd.testing.assert_series_equal(encoder.loc[gap, list(METRICS)], observed.loc[source], check_names=False)


def test_only_the_encoder_span_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cut history gives the frame the whole history gives: gaps across and inside the window, shuffled
    rows, profiles missing on some rows and different on a server's earliest rows (resampling takes those)."""
    encoder = 24
    history = raw(servers=3, hours=5, interval="1min").drop(columns=[STATE])
    names = sorted(history[SERVER_NAME].unique())
    last = history[TIMESTAMP].max()
    name, ts = history[SERVER_NAME], history[TIMESTAMP]
    window = MODEL_STEP * encoder
    gap0 = (name == names[0]) & ts.between(
        last - window - pd.Timedelta(minutes=40), last - window + pd.Timedelta(minutes=10)
    )
    gap1 = (name == names[1]) & ts.between(last - pd.Timedelta(minutes=30), last - pd.Timedelta(minutes=15))
    history = history[~(gap0 | gap1)].astype({PROFILE: object}).reset_index(drop=True)
    history.loc[history.index[history[SERVER_NAME] == names[2]][-5:], PROFILE] = None
    history.loc[history.index[history[SERVER_NAME] == names[1]][:5], PROFILE] = "database"
    history = history.sample(frac=1.0, random_state=0).reset_index(drop=True)

    cut = features.encoder_span(history, encoder)
    assert len(cut) < len(history) / 2
    frame = features.inference_frame(history, METRICS, encoder)
    monkeypatch.setattr(features, "encoder_span", lambda h, steps: h)
    pd.testing.assert_frame_equal(frame, features.inference_frame(history, METRICS, encoder))
    assert set(frame.loc[frame[SERVER_NAME] == names[1], PROFILE]) == {"database"}


def test_samples_faster_than_the_contract_allows_are_refused() -> None:
    ok = raw(servers=2, hours=0.1, interval="5s")
    features.check_interval(pd.concat([ok, ok.head(50)]))  # repeated samples are one sample, not a 0 s gap
    fast = raw(servers=1, hours=0.02, interval="2s").assign(**{SERVER_NAME: "ppweb777"})
    with pytest.raises(features.SamplesTooFrequent, match="ppweb777 every 2 s"):
        features.check_interval(pd.concat([ok, fast]))


def test_future_rows_follow_the_last_observation() -> None:
    df = raw(servers=2, hours=3, interval="5min")
    frame = features.inference_frame(df, METRICS, encoder_steps=12)
    for _, rows in frame.groupby(SERVER_ID):
        assert len(rows) == 12 + features.PREDICTION_STEPS
        future = rows.iloc[12:]
        assert future[TIMESTAMP].iloc[0] == df[TIMESTAMP].max() + MODEL_STEP
        assert (future[TIMESTAMP].diff().dropna() == MODEL_STEP).all()
        assert (future[list(METRICS)] == features.FUTURE_PLACEHOLDER).all().all()


def test_seasonal_lags_read_each_steps_value_a_day_before_relative_to_the_window() -> None:
    """A seasonal lag is the target's value 24 h before each row (a gap carries the bin before it forward), in
    training and in the forecast grid's encoder and future rows alike; serving's batch equals training's, and
    each window reads the lag standardised by its own target scale, so yesterday is relative to now."""
    encoder, lag = 12, (24,)
    day = 24 * 12
    prepared = features.prepare_frame(raw(servers=3, hours=40, interval="5min"), METRICS)
    train = features.seasonal_training_frame(prepared, METRICS, lag)
    column = features.seasonal_column(CONSTANT, 24)
    before = prepared.set_index([SERVER_ID, features.TIME_IDX])[CONSTANT]
    wanted = before.reindex(pd.MultiIndex.from_arrays([train[SERVER_ID], train[features.TIME_IDX] - day]))
    assert len(train) == len(prepared) - 3 * day
    np.testing.assert_array_equal(train[column].to_numpy(), wanted.to_numpy())
    params = features.training_dataset(train, METRICS, encoder, lag_hours=lag).get_parameters()

    live = raw(servers=4, hours=27, interval="1min", seed=5)
    gap = live[TIMESTAMP].between(START + pd.Timedelta(hours=2), START + pd.Timedelta(hours=2, minutes=11))
    frame = features.inference_frame(live[~gap], METRICS, encoder, lag)
    history = features.prepare_frame(live[~gap], METRICS)
    for server, rows in frame.groupby(SERVER_ID):
        own = history[history[SERVER_ID] == server].set_index(features.TIME_IDX)[CONSTANT]
        source = own.reindex(range(own.index.min(), own.index.max() + 1)).ffill()
        assert rows[column].tolist() == source.loc[rows[features.TIME_IDX] - day].tolist(), server
    dataset = features.build_dataset(params, frame, predict=True)
    fast, servers = features.inference_inputs(params, frame)
    assert_same_batch(fast, features.window_batch(dataset))
    k, t = dataset.reals.index(column), METRICS.index(CONSTANT)
    centre, scale = fast["target_scale"][t].unbind(-1)
    restored = fast["decoder_cont"][..., k] * scale[:, None] + centre[:, None]
    windows = frame.set_index(SERVER_ID)[column].loc[servers].to_numpy().reshape(len(servers), -1)
    raw_lags = torch.tensor(windows[:, encoder:]).float()
    assert np.allclose(restored.numpy(), raw_lags.numpy(), rtol=1e-4, atol=1e-3)

    with pytest.raises(features.InsufficientHistory, match=r"needs 300 steps .*25 h"):
        features.inference_frame(raw(servers=1, hours=20, interval="5min"), METRICS, encoder, lag)
