"""Admitting a raw input record: decode, validate, or explain why not. Pure but for the codec.

:func:`admit` never raises: whatever goes wrong with one record (undecodable bytes, a body
nested too deeply to parse, invalid Unicode, a bug) becomes that record's rejection, so
the agent goes on with the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector import schemas
from connector.errors import DecodeError, ValidationError
from connector.lanes import records
from connector.model import ENDPOINTS, validate_request
from connector.serde import Codec

# Fields whose text travels as Kafka keys and topic names besides the record itself.
_TEXT_FIELDS = ("request_id", "provider", "model", "endpoint", "reply_topic")


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a record cannot enter a lane: its dead-letter class and message."""

    error_class: str
    message: str
    request: dict[str, Any] | None
    raw: bytes | None


def admit(
    codec: Codec,
    raw: bytes | None,
    topic: str,
    allowlist: frozenset[str],
    max_body_bytes: Mapping[str, int],
    endpoints: Mapping[str, frozenset[str]] = ENDPOINTS,
) -> dict[str, Any] | Rejected:
    """The decoded, valid request, or why it cannot enter a lane (``endpoints``: per provider)."""
    try:
        request = codec.decode(schemas.REQUEST, raw, topic)
    except DecodeError as exc:
        return Rejected(records.DECODE_ERROR, exc.reason, None, exc.raw)
    except (RecursionError, MemoryError) as exc:
        return Rejected(
            records.DECODE_ERROR,
            f"record too deeply nested or too large to decode: {records.exception_message(exc)}",
            None,
            raw,
        )
    except Exception as exc:  # noqa: BLE001 - a codec bug must cost one record, not the agent
        return Rejected(
            records.INTERNAL_ERROR, f"decoding failed: {records.exception_message(exc)}", None, raw
        )
    try:
        return _validated(request, allowlist, max_body_bytes, endpoints)
    except _Oversize as exc:
        return Rejected(records.OVERSIZE, str(exc), request, None)
    except ValidationError as exc:
        return Rejected(records.INVALID_INPUT, str(exc), request, None)
    except RecursionError:
        return Rejected(records.INVALID_INPUT, "body is nested too deeply to parse", request, None)
    except MemoryError:
        return Rejected(records.OVERSIZE, "body is too large to parse", request, None)
    except Exception as exc:  # noqa: BLE001 - see above
        return Rejected(
            records.INTERNAL_ERROR,
            f"validation failed: {records.exception_message(exc)}",
            request,
            None,
        )


def _validated(
    request: dict[str, Any],
    allowlist: frozenset[str],
    max_body_bytes: Mapping[str, int],
    endpoints: Mapping[str, frozenset[str]],
) -> dict[str, Any]:
    _check_unicode_fields(request)
    validate_request(request, reply_allowlist=allowlist, endpoints=endpoints)
    limit = max_body_bytes.get(request["provider"])
    size = len(request["body"].encode())
    if limit is not None and size > limit:
        raise _Oversize(
            f"body is {size} bytes; a {request['provider']} batch holds at most {limit}"
        )
    return request


class _Oversize(ValidationError):
    """The body is larger than any batch of its provider can hold."""


def _check_unicode_fields(request: dict[str, Any]) -> None:
    """Text that is not valid Unicode (lone surrogates, from JSON input) cannot be re-encoded."""
    texts = [request.get(name) for name in _TEXT_FIELDS] + [request.get("body")]
    metadata = request.get("metadata") or {}
    texts += [*metadata.keys(), *metadata.values()]
    for text in texts:
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValidationError(
                    f"text is not valid Unicode ({exc.reason} at position {exc.start})"
                ) from exc
