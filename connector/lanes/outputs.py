"""Everything the lanes produce, encoded with the configured wire format.

One object so the lanes never deal with topics, codecs or headers directly. Every method
sends at once and returns an awaitable that resolves when the broker acknowledged the
record (or raises the delivery error): a lane awaits it before it marks a request done.
Each record is checked against its topic's size limit before it is sent: a dead letter is
cut down until it fits; any other record that does not fit raises :class:`TooLarge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import faust

from connector import schemas
from connector.config import Settings
from connector.errors import BatchBridgeError, EncodeError
from connector.lanes.records import (
    cloudevent_headers,
    deadletter_headers,
    exception_message,
    fit_failure,
)
from connector.serde import Codec
from connector.transport import RecordBatches

log = logging.getLogger(__name__)

# What a record costs on the wire beyond its key, value and headers (record + batch framing).
RECORD_OVERHEAD_BYTES = 512
# Sends the broker did not acknowledge are tried again after this long (doubling, capped).
RESEND_INITIAL_S = 0.5
RESEND_MAX_S = 30.0


# The record batches the current task's records go to (see Outputs.collected), if any.
_COLLECTING: ContextVar[RecordBatches | None] = ContextVar("collecting", default=None)


class TooLarge(BatchBridgeError):
    """A record is larger than its topic (or the producer) accepts."""

    def __init__(self, topic: str, size: int, limit: int) -> None:
        super().__init__(f"a {size}-byte record does not fit {topic} (at most {limit} bytes)")
        self.topic, self.size, self.limit = topic, size, limit


async def settle(deliveries: Iterable[Awaitable[Any]]) -> list[BaseException | None]:
    """Wait for every delivery; the error of each one that failed, else None, in order.

    Most deliveries of a chunk are acknowledged by the time it is settled: only the ones
    still pending are waited for, without a gather callback on each of thousands.
    """
    futures = [asyncio.ensure_future(d) for d in deliveries]
    pending = [f for f in futures if not f.done()]
    if pending:
        await asyncio.wait(pending)
    return [_error_of(f) for f in futures]


def _error_of(future: asyncio.Future[Any]) -> BaseException | None:
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()


async def deliver_all(sends: Sequence[Callable[[], Awaitable[Awaitable[Any]]]], what: str) -> None:
    """Send each record and wait until the broker acknowledged all of them.

    A send that fails is repeated with backoff until it succeeds: the input offsets behind
    these records are committed only after this returns, so giving up would lose them.
    A record that can never be sent (:class:`TooLarge`, an encoding error) raises at once.
    """
    todo = list(sends)
    delay = RESEND_INITIAL_S
    while todo:
        deliveries = []
        for send in todo:
            try:
                deliveries.append(await send())
            except (TooLarge, EncodeError):
                raise
            except Exception as exc:  # noqa: BLE001 - treated like a failed delivery
                deliveries.append(_failed(exc))
        errors = await settle(deliveries)
        failed = [send for send, error in zip(todo, errors, strict=True) if error is not None]
        if failed:
            first = next(e for e in errors if e is not None)
            log.warning(
                "%d %s not delivered (%s); sending again in %.1fs",
                len(failed),
                what,
                exception_message(first),
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESEND_MAX_S)
        todo = failed


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


class Outputs:
    """The lanes' producer: results, dead letters, retries, escalations, batch events."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        codec: Codec,
        topic_limits: Mapping[str, int] | None = None,
    ) -> None:
        self._app = app
        self._codec = codec
        self._names = settings.topics
        self._allow = frozenset(settings.reply_topic_allowlist)
        self._max_request = settings.kafka.max_request_size
        self._topic_limits = dict(topic_limits or {})
        self._connector = settings.app_id
        self._cloudevents = settings.cloudevents
        self._ce_source = f"/batchbridge/{settings.app_id}"

    def limit(self, topic: str) -> int:
        """The largest value (plus key and headers) a record of ``topic`` may carry."""
        return (
            min(self._topic_limits.get(topic, self._max_request), self._max_request)
            - RECORD_OVERHEAD_BYTES
        )

    async def _send(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        key_bytes = key.encode("utf-8", "replace") if key else None
        size = len(value) + len(key_bytes or b"") + sum(len(k) + len(v) for k, v in headers or ())
        if size > self.limit(topic):
            raise TooLarge(topic, size, self.limit(topic))
        batches = _COLLECTING.get()
        if batches is not None:
            return await batches.add(topic, key_bytes, value, None, headers)
        # The producer itself, not faust.Topic.send: the records are encoded already.
        return await self._app.producer.send(topic, key_bytes, value, None, None, headers)

    @contextlib.asynccontextmanager
    async def collected(self) -> AsyncIterator[None]:
        """Within it, this task's records go out as whole record batches (see
        :class:`~connector.transport.RecordBatches`): each full batch at once, the rest when
        it ends. A record's awaitable still resolves only once the broker acknowledged it.
        """
        batches = RecordBatches.of(self._app.producer)
        token = _COLLECTING.set(batches)
        try:
            yield
        except BaseException as exc:
            batches.abandon(exc)
            raise
        finally:
            _COLLECTING.reset(token)
        await batches.send()

    async def result(
        self, record: dict[str, Any], reply_topic: str | None = None
    ) -> Awaitable[Any]:
        """A succeeded request's result, to its allow-listed reply topic or the results topic."""
        topic = reply_topic if reply_topic and reply_topic in self._allow else self._names.results
        value = self._codec.encode(schemas.RESULT, record, topic)
        return await self._send(
            topic, record["request_id"], value, self._events("result", record, "emitted_at")
        )

    async def failure(self, record: dict[str, Any]) -> Awaitable[Any]:
        """A dead letter; cut down (and said so in ``truncated``) until it fits its topic."""
        topic = self._names.deadletter
        headers = self._failure_headers(record)
        room = (
            self.limit(topic)
            - sum(len(k) + len(v) for k, v in headers)
            - len((record.get("request_id") or "").encode("utf-8", "replace"))
        )
        fitted, value = fit_failure(
            record, lambda r: self._codec.encode(schemas.FAILURE, r, topic), room
        )
        return await self._send(
            topic, fitted.get("request_id"), value, self._failure_headers(fitted)
        )

    def _failure_headers(self, record: dict[str, Any]) -> list[tuple[str, bytes]]:
        return deadletter_headers(record, self._connector) + (
            self._events("failure", record, "failed_at") or []
        )

    def _events(
        self, kind: str, record: dict[str, Any], time_field: str
    ) -> list[tuple[str, bytes]] | None:
        if not self._cloudevents:
            return None
        return cloudevent_headers(
            kind=kind,
            request_id=record.get("request_id"),
            source=self._ce_source,
            now_ms=record[time_field],
        )

    async def retry(self, request: dict[str, Any]) -> Awaitable[Any]:
        """Back to the deferred topic with the next attempt number."""
        topic = self._names.deferred
        return await self._send(
            topic, request["request_id"], self._codec.encode(schemas.REQUEST, request, topic)
        )

    async def escalate(self, request: dict[str, Any]) -> Awaitable[Any]:
        """To the realtime topic: the deadline cannot wait for the batch."""
        topic = self._names.realtime
        return await self._send(
            topic, request["request_id"], self._codec.encode(schemas.REQUEST, request, topic)
        )

    async def batch_event(self, record: dict[str, Any]) -> Awaitable[Any]:
        """A batch lifecycle event (observability)."""
        topic = self._names.batches
        return await self._send(
            topic, record["batch_id"], self._codec.encode(schemas.BATCH_EVENT, record, topic)
        )
