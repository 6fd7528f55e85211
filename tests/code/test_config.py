"""Job configs are strict and frozen: a typo names the bad field and the valid ones, and nothing changes a
validated config; the network's hyperparameters are one nested model that training copies into the saved one."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ValidationError

from tests.conftest import ROOT
from tftmon.cli import main
from tftmon.config import (
    JOB_CONFIGS,
    ModelConfig,
    NetworkConfig,
    ServiceConfig,
    Settings,
    TrainConfig,
    error_text,
)

OLD_MODEL_CONFIG = ROOT / "tests" / "fixtures" / "pyfunc_0_3_0" / "artifacts" / "model_dir_src" / "config.json"
CONFIGS: list[type[BaseModel]] = [*JOB_CONFIGS.values(), NetworkConfig, ModelConfig]


@pytest.mark.parametrize("model", CONFIGS, ids=lambda m: m.__name__)
def test_an_unknown_field_names_itself_and_the_valid_ones(model: type[BaseModel]) -> None:
    with pytest.raises(ValidationError) as caught:
        model(no_such_field=1)
    text = str(caught.value)
    assert "unknown field no_such_field" in text
    assert all(name in text for name in model.model_fields)


def test_a_typo_suggests_the_field_meant() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(max_epoch=1)
    message = error_text(caught.value)
    assert "unknown field max_epoch (did you mean max_epochs?) in TrainConfig" in message
    assert "valid fields: targets, max_epochs," in message
    assert "\n" not in message


def test_a_typo_in_the_nested_model_config_names_the_network_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(model={"hiden_size": 8})
    message = error_text(caught.value)
    assert message.startswith("invalid TrainConfig: model: unknown field hiden_size (did you mean hidden_size?)")
    assert f"valid fields: {', '.join(NetworkConfig.model_fields)}" in message


def test_error_text_is_one_line_with_every_problem() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(max_epochs=0, seed="x")
    message = error_text(caught.value)
    assert "\n" not in message
    assert message.startswith("invalid TrainConfig: max_epochs: ") and "; seed: " in message


@pytest.mark.parametrize("model", [*JOB_CONFIGS.values(), Settings], ids=lambda m: m.__name__)
def test_configs_are_frozen(model: type[BaseModel]) -> None:
    config = model()
    field = next(iter(model.model_fields))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(config, field, getattr(config, field))


def test_train_config_nests_the_network_hyperparameters() -> None:
    network = NetworkConfig(
        hidden_size=8,
        attention_head_size=1,
        lstm_layers=2,
        dropout=0.2,
        hidden_continuous_size=4,
        learning_rate=0.01,
        reduce_on_plateau_patience=5,
    )
    config = TrainConfig(model=network.model_dump(), encoder_hours=2)
    assert config.model == network
    saved = config.to_model_config(["cpu_user_pct"], [1.0])
    assert saved.model_dump(include=set(NetworkConfig.model_fields)) == network.model_dump()
    assert (saved.targets, saved.encoder_steps, saved.loss_weights) == (["cpu_user_pct"], 24, [1.0])
    assert TrainConfig().params("train")["train.model.hidden_size"] == str(NetworkConfig().hidden_size)


def test_model_configs_saved_by_older_versions_still_load() -> None:
    config = ModelConfig.model_validate_json(OLD_MODEL_CONFIG.read_text())
    assert (config.hidden_size, config.encoder_steps, len(config.targets)) == (4, 24, 14)
    assert config.center_steps is None  # trained centred on the encoder's mean, so it forecasts that way
    assert ModelConfig.model_validate_json(config.model_dump_json()) == config


def test_a_new_model_keeps_the_centre_it_was_trained_with() -> None:
    job = TrainConfig()
    assert job.model.center_steps == 1
    assert job.to_model_config(["cpu_user_pct"]).center_steps == 1
    assert TrainConfig(model={"center_steps": None}).to_model_config(["cpu_user_pct"]).center_steps is None


def test_service_config_reads_its_environment_and_settings_ignore_unrelated_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TFTMON_SERVICE_HOST", "0.0.0.0")
    monkeypatch.setenv("SOME_OTHER_TOOL_SETTING", "1")
    assert ServiceConfig().host == "0.0.0.0"
    assert Settings().tftmon_model_name == "tftmon"


@pytest.mark.parametrize("job", sorted(JOB_CONFIGS))
def test_config_schema_command_prints_the_job_schema(job: str) -> None:
    result = CliRunner().invoke(main, ["config", "--schema", job])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema["title"] == JOB_CONFIGS[job].__name__
    assert list(schema["properties"]) == list(JOB_CONFIGS[job].model_fields)
    assert schema["additionalProperties"] is False


def test_config_schema_of_an_unknown_job_names_the_valid_ones() -> None:
    result = CliRunner().invoke(main, ["config", "--schema", "trian"])
    assert result.exit_code == 2
    assert all(f"'{job}'" in result.output for job in JOB_CONFIGS)
