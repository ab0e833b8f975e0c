from __future__ import annotations

import pytest

from connector.providers.base import OutcomeKind, Usage
from connector.providers.outcomes import (
    anthropic_outcome,
    anthropic_usage,
    classify,
    gemini_outcome,
    gemini_usage,
    openai_outcome,
    openai_usage,
    parse_retry_after,
)

R, P = OutcomeKind.RETRYABLE, OutcomeKind.PERMANENT


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        # rate limits
        (429, None, R),
        (None, "rate_limit_exceeded", R),
        (429, "rate_limit_error", R),
        (None, "RESOURCE_EXHAUSTED", R),
        # overloaded
        (529, None, R),
        (529, "overloaded_error", R),
        (None, "engine_overloaded", R),
        (503, "UNAVAILABLE", R),
        (None, "UNAVAILABLE", R),
        # server errors
        (500, None, R),
        (502, None, R),
        (500, "api_error", R),
        (None, "server_error", R),
        (None, "INTERNAL", R),
        (None, "DEADLINE_EXCEEDED", R),
        (408, None, R),
        # ended before running
        (None, "batch_expired", R),
        (None, "expired", R),
        (None, "canceled", R),
        (None, "batch_cancelled", R),
        # invalid request
        (400, None, P),
        (None, "invalid_request_error", P),
        (400, "invalid_request", P),
        (400, "INVALID_ARGUMENT", P),
        (413, "request_too_large", P),
        (422, None, P),
        # policy
        (400, "content_policy_violation", P),
        (None, "SAFETY", P),
        (None, "PROHIBITED_CONTENT", P),
        # not found, auth
        (404, None, P),
        (None, "not_found_error", P),
        (None, "NOT_FOUND", P),
        (401, "authentication_error", P),
        (403, "permission_error", P),
        (None, "PERMISSION_DENIED", P),
        (None, "UNAUTHENTICATED", P),
        # the code wins over the status
        (429, "insufficient_quota", P),
        (400, "rate_limit_exceeded", R),
        # unknown: status decides, else retry (attempts are bounded by the caller)
        (418, "brand_new_code", P),
        (599, "brand_new_code", R),
        (None, "brand_new_code", R),
        (None, None, R),
    ],
)
def test_classify(status: int | None, code: str | None, kind: OutcomeKind) -> None:
    assert classify(status, code) is kind


def test_openai_success_line_with_chat_usage() -> None:
    body = {
        "id": "chatcmpl-1",
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    outcome = openai_outcome(
        {"custom_id": "a", "response": {"status_code": 200, "body": body}, "error": None}
    )
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.body == body
    assert outcome.usage == Usage(10, 5, 4)


def test_openai_error_file_line_keeps_code_and_message() -> None:
    line = {
        "custom_id": "a",
        "response": None,
        "error": {"code": "batch_expired", "message": "expired"},
    }
    outcome = openai_outcome(line)
    assert (outcome.kind, outcome.error_code, outcome.error_message) == (
        R,
        "batch_expired",
        "expired",
    )


@pytest.mark.parametrize(
    ("status", "error", "kind", "code"),
    [
        (
            429,
            {"type": "requests", "code": "rate_limit_exceeded", "message": "slow"},
            R,
            "rate_limit_exceeded",
        ),
        (
            400,
            {"type": "invalid_request_error", "code": None, "message": "bad"},
            P,
            "invalid_request_error",
        ),
        (500, {"type": "server_error", "message": "boom"}, R, "server_error"),
        (
            400,
            {"type": "invalid_request_error", "code": "content_policy_violation", "message": "no"},
            P,
            "content_policy_violation",
        ),
    ],
)
def test_openai_non_200_response_line(
    status: int, error: dict, kind: OutcomeKind, code: str
) -> None:
    line = {
        "custom_id": "a",
        "response": {"status_code": status, "body": {"error": error}},
        "error": None,
    }
    outcome = openai_outcome(line)
    assert (outcome.kind, outcome.error_code, outcome.error_message) == (
        kind,
        code,
        error["message"],
    )


def test_openai_non_200_without_error_body_falls_back_to_status() -> None:
    outcome = openai_outcome(
        {"custom_id": "a", "response": {"status_code": 503, "body": "x"}, "error": None}
    )
    assert (outcome.kind, outcome.error_code) == (R, "503")


def test_openai_line_without_custom_id_is_malformed() -> None:
    with pytest.raises(KeyError):
        openai_outcome({"response": None})


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 7, "completion_tokens": 3}, Usage(7, 3, 0)),
        (
            {
                "prompt_tokens": 7,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 2},
            },
            Usage(7, 3, 2),
        ),
        (
            {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 1}},
            Usage(9, 4, 1),
        ),
        ({"prompt_tokens": 12, "total_tokens": 12}, Usage(12, 0, 0)),  # embeddings
        ({"prompt_tokens": None, "completion_tokens": "3"}, Usage(0, 0, 0)),
        ({}, Usage()),
    ],
)
def test_openai_usage(usage: dict, expected: Usage) -> None:
    assert openai_usage({"usage": usage}) == expected


