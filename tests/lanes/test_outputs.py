"""Outputs against a recording producer: routing, size limits, headers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from connector import schemas
from connector.config import Settings
from connector.lanes import records
from connector.lanes.outputs import RECORD_OVERHEAD_BYTES, Outputs, TooLarge
from connector.serde import AvroCodec
from tests.fixtures.records import sample
from tests.lanes.test_intake import request


class RecordingProducer:
    def __init__(self):
        self.sent = []

    async def send(self, topic, key, value, partition, timestamp, headers):
        self.sent.append((topic, key, value, dict(headers or [])))
        future = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(topic=topic, offset=len(self.sent)))
        return future


def outputs(limits=None, **settings):
    producer = RecordingProducer()
    app = SimpleNamespace(producer=producer)
    out = Outputs(
        app, Settings(reply_topic_allowlist=["team.replies"], **settings), AvroCodec(), limits
    )
    return out, producer


def result(**changes):
    return sample("InferenceResult") | {"request_id": "r-1", **changes}


async def test_results_go_to_an_allow_listed_reply_topic_else_to_the_results_topic():
    out, producer = outputs()
    await out.result(result(), "team.replies")
    await out.result(result(), "somewhere.else")
    assert [topic for topic, *_ in producer.sent] == ["team.replies", "inference.results"]
    assert producer.sent[0][1] == b"r-1"
    assert AvroCodec().decode(schemas.RESULT, producer.sent[0][2], "t")["request_id"] == "r-1"


async def test_a_record_over_its_topic_limit_is_refused_before_it_is_sent():
    out, producer = outputs({"inference.results": 2_000})
    with pytest.raises(TooLarge):
        await out.result(result(response="x" * 5_000))
    assert not producer.sent
    assert out.limit("inference.results") == 2_000 - RECORD_OVERHEAD_BYTES
    assert out.limit("unknown") == Settings().kafka.max_request_size - RECORD_OVERHEAD_BYTES


async def test_a_dead_letter_is_cut_to_fit_its_topic_with_connect_headers():
    out, producer = outputs({"inference.deadletter": 20_000}, app_id="bb-test")
    failure = records.failure_record(
        error_class="provider_rejected",
        message="m",
        now=1,
        request=request(body='{"a": "' + "x" * 100_000 + '"}'),
        source=("in", 1, 2),
    )
    await out.failure(failure)
    (topic, key, value, headers) = producer.sent[0]
    assert (
        topic == "inference.deadletter"
        and len(value) + sum(len(k) + len(v) for k, v in headers.items()) < 20_000
    )
    decoded = AvroCodec().decode(schemas.FAILURE, value, topic)
    assert decoded["truncated"] == ["request.body"]
    assert (
        headers["__connect.errors.connector.name"] == b"bb-test"
        and headers["error_class"] == b"provider_rejected"
    )
    assert "ce_id" not in headers


async def test_cloudevents_headers_when_asked():
    out, producer = outputs(cloudevents=True, app_id="bb")
    await out.result(result(emitted_at=0))
    headers = producer.sent[0][3]
    assert (
        headers["ce_id"] == b"r-1" and headers["ce_type"] == b"io.batchbridge.inference.result.v1"
    )
    assert headers["ce_source"] == b"/batchbridge/bb"


async def test_retries_and_escalations_are_requests_on_their_topics():
    out, producer = outputs()
    await out.retry(request(attempt=2))
    await out.escalate(request())
    assert [topic for topic, *_ in producer.sent] == ["inference.deferred", "inference.realtime"]
    assert AvroCodec().decode(schemas.REQUEST, producer.sent[0][2], "t")["attempt"] == 2
