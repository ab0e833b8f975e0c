"""Each error kind in each provider's own words, and the HTTP error bodies they send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class OpenAIError:
    status: int
    type: str
    code: str | None
    message: str


@dataclass(frozen=True, slots=True)
class AnthropicError:
    status: int
    type: str
    message: str


@dataclass(frozen=True, slots=True)
class GeminiError:
    status: int
    status_name: str
    rpc_code: int  # google.rpc.Code, used inside batch results
    message: str


OPENAI_ERRORS = {
    "rate_limit": OpenAIError(
        429, "requests", "rate_limit_exceeded", "Rate limit reached (emulated)."
    ),
    "server_error": OpenAIError(
        500,
        "server_error",
        "server_error",
        "The server had an error while processing your request (emulated).",
    ),
    "overloaded": OpenAIError(
        503, "server_error", "engine_overloaded", "The engine is currently overloaded (emulated)."
    ),
    "invalid_request": OpenAIError(
        400, "invalid_request_error", "invalid_request", "Invalid request (emulated)."
    ),
    "policy": OpenAIError(
        400,
        "invalid_request_error",
        "content_policy_violation",
        "Your request was rejected by the content policy (emulated).",
    ),
}

ANTHROPIC_ERRORS = {
    "rate_limit": AnthropicError(429, "rate_limit_error", "Rate limit exceeded (emulated)."),
    "server_error": AnthropicError(500, "api_error", "Internal server error (emulated)."),
    "overloaded": AnthropicError(529, "overloaded_error", "Overloaded (emulated)."),
    "invalid_request": AnthropicError(400, "invalid_request_error", "Invalid request (emulated)."),
    "policy": AnthropicError(
        400, "invalid_request_error", "Output blocked by content filtering policy (emulated)."
    ),
}

GEMINI_ERRORS = {
    "rate_limit": GeminiError(
        429, "RESOURCE_EXHAUSTED", 8, "Resource has been exhausted (emulated)."
    ),
    "server_error": GeminiError(500, "INTERNAL", 13, "An internal error has occurred (emulated)."),
    "overloaded": GeminiError(503, "UNAVAILABLE", 14, "The model is overloaded (emulated)."),
    "invalid_request": GeminiError(
        400, "INVALID_ARGUMENT", 3, "Request contains an invalid argument (emulated)."
    ),
    "policy": GeminiError(
        400, "INVALID_ARGUMENT", 3, "The request was blocked by the safety policy (emulated)."
    ),
}

# An injected HTTP status (http_errors) expressed as an error kind.
KIND_FOR_STATUS = {429: "rate_limit", 500: "server_error", 503: "overloaded"}


# OpenAI's Flex guide documents "429 Resource Unavailable" (not charged) but no body; this
# is that answer in OpenAI's error envelope.
FLEX_UNAVAILABLE = OpenAIError(
    429,
    "service_unavailable_error",
    "resource_unavailable",
    "Resource Unavailable: Flex processing has no capacity for this request right now. "
    "Retry later, or with service_tier 'auto'. You were not charged (emulated).",
)


def openai_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def gemini_body(status: int, status_name: str, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": status_name}}


def not_found_for(provider: str, path: str) -> dict[str, Any]:
    """A 404 body for ``path`` as ``provider`` sends it for an id it does not know.

    Gemini answers unknown resources with its generic "Requested entity was not found.";
    OpenAI and Anthropic name the id (the wording of their batch and file routes).
    """
    if provider == "gemini":
        return gemini_body(404, "NOT_FOUND", "Requested entity was not found.")
    ident = path.rstrip("/").rsplit("/", 1)[-1]
    what = "batch" if "/batches" in path else "file" if "/files" in path else "object"
    message = f"No {what} found with id '{ident}'."
    if provider == "anthropic":
        return anthropic_body("not_found_error", message)
    return openai_body(message, "invalid_request_error")


def fault_body(provider: str, status: int, path: str) -> dict[str, Any]:
    """The body an injected HTTP ``status`` is answered with on ``path``."""
    if status == 404:
        return not_found_for(provider, path)
    return error_for(provider, KIND_FOR_STATUS[status], status)[1]


def error_for(provider: str, kind: str, status: int | None = None) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body for ``kind`` as ``provider`` sends it; ``status`` overrides."""
    if provider == "anthropic":
        a = ANTHROPIC_ERRORS[kind]
        return status or a.status, anthropic_body(a.type, a.message)
    if provider == "gemini":
        g = GEMINI_ERRORS[kind]
        return status or g.status, gemini_body(status or g.status, g.status_name, g.message)
    o = OPENAI_ERRORS[kind]
    return status or o.status, openai_body(o.message, o.type, o.code)
