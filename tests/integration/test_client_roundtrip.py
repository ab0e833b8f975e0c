"""The client against a real broker: produce in each wire format, read back equal; the watcher."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connector import schemas
from connector.client import (
    RequestProducer,
    ResultWatcher,
    TopicMissingError,
    make_request,
    now_ms,
    read_topics,
)
from connector.config import KafkaSettings, Settings, TopicNames
from connector.serde import build_codec
from tests.fixtures.records import sample

pytestmark = pytest.mark.integration

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Classify: my parcel is late"}],
}


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, n, 1) for name, n in partitions.items()])
    for future in futures.values():
        future.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        known = admin.list_topics(timeout=10).topics
        if all(
            name in known and len(known[name].partitions) == n for name, n in partitions.items()
        ):
            return
        time.sleep(0.1)
    raise AssertionError("topics not visible")


def settings_for(bootstrap: str, suffix: str, serde: str = "avro") -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=TopicNames(
            deferred=f"deferred.{suffix}",
            realtime=f"realtime.{suffix}",
            results=f"results.{suffix}",
            deadletter=f"deadletter.{suffix}",
            batches=f"batches.{suffix}",
        ),
        serde=serde,
        schema_registry_url=f"mock://{suffix}",
    )


def read_all(
    bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 30
) -> list:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            messages.extend(m for m in consumer.consume(100, 0.5) if m.error() is None)
    finally:
        consumer.close()
    return messages


@pytest.mark.parametrize(("serde", "partitions"), [("avro", 1), ("json", 2), ("confluent", 3)])
def test_request_produced_with_the_client_reads_back_equal(
    kafka_bootstrap, unique_name, serde, partitions
):
    settings = settings_for(kafka_bootstrap, f"{serde}.{unique_name}", serde)
    create_topics(
        kafka_bootstrap, {settings.topics.deferred: partitions, settings.topics.realtime: 1}
    )
    codec = build_codec(settings)  # one codec: the mock:// registry lives in the instance
    deferred = [
        make_request(
            f"req-{i}-ünïcode-{'x' * 70}",
            "openai",
            "gpt-4o-mini",
            "/v1/chat/completions",
            CHAT,
            metadata={"i": i},
            deadline_ms=now_ms() + 60_000 if i % 2 else None,
        )
        for i in range(5)
    ]
    realtime = make_request(
        "rt-1",
        "gemini",
        "gemini-2.5-flash",
        "generateContent",
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    )
    with RequestProducer(settings, codec=codec) as producer:
        for request in deferred:
            producer.send(request)
        producer.send(realtime, lane="realtime")
        assert producer.flush() == 6

    got = read_all(kafka_bootstrap, settings.topics.deferred, partitions, len(deferred))
    decoded = {m.key().decode(): codec.decode(schemas.REQUEST, m.value(), m.topic()) for m in got}
    assert decoded == {r["request_id"]: r for r in deferred}
    # Keyed by request_id: the same id always lands on the same partition.
    assert all(
        m.key().decode() == codec.decode(schemas.REQUEST, m.value(), m.topic())["request_id"]
        for m in got
    )

    (rt,) = read_all(kafka_bootstrap, settings.topics.realtime, 1, 1)
    assert codec.decode(schemas.REQUEST, rt.value(), rt.topic()) == realtime


def test_watcher_dedups_reports_bad_records_and_times_out(kafka_bootstrap, unique_name):
    settings = settings_for(kafka_bootstrap, unique_name)
    create_topics(kafka_bootstrap, {settings.topics.results: 3, settings.topics.deadletter: 2})
    codec = build_codec(settings)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def result(request_id: str) -> bytes:
        record = sample(schemas.RESULT) | {"request_id": request_id}
        return codec.encode(schemas.RESULT, record, settings.topics.results)

    def failure(request_id: str | None) -> bytes:
        record = sample(schemas.FAILURE) | {"request_id": request_id}
        return codec.encode(schemas.FAILURE, record, settings.topics.deadletter)

    for request_id in ("a", "b", "a"):  # "a" answered twice: at-least-once delivery
        producer.produce(settings.topics.results, key=request_id, value=result(request_id))
    producer.produce(settings.topics.deadletter, key="c", value=failure("c"))
    producer.produce(settings.topics.deadletter, key="junk", value=b"\x07not avro")
    producer.produce(settings.topics.deadletter, value=failure(None))
    assert producer.flush(30) == 0

    progress: list[tuple[int, int]] = []
    with ResultWatcher(settings, codec=codec) as watcher:
        outcomes = watcher.wait_for(
            ["a", "b", "c"], timeout=30, on_progress=lambda d, t: progress.append((d, t))
        )
        assert {k: kind for k, (kind, _) in outcomes.items()} == {
            "a": "result",
            "b": "result",
            "c": "deadletter",
        }
        assert progress[0] == (0, 3) and progress[-1] == (3, 3)
        # Let the rest of the topic arrive, then check what was counted on the way.
        started = time.monotonic()
        missing = watcher.wait_for(["a", "never"], timeout=3)
        assert time.monotonic() - started >= 2.9
        assert set(missing) == {"a"}
        assert watcher.stats.duplicates == 1
        assert [f.topic for f in watcher.stats.decode_failures] == [settings.topics.deadletter]
        assert watcher.stats.unkeyed == 1

    read = list(
        read_topics(settings, {settings.topics.results: schemas.RESULT}, codec=codec, timeout=20)
    )
    assert sorted(record["request_id"] for _, record in read) == ["a", "a", "b"]


def test_watcher_names_a_missing_topic(kafka_bootstrap, unique_name):
    settings = settings_for(kafka_bootstrap, unique_name)
    with ResultWatcher(settings) as watcher, pytest.raises(TopicMissingError, match="topics apply"):
        watcher.wait_for(["x"], timeout=2)
