"""Schemaless Avro writers compiled from a schema: the bytes fastavro writes, faster.

fastavro's ``schemaless_writer`` walks the schema for every record (11–20 µs for a
result); emitting a large batch's results spent more time there than anywhere else in
the encoding. :func:`compile_writer` turns a schema into one Python function that writes
its fields in a row, for the types the connector's schemas use: records, strings, bytes,
ints, longs (timestamps as epoch millis), doubles, enums, maps, arrays and unions of null
and one other type. A schema with anything else compiles to None.

The compiled writer accepts only values whose bytes it knows to be fastavro's: exact
``int`` (no ``bool``) within range, ``float`` (or ``int`` for a double outside a union),
``str``, ``bytes``, ``dict`` and ``list``. Any other value, a missing field without a
default, or text that is not valid UTF-8 raises, and the caller falls back to fastavro,
which writes the record or raises its own error. ``tests/test_avro_fast.py`` checks the
bytes against fastavro's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

Writer = Callable[[dict[str, Any]], bytes]

_SMALL = 4096  # the encodings of 0 … _SMALL - 1 are made up front (lengths, counts)
_CACHED = 1024  # then up to this many others (timestamps repeat within a batch)
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_UNION_INDEX = {0: b"\x00", 1: b"\x02"}  # a union's branch index, zig-zag encoded


class Unsupported(Exception):
    """The schema uses a type no compiled writer is made for."""


class NotWritten(Exception):
    """The value is one the compiled writer leaves to fastavro."""


def _encode_long(n: int) -> bytes:
    """A long, zig-zag and varint encoded (the caller checked the range)."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_encoded = {n: _encode_long(n) for n in range(_SMALL)}
_small = len(_encoded)


def _varint(n: int) -> bytes:
    """:func:`_encode_long`, remembered for small numbers and the last few others."""
    found = _encoded.get(n)
    if found is None:
        found = _encode_long(n)
        if len(_encoded) >= _small + _CACHED:
            for key in [key for key in _encoded if not 0 <= key < _SMALL]:
                del _encoded[key]
        _encoded[n] = found
    return found


def _fail(what: str) -> None:
    raise NotWritten(what)


class _Compiler:
    """Python source for one schema's writer, a statement per line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.n = 0

    def var(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: Any) -> str:
        name = self.var("_c")
        self.consts[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def value(self, schema: Any, v: str, indent: int) -> None:
        """Lines that append the encoding of the value in variable ``v`` to ``out``."""
        if isinstance(schema, list):
            self.union(schema, v, indent)
            return
        if isinstance(schema, dict):
            kind = schema["type"]
            if kind == "record":
                self.record(schema, v, indent)
                return
            if kind == "enum":
                symbols = self.const({s: _varint(i) for i, s in enumerate(schema["symbols"])})
                e = self.var("e")
                self.emit(indent, f"{e} = {symbols}.get({v}) if type({v}) is str else None")
                self.emit(indent, f"if {e} is None: _fail('enum')")
                self.emit(indent, f"out += {e}")
                return
            if kind in ("map", "array"):
                self.container(schema, v, indent)
                return
            if schema.get("logicalType") not in (None, "timestamp-millis") or not isinstance(
                kind, str
            ):
                raise Unsupported(f"type {schema!r}")
            self.value(kind, v, indent)  # a primitive in braces, or timestamp-millis
            return
        if schema == "null":
            self.emit(indent, f"if {v} is not None: _fail('null')")
        elif schema == "string":
            b = self.var("b")
            self.emit(indent, f"if type({v}) is not str: _fail('string')")
            self.emit(indent, f"{b} = {v}.encode()")
            self.emit(indent, f"out += _varint(len({b})); out += {b}")
        elif schema == "bytes":
            self.emit(indent, f"if type({v}) is not bytes: _fail('bytes')")
            self.emit(indent, f"out += _varint(len({v})); out += {v}")
        elif schema in ("long", "int"):
            low, high = ("_LONG_MIN", "_LONG_MAX") if schema == "long" else ("_INT_MIN", "_INT_MAX")
            self.emit(
                indent,
                f"if type({v}) is not int or not {low} <= {v} <= {high}: _fail({schema!r})",
            )
            self.emit(indent, f"out += _varint({v})")
        elif schema == "double":
            # fastavro writes an int (in a union too) as the double it converts to.
            self.emit(
                indent, f"if type({v}) is not float and type({v}) is not int: _fail('double')"
            )
            self.emit(indent, f"out += _double({v})")
        else:
            raise Unsupported(f"type {schema!r}")

    def union(self, branches: list[Any], v: str, indent: int) -> None:
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported(f"union {branches!r}")
        null_at = branches.index("null")
        other = branches[1 - null_at]
        if isinstance(other, list) or other == "null":
            raise Unsupported(f"union {branches!r}")
        self.emit(indent, f"if {v} is None:")
        self.emit(indent + 1, f"out += {_UNION_INDEX[null_at]!r}")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"out += {_UNION_INDEX[1 - null_at]!r}")
        self.value(other, v, indent + 1)

    def container(self, schema: dict[str, Any], v: str, indent: int) -> None:
        kind = schema["type"]
        item = self.var("x")
        if kind == "map":
            key = self.var("k")
            self.emit(indent, f"if type({v}) is not dict: _fail('map')")
            self.emit(indent, f"if {v}:")
            self.emit(indent + 1, f"out += _varint(len({v}))")
            self.emit(indent + 1, f"for {key}, {item} in {v}.items():")
            self.value("string", key, indent + 2)
            self.value(schema["values"], item, indent + 2)
        else:
            self.emit(indent, f"if type({v}) is not list: _fail('array')")
            self.emit(indent, f"if {v}:")
            self.emit(indent + 1, f"out += _varint(len({v}))")
            self.emit(indent + 1, f"for {item} in {v}:")
            self.value(schema["items"], item, indent + 2)
        self.emit(indent, "out += b'\\x00'")

    def record(self, schema: dict[str, Any], r: str, indent: int) -> None:
        self.emit(indent, f"if type({r}) is not dict: _fail('record')")
        for field in schema["fields"]:
            v = self.var("v")
            name = field["name"]
            if "default" in field:
                self.emit(indent, f"{v} = {r}.get({name!r}, {self.const(field['default'])})")
            else:
                self.emit(indent, f"{v} = {r}[{name!r}]")
            self.value(field["type"], v, indent)


def compile_writer(schema: dict[str, Any]) -> Writer | None:
    """The writer of records of ``schema`` (a top-level record, as JSON), or None if it uses
    a type this module leaves to fastavro."""
    compiler = _Compiler()
    try:
        compiler.record(schema, "record", 1)
    except Unsupported:
        return None
    source = "\n".join(
        ["def write(record):", "    out = bytearray()", *compiler.lines, "    return bytes(out)"]
    )
    scope: dict[str, Any] = {
        "_varint": _varint,
        "_double": struct.Struct("<d").pack,
        "_fail": _fail,
        "_LONG_MIN": _LONG_MIN,
        "_LONG_MAX": _LONG_MAX,
        "_INT_MIN": _INT_MIN,
        "_INT_MAX": _INT_MAX,
        **compiler.consts,
    }
    exec(compile(source, f"<avro writer {schema.get('name')}>", "exec"), scope)  # noqa: S102
    writer: Writer = scope["write"]
    return writer
