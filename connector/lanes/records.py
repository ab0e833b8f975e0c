"""Building the records the lanes emit. Pure: no I/O, no clocks (``now`` is passed in)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from connector.errors import EncodeError
from connector.lanes.ledger import BatchPhase, BatchRecord
from connector.pricing import Costs
from connector.providers.base import Outcome

# Failure classes on the dead-letter topic.
DECODE_ERROR = "decode_error"
INVALID_INPUT = "invalid_input"
PROVIDER_REJECTED = "provider_rejected"
RETRIES_EXHAUSTED = "retries_exhausted"
EXPIRED = "expired"
CANCELLED = "cancelled"
BATCH_FAILED = "batch_failed"
OVERSIZE = "oversize"
INTERNAL_ERROR = "internal_error"
BUDGET_EXCEEDED = "budget_exceeded"

# A dead letter always fits its topic: longer messages and raw values are cut (and named
# in the record's ``truncated`` field).
MAX_ERROR_MESSAGE_CHARS = 2000


def json_text(value: Any) -> str:
    """Compact JSON that is always valid UTF-8 (lone surrogates are escaped, not kept raw)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # text with lone surrogates, or numbers orjson does not take
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def exception_message(exc: BaseException) -> str:
    """An unexpected exception as a dead letter states it: class and message."""
    return f"{type(exc).__name__}: {exc}"


def result_record(
    request: dict[str, Any],
    outcome: Outcome,
    *,
    lane: str,
    costs: Costs,
    now: int,
    batch_id: str | None = None,
    provider_batch_id: str | None = None,
    submitted_at: int | None = None,
    completed_at: int | None = None,
    service_tier: str | None = None,
) -> dict[str, Any]:
    """The InferenceResult of a succeeded request, priced by ``costs`` at ``service_tier``."""
    return {
        "request_id": request["request_id"],
        "provider": request["provider"],
        "model": request["model"],
        "endpoint": request["endpoint"],
        "lane": lane,
        "batch_id": batch_id,
        "provider_batch_id": provider_batch_id,
        "response": json_text(outcome.body or {}),
        "usage": {
            "input_tokens": outcome.usage.input_tokens,
            "output_tokens": outcome.usage.output_tokens,
            "cached_tokens": outcome.usage.cached_tokens,
            "cache_write_tokens": outcome.usage.cache_write_tokens,
        },
        "cost_usd": costs.cost_usd,
        "realtime_cost_usd": costs.realtime_cost_usd,
        "created_at": request["created_at"],
        "submitted_at": submitted_at,
        "completed_at": completed_at,
        "emitted_at": now,
        "attempt": int(request.get("attempt") or 1),
        "metadata": dict(request.get("metadata") or {}),
        "service_tier": service_tier,
        "cache_savings_usd": costs.cache_savings_usd,
    }


def failure_record(
    *,
    error_class: str,
    message: str,
    now: int,
    request: dict[str, Any] | None = None,
    raw_value: bytes | None = None,
    error_code: str | None = None,
    batch_id: str | None = None,
    provider_batch_id: str | None = None,
    source: tuple[str, int, int] | None = None,
) -> dict[str, Any]:
    return {
        "request_id": request.get("request_id") if request else None,
        "request": request,
        "raw_value": raw_value,
        "error_class": error_class,
        "error_code": error_code,
        "error_message": message,
        "attempts": int(request.get("attempt") or 1) if request else 1,
        "provider": request.get("provider") if request else None,
        "model": request.get("model") if request else None,
        "batch_id": batch_id,
        "provider_batch_id": provider_batch_id,
        "source_topic": source[0] if source else None,
        "source_partition": source[1] if source else None,
        "source_offset": source[2] if source else None,
        "failed_at": now,
    }


def _cut_text(text: str, excess_bytes: int) -> str:
    raw = text.encode("utf-8", "surrogatepass")
    keep = max(0, len(raw) - excess_bytes - 16)
    return raw[:keep].decode("utf-8", "ignore") + "…[cut]"


