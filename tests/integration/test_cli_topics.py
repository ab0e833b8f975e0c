"""``batchbridge topics`` and ``produce`` against a real broker, through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from connector import cli
from connector.cli import app
from connector.config import get_settings

pytestmark = pytest.mark.integration

runner = CliRunner()
ROLES = ("deferred", "realtime", "results", "deadletter", "batches", "replays")


@pytest.fixture(autouse=True)
def _fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_topics_apply_dry_run_then_apply_twice(kafka_bootstrap, unique_name, monkeypatch):
    monkeypatch.setenv("BATCHBRIDGE_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    for role in ROLES:
        monkeypatch.setenv(f"BATCHBRIDGE_TOPICS__{role.upper()}", f"cli.{role}.{unique_name}")

    dry = runner.invoke(app, ["topics", "apply", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"cli.deferred.{unique_name}" in dry.output and "create" in dry.output

    first = runner.invoke(app, ["topics", "apply"])
    assert first.exit_code == 0, first.output
    assert "created" in first.output

    second = runner.invoke(app, ["topics", "apply"])
    assert second.exit_code == 0, second.output
    assert "no changes" in second.output

    monkeypatch.setattr(cli.console, "width", 250)  # the rich console is sized once, at import
    listed = runner.invoke(app, ["topics", "list"])
    assert listed.exit_code == 0, listed.output
    assert f"cli.results.{unique_name}" in listed.output

    produced = runner.invoke(app, ["produce", "--count", "5"])
    assert produced.exit_code == 0, produced.output
    assert "sent 5 request(s)" in produced.output


def test_report_and_status_read_the_topics(kafka_bootstrap, unique_name, monkeypatch):
    from confluent_kafka import Producer

    from connector.serde import AvroCodec
    from tests.fixtures.records import sample

    monkeypatch.setenv("BATCHBRIDGE_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    for role in ROLES:
        monkeypatch.setenv(f"BATCHBRIDGE_TOPICS__{role.upper()}", f"ops.{role}.{unique_name}")
    assert runner.invoke(app, ["topics", "apply"]).exit_code == 0
    codec = AvroCodec()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    results, deadletter, batches = (
        f"ops.{role}.{unique_name}" for role in ("results", "deadletter", "batches")
    )
    for request_id in ("a", "b", "a"):
        record = sample("InferenceResult") | {
            "request_id": request_id,
            "cost_usd": 1.0,
            "realtime_cost_usd": 2.0,
        }
        producer.produce(
            results, key=request_id, value=codec.encode("InferenceResult", record, results)
        )
    failure = sample("InferenceFailure") | {"request_id": "c", "error_class": "retries_exhausted"}
    producer.produce(
        deadletter, key="c", value=codec.encode("InferenceFailure", failure, deadletter)
    )
    for batch_id, state, at in (
        ("b-1", "SUBMITTED", 1),
        ("b-1", "EMITTED", 2),
        ("b-2", "SUBMITTED", 1),
    ):
        record = sample("BatchEvent") | {"batch_id": batch_id, "state": state, "event_at": at}
        producer.produce(batches, key=batch_id, value=codec.encode("BatchEvent", record, batches))
    assert producer.flush(30) == 0

    report = runner.invoke(app, ["report", "--json", "--timeout", "20"])
    assert report.exit_code == 0, report.output
    out = json.loads(report.output)
    assert out["results"] == 2 and out["duplicates"] == 1
    assert out["deadletters_by_class"] == {"retries_exhausted": 1}
    assert out["cost_usd"] == 2.0 and out["realtime_cost_usd"] == 4.0 and out["saving_pct"] == 50.0

    monkeypatch.setattr(cli.console, "width", 250)
    status = runner.invoke(app, ["status", "--timeout", "20"])
    assert status.exit_code == 0, status.output
    assert "b-2" in status.output and "b-1" not in status.output  # EMITTED is final: not in flight
    assert "EMITTED: 1, SUBMITTED: 1" in status.output
