"""The Avro schemas in ``schemas/``: loading, cross-file consistency, history.

Each ``.avsc`` file holds one top-level record and stands alone: a record that has its own
file and is used in another (InferenceFailure.request is an InferenceRequest) is written out
in full at that use, under the same full name. So any Avro library loads any one file by
itself, a user in another language needs only the file of the topic they read, and the
Schema Registry gets the same self-contained schema (no references; Kafka Connect's
AvroConverter needs none). The loader refuses a directory where such a copy differs from
the record's own file.
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


def _full_name(node: dict[str, Any], namespace: str | None) -> str:
    name = node["name"]
    space = node.get("namespace", namespace)
    return name if "." in name or not space else f"{space}.{name}"


def _embedded_records(node: Any, namespace: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(full name, definition) of every record defined inside ``node``, at any depth."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, list):
        for branch in node:
            found += _embedded_records(branch, namespace)
    elif isinstance(node, dict) and node.get("type") == "record":
        full = _full_name(node, namespace)
        found.append((full, node))
        for field in node["fields"]:
            found += _embedded_records(field["type"], full.rpartition(".")[0] or None)
    elif isinstance(node, dict):
        for key in ("type", "items", "values"):
            if key in node and not isinstance(node[key], str):
                found += _embedded_records(node[key], namespace)
    return found


def _check_copies(raw: dict[str, dict[str, Any]], base: Path) -> None:
    """Every record defined inside another file is an exact copy of its own file."""
    own = {_full_name(schema, None): name for name, schema in raw.items()}
    for name, schema in raw.items():
        for field in schema["fields"]:
            for full, definition in _embedded_records(field["type"], schema.get("namespace")):
                if full in own and definition != raw[own[full]]:
                    raise SchemaError(
                        f"{base / (name + '.avsc')}: the {full} defined inside it differs from "
                        f"{own[full]}.avsc; copy that file's record in unchanged"
                    )


@lru_cache(maxsize=8)
def _raw_all(directory: str) -> dict[str, dict[str, Any]]:
    base = Path(directory)
    raw = {}
    for name in ALL:
        path = base / f"{name}.avsc"
        if not path.exists():
            raise SchemaError(f"schema file missing: {path}")
        raw[name] = _read(path)
    _check_copies(raw, base)
    return raw


def schema_dict(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The schema of ``name`` as a JSON-able dict (a fresh copy: callers may change it)."""
    raw = _raw_all(str(directory or schemas_dir()))
    if name not in raw:
        raise SchemaError(f"unknown schema {name!r}; known: {', '.join(ALL)}")
    return copy.deepcopy(raw[name])


def schema_json(name: str, directory: Path | None = None) -> str:
    return json.dumps(schema_dict(name, directory), separators=(",", ":"))


@lru_cache(maxsize=16)
def _parsed(name: str, directory: str) -> Any:
    try:
        return fastavro.parse_schema(schema_dict(name, Path(directory)))
    except Exception as exc:  # fastavro raises several types for bad schemas
        raise SchemaError(
            f"schema {name} does not parse on its own: {exc} (each file must define every record it uses)"
        ) from exc


def parsed_schema(name: str, directory: Path | None = None) -> Any:
    """The fastavro-parsed schema (cached)."""
    return _parsed(name, str(directory or schemas_dir()))


def history(name: str, directory: Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Released versions kept under ``schemas/history/<name>/v<N>.avsc``, oldest first."""
    base = (directory or schemas_dir()) / "history" / name
    if not base.is_dir():
        return []
    # v10 after v9: shorter names first, then by name.
    return [
        (p.stem, _read(p)) for p in sorted(base.glob("*.avsc"), key=lambda p: (len(p.stem), p.stem))
    ]


def defaults(name: str) -> dict[str, Any]:
    """Field name → default, for the fields of ``name`` that have one."""
    return {f["name"]: f["default"] for f in schema_dict(name)["fields"] if "default" in f}
