"""``batchbridge emulator`` turns its options into the emulator's config."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import connector.cli
import connector.emulator
from connector.cli import app
from connector.emulator import EmulatorConfig
from connector.emulator.validation import DEFAULT_KNOWN_MODELS

runner = CliRunner()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[EmulatorConfig]:
    """The configs the command would serve with, instead of serving."""
    configs: list[EmulatorConfig] = []

    def run_emulator(config: EmulatorConfig, *args: Any, **kwargs: Any) -> None:
        configs.append(config)

    monkeypatch.setattr(connector.emulator, "run_emulator", run_emulator)
    monkeypatch.setattr(connector.cli, "_sigterm_as_interrupt", lambda: None)
    return configs


def test_any_model_and_flex_rate_reach_the_config(started: list[EmulatorConfig]) -> None:
    result = runner.invoke(app, ["emulator", "--any-model", "--flex-429-rate", "0.25"])
    assert result.exit_code == 0, result.output
    assert started[0].known_models == {} and started[0].flex_429_rate == 0.25


def test_by_default_unknown_models_are_refused(started: list[EmulatorConfig]) -> None:
    assert runner.invoke(app, ["emulator"]).exit_code == 0
    assert started[0].known_models == DEFAULT_KNOWN_MODELS and started[0].flex_429_rate == 0.0


def test_a_bad_rate_is_named_and_nothing_starts(started: list[EmulatorConfig]) -> None:
    result = runner.invoke(app, ["emulator", "--flex-429-rate", "2"])
    assert result.exit_code == 2 and "flex_429_rate" in result.output
    assert started == []
