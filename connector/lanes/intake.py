"""Admitting a raw input record: decode, validate, or explain why not. Pure but for the codec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector import schemas
from connector.errors import DecodeError, ValidationError
from connector.lanes import records
from connector.model import validate_request
from connector.serde import Codec


@dataclass(frozen=True, slots=True)
class Rejected:
    error_class: str
    message: str
    request: dict[str, Any] | None
    raw: bytes | None


def admit(
    codec: Codec, raw: bytes | None, topic: str, allowlist: frozenset[str], max_body_bytes: dict[str, int]
) -> dict[str, Any] | Rejected:
    """The decoded, valid request, or why it cannot enter a lane."""
    try:
        request = codec.decode(schemas.REQUEST, raw, topic)
    except DecodeError as exc:
        return Rejected(records.DECODE_ERROR, exc.reason, None, exc.raw)
    try:
        validate_request(request, reply_allowlist=allowlist)
    except ValidationError as exc:
        return Rejected(records.INVALID_INPUT, str(exc), request, None)
    limit = max_body_bytes.get(request["provider"])
    size = len(request["body"].encode())
    if limit is not None and size > limit:
        return Rejected(records.OVERSIZE, f"body is {size} bytes; a {request['provider']} batch holds at most {limit}", request, None)
    return request
