"""Dead letters and replay markers on the broker: read them, re-send requests, record that.

Every replayed dead letter leaves a marker on the compacted replays topic, keyed by the
dead letter's ``<topic>:<partition>:<offset>``. Markers are written only after the broker
confirmed the requests they stand for, so a marker never claims a request that was lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from connector import schemas
from connector.client import RequestProducer, now_ms, read_messages, read_records
from connector.config import Settings
from connector.deadletters.selection import DeadLetter
from connector.serde import Codec

#: Requests confirmed (and then marked) together; a crash re-sends at most one chunk unmarked.
CHUNK = 100


def read_deadletters(
    settings: Settings, *, codec: Codec | None = None, timeout: float = 30.0
) -> Iterator[DeadLetter]:
    """Every record of the dead-letter topic with its coordinates, undecodable ones included."""
    topics = {settings.topics.deadletter: schemas.FAILURE}
    for read in read_records(settings, topics, codec=codec, timeout=timeout):
        yield DeadLetter(read.topic, read.partition, read.offset, read.record, read.timestamp_ms)


def read_replayed(settings: Settings, *, timeout: float = 30.0) -> set[str]:
    """The dead letters (``replay_of`` values) that earlier replays re-sent."""
    replayed: set[str] = set()
    for msg in read_messages(settings, [settings.topics.replays], timeout=timeout):
        key = msg.key()
        if key is None:
            continue
        if msg.value() is None:  # a tombstone forgets the marker
            replayed.discard(key.decode("utf-8"))
        else:
            replayed.add(key.decode("utf-8"))
    return replayed


def marker(dead_letter: DeadLetter, request: dict[str, Any], at_ms: int) -> bytes:
    """The replays topic's value for one re-sent dead letter (JSON, for humans and tools)."""
    record = {
        "replay_of": dead_letter.replay_of,
        "request_id": request["request_id"],
        "error_class": dead_letter.error_class,
        "replayed_at": at_ms,
    }
    return json.dumps(record, separators=(",", ":")).encode("utf-8")


def send_replays(
    settings: Settings,
    sends: Sequence[tuple[DeadLetter, dict[str, Any]]],
    *,
    codec: Codec | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Produce each request to the deferred topic, then its marker; return how many were sent.

    Raises:
        connector.client.DeliveryError: the broker did not confirm a request or a marker.
    """
    done = 0
    with RequestProducer(settings, codec) as producer:
        for start in range(0, len(sends), CHUNK):
            chunk = sends[start : start + CHUNK]
            for _, request in chunk:
                producer.send(request, lane="deferred")
            producer.flush()
            at = now_ms()
            for dead_letter, request in chunk:
                key = dead_letter.replay_of.encode("utf-8")
                producer.send_raw(settings.topics.replays, key, marker(dead_letter, request, at))
            producer.flush()
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, len(sends))
    return done
