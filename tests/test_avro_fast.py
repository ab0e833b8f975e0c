"""The compiled Avro writers write fastavro's bytes, and leave to it what they cannot."""

from __future__ import annotations

import enum
import io
import math
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector import schemas
from connector.avro_fast import compile_writer
from connector.errors import EncodeError
from connector.serde import AvroCodec, with_defaults

LONGS = st.one_of(
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.sampled_from([0, -1, 1, 63, 64, -64, -65, 127, 128, 4095, 4096, 1_764_400_000_000]),
)
INTS = st.integers(-(1 << 31), (1 << 31) - 1)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)  # unicode, no surrogates
DOUBLES = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-300])


class Tier(enum.StrEnum):
    BATCH = "batch"


def wrong_values() -> st.SearchStrategy[Any]:
    """Values some field may not hold: the compiled writer must leave them to fastavro."""
    return st.sampled_from(
        [True, 1.5, "1", b"x", None, {"k": 1}, [1], Tier.BATCH, 1 << 64, "\udcff", math.nan]
    )


def values(schema: Any, wrong: bool) -> st.SearchStrategy[Any]:
    """Values of ``schema`` (JSON), now and then (``wrong``) one that does not fit it."""
    good = _values(schema, wrong)
    return st.one_of(good, wrong_values()) if wrong else good


def _values(schema: Any, wrong: bool) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.one_of(*(values(branch, wrong) for branch in schema))
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return record_of(schema, wrong)
        if kind == "enum":
            return st.sampled_from(schema["symbols"])
        if kind == "map":
            return st.dictionaries(TEXT, values(schema["values"], wrong), max_size=4)
        if kind == "array":
            return st.lists(values(schema["items"], wrong), max_size=4)
        return _values(kind, wrong)
    return {
        "null": st.none(),
        "string": TEXT,
        "bytes": st.binary(max_size=200),
        "long": LONGS,
        "int": INTS,
        "double": DOUBLES | st.integers(-(1 << 53), 1 << 53),
    }[schema]


def record_of(schema: dict[str, Any], wrong: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Records of ``schema``; a field with a default is sometimes left out."""
    required = {f["name"]: values(f["type"], wrong) for f in schema["fields"] if "default" not in f}
    optional = {f["name"]: values(f["type"], wrong) for f in schema["fields"] if "default" in f}
    return st.fixed_dictionaries(required, optional=optional)


def fastavro_bytes(schema: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schemas.parsed_schema(schema), with_defaults(schema, record))
    return buf.getvalue()


def fastavro_or_error(schema: str, record: dict[str, Any]) -> bytes | type[Exception]:
    try:
        return fastavro_bytes(schema, record)
    except Exception:  # noqa: BLE001 - the codec turns it into an EncodeError
        return EncodeError


def test_every_schema_compiles() -> None:
    for name in schemas.ALL:
        assert compile_writer(schemas.schema_dict(name)) is not None, name


@pytest.mark.parametrize("name", schemas.ALL)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_writer_writes_fastavros_bytes(name: str, data: st.DataObject) -> None:
    schema = schemas.schema_dict(name)
    record = data.draw(record_of(schema, wrong=False))
    writer = compile_writer(schema)
    assert writer is not None
    expected = fastavro_bytes(name, record)
    assert writer(with_defaults(name, record)) == expected
    assert AvroCodec().encode(name, record, "topic") == expected


@pytest.mark.parametrize("name", schemas.ALL)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_codec_writes_or_refuses_what_fastavro_does(name: str, data: st.DataObject) -> None:
    # Wrong types, lone surrogates, out-of-range numbers: the compiled writer leaves the
    # record to fastavro, so the codec writes its bytes or raises as it did before.
    record = data.draw(record_of(schemas.schema_dict(name), wrong=True))
    expected = fastavro_or_error(name, record)
    try:
        got: bytes | type[Exception] = AvroCodec().encode(name, record, "topic")
    except EncodeError:
        got = EncodeError
    assert got == expected


def test_a_typical_result_and_its_edge_values() -> None:
    result = {
        "request_id": "ü-😀-\u0000",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "endpoint": "/v1/chat/completions",
        "lane": "batch",
        "batch_id": None,
        "provider_batch_id": "batch_1",
        "response": '{"choices": [{"message": {"content": "日本語"}}]}' * 50,
        "usage": {"input_tokens": 12, "output_tokens": 1 << 40},  # defaults for the others
        "cost_usd": 0,
        "realtime_cost_usd": -0.0,
        "created_at": -1,
        "submitted_at": (1 << 63) - 1,
        "completed_at": -(1 << 63),
        "emitted_at": 1_764_400_000_000,
        "metadata": {"": "", "ключ": "значение"},
        "service_tier": "batch",
        "cache_savings_usd": -1e308,
    }
    writer = compile_writer(schemas.schema_dict(schemas.RESULT))
    assert writer is not None
    for _ in range(3):  # again, with the numbers' encodings remembered
        assert writer(with_defaults(schemas.RESULT, result)) == fastavro_bytes(
            schemas.RESULT, result
        )


def test_a_schema_with_other_types_is_left_to_fastavro() -> None:
    for field_type in (["null", "string", "long"], "float", "boolean", {"type": "fixed"}, "Named"):
        schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
        assert compile_writer(schema) is None
