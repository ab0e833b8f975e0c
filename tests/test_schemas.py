"""The Avro schemas: documented, optional fields nullable with default null, BACKWARD compatible."""

from __future__ import annotations

import copy
import io
import json

import avro.io
import avro.schema
import fastavro
import pytest

from connector import schemas
from connector.serde import AvroCodec, _millis
from tests.fixtures.records import sample
from tests.fixtures.resolution import expected_read, project


def all_fields(node, path=""):
    """Every (path, field) of a schema, including nested records, each record once."""
    if isinstance(node, dict) and node.get("type") == "record":
        for f in node["fields"]:
            yield f"{path}{node['name']}.{f['name']}", f
            yield from all_fields(f["type"], path)
    elif isinstance(node, dict):
        for key in ("type", "items", "values"):
            if key in node and not isinstance(node[key], str):
                yield from all_fields(node[key], path)
    elif isinstance(node, list):
        for branch in node:
            yield from all_fields(branch, path)


def is_timestamp(t) -> bool:
    return isinstance(t, dict) and t.get("logicalType") == "timestamp-millis"


@pytest.mark.parametrize("name", schemas.ALL)
def test_schema_parses_in_namespace(name):
    parsed = schemas.parsed_schema(name)
    assert parsed["name"] == f"{schemas.NAMESPACE}.{name}"
    assert schemas.schema_dict(name)["doc"]


@pytest.mark.parametrize("name", schemas.ALL)
def test_every_field_has_a_doc(name):
    fields = list(all_fields(schemas.schema_dict(name)))
    assert fields
    missing = [path for path, f in fields if not f.get("doc", "").strip()]
    assert missing == []


@pytest.mark.parametrize("name", schemas.ALL)
def test_optional_fields_are_null_first_with_default_null(name):
    for path, f in all_fields(schemas.schema_dict(name)):
        if isinstance(f["type"], list):
            assert f["type"][0] == "null" and len(f["type"]) == 2, path
            assert "default" in f and f["default"] is None, path


@pytest.mark.parametrize("name", schemas.ALL)
def test_timestamps_are_timestamp_millis(name):
    for path, f in all_fields(schemas.schema_dict(name)):
        if f["name"].endswith("_at") or f["name"] == "deadline":
            branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
            stamp = [b for b in branches if b != "null"]
            assert len(stamp) == 1 and is_timestamp(stamp[0]), path
            assert stamp[0]["type"] == "long", path


@pytest.mark.parametrize("name", schemas.ALL)
def test_round_trip(name):
    codec = AvroCodec()
    record = sample(name)
    assert codec.decode(name, codec.encode(name, record, "t"), "t") == record


def write_with(writer_schema: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer_schema), record)
    return buf.getvalue()


def read_with_current(name: str, writer_schema: dict, data: bytes) -> dict:
    return fastavro.schemaless_reader(
        io.BytesIO(data), fastavro.parse_schema(writer_schema), schemas.parsed_schema(name)
    )


def read_with_avro(writer: dict, reader: dict, data: bytes) -> dict:
    """Schema resolution by the Apache reference library, a second implementation."""
    datum_reader = avro.io.DatumReader(
        avro.schema.parse(json.dumps(writer)), avro.schema.parse(json.dumps(reader))
    )
    return datum_reader.read(avro.io.BinaryDecoder(io.BytesIO(data)))


def assert_backward(name: str, writer: dict) -> None:
    """Data written with ``writer`` reads with the current schema: kept fields equal, new ones default."""
    record = project(sample(name), writer)
    data = write_with(writer, record)
    expected = expected_read(record, writer, schemas.schema_dict(name))
    assert _millis(read_with_current(name, writer, data)) == expected
    assert _millis(read_with_avro(writer, schemas.schema_dict(name), data)) == expected


def test_history_directory_exists():
    assert (schemas.schemas_dir() / "history").is_dir()


@pytest.mark.parametrize("name", schemas.ALL)
def test_backward_compatible_with_every_history_version(name):
    versions = schemas.history(name)
    assert versions and versions[0][0] == "v1"
    for _version, old in versions:
        assert_backward(name, old)


@pytest.mark.parametrize("name", schemas.ALL)
def test_backward_check_machinery_reads_an_older_writer(name):
    """An older schema (the current minus an optional field) is read with the current one."""
    current = schemas.schema_dict(name)
    optional = [f for f in current["fields"] if "default" in f]
    assert optional, f"{name} has no optional field to drop"
    dropped = optional[-1]
    older = dict(current, fields=[f for f in current["fields"] if f["name"] != dropped["name"]])
    assert_backward(name, older)
    # And the check fails for a writer the current schema cannot read: a new required field.
    breaking = copy.deepcopy(current)
    breaking["fields"] = [f for f in current["fields"] if f["name"] != current["fields"][0]["name"]]
    required = [f for f in current["fields"] if "default" not in f]
    if required and required[0]["name"] == current["fields"][0]["name"]:
        data = write_with(breaking, project(sample(name), breaking))
        with pytest.raises(Exception):  # noqa: B017 - fastavro raises SchemaResolutionError
            read_with_current(name, breaking, data)


def test_backward_check_machinery_resolves_nested_records():
    """A writer whose nested Usage lacks a field the reader has: the reader takes its default."""
    current = schemas.schema_dict(schemas.RESULT)
    older = copy.deepcopy(current)
    usage = next(f["type"] for f in older["fields"] if f["name"] == "usage")
    usage["fields"] = [f for f in usage["fields"] if f["name"] != "cache_write_tokens"]
    assert_backward(schemas.RESULT, older)
    record = project(sample(schemas.RESULT), older)
    decoded = _millis(read_with_current(schemas.RESULT, older, write_with(older, record)))
    assert decoded["usage"]["cache_write_tokens"] == 0
    assert sample(schemas.RESULT)["usage"]["cache_write_tokens"] != 0
    # Without defaults in the reader's Usage, the same nested change is caught.
    reader_usage = next(f["type"] for f in current["fields"] if f["name"] == "usage")
    strict_usage = dict(
        reader_usage,
        fields=[{k: v for k, v in f.items() if k != "default"} for f in reader_usage["fields"]],
    )
    strict = dict(
        current,
        fields=[
            dict(f, type=strict_usage) if f["name"] == "usage" else f for f in current["fields"]
        ],
    )
    with pytest.raises(AssertionError, match="cache_write_tokens added without a default"):
        expected_read(record, older, strict)
