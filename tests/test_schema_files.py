"""Every schema file stands alone (issue 11 item 5).

fastavro and the Apache ``avro`` reference library load each file of schemas/ by itself, a
record written with a file decodes with the same file alone, a user who copies the one file
of a topic decodes what the connector writes there, and the Schema Registry holds the same
self-contained schema.
"""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import avro.errors
import avro.io
import avro.schema
import fastavro
import fastavro.schema
import pytest
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connector import schemas
from connector.config import TopicNames
from connector.errors import SchemaError
from connector.serde import AvroCodec, ConfluentCodec, _millis
from tests.fixtures.records import sample
from tests.fixtures.resolution import expected_read, project

SCHEMAS = schemas.schemas_dir()
FILES = sorted(SCHEMAS.rglob("*.avsc"))
NAMES = TopicNames()
# Which file a reader of each topic copies.
TOPICS = [
    (NAMES.deferred, schemas.REQUEST),
    (NAMES.realtime, schemas.REQUEST),
    (NAMES.results, schemas.RESULT),
    (NAMES.deadletter, schemas.FAILURE),
    (NAMES.batches, schemas.BATCH_EVENT),
]


def record_name(path: Path) -> str:
    """schemas/X.avsc and schemas/history/X/vN.avsc both hold the record X."""
    return path.stem if path.parent == SCHEMAS else path.parent.name


def alone(path: Path, tmp_path: Path) -> Path:
    """A copy of ``path`` in an otherwise empty directory: no sibling file to fall back on."""
    target = tmp_path / "alone" / path.name
    target.parent.mkdir()
    shutil.copyfile(path, target)
    return target


def as_datetimes(value: Any, node: Any) -> Any:
    """Epoch-millis ints as datetimes where the schema says timestamp-millis (the avro writer wants them)."""
    if isinstance(node, list):
        return value if value is None else as_datetimes(value, next(b for b in node if b != "null"))
    if not isinstance(node, dict):
        return value
    if node.get("logicalType") == "timestamp-millis":
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if node.get("type") == "record":
        return {f["name"]: as_datetimes(value[f["name"]], f["type"]) for f in node["fields"]}
    if isinstance(node.get("type"), dict | list):
        return as_datetimes(value, node["type"])
    return value


def avro_write(schema: avro.schema.Schema, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(
        as_datetimes(record, json.loads(str(schema))), avro.io.BinaryEncoder(buf)
    )
    return buf.getvalue()


def avro_read(schema: avro.schema.Schema, data: bytes) -> dict[str, Any]:
    return avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(data)))


