"""The three wire formats: round-trip every record type; bad bytes only ever raise DecodeError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector import schemas
from connector.config import Settings
from connector.errors import DecodeError, EncodeError
from connector.serde import AvroCodec, ConfluentCodec, JsonCodec, build_codec
from tests.fixtures.records import sample

TOPIC = "inference.test"


def make_codec(kind: str):
    if kind == "avro":
        return AvroCodec()
    if kind == "json":
        return JsonCodec()
    return ConfluentCodec("mock://test-serde")


@pytest.fixture(params=["avro", "json", "confluent"])
def codec(request):
    return make_codec(request.param)


@pytest.mark.parametrize("name", schemas.ALL)
def test_round_trip(codec, name):
    record = sample(name)
    data = codec.encode(name, record, TOPIC)
    assert isinstance(data, bytes)
    assert codec.decode(name, data, TOPIC) == record


def test_failure_with_raw_bytes_round_trips(codec):
    record = sample(schemas.FAILURE)
    record.update(
        request=None, request_id=None, raw_value=b"\x00\xffnot avro", error_class="decode_error"
    )
    assert (
        codec.decode(schemas.FAILURE, codec.encode(schemas.FAILURE, record, TOPIC), TOPIC) == record
    )


def test_missing_optional_fields_take_defaults(codec):
    record = sample(schemas.REQUEST)
    for name in ("metadata", "deadline", "reply_topic", "attempt"):
        del record[name]
    decoded = codec.decode(schemas.REQUEST, codec.encode(schemas.REQUEST, record, TOPIC), TOPIC)
    assert decoded["metadata"] == {} and decoded["deadline"] is None and decoded["attempt"] == 1


def test_record_that_does_not_fit_raises_encode_error(codec):
    record = sample(schemas.REQUEST)
    record["attempt"] = "two"
    with pytest.raises(EncodeError):
        codec.encode(schemas.REQUEST, record, TOPIC)


@pytest.mark.parametrize("kind", ["avro", "json", "confluent"])
@pytest.mark.parametrize(
    "raw", [b"", b"\xff\xfe\xfd", b"{}", b"[1, 2]", b"\x00\x00\x00\x00\x01garbage"]
)
def test_undecodable_bytes_raise_decode_error_with_raw(kind, raw):
    codec = make_codec(kind)
    with pytest.raises(DecodeError) as info:
        codec.decode(schemas.REQUEST, raw, TOPIC)
    assert info.value.raw == raw
    assert info.value.reason
    assert info.value.schema == schemas.REQUEST


@pytest.mark.parametrize("kind", ["avro", "json", "confluent"])
def test_tombstone_raises_decode_error(kind):
    with pytest.raises(DecodeError) as info:
        make_codec(kind).decode(schemas.RESULT, None, TOPIC)
    assert info.value.raw is None
    assert "tombstone" in info.value.reason


def test_avro_trailing_bytes_are_an_error():
    codec = AvroCodec()
    data = codec.encode(schemas.REQUEST, sample(schemas.REQUEST), TOPIC) + b"\x00"
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(schemas.REQUEST, data, TOPIC)


def test_json_invalid_against_schema_is_an_error():
    with pytest.raises(DecodeError, match="does not fit"):
        JsonCodec().decode(schemas.REQUEST, b'{"request_id": 5}', TOPIC)


def test_confluent_bytes_are_schema_registry_wire_format():
    data = ConfluentCodec("mock://test-wire").encode(schemas.RESULT, sample(schemas.RESULT), TOPIC)
    assert data[0] == 0  # magic byte, then a 4-byte schema id
    assert int.from_bytes(data[1:5], "big") >= 0


@pytest.mark.parametrize("kind", ["avro", "json", "confluent"])
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=256), name=st.sampled_from(schemas.ALL))
def test_random_bytes_never_raise_anything_but_decode_error(kind, raw, name):
    codec = make_codec(kind)
    try:
        codec.decode(name, raw, TOPIC)
    except DecodeError as exc:
        assert exc.raw == raw


@pytest.mark.parametrize("kind", ["avro", "json", "confluent"])
def test_build_codec_follows_settings(kind):
    assert build_codec(Settings(serde=kind, schema_registry_url="mock://x")).name == kind
