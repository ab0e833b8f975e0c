"""Request validation rules (connector.model) and the client's request builder."""

from __future__ import annotations

import json

import orjson
import pytest

from connector.client import make_request
from connector.errors import ValidationError
from connector.model import (
    ENDPOINTS,
    MAX_BODY_DEPTH,
    MAX_REQUEST_ID_LEN,
    BatchKey,
    parse_body,
    validate_request,
)

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def request(**changes):
    base = {
        "request_id": "r-1",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "endpoint": "/v1/chat/completions",
        "body": json.dumps(CHAT),
        "metadata": {},
        "deadline": None,
        "reply_topic": None,
        "attempt": 1,
        "created_at": 0,
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("provider", "endpoint"),
    [
        (provider, endpoint)
        for provider, endpoints in ENDPOINTS.items()
        for endpoint in sorted(endpoints)
    ],
)
def test_every_supported_endpoint_is_valid(provider, endpoint):
    assert validate_request(request(provider=provider, endpoint=endpoint)) == CHAT


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"request_id": ""}, "request_id"),
        ({"request_id": None}, "request_id"),
        ({"request_id": "x" * (MAX_REQUEST_ID_LEN + 1)}, "at most"),
        ({"provider": "mistral"}, "unknown provider"),
        ({"model": ""}, "model must be set"),
        ({"model": "a|b"}, "must not contain"),
        ({"endpoint": "/v1/messages"}, "not supported for openai"),
        ({"provider": "gemini", "endpoint": "/v1/chat/completions"}, "not supported for gemini"),
        ({"attempt": -1}, "attempt"),
        ({"reply_topic": "elsewhere"}, "allow-list"),
        ({"body": "{not json"}, "not valid JSON"),
        ({"body": "[1, 2]"}, "JSON object"),
        ({"body": json.dumps({**CHAT, "stream": True})}, "streaming"),
    ],
)
def test_invalid_requests_name_the_reason(changes, reason):
    with pytest.raises(ValidationError, match=reason):
        validate_request(request(**changes))


def test_request_id_at_the_limit_and_unicode_is_valid():
    validate_request(request(request_id="é" * MAX_REQUEST_ID_LEN))


def test_reply_topic_on_the_allow_list_is_valid():
    validate_request(request(reply_topic="team.replies"), reply_allowlist={"team.replies"})


def test_parse_body_rejects_non_string():
    with pytest.raises(ValidationError):
        parse_body({"body": None})


def test_batch_key_round_trips_through_text():
    key = BatchKey.of(request(model="gpt-4o", endpoint="/v1/responses"))
    assert BatchKey.parse(str(key)) == key
    assert str(key) == "openai|gpt-4o|/v1/responses"


def test_make_request_builds_a_valid_record():
    made = make_request(
        "r-9",
        "anthropic",
        "claude-3-5-haiku-latest",
        "/v1/messages",
        {"max_tokens": 5},
        metadata={"n": 3},
        deadline_ms=123,
    )
    assert made["attempt"] == 1
    assert made["metadata"] == {"n": "3"}
    assert json.loads(made["body"]) == {"max_tokens": 5}
    assert made["deadline"] == 123 and made["created_at"] > 1_700_000_000_000


def test_make_request_rejects_invalid_unless_told_not_to_validate():
    with pytest.raises(ValidationError):
        make_request("r", "openai", "gpt-4o-mini", "/v1/unknown", CHAT)
    assert (
        make_request("r", "openai", "gpt-4o-mini", "/v1/unknown", CHAT, validate=False)["endpoint"]
        == "/v1/unknown"
    )


def test_sharded_batch_keys_are_stable_spread_and_round_trip():
    keys = {str(BatchKey.of(request(request_id=f"id-{i}"), shards=4)) for i in range(200)}
    assert len(keys) == 4
    for text in keys:
        assert BatchKey.parse(text).provider == "openai"
        assert str(BatchKey.parse(text)) == text
    same = [str(BatchKey.of(request(request_id="ticket-9"), shards=4)) for _ in range(3)]
    assert len(set(same)) == 1
    assert str(BatchKey.of(request(request_id="ticket-9"))).count("|") == 2  # unsharded: no suffix


def _nested_body(levels: int) -> str:
    """A chat body of ``levels`` nested containers (the body object is the first)."""
    return json.dumps(
        {"messages": [], "x": json.loads("[" * (levels - 1) + "1" + "]" * (levels - 1))}
    )


@pytest.mark.parametrize("depth", [MAX_BODY_DEPTH - 1, MAX_BODY_DEPTH])
def test_a_body_nested_up_to_the_limit_is_valid_and_writes_back_out(depth):
    body = parse_body({"body": _nested_body(depth)})
    # A batch line wraps the body in up to two more levels; that still writes.
    assert orjson.dumps({"custom_id": "c", "request": {"body": body}})


@pytest.mark.parametrize("depth", [MAX_BODY_DEPTH + 1, 900])
def test_a_body_nested_deeper_than_the_batch_files_can_write_is_invalid(depth):
    with pytest.raises(ValidationError, match="nested too deeply"):
        parse_body({"body": _nested_body(depth)})


def test_many_brackets_side_by_side_are_not_depth():
    body = json.dumps({"messages": [], "x": [[1]] * 1000})
    assert parse_body({"body": body})["x"][0] == [1]
