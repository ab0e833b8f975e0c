"""What a microservice uses: build a request, produce it, wait for its outcome.

- :func:`make_request` builds and validates an ``InferenceRequest`` record.
- :class:`RequestProducer` produces requests to the deferred or realtime topic, keyed by
  request_id, and :meth:`RequestProducer.flush` returns only once every one was delivered.
- :class:`ResultWatcher` reads the results and dead-letter topics from the beginning and
  waits for the outcome of given request ids, de-duplicating by request_id (delivery is
  at-least-once, so a request may be answered twice; the first answer wins).
- :func:`read_topics` reads topics from the beginning up to their current end, for the
  ``status`` and ``report`` commands; :func:`read_records` also gives each record's
  partition, offset and timestamp, and keeps undecodable ones (``deadletters``, ``replay``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from connector import schemas
from connector.config import Settings
from connector.errors import BatchBridgeError, DecodeError
from connector.model import ENDPOINTS, validate_request
from connector.serde import Codec, build_codec

log = logging.getLogger(__name__)

Lane = Literal["deferred", "realtime"]
Outcome = tuple[Literal["result", "deadletter"], dict[str, Any]]


class DeliveryError(BatchBridgeError):
    """The broker did not confirm one or more produced messages."""

    def __init__(
        self, message: str, failures: list[str] | None = None, undelivered: int = 0
    ) -> None:
        super().__init__(message)
        self.failures = failures or []
        self.undelivered = undelivered


class TopicMissingError(BatchBridgeError):
    """A topic the client needs does not exist (run ``batchbridge topics apply``)."""


def now_ms() -> int:
    return int(time.time() * 1000)


def make_request(
    request_id: str,
    provider: str,
    model: str,
    endpoint: str,
    body: dict[str, Any] | str,
    metadata: dict[str, Any] | None = None,
    deadline_ms: int | None = None,
    reply_topic: str | None = None,
    *,
    validate: bool = True,
    service_tier: str | None = None,
    endpoints: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, Any]:
    """An ``InferenceRequest`` record created now, attempt 1.

    Arguments:
        body: the provider-native request body, as a dict or as a JSON object string.
        metadata: copied onto the result; values are turned into strings.
        deadline_ms: latest acceptable result time, epoch milliseconds.
        reply_topic: honoured by the connector only if it is on its allow-list; the client
            cannot see that list, so it is not checked here.
        validate: False builds the record as given, for tests and demos of bad input.
        service_tier: None for the lane's usual tier; "flex" lets the realtime lane use
            OpenAI's Flex tier where the model supports it (schemas/InferenceRequest.avsc).
        endpoints: the providers the connector serves and their endpoints, when it serves
            named providers (BATCHBRIDGE_PROVIDERS) besides the three built-in ones.

    Raises:
        connector.errors.ValidationError: the request would be dead-lettered on arrival.
    """
    request: dict[str, Any] = {
        "request_id": request_id,
        "provider": provider,
        "model": model,
        "endpoint": endpoint,
        "body": body if isinstance(body, str) else json.dumps(body, separators=(",", ":")),
        "metadata": {str(k): str(v) for k, v in (metadata or {}).items()},
        "deadline": deadline_ms,
        "reply_topic": reply_topic,
        "attempt": 1,
        "created_at": now_ms(),
        "service_tier": service_tier,
    }
    if validate:
        allow: frozenset[str] = frozenset({reply_topic}) if reply_topic else frozenset()
        validate_request(request, reply_allowlist=allow, endpoints=endpoints or ENDPOINTS)
    return request


class RequestProducer:
    """Produces requests with acks=all and idempotence; ``flush`` confirms delivery.

    Arguments:
        settings: Kafka connection, topic names and wire format.
        codec: share one codec with readers (the ``mock://`` registry is per instance).
    """

    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self._settings = settings
        self._codec = codec or build_codec(settings)
        conf = settings.kafka.confluent_config()
        conf.update(
            {
                "acks": "all",
                # Checked against the embedded tansu broker: it grants producer ids, so
                # idempotence holds there too and broker retries never duplicate a request.
                "enable.idempotence": True,
                "linger.ms": 5,
                "error_cb": self._on_error,
                # librdkafka's own log lines go through logging, not straight to stderr.
                "logger": log,
            }
        )
        self._producer = Producer(conf)
        self._failures: list[str] = []
        self.sent = 0
        self.delivered = 0

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._failures.append(f"fatal producer error: {err}")
        else:
            log.debug("producer: %s", err)

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            key = msg.key().decode("utf-8", "replace") if msg.key() else "?"
            self._failures.append(f"{key} → {msg.topic()}: {err.str()}")

    def topic_for(self, lane: Lane) -> str:
        if lane == "deferred":
            return self._settings.topics.deferred
        if lane == "realtime":
            return self._settings.topics.realtime
        raise ValueError(f"lane must be 'deferred' or 'realtime', not {lane!r}")

    def send(self, request: dict[str, Any], lane: Lane = "deferred") -> None:
        """Queue one request; keyed by request_id. Confirmed by :meth:`flush`."""
        topic = self.topic_for(lane)
        value = self._codec.encode(schemas.REQUEST, request, topic)
        self.send_raw(topic, request["request_id"].encode("utf-8"), value)

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Queue already-encoded bytes (tests and demos of undecodable input)."""
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room.
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise DeliveryError(f"cannot produce to {topic}: {exc}") from exc
        self.sent += 1
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until every queued message is confirmed; return how many were delivered.

        Raises:
            DeliveryError: a message was rejected, or not confirmed within ``timeout``.
        """
        undelivered = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if failures:
            shown = "; ".join(failures[:5])
            more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
            raise DeliveryError(
                f"{len(failures)} message(s) not delivered: {shown}{more}", failures, undelivered
            )
        if undelivered:
            raise DeliveryError(
                f"{undelivered} message(s) not confirmed within {timeout}s", undelivered=undelivered
            )
        return self.delivered

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)

    def __enter__(self) -> RequestProducer:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()


@dataclass
class DecodeFailure:
    """A record the watcher could not decode: reported, never fatal."""

    topic: str
    partition: int
    offset: int
    reason: str


@dataclass
class WatchStats:
    duplicates: int = 0  # outcomes for a request_id already answered
    decode_failures: list[DecodeFailure] = field(default_factory=list)
    unkeyed: int = 0  # dead letters with no request_id (undecodable input)


def _partitions(consumer: Consumer, topics: Iterable[str], timeout: float) -> list[TopicPartition]:
    """Every partition of ``topics``, at the beginning; TopicMissingError for a missing topic."""
    partitions: list[TopicPartition] = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            reason = meta.error if meta is not None and meta.error is not None else "not found"
            raise TopicMissingError(
                f"topic {topic} is not available ({reason}); run `batchbridge topics apply`"
            )
        partitions.extend(
            TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)
        )
    return partitions


def _assign_from_beginning(consumer: Consumer, topics: Iterable[str], timeout: float) -> None:
    consumer.assign(_partitions(consumer, topics, timeout))


def _consumer(settings: Settings, group_id: str | None) -> Consumer:
    conf = settings.kafka.confluent_config()
    conf.update(
        {
            # Partitions are assigned by hand, so the group never joins; it only names the client.
            "group.id": group_id or f"batchbridge-watcher-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "logger": log,
        }
    )
    return Consumer(conf)


class ResultWatcher:
    """Waits for the outcomes of request ids on the results and dead-letter topics.

    Reads both topics from the beginning on every partition (manual assignment, no group
    rebalance), so outcomes produced before the watcher started are seen too.
    """

    def __init__(
        self, settings: Settings, group_id: str | None = None, codec: Codec | None = None
    ) -> None:
        self._settings = settings
        self._codec = codec or build_codec(settings)
        self._topics: dict[str, tuple[Literal["result", "deadletter"], str]] = {
            settings.topics.results: ("result", schemas.RESULT),
            settings.topics.deadletter: ("deadletter", schemas.FAILURE),
        }
        self._consumer = _consumer(settings, group_id)
        self._assigned = False
        self.outcomes: dict[str, Outcome] = {}
        self.stats = WatchStats()

    def _ensure_assigned(self, timeout: float) -> None:
        if not self._assigned:
            _assign_from_beginning(self._consumer, self._topics, timeout)
            self._assigned = True

    def _take(self, msg: Any) -> str | None:
        kind, schema = self._topics[msg.topic()]
        try:
            record = self._codec.decode(schema, msg.value(), msg.topic())
        except DecodeError as exc:
            self.stats.decode_failures.append(
                DecodeFailure(msg.topic(), msg.partition(), msg.offset(), exc.reason)
            )
            log.warning(
                "undecodable record on %s[%d]@%d: %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                exc.reason,
            )
            return None
        request_id = record.get("request_id")
        if not request_id:
            self.stats.unkeyed += 1
            return None
        if request_id in self.outcomes:
            self.stats.duplicates += 1
            return None
        self.outcomes[request_id] = (kind, record)
        return request_id

    def poll(self, timeout: float = 0.5, max_messages: int = 500) -> list[str]:
        """Read what is available; return the request ids answered for the first time."""
        self._ensure_assigned(max(timeout, 10.0))
        new: list[str] = []
        for msg in self._consumer.consume(max_messages, timeout):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error)
                continue
            request_id = self._take(msg)
            if request_id is not None:
                new.append(request_id)
        return new

    def wait_for(
        self,
        request_ids: Iterable[str],
        timeout: float,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Outcome]:
        """Outcomes of ``request_ids``, waiting up to ``timeout`` seconds for all of them.

        Returns:
            request_id → ("result" | "deadletter", record) for every id answered; on
            timeout the ids still missing are simply absent (compare the lengths).
        """
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout
        done = len(wanted & self.outcomes.keys())
        if on_progress:
            on_progress(done, len(wanted))
        while done < len(wanted):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            new = self.poll(min(0.5, remaining))
            gained = sum(1 for request_id in new if request_id in wanted)
            if gained:
                done += gained
                if on_progress:
                    on_progress(done, len(wanted))
        return {
            request_id: self.outcomes[request_id]
            for request_id in wanted
            if request_id in self.outcomes
        }

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> ResultWatcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read_messages(
    settings: Settings, topics: Iterable[str], *, timeout: float = 10.0
) -> Iterator[Any]:
    """Every message of ``topics`` from the beginning to the current end, undecoded.

    Yields:
        confluent-kafka messages in per-partition order, errors left out.

    Raises:
        TopicMissingError: a topic does not exist.
    """
    consumer = _consumer(settings, None)
    try:
        partitions = _partitions(consumer, topics, timeout)
        ends: dict[tuple[str, int], int] = {}
        # Before assigning: once the consumer fetches, each offset query waits behind a fetch.
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            if high > low:
                ends[(tp.topic, tp.partition)] = high
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout
        # tansu reports the end offset as the base offset of the last record batch + 1, so
        # once every end is reached, keep reading until a poll comes back empty.
        while time.monotonic() < deadline:
            messages = consumer.consume(500, 0.5)
            if not ends and not messages:
                break
            for msg in messages:
                if msg.error() is not None:
                    continue
                key = (msg.topic(), msg.partition())
                if key in ends and (msg.offset() or 0) + 1 >= ends[key]:
                    del ends[key]
                yield msg
    finally:
        consumer.close()


@dataclass(frozen=True)
class TopicRecord:
    """One record read back from a topic: where it sits, and its decoded value or why not."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    record: dict[str, Any] | None  # None when the value could not be decoded
    error: str | None = None  # the decode error

    @property
    def failure(self) -> DecodeFailure | None:
        """The decode failure in the form ``read_topics`` reports it; None if it decoded."""
        if self.record is not None:
            return None
        return DecodeFailure(self.topic, self.partition, self.offset, self.error or "undecodable")


def read_records(
    settings: Settings, topics: dict[str, str], *, codec: Codec | None = None, timeout: float = 10.0
) -> Iterator[TopicRecord]:
    """Every record of ``topics`` (topic → schema name), decoded, with its coordinates."""
    codec = codec or build_codec(settings)
    for msg in read_messages(settings, topics, timeout=timeout):
        kind, stamp = msg.timestamp()
        timestamp = stamp if kind != TIMESTAMP_NOT_AVAILABLE else None
        coordinates = (msg.topic(), msg.partition(), msg.offset(), timestamp)
        try:
            record = codec.decode(topics[msg.topic()], msg.value(), msg.topic())
        except DecodeError as exc:
            yield TopicRecord(*coordinates, record=None, error=exc.reason)
            continue
        yield TopicRecord(*coordinates, record=record)


def read_topics(
    settings: Settings,
    topics: dict[str, str],
    *,
    codec: Codec | None = None,
    timeout: float = 10.0,
    on_decode_error: Callable[[DecodeFailure], None] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every record of ``topics`` (topic → schema name) from the beginning to the current end.

    Yields:
        (topic, record) in per-partition order. Undecodable records go to ``on_decode_error``.

    Raises:
        TopicMissingError: a topic does not exist.
    """
    for read in read_records(settings, topics, codec=codec, timeout=timeout):
        if read.record is not None:
            yield read.topic, read.record
        elif on_decode_error is not None and read.failure is not None:
            on_decode_error(read.failure)
