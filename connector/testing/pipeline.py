"""A whole pipeline on one machine: fresh topics on a broker, a provider emulator, and
worker processes (``python -m connector worker``) that a caller can start, stop and kill -9.

Used by the integration tests, the fault matrix (tests/faults) and the benchmarks. It reads
back everything a run left behind — outcomes with their duplicates, the requests and
retries on the deferred topic, the tables' changelogs, the emulator's batches — so that
``connector.testing.accounting`` can judge the run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from connector import schemas
from connector.client import RequestProducer, ResultWatcher, WatchStats, make_request, read_topics
from connector.config import KafkaSettings, Settings, TopicNames
from connector.emulator import Emulator, EmulatorThread
from connector.errors import DecodeError
from connector.serde import Codec, build_codec
from connector.testing.accounting import (
    Account,
    AttemptRecord,
    Expected,
    OutcomeEvent,
    ProviderBatch,
    account,
    match_outcomes,
    source_key,
)
from connector.topics import apply_topics

BODIES = {
    ("openai", "/v1/chat/completions"): lambda text: {
        "messages": [{"role": "user", "content": text}]
    },
    ("openai", "/v1/embeddings"): lambda text: {"input": text},
    ("anthropic", "/v1/messages"): lambda text: {
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
    },
    ("gemini", "generateContent"): lambda text: {
        "contents": [{"role": "user", "parts": [{"text": text}]}]
    },
}
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "gemini": "gemini-2.5-flash",
}
ENDPOINTS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "generateContent",
}
READY_LINE = "[^Worker]: Ready"
# Large enough for any record a topic in topics/ accepts (librdkafka's default is 1 MB).
PRODUCER_MAX_BYTES = 16 * 1024 * 1024
# Log lines worth showing when a run fails.
_NOTABLE = re.compile(r"\b(ERROR|CRITICAL|Crashed|Traceback)\b|Error:|Exception:")


def where(msg: Message) -> tuple[str, int, int]:
    """The topic, partition and offset of a consumed or delivered record (always set there)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None, (
        "a record with no place"
    )
    return topic, partition, offset


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it is truthy (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


class Pipeline:
    """Fresh topics and app id on a broker, and the worker processes that serve them.

    Arguments:
        bootstrap: the broker (or a proxy in front of it) every client here connects to.
        uid: a suffix that keeps this pipeline's topics and consumer groups apart.
        tmp: where worker logs and worker data go.
        emulator: the emulator thread (``.emulator`` may be None when it runs elsewhere).
        url: the emulator's base URL.
        worker_env: settings for every worker, e.g. ``{"batching__max_wait_s": "1"}``.
    """

    def __init__(
        self,
        bootstrap: str,
        uid: str,
        tmp: Path,
        emulator: EmulatorThread,
        url: str,
        worker_env: Mapping[str, str] | None = None,
    ) -> None:
        self.uid = uid
        self.tmp = tmp
        self.emulator: Emulator | None = emulator.emulator
        names = TopicNames(
            deferred=f"{uid}.deferred",
            realtime=f"{uid}.realtime",
            results=f"{uid}.results",
            deadletter=f"{uid}.deadletter",
            batches=f"{uid}.batches",
        )
        self.settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=bootstrap), topics=names, app_id=f"bb-{uid}"
        )
        self.env = {
            "BATCHBRIDGE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "BATCHBRIDGE_APP_ID": self.settings.app_id,
            "BATCHBRIDGE_TOPICS__DEFERRED": names.deferred,
            "BATCHBRIDGE_TOPICS__REALTIME": names.realtime,
            "BATCHBRIDGE_TOPICS__RESULTS": names.results,
            "BATCHBRIDGE_TOPICS__DEADLETTER": names.deadletter,
            "BATCHBRIDGE_TOPICS__BATCHES": names.batches,
            "BATCHBRIDGE_OPENAI__BASE_URL": f"{url}/v1",
            "BATCHBRIDGE_ANTHROPIC__BASE_URL": url,
            "BATCHBRIDGE_GEMINI__BASE_URL": url,
            "BATCHBRIDGE_OPENAI__MAX_RETRIES": "0",
            "BATCHBRIDGE_ANTHROPIC__MAX_RETRIES": "0",
            "BATCHBRIDGE_GEMINI__MAX_RETRIES": "0",
            "BATCHBRIDGE_PARTITIONS": "2",
            "BATCHBRIDGE_DATA_DIR": str(tmp / "data"),
            "BATCHBRIDGE_POLL_INITIAL_S": "0.3",
            "BATCHBRIDGE_POLL_MAX_S": "1",
            "BATCHBRIDGE_TICK_INTERVAL_S": "0.3",
            "BATCHBRIDGE_BATCHING__MAX_WAIT_S": "2",
            "BATCHBRIDGE_BATCHING__MAX_LINGER_S": "4",
            "BATCHBRIDGE_BATCHING__MIN_BATCH": "5",
            "BATCHBRIDGE_BATCHING__MAX_REQUESTS": "20",
            "BATCHBRIDGE_BATCHING__EXPECTED_TURNAROUND_S": "25",
            "BATCHBRIDGE_BATCHING__DEADLINE_MARGIN_S": "2",
            "BATCHBRIDGE_BATCHING__MAX_ATTEMPTS": "2",
            "BATCHBRIDGE_REALTIME_CONCURRENCY": "4",
        }
        self.env.update(_setting_env(worker_env or {}))
        self.workers: list[subprocess.Popen[bytes]] = []
        self.codec: Codec = build_codec(self.settings)
        apply_topics(self.settings)

    # ------------------------------------------------------------------ workers
    def start_worker(self, **overrides: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHBRIDGE_")}
        env.update(self.env)
        env.update(_setting_env(overrides))
        env["PYTHONUNBUFFERED"] = "1"  # a SIGKILLed worker's log ends where the worker did
        log = open(self.log_path(len(self.workers)), "wb")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.workers.append(proc)
        return proc

    def log_path(self, index: int) -> Path:
        return self.tmp / f"worker-{index}.log"

    def is_ready(self, index: int = -1) -> bool:
        """Whether worker ``index`` has joined the group and recovered its tables."""
        path = self.log_path(index % len(self.workers))
        return path.exists() and READY_LINE in path.read_text(errors="replace")

    def wait_ready(self, index: int = -1, timeout: float = 90) -> None:
        """Until worker ``index`` has joined the group and recovered its tables."""
        assert wait_until(lambda: self.is_ready(index), timeout), self.logs()

    def kill(
        self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, grace_s: float = 30
    ) -> bool:
        """Signal a worker and wait for it; SIGKILL it if it outlives ``grace_s``.

        Returns whether it exited from ``sig`` alone.
        """
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(grace_s)
            return True
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            return False

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(self.tmp.glob("worker-*.log"))
        )

    def log_excerpt(self, limit: int = 40) -> str:
        """The notable lines (errors, crashes, tracebacks) of every worker log, per worker."""
        parts = []
        for path in sorted(self.tmp.glob("worker-*.log")):
            lines = [
                line
                for line in path.read_text(errors="replace").splitlines()
                if _NOTABLE.search(line)
            ]
            shown = [line[:300] for line in lines[-limit:]]
            parts.append(
                f"--- {path.name}: {len(lines)} notable lines"
                + "".join(f"\n{line}" for line in shown)
            )
        return "\n".join(parts)

    def keep_logs(self, destination: Path) -> Path:
        """Copy every worker log to ``destination`` (created), so they outlive the run."""
        destination.mkdir(parents=True, exist_ok=True)
        for path in self.tmp.glob("worker-*.log"):
            shutil.copy(path, destination / path.name)
        return destination

    # ------------------------------------------------------------------ input
    def request(
        self,
        rid: str,
        provider: str = "openai",
        text: str = "hello",
        endpoint: str | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        endpoint = endpoint or ENDPOINTS[provider]
        return make_request(
            rid, provider, MODELS[provider], endpoint, BODIES[(provider, endpoint)](text), **kw
        )

    def produce(self, requests: list[dict[str, Any]], lane: str = "deferred") -> None:
        with RequestProducer(self.settings) as producer:
            for request in requests:
                producer.send(request, lane=lane)  # type: ignore[arg-type]
            producer.flush()

    def produce_raw(self, values: list[bytes]) -> None:
        with RequestProducer(self.settings) as producer:
            for value in values:
                producer.send_raw(self.settings.topics.deferred, b"raw", value)
            producer.flush()

    def encode(self, request: dict[str, Any], topic: str | None = None) -> bytes:
        """A request record in this pipeline's wire format."""
        return self.codec.encode(schemas.REQUEST, request, topic or self.settings.topics.deferred)

    def send(self, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> list[str]:
        """Produce (key, value) pairs as they are, in order; the ``source_key`` of each.

        Raises AssertionError naming the records the broker refused.
        """
        coordinates: list[str | None] = []
        errors: list[str] = []

        def delivered(index: int) -> Callable[[KafkaError | None, Message], None]:
            def report(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    errors.append(f"record {index}: {err.str()}")
                else:
                    coordinates[index] = source_key(*where(msg))

            return report

        conf = self.settings.kafka.confluent_config()
        conf.update(
            {"acks": "all", "enable.idempotence": True, "message.max.bytes": PRODUCER_MAX_BYTES}
        )
        producer = Producer(conf)
        for index, (key, value) in enumerate(records):
            coordinates.append(None)
            producer.produce(topic, key=key, value=value, on_delivery=delivered(index))
            producer.poll(0)
        left = producer.flush(60)
        assert not errors and not left, f"broker refused records: {errors} ({left} unconfirmed)"
        return [c for c in coordinates if c is not None]

    # ------------------------------------------------------------------ output
    def wait(
        self, request_ids: list[str], timeout: float = 90
    ) -> tuple[dict[str, Any], WatchStats]:
        """Outcomes of every id (de-duplicated by request id) and the watcher's counts.

        Reads on for a moment after the last outcome so late duplicates are counted too.
        """
        with ResultWatcher(self.settings) as watcher:
            outcomes = watcher.wait_for(request_ids, timeout)
            missing = set(request_ids) - outcomes.keys()
            assert not missing, f"no outcome for {sorted(missing)[:10]} …\n{self.logs()}"
            watcher.poll(1.0)
            return outcomes, watcher.stats

    def outcome_reader(self) -> OutcomeReader:
        return OutcomeReader(self.settings, self.codec)

    def batch_events(self) -> list[dict[str, Any]]:
        return [
            r
            for _, r in read_topics(
                self.settings, {self.settings.topics.batches: schemas.BATCH_EVENT}
            )
        ]

    def attempts(self) -> list[AttemptRecord]:
        """Every decodable request record on the deferred topic: the callers' and the retries."""
        found = []
        for msg in read_all(self.settings, self.settings.topics.deferred):
            try:
                record = self.codec.decode(schemas.REQUEST, msg.value(), where(msg)[0])
            except (DecodeError, RecursionError, MemoryError):
                continue
            request_id, attempt = record.get("request_id"), record.get("attempt")
            if isinstance(request_id, str) and isinstance(attempt, int):
                found.append(AttemptRecord(request_id, attempt, msg.timestamp()[1]))
        return found

    def table(self, name: str) -> dict[str, Any]:
        """The latest value of every key of a worker table (``pending``, ``batches``), from its changelog."""
        latest: dict[str, Any] = {}
        for msg in read_all(self.settings, f"{self.settings.app_id}-{name}-changelog"):
            raw_key, raw_value = msg.key(), msg.value()
            key = json.loads(raw_key) if raw_key else None
            latest[str(key)] = json.loads(raw_value) if raw_value else None
        return {k: v for k, v in latest.items() if v is not None}

    def provider_batches(self) -> list[ProviderBatch]:
        assert self.emulator is not None, "the emulator runs in another process"
        return provider_batches(self.emulator)

    def account(self, expected: Iterable[Expected], reader: OutcomeReader) -> Account:
        """Judge the run: outcomes read so far, the emulator's batches, the deferred topic,
        and the states the connector's batch events gave each provider batch."""
        states: dict[str, set[str]] = {}
        for event in self.batch_events():
            if event.get("provider_batch_id"):
                states.setdefault(event["provider_batch_id"], set()).add(event["state"])
        return account(expected, reader.events, self.provider_batches(), self.attempts(), states)

    def close(self) -> None:
        for proc in self.workers:
            self.kill(proc, signal.SIGTERM if proc.poll() is None else signal.SIGKILL)


def _setting_env(settings: Mapping[str, str]) -> dict[str, str]:
    return {f"BATCHBRIDGE_{k.upper()}": v for k, v in settings.items()}


class OutcomeReader:
    """Every outcome event on the results and dead-letter topics, duplicates kept.

    Reads both topics from the beginning (manual assignment, no consumer group).
    """

    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self._codec = codec or build_codec(settings)
        self._kinds = {
            settings.topics.results: ("result", schemas.RESULT),
            settings.topics.deadletter: ("deadletter", schemas.FAILURE),
        }
        self._consumer = _consumer(settings)
        _assign(self._consumer, self._kinds)
        self.events: list[OutcomeEvent] = []
        self.undecodable: list[str] = []

    def poll(self, timeout: float = 0.5) -> int:
        """Read what is there; how many events were new."""
        before = len(self.events)
        for msg in self._consumer.consume(500, timeout):
            if msg.error() is not None:
                continue
            topic = where(msg)[0]
            kind, schema = self._kinds[topic]
            try:
                record = self._codec.decode(schema, msg.value(), topic)
            except DecodeError as exc:
                self.undecodable.append(f"{source_key(*where(msg))}: {exc.reason}")
                continue
            self.events.append(outcome_event(kind, record))
        return len(self.events) - before

    def wait_for(self, expected: list[Expected], timeout: float, settle_s: float = 2.0) -> bool:
        """Read until every expected request has an outcome (True) or ``timeout`` passes.

        Reads on for ``settle_s`` after the last one, so late duplicates are counted too.
        """
        deadline = time.monotonic() + timeout
        answered = False
        while time.monotonic() < deadline:
            self.poll(0.5)
            matched, _ = match_outcomes(expected, self.events)
            if all(matched.values()):
                answered = True
                break
        settle = time.monotonic() + settle_s
        while time.monotonic() < settle:
            self.poll(0.5)
        return answered

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> OutcomeReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def outcome_event(kind: str, record: dict[str, Any]) -> OutcomeEvent:
    """An outcome record as the accounting sees it."""
    source = None
    if record.get("source_topic") is not None:
        source = source_key(
            record["source_topic"], record["source_partition"], record["source_offset"]
        )
    return OutcomeEvent(
        kind=kind,
        request_id=record.get("request_id") or None,
        source=source,
        error_class=record.get("error_class"),
        error_message=record.get("error_message"),
        lane=record.get("lane"),
        attempt=record.get("attempt", record.get("attempts")),
    )


def provider_batches(emulator: Emulator) -> list[ProviderBatch]:
    """Every batch the emulator created, with its tag, state and custom ids."""
    for _ in range(3):
        try:
            records = list(emulator.store.batches.values())
            states = {
                b["id"].removeprefix("batches/"): b["state"] for b in emulator.stats()["batches"]
            }
            break
        except RuntimeError:  # the emulator thread added a batch while we iterated
            time.sleep(0.1)
    else:
        raise RuntimeError("the emulator's batches kept changing while being read")
    return [
        ProviderBatch(
            provider=r.provider,
            batch_id=r.id,
            tag=r.tag,
            state=states.get(r.id, "unknown"),
            created_ms=int(r.created_at * 1000),
            custom_ids=tuple(q.key for q in r.requests),
        )
        for r in records
    ]


def _consumer(settings: Settings) -> Consumer:
    conf = settings.kafka.confluent_config()
    conf.update(
        {
            "group.id": f"batchbridge-testing-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.message.max.bytes": PRODUCER_MAX_BYTES,
        }
    )
    return Consumer(conf)


def _assign(consumer: Consumer, topics: Iterable[str], timeout: float = 10.0) -> None:
    assignment = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        assert meta is not None and meta.error is None and meta.partitions, (
            f"topic {topic} is not available"
        )
        assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
    consumer.assign(assignment)


def committed_offsets(settings: Settings) -> dict[str, int]:
    """The worker group's committed offsets of the input and work topics, ``topic[p]`` → offset."""
    conf = settings.kafka.confluent_config()
    conf.update({"group.id": settings.app_id, "enable.auto.commit": False})
    consumer = Consumer(conf)
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in (settings.topics.deferred, f"{settings.app_id}-work")
            for p in range(
                len(consumer.list_topics(topic, timeout=10).topics[topic].partitions or {})
            )
        ]
        return {f"{tp.topic}[{tp.partition}]": tp.offset for tp in consumer.committed(tps, 10)}
    finally:
        consumer.close()


def read_all(settings: Settings, topic: str, timeout: float = 15.0) -> list[Message]:
    """Every message of ``topic`` from the beginning to its current end."""
    consumer = _consumer(settings)
    try:
        _assign(consumer, [topic])
        ends = {}
        for tp in consumer.assignment():
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            if high > low:
                ends[tp.partition] = high
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        # tansu reports a partition's end as the base offset of its last record batch + 1,
        # so once every end is reached, read on until a poll comes back empty.
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(500, 0.5) if m.error() is None]
            if not ends and not batch:
                break
            for msg in batch:
                _, partition, offset = where(msg)
                if offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
            messages += batch
        return messages
    finally:
        consumer.close()
