"""The Avro schemas in ``schemas/``: loading, reference expansion, history.

Each ``.avsc`` file holds one top-level record. A field may name another top-level record
of this directory by its full name (InferenceFailure.request → InferenceRequest); the
loader inlines it, so every schema handed to fastavro or a Schema Registry is
self-contained (Kafka Connect's AvroConverter needs no references).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro

from connector.config import get_settings
from connector.errors import SchemaError
from connector.shipped import shipped_dir

NAMESPACE = "io.batchbridge.v1"
REQUEST = "InferenceRequest"
RESULT = "InferenceResult"
FAILURE = "InferenceFailure"
BATCH_EVENT = "BatchEvent"
ALL = (REQUEST, RESULT, FAILURE, BATCH_EVENT)


def schemas_dir() -> Path:
    """``BATCHBRIDGE_SCHEMAS_DIR`` (a setting), else the schemas shipped with the package."""
    configured = get_settings().schemas_dir
    return Path(configured) if configured else shipped_dir("schemas")


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"cannot read schema {path}: {exc}") from exc


def _expand(node: Any, raw: dict[str, dict[str, Any]], seen: set[str]) -> Any:
    """Inline references to other top-level records, each at most once per schema."""
    if isinstance(node, str):
        short = node.removeprefix(NAMESPACE + ".")
        if short in raw and node in (short, f"{NAMESPACE}.{short}"):
            if short in seen:
                return f"{NAMESPACE}.{short}"
            seen.add(short)
            return _expand(copy.deepcopy(raw[short]), raw, seen)
        return node
    if isinstance(node, list):
        return [_expand(item, raw, seen) for item in node]
    if isinstance(node, dict):
        out = dict(node)
        if out.get("type") == "record":
            seen.add(out["name"])
            out["fields"] = [dict(f, type=_expand(f["type"], raw, seen)) for f in out["fields"]]
        elif "type" in out and not isinstance(out["type"], str):
            out["type"] = _expand(out["type"], raw, seen)
        elif out.get("type") in ("array",):
            out["items"] = _expand(out["items"], raw, seen)
        elif out.get("type") in ("map",):
            out["values"] = _expand(out["values"], raw, seen)
        return out
    return node


@lru_cache(maxsize=8)
def _raw_all(directory: str) -> dict[str, dict[str, Any]]:
    base = Path(directory)
    raw = {}
    for name in ALL:
        path = base / f"{name}.avsc"
        if not path.exists():
            raise SchemaError(f"schema file missing: {path}")
        raw[name] = _read(path)
    return raw


def schema_dict(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The self-contained schema of ``name`` as a JSON-able dict."""
    raw = _raw_all(str(directory or schemas_dir()))
    if name not in raw:
        raise SchemaError(f"unknown schema {name!r}; known: {', '.join(ALL)}")
    return _expand(copy.deepcopy(raw[name]), raw, set())


def schema_json(name: str, directory: Path | None = None) -> str:
    return json.dumps(schema_dict(name, directory), separators=(",", ":"))


@lru_cache(maxsize=16)
def _parsed(name: str, directory: str) -> Any:
    try:
        return fastavro.parse_schema(schema_dict(name, Path(directory)))
    except Exception as exc:  # fastavro raises several types for bad schemas
        raise SchemaError(f"schema {name} does not parse: {exc}") from exc


def parsed_schema(name: str, directory: Path | None = None) -> Any:
    """The fastavro-parsed schema (cached)."""
    return _parsed(name, str(directory or schemas_dir()))


def history(name: str, directory: Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Earlier versions kept under ``schemas/history/<name>/*.avsc``, oldest first."""
    base = (directory or schemas_dir()) / "history" / name
    if not base.is_dir():
        return []
    return [(p.stem, _read(p)) for p in sorted(base.glob("*.avsc"))]


def defaults(name: str) -> dict[str, Any]:
    """Field name → default, for the fields of ``name`` that have one."""
    return {f["name"]: f["default"] for f in schema_dict(name)["fields"] if "default" in f}