def _sanitized(value: Any) -> Any:
    """``value`` with every lone surrogate replaced, so any wire format can encode it."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_sanitized(k): _sanitized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitized(v) for v in value]
    return value


def fit_failure(
    failure: dict[str, Any], encode: Callable[[dict[str, Any]], bytes], limit: int
) -> tuple[dict[str, Any], bytes]:
    """The dead letter cut down until it encodes within ``limit`` bytes, and its encoding.

    The error message is capped first, then invalid Unicode is replaced, then the raw
    value, the request body and metadata are cut, and as a last resort the request is
    dropped; every cut field is named in ``truncated``.
    """
    record = dict(failure)
    truncated: list[str] = list(record.get("truncated") or [])
    if len(record["error_message"]) > MAX_ERROR_MESSAGE_CHARS:
        record["error_message"] = record["error_message"][:MAX_ERROR_MESSAGE_CHARS] + "…[cut]"
        truncated.append("error_message")

    def attempt() -> bytes:
        if truncated:
            record["truncated"] = truncated
        return encode(record)

    try:
        data = attempt()
    except (EncodeError, UnicodeError):
        record = _sanitized(record)
        record["error_message"] += " [invalid Unicode in this record was replaced]"
        data = attempt()
    for cut in (_cut_raw_value, _cut_request_body, _drop_request_metadata, _drop_request):
        for _ in range(4):  # encodings grow unevenly (base64, JSON escapes): cut again if needed
            if len(data) <= limit:
                return record, data
            name = cut(record, len(data) - limit)
            if name is None:
                break
            if name not in truncated:
                truncated.append(name)
            data = attempt()
    return record, data


def _cut_raw_value(record: dict[str, Any], excess: int) -> str | None:
    raw = record.get("raw_value")
    if not raw:
        return None
    record["raw_value"] = raw[: max(0, len(raw) - excess - 16)]
    return "raw_value"


def _cut_request_body(record: dict[str, Any], excess: int) -> str | None:
    request = record.get("request")
    if not request or not request.get("body"):
        return None
    record["request"] = dict(request, body=_cut_text(request["body"], excess))
    return "request.body"


def _drop_request_metadata(record: dict[str, Any], excess: int) -> str | None:
    request = record.get("request")
    if not request or not request.get("metadata"):
        return None
    record["request"] = dict(request, metadata={})
    return "request.metadata"


def _drop_request(record: dict[str, Any], excess: int) -> str | None:
    if record.get("request") is None:
        return None
    record["request"] = None
    return "request"


# The stage of Kafka Connect's error context each dead-letter class comes closest to.
_CONNECT_STAGES = {
    DECODE_ERROR: "VALUE_CONVERTER",
    INVALID_INPUT: "TRANSFORMATION",
    OVERSIZE: "TRANSFORMATION",
    "budget_exceeded": "TRANSFORMATION",
}


def deadletter_headers(
    failure: dict[str, Any], connector: str = "batchbridge"
) -> list[tuple[str, bytes]]:
    """The error context headers Kafka Connect's ``errors.deadletterqueue.context.headers.enable``
    writes, so DLQ tooling that reads them reads ours; plus ``error_class``.
    """
    error_class = failure["error_class"]
    headers = {
        "__connect.errors.connector.name": connector,
        "__connect.errors.task.id": "0",
        "__connect.errors.stage": _CONNECT_STAGES.get(error_class, "TASK_PUT"),
        "__connect.errors.class.name": "io.batchbridge.connector.DeferredLane",
        "__connect.errors.exception.class.name": "io.batchbridge.errors."
        + "".join(p.title() for p in error_class.split("_")),
        "__connect.errors.exception.message": failure["error_message"][:MAX_ERROR_MESSAGE_CHARS],
        "error_class": error_class,
    }
    if failure.get("source_topic") is not None:
        headers["__connect.errors.topic"] = failure["source_topic"]
        headers["__connect.errors.partition"] = str(failure["source_partition"])
        headers["__connect.errors.offset"] = str(failure["source_offset"])
    if failure.get("error_code"):
        headers["error_code"] = failure["error_code"]
    return [(k, v.encode("utf-8", "replace")) for k, v in headers.items()]


def cloudevent_headers(
    *, kind: str, request_id: str | None, source: str, now_ms: int
) -> list[tuple[str, bytes]]:
    """CloudEvents 1.0 binary-mode Kafka headers for a result or a dead letter."""
    at = (
        datetime.fromtimestamp(now_ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    headers = {
        "ce_specversion": "1.0",
        "ce_id": request_id or "",
        "ce_source": source,
        "ce_type": f"io.batchbridge.inference.{kind}.v1",
        "ce_time": at,
    }
    return [(k, v.encode("utf-8", "replace")) for k, v in headers.items()]


def failure_class_for_batch(batch: BatchRecord) -> str:
    """The dead-letter class for requests a batch left unfinished once attempts run out.

    A batch the provider refused to create (a 4xx on create: an unknown model, a body it
    will not take) failed on what was asked, not on the way: ``provider_rejected``.
    """
    if batch.phase is BatchPhase.FAILED and batch.refused:
        return PROVIDER_REJECTED
    return {
        BatchPhase.EXPIRED: EXPIRED,
        BatchPhase.CANCELLED: CANCELLED,
        BatchPhase.FAILED: BATCH_FAILED,
    }.get(batch.phase, RETRIES_EXHAUSTED)


def batch_event(
    batch: BatchRecord,
    *,
    previous: BatchPhase | None,
    now: int,
    succeeded: int | None = None,
    failed: int | None = None,
) -> dict[str, Any]:
    """The lifecycle event of a batch that just entered ``batch.phase``."""
    return {
        "batch_id": batch.batch_id,
        "provider": batch.provider,
        "model": batch.batch_key.model,
        "endpoint": batch.batch_key.endpoint,
        "state": batch.phase.value,
        "previous_state": previous.value if previous else None,
        "provider_batch_id": batch.handle.batch_id if batch.handle else None,
        "provider_state": batch.provider_state,
        "close_reason": batch.close_reason,
        "request_count": batch.count,
        "bytes": batch.bytes,
        "succeeded": succeeded,
        "failed": failed,
        "error_code": batch.error_code,
        "error_message": batch.error_message,
        "opened_at": batch.opened_at,
        "event_at": now,
    }
