"""Wire formats for every record the connector reads or writes.

``avro``      schemaless Avro with the schemas/ files (the embedded default; no registry).
``confluent`` Schema Registry wire format (magic byte + schema id + Avro) through
              ``confluent_kafka.schema_registry``, so Kafka Connect's AvroConverter reads it.
``json``      UTF-8 JSON objects validated against the same Avro schemas.

Records are plain dicts; timestamps are epoch milliseconds (ints) on both sides. Every
decode failure raises :class:`~connector.errors.DecodeError` carrying the raw bytes.
"""

from __future__ import annotations

import base64
import copy
import io
import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

import fastavro
from fastavro.validation import validate

from connector import schemas
from connector.avro_fast import Writer, compile_writer
from connector.config import Settings
from connector.errors import ConfigError, DecodeError, EncodeError


class Codec(Protocol):
    name: str

    def encode(self, schema: str, record: dict[str, Any], topic: str) -> bytes: ...

    def decode(self, schema: str, data: bytes | None, topic: str) -> dict[str, Any]: ...


def _millis(value: Any) -> Any:
    """Logical timestamps back to epoch millis, recursively (fastavro returns datetimes)."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_millis(v) for v in value]
    return value


def _check_present(data: bytes | None, schema: str) -> bytes:
    if data is None:
        raise DecodeError("record has no value (tombstone)", None, schema=schema)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"value is {type(data).__name__}, not bytes", None, schema=schema)
    return bytes(data)


def with_defaults(schema: str, record: dict[str, Any]) -> dict[str, Any]:
    """The record with every missing field that has a default filled in."""
    defaults = _defaults(schema)
    if all(name in record for name, _ in defaults):
        return record  # the common case: records the lanes build are complete
    out = {
        name: copy.copy(value) if isinstance(value, dict | list) else value
        for name, value in _defaults(schema)
    }
    out.update(record)
    return out


@lru_cache(maxsize=64)
def _parsed(schema: str) -> Any:
    # Resolving the schema directory costs file-system calls: once per schema, not per record.
    return schemas.parsed_schema(schema)


@lru_cache(maxsize=64)
def _writer(schema: str) -> Writer | None:
    # Compiled once per schema, like the parsed schema above.
    return compile_writer(schemas.schema_dict(schema))


@lru_cache(maxsize=64)
def _defaults(schema: str) -> tuple[tuple[str, Any], ...]:
    # Expanding a schema deep-copies it: once per schema, not once per record.
    return tuple(schemas.defaults(schema).items())


class AvroCodec:
    """Schemaless Avro: no header, both sides hold the same schemas/ files."""

    name = "avro"

    def encode(self, schema: str, record: dict[str, Any], topic: str) -> bytes:
        full = with_defaults(schema, record)
        writer = _writer(schema)
        if writer is not None:
            try:
                return writer(full)
            except Exception:  # noqa: BLE001, S110 - fastavro writes it or says what is wrong
                pass
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, _parsed(schema), full)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"{schema} record does not fit its schema: {exc}") from exc
        return buf.getvalue()

    def decode(self, schema: str, data: bytes | None, topic: str) -> dict[str, Any]:
        raw = _check_present(data, schema)
        buf = io.BytesIO(raw)
        try:
            record = fastavro.schemaless_reader(buf, _parsed(schema), None)
        except Exception as exc:  # fastavro raises anything from EOFError to UnicodeDecodeError
            raise DecodeError(
                f"not a valid Avro {schema}: {type(exc).__name__}: {exc}", raw, schema=schema
            ) from exc
        if buf.tell() != len(raw):
            raise DecodeError(
                f"not a valid Avro {schema}: {len(raw) - buf.tell()} trailing bytes",
                raw,
                schema=schema,
            )
        return _millis(record)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _bytes_fields(schema: str) -> set[str]:
    fields = schemas.schema_dict(schema)["fields"]
    return {
        f["name"]
        for f in fields
        if f["type"] == "bytes" or (isinstance(f["type"], list) and "bytes" in f["type"])
    }


class JsonCodec:
    """JSON objects; bytes fields are base64; validated against the Avro schema both ways."""

    name = "json"

    def _validate(self, schema: str, record: dict[str, Any]) -> str | None:
        try:
            validate(record, _parsed(schema), raise_errors=True)
        except Exception as exc:  # fastavro's ValidationError and friends
            return str(exc)
        return None

    def encode(self, schema: str, record: dict[str, Any], topic: str) -> bytes:
        full = with_defaults(schema, record)
        problem = self._validate(schema, full)
        if problem:
            raise EncodeError(f"{schema} record does not fit its schema: {problem}")
        try:
            return json.dumps(
                full, default=_json_default, separators=(",", ":"), ensure_ascii=False
            ).encode()
        except UnicodeEncodeError as exc:
            raise EncodeError(
                f"{schema} record holds text that is not valid Unicode: {exc}"
            ) from exc

    def decode(self, schema: str, data: bytes | None, topic: str) -> dict[str, Any]:
        raw = _check_present(data, schema)
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DecodeError(f"not valid JSON: {exc}", raw, schema=schema) from exc
        except RecursionError as exc:
            raise DecodeError("JSON nested too deeply to decode", raw, schema=schema) from exc
        if not isinstance(record, dict):
            raise DecodeError(
                f"JSON {schema} must be an object, got {type(record).__name__}", raw, schema=schema
            )
        for name in _bytes_fields(schema):
            if isinstance(record.get(name), str):
                try:
                    record[name] = base64.b64decode(record[name], validate=True)
                except ValueError as exc:
                    raise DecodeError(
                        f"field {name} is not base64: {exc}", raw, schema=schema
                    ) from exc
        record = with_defaults(schema, record)
        problem = self._validate(schema, record)
        if problem:
            raise DecodeError(f"JSON does not fit {schema}: {problem}", raw, schema=schema)
        return record


class ConfluentCodec:
    """Schema Registry wire format via confluent_kafka's Avro serde (``mock://`` in tests)."""

    name = "confluent"

    def __init__(self, registry_url: str, auth: str | None = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        conf: dict[str, Any] = {"url": registry_url}
        if auth:
            conf["basic.auth.user.info"] = auth
        self._client = SchemaRegistryClient.new_client(conf)
        self._serializers: dict[str, Any] = {}
        self._deserializers: dict[str, Any] = {}

    def _serializer(self, schema: str) -> Any:
        if schema not in self._serializers:
            from confluent_kafka.schema_registry.avro import AvroSerializer

            self._serializers[schema] = AvroSerializer(
                self._client, schemas.schema_json(schema), conf={"auto.register.schemas": True}
            )
        return self._serializers[schema]

    def _deserializer(self, schema: str) -> Any:
        if schema not in self._deserializers:
            from confluent_kafka.schema_registry.avro import AvroDeserializer

            self._deserializers[schema] = AvroDeserializer(
                self._client, schemas.schema_json(schema)
            )
        return self._deserializers[schema]

    def encode(self, schema: str, record: dict[str, Any], topic: str) -> bytes:
        from confluent_kafka.serialization import MessageField, SerializationContext

        try:
            return self._serializer(schema)(
                with_defaults(schema, record), SerializationContext(topic, MessageField.VALUE)
            )
        except Exception as exc:  # SerializationError, ValueError, registry errors
            raise EncodeError(
                f"{schema} record could not be serialised for {topic}: {exc}"
            ) from exc

    def decode(self, schema: str, data: bytes | None, topic: str) -> dict[str, Any]:
        from confluent_kafka.serialization import MessageField, SerializationContext

        raw = _check_present(data, schema)
        try:
            record = self._deserializer(schema)(
                raw, SerializationContext(topic, MessageField.VALUE)
            )
        except Exception as exc:  # SerializationError for bad magic byte, unknown id, bad Avro
            raise DecodeError(
                f"not a valid Schema Registry Avro {schema}: {exc}", raw, schema=schema
            ) from exc
        if not isinstance(record, dict):
            raise DecodeError(f"decoded {schema} is not a record", raw, schema=schema)
        return _millis(record)


def build_codec(settings: Settings) -> Codec:
    if settings.serde == "avro":
        return AvroCodec()
    if settings.serde == "json":
        return JsonCodec()
    if settings.serde == "confluent":
        auth = (
            settings.schema_registry_auth.get_secret_value()
            if settings.schema_registry_auth
            else None
        )
        return ConfluentCodec(settings.schema_registry_url, auth)
    raise ConfigError(f"unknown serde {settings.serde!r}")
