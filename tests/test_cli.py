"""The ``batchbridge`` command line through typer's CliRunner."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from connector.cli import app
from connector.config import get_settings

runner = CliRunner()

COMMANDS = (
    "broker",
    "topics",
    "emulator",
    "worker",
    "status",
    "report",
    "demo",
    "produce",
    "deadletters",
    "replay",
)


@pytest.fixture(autouse=True)
def _fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def test_topics_help_lists_apply_and_list():
    result = runner.invoke(app, ["topics", "--help"])
    assert result.exit_code == 0
    assert "apply" in result.output and "list" in result.output


def test_invalid_settings_are_named_without_traceback_or_secret(monkeypatch):
    monkeypatch.setenv("BATCHBRIDGE_OPENAI__API_KEY", "sk-very-secret")
    monkeypatch.setenv("BATCHBRIDGE_PARTITIONS", "0")
    result = runner.invoke(app, ["topics", "list"])
    assert result.exit_code == 2
    assert "BATCHBRIDGE_PARTITIONS" in result.output
    assert "Traceback" not in result.output
    assert "sk-very-secret" not in result.output


def test_connector_errors_print_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("BATCHBRIDGE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    result = runner.invoke(app, ["topics", "apply", "--dry-run", "--dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "error:" in result.output and "does not exist" in result.output