def fastavro_write(schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def fastavro_read(schema: Any, data: bytes) -> dict[str, Any]:
    return fastavro.schemaless_reader(io.BytesIO(data), schema, None)


def canonical(schema_text: str) -> str:
    return avro.schema.parse(schema_text).canonical_form


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_every_file_loads_alone_with_fastavro(path, tmp_path):
    parsed = fastavro.schema.load_schema(alone(path, tmp_path))
    assert parsed["name"] == f"{schemas.NAMESPACE}.{record_name(path)}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_every_file_loads_alone_with_the_avro_reference_library(path, tmp_path):
    parsed = avro.schema.parse(alone(path, tmp_path).read_text(encoding="utf-8"))
    assert parsed.fullname == f"{schemas.NAMESPACE}.{record_name(path)}"


def test_every_record_has_a_file_and_history():
    assert {p.stem for p in FILES if p.parent == SCHEMAS} == set(schemas.ALL)
    assert {record_name(p) for p in FILES if p.parent != SCHEMAS} == set(schemas.ALL)


def referring_failure() -> dict[str, Any]:
    """InferenceFailure as it was before issue 11: ``request`` names a record of another file."""
    failure = schemas.schema_dict(schemas.FAILURE)
    for field in failure["fields"]:
        if field["name"] == "request":
            field["type"] = ["null", f"{schemas.NAMESPACE}.{schemas.REQUEST}"]
    return failure


def test_a_file_that_refers_to_another_fails_to_load_alone(tmp_path):
    """The check above can fail: this is the file issue 11 reported."""
    path = tmp_path / "InferenceFailure.avsc"
    path.write_text(json.dumps(referring_failure()), encoding="utf-8")
    with pytest.raises(fastavro.schema.UnknownType):
        fastavro.schema.load_schema(path)
    with pytest.raises(avro.errors.SchemaParseException):
        avro.schema.parse(path.read_text(encoding="utf-8"))


def copy_of_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    return target


def test_the_loader_refuses_a_file_that_refers_to_another(tmp_path):
    directory = copy_of_schemas(tmp_path)
    (directory / "InferenceFailure.avsc").write_text(
        json.dumps(referring_failure()), encoding="utf-8"
    )
    with pytest.raises(SchemaError, match="does not parse on its own"):
        schemas.parsed_schema(schemas.FAILURE, directory)


def test_the_loader_refuses_an_embedded_copy_that_drifted(tmp_path):
    """InferenceFailure.request must stay a verbatim copy of InferenceRequest.avsc."""
    directory = copy_of_schemas(tmp_path)
    request = json.loads((directory / "InferenceRequest.avsc").read_text(encoding="utf-8"))
    request["fields"].append(
        {"name": "priority", "type": ["null", "int"], "default": None, "doc": "New."}
    )
    (directory / "InferenceRequest.avsc").write_text(json.dumps(request), encoding="utf-8")
    with pytest.raises(
        SchemaError, match="InferenceRequest defined inside it differs from InferenceRequest.avsc"
    ):
        schemas.schema_dict(schemas.RESULT, directory)


def test_the_embedded_request_is_the_request_file():
    failure = schemas.schema_dict(schemas.FAILURE)
    request_field = next(f for f in failure["fields"] if f["name"] == "request")
    assert request_field["type"] == ["null", schemas.schema_dict(schemas.REQUEST)]


@pytest.mark.parametrize("name", schemas.ALL)
def test_a_record_written_with_a_file_decodes_with_that_file_alone(name, tmp_path):
    path = alone(SCHEMAS / f"{name}.avsc", tmp_path)
    with_fastavro = fastavro.schema.load_schema(path)
    with_avro = avro.schema.parse(path.read_text(encoding="utf-8"))
    record = sample(name)
    by_fastavro, by_avro = fastavro_write(with_fastavro, record), avro_write(with_avro, record)
    assert by_fastavro == by_avro  # one encoding: both follow the specification
    assert _millis(fastavro_read(with_fastavro, by_avro)) == record
    assert _millis(avro_read(with_avro, by_fastavro)) == record


@pytest.mark.parametrize(("topic", "name"), TOPICS)
@pytest.mark.parametrize("serde", ["avro", "confluent"])
def test_one_copied_file_decodes_what_the_connector_writes_to_its_topic(
    topic, name, serde, tmp_path
):
    """A consumer in another language holds only the topic's file (here: the avro library)."""
    record = sample(name)
    if serde == "avro":
        payload = AvroCodec().encode(name, record, topic)
    else:
        framed = ConfluentCodec(f"mock://copied-{topic}").encode(name, record, topic)
        assert framed[0] == 0  # Schema Registry framing: magic byte, 4-byte schema id, Avro
        payload = framed[5:]
    reader = avro.schema.parse(
        alone(SCHEMAS / f"{name}.avsc", tmp_path).read_text(encoding="utf-8")
    )
    assert _millis(avro_read(reader, payload)) == record


@pytest.mark.parametrize(("topic", "name"), TOPICS)
def test_the_registry_holds_the_file_as_one_self_contained_schema(topic, name):
    codec = ConfluentCodec(f"mock://registry-{topic}")
    data = codec.encode(name, sample(name), topic)
    registered = codec._client.get_latest_version(f"{topic}-value")
    assert not registered.schema.references
    assert canonical(registered.schema.schema_str) == canonical(
        (SCHEMAS / f"{name}.avsc").read_text(encoding="utf-8")
    )
    assert int.from_bytes(data[1:5], "big") == registered.schema_id
    # What Kafka Connect's AvroConverter does: fetch the writer schema by id and decode.
    by_id = avro.schema.parse(codec._client.get_schema(registered.schema_id).schema_str)
    assert _millis(avro_read(by_id, data[5:])) == sample(name)
    assert codec.decode(name, data, topic) == sample(name)


@pytest.mark.parametrize(("topic", "name"), TOPICS)
def test_data_registered_with_every_history_version_reads_through_the_registry(topic, name):
    """An older worker registered an older version; the current codec resolves it by schema id."""
    codec = ConfluentCodec(f"mock://history-{topic}")
    for _version, old in schemas.history(name):
        old_writer = AvroSerializer(
            codec._client, json.dumps(old), conf={"auto.register.schemas": True}
        )
        record = project(sample(name), old)
        data = old_writer(record, SerializationContext(topic, MessageField.VALUE))
        assert codec.decode(name, data, topic) == expected_read(
            record, old, schemas.schema_dict(name)
        )
