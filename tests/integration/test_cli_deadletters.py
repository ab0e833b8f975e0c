"""``batchbridge deadletters`` and ``replay`` against a real broker, through typer's CliRunner.

The dead letters are produced straight onto the topic with the codec, as a worker would.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from connector import cli, schemas
from connector.cli import app
from connector.client import read_messages, read_records
from connector.config import KafkaSettings, Settings, TopicNames, get_settings
from connector.deadletters import REPLAY_OF
from connector.serde import AvroCodec
from tests.fixtures.records import sample

pytestmark = pytest.mark.integration

runner = CliRunner()
ROLES = ("deferred", "realtime", "results", "deadletter", "batches", "replays")
T0 = 1_800_000_000_000  # 2027-01-15T08:00:00Z
HOUR = 3_600_000


@pytest.fixture
def settings(
    kafka_bootstrap: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    names = {role: f"dlq.{role}.{unique_name}" for role in ROLES}
    monkeypatch.setenv("BATCHBRIDGE_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    for role, name in names.items():
        monkeypatch.setenv(f"BATCHBRIDGE_TOPICS__{role.upper()}", name)
    monkeypatch.setattr(cli.console, "width", 250)  # the rich console is sized once, at import
    get_settings.cache_clear()
    assert runner.invoke(app, ["topics", "apply"]).exit_code == 0
    yield Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap), topics=TopicNames(**names)
    )
    get_settings.cache_clear()


def failure(request_id: str | None, error_class: str, at: int, **fields: object) -> dict:
    record = copy.deepcopy(sample("InferenceFailure")) | {"truncated": None}
    record.update(request_id=request_id, error_class=error_class, failed_at=at, **fields)
    if record.get("request") is not None:
        record["request"].update(request_id=request_id, attempt=3)
    return record


def produce_dead_letters(settings: Settings, records: list[dict | bytes]) -> list[str]:
    """Produce in order to partition 0; return each one's replay_of."""
    codec = AvroCodec()
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    topic = settings.topics.deadletter
    for record in records:
        value = (
            record if isinstance(record, bytes) else codec.encode(schemas.FAILURE, record, topic)
        )
        key = None if isinstance(record, bytes) else record["request_id"]
        producer.produce(topic, key=key, value=value, partition=0)
    assert producer.flush(30) == 0
    offsets = [read.offset for read in read_records(settings, {topic: schemas.FAILURE}, timeout=20)]
    assert len(offsets) == len(records)
    return [f"{topic}:0:{offset}" for offset in offsets]


def deferred_requests(settings: Settings) -> list[tuple[str, dict]]:
    topic = settings.topics.deferred
    codec = AvroCodec()
    return [
        (msg.key().decode(), codec.decode(schemas.REQUEST, msg.value(), topic))
        for msg in read_messages(settings, [topic], timeout=20)
    ]


def invoke_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json", "--timeout", "20"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_deadletters_counts_and_filters(settings: Settings) -> None:
    produce_dead_letters(
        settings,
        [
            failure("a", "expired", T0),
            failure("b", "expired", T0 + HOUR),
            failure("c", "expired", T0 + 2 * HOUR),
            failure(
                "d", "provider_rejected", T0, provider="anthropic", model="claude-3-5-haiku-latest"
            ),
            failure(
                None, "decode_error", T0, request=None, raw_value=b"\x00", provider=None, model=None
            ),
            b"not avro at all",
        ],
    )

    everything = invoke_json("deadletters")
    assert (everything["total"], everything["replayable"], everything["replayed"]) == (6, 4, 0)
    assert {(row["error_class"], row["provider"]): row["count"] for row in everything["by"]} == {
        ("expired", "openai"): 3,
        ("provider_rejected", "anthropic"): 1,
        ("decode_error", "-"): 1,
        ("(undecodable)", "-"): 1,
    }

    assert invoke_json("deadletters", "--class", "expired")["total"] == 3
    assert invoke_json("deadletters", "--provider", "anthropic")["total"] == 1
    assert invoke_json("deadletters", "--request-id", "a", "--request-id", "d")["total"] == 2
    window = invoke_json(
        "deadletters", "--since", "2027-01-15T08:30", "--until", "2027-01-15T10:00Z"
    )
    assert window["total"] == 1  # b only: c failed at 10:00, which --until excludes
    newest = invoke_json("deadletters", "--class", "expired", "--show", "2")["newest"]
    assert [d["request_id"] for d in newest] == ["c", "b"]

    text = runner.invoke(app, ["deadletters", "--show", "1", "--timeout", "20"])
    assert text.exit_code == 0, text.output
    assert "6 dead letter(s), 4 replayable" in text.output
    assert "provider_rejected" in text.output and "Newest dead letters" in text.output

    bad = runner.invoke(app, ["deadletters", "--since", "last tuesday"])
    assert bad.exit_code == 2 and "not a time" in bad.output


def test_replay_sends_original_requests_once_and_reports_the_rest(settings: Settings) -> None:
    coordinates = produce_dead_letters(
        settings,
        [
            failure("a", "expired", T0),
            failure("b", "retries_exhausted", T0),
            failure(
                None, "expired", T0, request=None, raw_value=b"\x00", provider=None, model=None
            ),
            failure("a", "expired", T0 + HOUR),  # a failed again later: this one is replayed
        ],
    )

    dry = invoke_json("replay", "--class", "expired", "--dry-run")
    assert (dry["dry_run"], dry["selected"], dry["to_replay"], dry["replayed"]) == (True, 3, 1, 0)
    assert dry["refused"] == {"no original request": 1}
    assert dry["superseded"] == 1
    assert deferred_requests(settings) == []

    done = invoke_json("replay", "--class", "expired", "--class", "retries_exhausted")
    assert (done["dry_run"], done["replayed"]) == (False, 2)
    sent = deferred_requests(settings)
    assert sorted((key, req["attempt"], req["metadata"][REPLAY_OF]) for key, req in sent) == [
        ("a", 1, coordinates[3]),
        ("b", 1, coordinates[1]),
    ]
    assert all(req["metadata"]["tenant"] == "acme" for _, req in sent)  # caller's metadata kept

    again = invoke_json("replay", "--class", "expired", "--class", "retries_exhausted")
    assert (again["replayed"], again["already_replayed"]) == (0, 2)
    assert len(deferred_requests(settings)) == 2
    counted = invoke_json("deadletters")
    assert counted["replayed"] == 2

    forced = invoke_json("replay", "--request-id", "b", "--force")
    assert forced["replayed"] == 1
    replays_of_b = [
        req["metadata"][REPLAY_OF] for key, req in deferred_requests(settings) if key == "b"
    ]
    assert replays_of_b == [coordinates[1], coordinates[1]]  # same tag: the lane's de-dup sees it


def test_replay_needs_a_filter_and_shows_progress_and_summary(settings: Settings) -> None:
    produce_dead_letters(settings, [failure("x", "expired", T0)])

    unfiltered = runner.invoke(app, ["replay", "--timeout", "20"])
    assert unfiltered.exit_code == 2 and "--all" in unfiltered.output
    assert deferred_requests(settings) == []

    text = runner.invoke(app, ["replay", "--all", "--timeout", "20"])
    assert text.exit_code == 0, text.output
    assert "replay" in text.output and "1/1" in text.output  # the progress bar
    assert f"replayed 1 of 1 selected dead letter(s) to {settings.topics.deferred}" in text.output
    assert [key for key, _ in deferred_requests(settings)] == ["x"]

    again = runner.invoke(app, ["replay", "--all", "--dry-run", "--timeout", "20"])
    assert "already replayed: 1 (skipped; --force sends them again)" in again.output
