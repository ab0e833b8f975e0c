"""Admission never raises: every hostile record becomes a rejection with a clear class."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.lanes.intake import Rejected, admit
from connector.schemas import REQUEST
from connector.serde import AvroCodec, JsonCodec

TOPIC = "inference.deferred"


def request(**changes):
    base = {
        "request_id": "r-1",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "endpoint": "/v1/chat/completions",
        "body": json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        "metadata": {},
        "deadline": None,
        "reply_topic": None,
        "attempt": 1,
        "created_at": 1,
    }
    return {**base, **changes}


def run(codec, raw, max_body=None):
    return admit(codec, raw, TOPIC, frozenset(), max_body or {})


def test_a_valid_request_is_admitted():
    codec = AvroCodec()
    assert run(codec, codec.encode(REQUEST, request(), TOPIC))["request_id"] == "r-1"


@pytest.mark.parametrize("raw", [None, b"", b"\x00\x01garbage", b"{" * 100_000])
def test_undecodable_records_are_decode_errors(raw):
    assert run(AvroCodec(), raw).error_class == "decode_error"


def test_deeply_nested_json_input_is_a_decode_error_not_a_crash():
    raw = b"[" * 200_000 + b"]" * 200_000
    assert run(JsonCodec(), raw).error_class == "decode_error"


def test_a_body_nested_100000_levels_is_invalid_input_not_a_crash():
    codec = AvroCodec()
    rejected = run(codec, codec.encode(REQUEST, request(body="[" * 100_000 + "]" * 100_000), TOPIC))
    assert isinstance(rejected, Rejected) and rejected.error_class == "invalid_input"
    assert "depth limit" in rejected.message and rejected.request["request_id"] == "r-1"


@pytest.mark.parametrize("field", ["request_id", "model", "body"])
def test_lone_surrogates_from_json_input_are_invalid_input(field):
    codec = JsonCodec()
    value = '{"a": "\\ud800"}' if field == "body" else "x\ud800"
    raw = json.dumps(request(**{field: value})).encode()
    rejected = run(codec, raw)
    assert rejected.error_class == "invalid_input"
    assert "not valid Unicode" in rejected.message or "surrogate" in rejected.message


def test_lone_surrogates_in_metadata_are_invalid_input():
    raw = json.dumps(request(metadata={"tenant": "\udfff"})).encode()
    assert run(JsonCodec(), raw).error_class == "invalid_input"


def test_a_body_over_the_provider_limit_is_oversize():
    codec = AvroCodec()
    rejected = run(codec, codec.encode(REQUEST, request(), TOPIC), max_body={"openai": 10})
    assert rejected.error_class == "oversize"


def test_a_codec_bug_costs_one_record_not_the_agent():
    class Broken:
        def decode(self, *a):
            raise ZeroDivisionError("bug")

    rejected = admit(Broken(), b"x", TOPIC, frozenset(), {})
    assert rejected.error_class == "internal_error" and "ZeroDivisionError" in rejected.message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(raw):
    for codec in (AvroCodec(), JsonCodec()):
        result = run(codec, raw)
        assert isinstance(result, Rejected | dict)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(list(request())),
        st.none() | st.integers() | st.text(max_size=5) | st.booleans(),
    )
)
def test_random_field_values_never_raise(changes):
    result = run(JsonCodec(), json.dumps(request(**changes)).encode())
    assert isinstance(result, Rejected | dict)


def test_escaped_surrogate_pairs_are_valid_unicode():
    body = json.dumps(
        {"messages": [{"role": "user", "content": "\U0001f600 ok"}]}, ensure_ascii=True
    )
    assert "\\ud83d\\ude00" in body
    codec = AvroCodec()
    assert isinstance(run(codec, codec.encode(REQUEST, request(body=body), TOPIC)), dict)