def test_openai_usage_without_usage() -> None:
    assert openai_usage(None) == Usage()
    assert openai_usage({"usage": None}) == Usage()


def test_anthropic_succeeded() -> None:
    message = {
        "id": "msg_1",
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 30},
    }
    outcome = anthropic_outcome(
        {"custom_id": "a", "result": {"type": "succeeded", "message": message}}
    )
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.body == message
    assert outcome.usage == Usage(input_tokens=40, output_tokens=20, cached_tokens=30)


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("invalid_request_error", P),
        ("overloaded_error", R),
        ("api_error", R),
        ("rate_limit_error", R),
        ("authentication_error", P),
        ("not_found_error", P),
    ],
)
def test_anthropic_errored(error_type: str, kind: OutcomeKind) -> None:
    line = {
        "custom_id": "a",
        "result": {
            "type": "errored",
            "error": {"type": "error", "error": {"type": error_type, "message": "m"}},
        },
    }
    outcome = anthropic_outcome(line)
    assert (outcome.kind, outcome.error_code, outcome.error_message) == (kind, error_type, "m")


@pytest.mark.parametrize("result_type", ["canceled", "expired"])
def test_anthropic_canceled_and_expired_are_retryable(result_type: str) -> None:
    outcome = anthropic_outcome({"custom_id": "a", "result": {"type": result_type}})
    assert (outcome.kind, outcome.error_code) == (R, result_type)


def test_anthropic_usage_with_cache_writes() -> None:
    usage = {"input_tokens": 5, "output_tokens": 1, "cache_creation_input_tokens": 100}
    assert anthropic_usage({"usage": usage}) == Usage(
        input_tokens=105, output_tokens=1, cached_tokens=0, cache_write_tokens=100
    )


def test_gemini_success_and_usage() -> None:
    response = {
        "candidates": [{"content": {"parts": [{"text": "hi"}]}}],
        "usageMetadata": {
            "promptTokenCount": 11,
            "candidatesTokenCount": 6,
            "thoughtsTokenCount": 2,
            "cachedContentTokenCount": 3,
        },
    }
    outcome = gemini_outcome("k", response, None)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.usage == Usage(input_tokens=11, output_tokens=8, cached_tokens=3)
    assert gemini_usage({}) == Usage()


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        ({"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "m"}, R, "RESOURCE_EXHAUSTED"),
        ({"code": 503, "status": "UNAVAILABLE", "message": "m"}, R, "UNAVAILABLE"),
        ({"code": 500, "status": "INTERNAL", "message": "m"}, R, "INTERNAL"),
        ({"code": 400, "status": "INVALID_ARGUMENT", "message": "m"}, P, "INVALID_ARGUMENT"),
        ({"error": {"code": 404, "status": "NOT_FOUND", "message": "m"}}, P, "NOT_FOUND"),
        # google.rpc.Code numbers, as batch results carry them
        ({"code": 8, "message": "m"}, R, "RESOURCE_EXHAUSTED"),
        ({"code": 3, "message": "m"}, P, "INVALID_ARGUMENT"),
        ({"code": 13, "message": "m"}, R, "INTERNAL"),
        ({"code": 400, "message": "m"}, P, "400"),
    ],
)
def test_gemini_error(error: dict, kind: OutcomeKind, code: str) -> None:
    outcome = gemini_outcome("k", None, error)
    assert (outcome.kind, outcome.error_code, outcome.error_message) == (kind, code, "m")


def test_gemini_blocked_prompt_is_a_permanent_policy_failure() -> None:
    response = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 4},
    }
    outcome = gemini_outcome("k", response, None)
    assert (outcome.kind, outcome.error_code) == (P, "SAFETY")
    assert outcome.usage.input_tokens == 4


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers: dict | None, expected: float | None) -> None:
    now = 1445412480.0  # 07:28:00 GMT of that date
    assert parse_retry_after(headers, now=now) == expected
