"""Everything the lanes produce, encoded with the configured wire format.

One object so the lanes never deal with topics, codecs or headers directly.
"""

from __future__ import annotations

from typing import Any

import faust

from connector import schemas
from connector.config import Settings
from connector.lanes.records import deadletter_headers
from connector.serde import Codec


class Outputs:
    def __init__(self, app: faust.App, settings: Settings, codec: Codec) -> None:
        self._app = app
        self._codec = codec
        self._names = settings.topics
        self._allow = frozenset(settings.reply_topic_allowlist)
        self._topics: dict[str, faust.TopicT] = {}

    def _topic(self, name: str) -> faust.TopicT:
        if name not in self._topics:
            self._topics[name] = self._app.topic(name, key_serializer="raw", value_serializer="raw")
        return self._topics[name]

    async def _send(self, topic: str, schema: str, key: str | None, record: dict[str, Any], headers: Any = None) -> None:
        value = self._codec.encode(schema, record, topic)
        await self._topic(topic).send(key=key.encode() if key else None, value=value, headers=headers)

    async def result(self, record: dict[str, Any], reply_topic: str | None = None) -> None:
        topic = reply_topic if reply_topic and reply_topic in self._allow else self._names.results
        await self._send(topic, schemas.RESULT, record["request_id"], record)

    async def failure(self, record: dict[str, Any]) -> None:
        await self._send(
            self._names.deadletter, schemas.FAILURE, record.get("request_id"), record, deadletter_headers(record)
        )

    async def retry(self, request: dict[str, Any]) -> None:
        """Back to the deferred topic with the next attempt number."""
        await self._send(self._names.deferred, schemas.REQUEST, request["request_id"], request)

    async def escalate(self, request: dict[str, Any]) -> None:
        await self._send(self._names.realtime, schemas.REQUEST, request["request_id"], request)

    async def batch_event(self, record: dict[str, Any]) -> None:
        await self._send(self._names.batches, schemas.BATCH_EVENT, record["batch_id"], record)
