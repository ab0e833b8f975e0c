"""Normalise per-request results and errors of the three providers into ``Outcome``.

Pure: works on parsed JSON (result-file lines, inline responses, error bodies). The
provider's own error code and message are kept verbatim on every failed outcome.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

from connector.providers.base import Outcome, OutcomeKind, Usage
from connector.providers.exceptions import ProviderError

RETRYABLE_CODES = frozenset(
    {
        # rate limits
        "rate_limit_exceeded",
        "rate_limit_error",
        "resource_exhausted",
        "too_many_requests",
        # overloaded
        "overloaded_error",
        "engine_overloaded",
        "overloaded",
        "unavailable",
        "service_unavailable",
        # server errors and timeouts
        "api_error",
        "server_error",
        "internal",
        "internal_error",
        "deadline_exceeded",
        "timeout",
        "timeout_error",
        "request_timeout",
        "aborted",
        "connection_error",
        # the batch ended before the request ran
        "batch_expired",
        "expired",
        "batch_cancelled",
        "canceled",
        "cancelled",
    }
)

PERMANENT_CODES = frozenset(
    {
        # invalid request
        "invalid_request_error",
        "invalid_request",
        "invalid_argument",
        "invalid_prompt",
        "failed_precondition",
        "out_of_range",
        "request_too_large",
        "context_length_exceeded",
        "model_not_found",
        "unimplemented",
        # policy and safety
        "content_policy_violation",
        "content_filter",
        "policy_violation",
        "safety",
        "prohibited_content",
        # not found, auth, billing
        "not_found_error",
        "not_found",
        "authentication_error",
        "unauthenticated",
        "invalid_api_key",
        "permission_error",
        "permission_denied",
        "billing_error",
        # a 429 that waiting does not cure: the account is out of credit
        "insufficient_quota",
    }
)

_RETRYABLE_STATUSES = frozenset({408, 425, 429, 529})


def classify(status: int | None = None, code: str | None = None) -> OutcomeKind:
    """Retryable or permanent, from the provider's error code first, then the HTTP status.

    An error neither knows is retryable: the caller bounds attempts, and giving up on a
    transient error nobody has seen before would lose a request that could succeed.
    """
    if code:
        normalised = code.strip().lower()
        if normalised in RETRYABLE_CODES:
            return OutcomeKind.RETRYABLE
        if normalised in PERMANENT_CODES:
            return OutcomeKind.PERMANENT
    if status is not None:
        if status in _RETRYABLE_STATUSES or status >= 500:
            return OutcomeKind.RETRYABLE
        if 400 <= status < 500:
            return OutcomeKind.PERMANENT
    return OutcomeKind.RETRYABLE


def failure(
    custom_id: str,
    *,
    status: int | None = None,
    code: str | None = None,
    message: str | None = None,
    body: dict[str, Any] | None = None,
    retry_after: float | None = None,
) -> Outcome:
    """A failed request's outcome, classified by the provider's code and HTTP status."""
    return Outcome(
        custom_id=custom_id,
        kind=classify(status, code),
        body=body,
        error_code=code if code is not None else (str(status) if status is not None else None),
        error_message=message,
        retry_after=retry_after,
    )


def error_outcome(custom_id: str, error: ProviderError) -> Outcome:
    """A failed synchronous call as the request's outcome, classified by code and status."""
    return failure(
        custom_id,
        status=error.status,
        code=error.code,
        message=error.message,
        retry_after=error.retry_after,
    )


def undecodable(custom_id: str, exc: Exception, *, code: str) -> Outcome:
    """A synchronous answer that could not be read: retryable, under the provider's ``code``."""
    return failure(custom_id, code=code, message=f"undecodable response: {exc}")


def refused_by_client(custom_id: str, exc: Exception) -> Outcome:
    """A request the SDK refused before sending it (bad shape): permanent, named by the error."""
    return Outcome(
        custom_id=custom_id,
        kind=OutcomeKind.PERMANENT,
        error_code=type(exc).__name__,
        error_message=f"missing field {exc}" if isinstance(exc, KeyError) else str(exc),
    )


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# Usage.input_tokens counts every input token, cache reads and writes included (see Usage).
# Output tokens include reasoning/thinking tokens (all are billed as output).


def openai_usage(body: Mapping[str, Any] | None) -> Usage:
    """Usage of a chat completions, responses or embeddings body.

    ``prompt_tokens`` / ``input_tokens`` already include the cached prefix, which the
    ``*_tokens_details.cached_tokens`` counts (OpenAI's caching is automatic, writes free).
    """
    usage = _dict(_dict(body).get("usage"))
    if "input_tokens" in usage or "output_tokens" in usage:  # responses API
        details = _dict(usage.get("input_tokens_details"))
        return Usage(
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            cached_tokens=_int(details.get("cached_tokens")),
            cache_write_tokens=_int(details.get("cache_write_tokens")),
        )
    details = _dict(usage.get("prompt_tokens_details"))
    return Usage(  # chat completions; embeddings report prompt_tokens only
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        cached_tokens=_int(details.get("cached_tokens")),
        cache_write_tokens=_int(details.get("cache_write_tokens")),
    )


