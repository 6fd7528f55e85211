"""Save/load, forecasting after the last observation, unseen servers, subsets and error messages."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from tftmon.config import EvaluationConfig
from tftmon.contract import (
    HORIZONS,
    INCIDENT_STATE,
    METRICS,
    MODEL_STEP,
    PERCENT_METRICS,
    PROFILE,
    QUANTILE_NAMES,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    TIMESTAMP,
    metric_bounds,
    quantile_name,
)
from tftmon.encoding import ServerMapping
from tftmon.evaluation import backtest
from tftmon.model.network import (
    BAND_SCALE_KEY,
    ForecastModel,
    at_horizons,
    features,
    forecast,
    load_model,
    save_model,
)
from tftmon.model.train import (
    AveragedWeights,
    StopReason,
    TrainingResult,
    fit,
    incident_weights,
    validation_windows,
    window_loader,
)

from .conftest import periodic_fleet, tiny_config


def test_reloaded_model_predicts_exactly_the_same(
    trained: tuple[ForecastModel, TrainingResult], fleet: pd.DataFrame, tmp_path: Path
) -> None:
    model, _ = trained
    save_model(model, tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert files == {
        "model.safetensors",
        "config.json",
        "dataset_parameters.json",
        "training_info.json",
        "server_mapping.json",
    }
    info = load_model(tmp_path / "m").training_info
    assert info["targets"] == list(METRICS)
    assert info["encoder_steps"] == 24 and info["prediction_steps"] == features.PREDICTION_STEPS
    assert len(ServerMapping.load(tmp_path / "m" / "server_mapping.json")) == len(info["servers"]) == 5
    pd.testing.assert_frame_equal(forecast(load_model(tmp_path / "m"), fleet), forecast(model, fleet))


def test_forecasts_start_after_the_last_observation(
    trained: tuple[ForecastModel, TrainingResult], fleet: pd.DataFrame
) -> None:
    model, _ = trained
    history = fleet[fleet[TIMESTAMP] < fleet[TIMESTAMP].max() - pd.Timedelta(hours=8)]
    out = forecast(model, history)
    last = history[TIMESTAMP].max()
    assert len(out) == 5 * features.PREDICTION_STEPS * len(METRICS)
    assert (out[TIMESTAMP] > last).all()
    np.testing.assert_array_equal(out[TIMESTAMP], last + out["step"] * MODEL_STEP)
    assert (out[TIMESTAMP].dt.floor(MODEL_STEP) == out[TIMESTAMP]).all()
    assert (out["p10"] <= out["p50"]).all() and (out["p50"] <= out["p90"]).all()

    # even 24 training batches make the p50 follow the known periodic future (seeded: r is about 0.37)
    truth = fleet.set_index([SERVER_NAME, TIMESTAMP])
    for metric in ("cpu_user_pct", "mem_used_pct"):
        rows = out[out["metric"] == metric]
        actual = truth.loc[list(zip(rows[SERVER_NAME], rows[TIMESTAMP], strict=True)), metric].to_numpy()
        corr = np.corrcoef(rows["p50"], actual)[0, 1]
        assert corr > 0.25, (metric, corr)

    horizons = at_horizons(out)
    assert set(horizons["horizon"]) == set(HORIZONS)
    assert set(horizons["step"]) == set(HORIZONS.values())


def test_every_quantile_lies_within_the_metric_contract_range(
    trained: tuple[ForecastModel, TrainingResult], fleet: pd.DataFrame
) -> None:
    model, _ = trained
    # bands stretched tenfold (the most calibration may widen them) reach past 0 % and 100 %
    stretched = {target: [10.0] * features.PREDICTION_STEPS for target in model.config.targets}
    out = forecast(replace(model, training_info={**model.training_info, BAND_SCALE_KEY: stretched}), fleet)
    lower, upper = metric_bounds(METRICS)
    bounds = pd.DataFrame({"lower": lower, "upper": upper}, index=list(METRICS)).loc[out["metric"]]
    values = out[[quantile_name(q) for q in model.config.quantiles]].to_numpy()
    assert (values >= bounds[["lower"]].to_numpy()).all() and (values <= bounds[["upper"]].to_numpy()).all()
    percent = out[out["metric"].isin(PERCENT_METRICS)]
    assert (percent[QUANTILE_NAMES[0]] == 0.0).any() and (percent[QUANTILE_NAMES[-1]] == 100.0).any()


def test_future_rows_are_never_read(
    trained: tuple[ForecastModel, TrainingResult], fleet: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = trained
    before = forecast(model, fleet)
    monkeypatch.setattr(features, "FUTURE_PLACEHOLDER", 1e6)
    pd.testing.assert_frame_equal(forecast(model, fleet), before)


def test_any_raw_interval_gives_the_same_forecast(trained: tuple[ForecastModel, TrainingResult]) -> None:
    model, _ = trained
    fine = periodic_fleet(servers=2, days=0.5, interval="1min")
    out = forecast(model, fine)
    assert out[TIMESTAMP].min() == fine[TIMESTAMP].max().floor(MODEL_STEP) + MODEL_STEP
    assert np.isfinite(out[list(QUANTILE_NAMES)].to_numpy()).all()


def test_unseen_servers_get_their_own_forecasts(
    trained: tuple[ForecastModel, TrainingResult], fleet: pd.DataFrame
) -> None:
    model, _ = trained
    known = fleet[SERVER_NAME].unique()
    renamed = {known[0]: "brand-new-a", known[1]: "ppdb777"}
    history = fleet[fleet[SERVER_NAME].isin(renamed)].drop(columns=[PROFILE])
    history[SERVER_NAME] = history[SERVER_NAME].map(renamed)
    out = forecast(model, history.groupby(SERVER_NAME).tail(48))
    assert set(out[SERVER_NAME]) == {"brand-new-a", "ppdb777"}
    assert out.groupby(SERVER_NAME)["server_id"].nunique().eq(1).all()
    assert out["server_id"].nunique() == 2
    assert dict(out.drop_duplicates(SERVER_NAME)[[SERVER_NAME, PROFILE]].values) == {
        "brand-new-a": "generic",
        "ppdb777": "database",
    }
    assert np.isfinite(out[list(QUANTILE_NAMES)].to_numpy()).all()
    a, b = (g.sort_values(["metric", "step"])["p50"].to_numpy() for _, g in out.groupby(SERVER_NAME))
    assert not np.array_equal(a, b)


def test_two_names_with_one_given_server_id_are_two_servers(
    trained: tuple[ForecastModel, TrainingResult], fleet: pd.DataFrame
) -> None:
    """A server_id column in the input is not trusted: the id comes from the name, so no server is dropped."""
    model, _ = trained
    one = fleet[fleet[SERVER_NAME] == fleet[SERVER_NAME].iloc[0]].tail(48)
    copy = one.assign(**{SERVER_NAME: "ppweb999"})
    history = pd.concat([one, copy], ignore_index=True).assign(server_id="0123456789abcdef")
    out = forecast(model, history)
    assert set(out[SERVER_NAME]) == {one[SERVER_NAME].iloc[0], "ppweb999"}
    assert out.groupby(SERVER_NAME)["server_id"].first().nunique() == 2


def test_too_little_history_names_the_server_and_the_need(
    trained: tuple[ForecastModel, TrainingResult], fleet: pd.DataFrame
) -> None:
    model, _ = trained
    name = fleet[SERVER_NAME].iloc[0]
    short = fleet[fleet[SERVER_NAME] == name].head(5)
    with pytest.raises(features.InsufficientHistory, match=rf"{name} has 5 steps.*needs 24 steps .*2 h"):
        forecast(model, short)


def test_training_exposes_per_epoch_metrics(trained: tuple[ForecastModel, TrainingResult]) -> None:
    _, result = trained
    metrics = result.trainer.callback_metrics
    assert {"train_loss_epoch", "val_loss", "lr"} <= set(metrics)
    assert np.isfinite(result.best_val_loss)
    assert len(result.validation) > 0


def test_a_bounded_validation_scores_windows_of_every_server(fleet: pd.DataFrame) -> None:
    config = tiny_config(max_epochs=1, max_batches_per_epoch=1, max_val_batches=1, batch_size=5)
    _, result = fit(fleet, config)
    validation = result.validation
    servers = validation.decoded_index[SERVER_ID]
    picked = validation_windows(len(validation), config)
    assert len(picked) == servers.nunique() < len(validation)
    assert set(servers.iloc[picked]) == set(servers)
    scored = [window for batch in result.trainer.val_dataloaders.sampler for window in batch]  # whole batches
    assert scored == picked
    assert validation_windows(len(validation), tiny_config(max_val_batches=None)) == list(range(len(validation)))


def test_training_stops_at_its_time_budget_with_validated_weights(fleet: pd.DataFrame) -> None:
    config = tiny_config(max_epochs=40, max_fit_minutes=0.002)  # 0.12 s: a batch or two
    model, result = fit(fleet, config)
    assert result.stopped_by is StopReason.TIME_LIMIT
    assert result.trainer.global_step < config.max_epochs * (config.max_batches_per_epoch or 0) / 10
    assert np.isfinite(result.best_val_loss)  # validated when the budget stopped it: those weights are kept
    assert forecast(model, fleet)[SERVER_NAME].nunique() == fleet[SERVER_NAME].nunique()


def test_training_without_progress_bars_logs_each_epoch(fleet: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tftmon.model.train"):
        _, result = fit(fleet, tiny_config(max_epochs=2, max_batches_per_epoch=2))
    lines = [r.getMessage() for r in caplog.records if r.name == "tftmon.model.train"]
    epochs, [stopped] = lines[:-1], lines[-1:]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert f"(best {result.best_val_loss:.3f})" in epochs[-1] and epochs[-1].endswith("elapsed")
    assert result.stopped_by is StopReason.MAX_EPOCHS
    assert stopped.startswith("training stopped by max epochs after 2 of 2 epochs")
    assert stopped.endswith(f"best val_loss {result.best_val_loss:.3f}")


class _LastStepWeights(Callback):
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.weights = [p.detach().clone() for p in pl_module.parameters()]


def test_weight_averaging_keeps_the_average_it_validated(fleet: pd.DataFrame, tmp_path: Path) -> None:
    config = tiny_config(max_epochs=1, max_batches_per_epoch=6, weight_average_decay=0.5, checkpoint_dir=tmp_path)
    last_step = _LastStepWeights()
    model, result = fit(fleet, config, callbacks=[last_step])
    averaged = next(c for c in result.trainer.callbacks if isinstance(c, AveragedWeights))
    assert averaged.average is not None
    kept = [p.detach() for p in model.network.parameters()]
    assert all(torch.equal(k, a) for k, a in zip(kept, averaged.average, strict=True))
    assert not all(torch.equal(k, w) for k, w in zip(kept, last_step.weights, strict=True))

    loader = window_loader(
        result.validation, validation_windows(len(result.validation), config), config.batch_size, config, False
    )
    fresh = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    [scores] = fresh.validate(model.network, dataloaders=loader, verbose=False)
    assert scores["val_loss"] == pytest.approx(result.best_val_loss, rel=1e-5)
    saved = torch.load(tmp_path / "best.ckpt", weights_only=False)["state_dict"]  # our own file, just written
    assert all(torch.equal(saved[name], p.detach()) for name, p in model.network.named_parameters())


def test_only_windows_whose_forecast_soon_holds_an_incident_are_oversampled(fleet: pd.DataFrame) -> None:
    config = tiny_config(incident_oversampling=8.0, incident_lead_hours=1.0)
    targets = features.resolve_targets(None, fleet.columns)
    frame = features.prepare_frame(fleet, targets)
    server = frame[SERVER_ID].iloc[0]
    at = int(frame.loc[frame[SERVER_ID] == server, features.TIME_IDX].iloc[300])
    incident = (frame[SERVER_ID] == server) & frame[features.TIME_IDX].between(at, at + 2)
    frame.loc[incident, STATE] = INCIDENT_STATE
    dataset = features.training_dataset(frame, targets, config.encoder_steps)
    weights = incident_weights(dataset, frame, config.incident_oversampling, config.incident_lead_steps)

    index = dataset.decoded_index
    first = index["time_idx_first_prediction"]
    soon = (index[SERVER_ID] == server) & first.between(at - config.incident_lead_steps + 1, at + 2)
    assert soon.sum() == config.incident_lead_steps + 2
    assert (weights[soon.to_numpy()] == 9.0).all()
    assert (weights[~soon.to_numpy()] == 1.0).all()  # later in the forecast, or another server: not yet visible
    assert (incident_weights(dataset, frame.drop(columns=STATE), 8.0, 12) == 1.0).all()  # telemetry: uniform


def test_a_subset_of_targets_trains_and_forecasts(fleet: pd.DataFrame) -> None:
    subset = ["cpu_iowait_pct", "mem_used_pct"]
    data = fleet[[TIMESTAMP, SERVER_NAME, *subset]]
    model, _ = fit(data, tiny_config(targets=subset, max_epochs=1, max_batches_per_epoch=3))
    out = forecast(model, data)
    assert sorted(out["metric"].unique()) == sorted(subset)
    assert model.config.targets == subset


def test_a_model_with_seasonal_lags_reads_them_and_asks_for_their_history(fleet: pd.DataFrame, tmp_path: Path) -> None:
    """Trained with yesterday as an input, the network's forecast moves when yesterday does; it survives a save
    and load, and names the history it needs (encoder + the day before it) where a server has less."""
    subset = ["cpu_iowait_pct", "mem_used_pct"]
    data = fleet[[TIMESTAMP, SERVER_NAME, *subset]]
    model, _ = fit(
        data, tiny_config(targets=subset, max_epochs=1, max_batches_per_epoch=3, model={"seasonal_lag_hours": [24]})
    )
    assert model.config.history_steps == 24 + 288
    assert features.seasonal_columns(subset, [24])[0] in model.network.hparams.time_varying_reals_decoder
    save_model(model, tmp_path / "m")
    reloaded = load_model(tmp_path / "m")
    out = forecast(reloaded, data)
    pd.testing.assert_frame_equal(out, forecast(model, data))
    last = data[TIMESTAMP].max()
    yesterday = data[TIMESTAMP].between(last - pd.Timedelta(hours=24), last - pd.Timedelta(hours=16))
    moved = forecast(reloaded, data.assign(mem_used_pct=data["mem_used_pct"].where(~yesterday, 99.0)))
    assert not np.allclose(moved["p50"].to_numpy(), out["p50"].to_numpy())
    name = data[SERVER_NAME].iloc[0]
    short = data[(data[SERVER_NAME] == name) & (data[TIMESTAMP] > last - pd.Timedelta(hours=20))]
    with pytest.raises(features.InsufficientHistory, match=r"needs 312 steps .*26 h: 2 h of encoder, 24 h before it"):
        forecast(reloaded, short)


def test_too_short_training_data_is_refused() -> None:
    with pytest.raises(ValueError, match="enough history"):
        fit(periodic_fleet(servers=2, days=0.3), tiny_config())


def test_calibrating_a_calibrated_model_fits_anew(
    trained: tuple[ForecastModel, TrainingResult], fleet: pd.DataFrame
) -> None:
    """Calibration fits on the raw forecasts: run again, it gives the same bands and thresholds, where
    fitting on already widened bands would shrink them back towards 1."""
    model, _ = trained
    copy = replace(model, training_info=dict(model.training_info))
    config = EvaluationConfig(holdout_hours=9, alert_fit_hours=12)
    holdout = backtest.holdout_start(fleet, config.holdout_hours)
    first = backtest.calibrate(copy, fleet, holdout, config)
    once = dict(copy.training_info)
    assert BAND_SCALE_KEY in once and backtest.COMPARISON_THRESHOLDS_KEY in once
    assert backtest.calibrate(copy, fleet, holdout, config) == first
    assert copy.training_info == once
