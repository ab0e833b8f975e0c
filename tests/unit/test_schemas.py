"""The Avro schemas: documented, optional fields nullable with default null, BACKWARD compatible."""

from __future__ import annotations

import copy
import io

import fastavro
import pytest

from connector import schemas
from connector.serde import AvroCodec, _millis
from tests.fixtures.records import sample


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


def record_for(writer_schema: dict, name: str) -> dict:
    """The sample record restricted to the writer's fields."""
    full = sample(name)
    return {f["name"]: full[f["name"]] for f in writer_schema["fields"] if f["name"] in full}


def assert_backward(name: str, writer: dict) -> None:
    """Data written with ``writer`` reads with the current schema: kept fields equal, new ones default."""
    record = record_for(writer, name)
    decoded = _millis(read_with_current(name, writer, write_with(writer, record)))
    current_defaults = schemas.defaults(name)
    for f in schemas.schema_dict(name)["fields"]:
        if f["name"] in record:
            assert decoded[f["name"]] == record[f["name"]], f"{name}.{f['name']}"
        else:
            assert f["name"] in current_defaults, f"{name}: field {f['name']} added without a default"
            assert decoded[f["name"]] == current_defaults[f["name"]]


def test_history_directory_exists():
    assert (schemas.schemas_dir() / "history").is_dir()


@pytest.mark.parametrize("name", schemas.ALL)
def test_backward_compatible_with_every_history_version(name):
    versions = schemas.history(name)
    raw = schemas._raw_all(str(schemas.schemas_dir()))
    checked = 0
    for _version, old in versions:
        # History files may name other records (InferenceFailure.request); inline them.
        assert_backward(name, schemas._expand(copy.deepcopy(old), raw, set()))
        checked += 1
    assert checked == len(versions)


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
        data = write_with(breaking, record_for(breaking, name))
        with pytest.raises(Exception):  # noqa: B017 - fastavro raises SchemaResolutionError
            read_with_current(name, breaking, data)
