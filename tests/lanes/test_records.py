"""The records the lanes emit: dead letters that always fit, DLQ and CloudEvents headers."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from connector import schemas
from connector.lanes import records
from connector.serde import AvroCodec, JsonCodec
from tests.lanes.test_intake import request

TOPIC = "inference.deadletter"


def failure(**changes):
    base = records.failure_record(
        error_class="provider_rejected",
        message="bad",
        now=1,
        request=request(),
        error_code="x",
        source=("inference.deferred", 2, 17),
    )
    return {**base, **changes}


def test_deadletter_headers_use_kafka_connect_names_and_carry_the_class():
    headers = dict(records.deadletter_headers(failure(), "bb-prod"))
    assert headers["__connect.errors.topic"] == b"inference.deferred"
    assert headers["__connect.errors.partition"] == b"2"
    assert headers["__connect.errors.offset"] == b"17"
    assert headers["__connect.errors.connector.name"] == b"bb-prod"
    assert (
        headers["__connect.errors.exception.class.name"]
        == b"io.batchbridge.errors.ProviderRejected"
    )
    assert headers["__connect.errors.exception.message"] == b"bad"
    assert headers["__connect.errors.stage"] == b"TASK_PUT"
    assert headers["error_class"] == b"provider_rejected" and headers["error_code"] == b"x"


def test_undecodable_input_is_a_converter_error_in_connect_terms():
    headers = dict(records.deadletter_headers(failure(error_class="decode_error"), "bb"))
    assert headers["__connect.errors.stage"] == b"VALUE_CONVERTER"


def test_cloudevent_headers_are_binary_mode_attributes():
    headers = dict(
        records.cloudevent_headers(
            kind="result", request_id="r-1", source="/batchbridge/bb", now_ms=0
        )
    )
    assert headers == {
        "ce_specversion": b"1.0",
        "ce_id": b"r-1",
        "ce_source": b"/batchbridge/bb",
        "ce_type": b"io.batchbridge.inference.result.v1",
        "ce_time": b"1970-01-01T00:00:00.000Z",
    }


def encoder(codec):
    return lambda record: codec.encode(schemas.FAILURE, record, TOPIC)


def test_a_dead_letter_that_fits_is_left_alone():
    record = failure()
    fitted, data = records.fit_failure(record, encoder(AvroCodec()), 1_000_000)
    assert fitted == record and "truncated" not in fitted
    assert (
        AvroCodec().decode(schemas.FAILURE, data, TOPIC)["request"]["body"]
        == record["request"]["body"]
    )


def test_a_huge_body_is_cut_to_fit_and_said_so():
    record = failure(
        request=request(body=json.dumps({"x": "y" * 200_000})), error_message="m" * 10_000
    )
    fitted, data = records.fit_failure(record, encoder(AvroCodec()), 50_000)
    assert len(data) <= 50_000
    assert fitted["truncated"] == ["error_message", "request.body"]
    assert len(fitted["error_message"]) < 2100


def test_invalid_unicode_is_replaced_not_fatal():
    record = failure(request=request(request_id="x\ud800"), request_id="x\ud800")
    fitted, data = records.fit_failure(record, encoder(AvroCodec()), 1_000_000)
    assert "invalid Unicode" in fitted["error_message"]
    assert AvroCodec().decode(schemas.FAILURE, data, TOPIC)["request_id"] == "x?"


@settings(max_examples=60, deadline=None)
@given(
    body=st.integers(0, 300_000),
    raw=st.integers(0, 300_000),
    meta=st.integers(0, 2_000),
    limit=st.integers(2_000, 400_000),
    json_codec=st.booleans(),
)
def test_every_dead_letter_fits_whatever_its_size(body, raw, meta, limit, json_codec):
    req = request(
        body=json.dumps({"t": "é" * body}), metadata={f"k{i}": "v" * 50 for i in range(meta)}
    )
    record = failure(request=req, raw_value=b"\x00" * raw)
    codec = JsonCodec() if json_codec else AvroCodec()
    _, data = records.fit_failure(record, encoder(codec), limit)
    assert len(data) <= limit


def test_json_text_escapes_lone_surrogates_instead_of_failing():
    assert records.json_text({"a": "ok"}) == '{"a":"ok"}'
    assert records.json_text({"a": "\ud800"}) == '{"a":"\\ud800"}'