def anthropic_usage(message: Mapping[str, Any] | None) -> Usage:
    """Usage of a Messages API response.

    Anthropic's ``input_tokens`` excludes cache reads and writes; they are added back so
    ``input_tokens`` means the same for every provider.
    """
    usage = _dict(_dict(message).get("usage"))
    cache_read = _int(usage.get("cache_read_input_tokens"))
    cache_write = _int(usage.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=_int(usage.get("input_tokens")) + cache_read + cache_write,
        output_tokens=_int(usage.get("output_tokens")),
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def gemini_usage(response: Mapping[str, Any] | None) -> Usage:
    """Usage of a GenerateContentResponse (REST camelCase).

    ``promptTokenCount`` includes the ``cachedContentTokenCount`` read from the cache.
    """
    usage = _dict(_dict(response).get("usageMetadata"))
    return Usage(
        input_tokens=_int(usage.get("promptTokenCount")),
        output_tokens=_int(usage.get("candidatesTokenCount"))
        + _int(usage.get("thoughtsTokenCount")),
        cached_tokens=_int(usage.get("cachedContentTokenCount")),
    )


def openai_error_fields(body: Any) -> tuple[str | None, str | None]:
    """``(code, message)`` of an OpenAI error body ``{"error": {code, type, message}}``."""
    error = _dict(_dict(body).get("error")) or _dict(body)
    code = error.get("code") or error.get("type")
    message = error.get("message")
    return (str(code) if code is not None else None, str(message) if message is not None else None)


def anthropic_error_fields(body: Any) -> tuple[str | None, str | None]:
    """``(type, message)`` of an Anthropic error ``{"type": "error", "error": {type, message}}``."""
    error = _dict(body)
    if error.get("type") == "error" or "error" in error:
        error = _dict(error.get("error"))
    code, message = error.get("type"), error.get("message")
    return (str(code) if code is not None else None, str(message) if message is not None else None)


# google.rpc.Code: batch results carry these numbers, HTTP error bodies carry HTTP statuses.
GRPC_STATUS_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


def gemini_error_fields(body: Any) -> tuple[int | None, str | None, str | None]:
    """``(http status, status name, message)`` of a google.rpc.Status, bare or under ``error``.

    ``code`` is an HTTP status in API error bodies and a google.rpc.Code in batch results;
    the latter is turned into its name when no ``status`` name is given.
    """
    error = _dict(body)
    if "error" in error:
        error = _dict(error["error"])
    code = error.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        code = None
    status = error.get("status")
    message = error.get("message")
    http_status = code if code is not None and code >= 100 else None
    if status is None and code is not None and code < 100:
        status = GRPC_STATUS_NAMES.get(code)
    return (
        http_status,
        str(status) if status is not None else None,
        str(message) if message is not None else None,
    )


def openai_outcome(line: Mapping[str, Any]) -> Outcome:
    """One line of an OpenAI batch output or error file."""
    custom_id = str(line["custom_id"])
    error = line.get("error")
    if error:
        code, message = openai_error_fields(error)
        return failure(custom_id, code=code, message=message)
    response = _dict(line.get("response"))
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, dict):
        return Outcome(custom_id, OutcomeKind.SUCCEEDED, body=body, usage=openai_usage(body))
    code, message = openai_error_fields(body)
    return failure(
        custom_id,
        status=status if isinstance(status, int) else None,
        code=code,
        message=message,
        body=body if isinstance(body, dict) else None,
    )


def anthropic_outcome(line: Mapping[str, Any]) -> Outcome:
    """One line of an Anthropic Message Batch results file."""
    custom_id = str(line["custom_id"])
    result = _dict(line.get("result"))
    kind = result.get("type")
    if kind == "succeeded":
        message = _dict(result.get("message"))
        return Outcome(
            custom_id, OutcomeKind.SUCCEEDED, body=message, usage=anthropic_usage(message)
        )
    if kind == "errored":
        code, text = anthropic_error_fields(result.get("error"))
        return failure(custom_id, code=code, message=text)
    if kind in ("canceled", "expired"):
        return failure(custom_id, code=kind, message=f"the batch {kind} before this request ran")
    return failure(custom_id, code=str(kind), message="unknown result type")


def gemini_outcome(
    custom_id: str, response: Mapping[str, Any] | None, error: Mapping[str, Any] | None
) -> Outcome:
    """One Gemini batch result: a GenerateContentResponse or a google.rpc.Status.

    A response whose prompt was blocked carries no candidates; that is a policy failure.
    """
    if error:
        status, code, message = gemini_error_fields(error)
        return failure(custom_id, status=status, code=code, message=message)
    body = dict(response or {})
    block = _dict(body.get("promptFeedback")).get("blockReason")
    if block and not body.get("candidates"):
        return Outcome(
            custom_id,
            OutcomeKind.PERMANENT,
            body=body,
            usage=gemini_usage(body),
            error_code=str(block),
            error_message=f"prompt blocked: {block}",
        )
    return Outcome(custom_id, OutcomeKind.SUCCEEDED, body=body, usage=gemini_usage(body))
