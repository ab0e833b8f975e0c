"""The shared prompt prefix of a request, and Anthropic's cache breakpoint."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from connector.costs.prefixes import (
    EPHEMERAL,
    has_cache_control,
    prefix_key,
    shared_prefix,
    with_cache_breakpoint,
)

POLICY = "Refunds are granted within 30 days of purchase. " * 120  # about 1,500 tokens
texts = st.text(min_size=1, max_size=40)


def openai_body(system: str, user: str) -> dict[str, Any]:
    return {
        "model": "gpt-5-mini",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }


def anthropic_body(system: Any, *messages: Any) -> dict[str, Any]:
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": m}
        for i, m in enumerate(messages)
    ]
    body: dict[str, Any] = {"model": "claude-3-5-haiku-latest", "max_tokens": 10, "messages": turns}
    if system is not None:
        body["system"] = system
    return body


def gemini_body(system: str, user: str) -> dict[str, Any]:
    return {
        "systemInstruction": {"parts": [{"text": system}]},
        "contents": [{"role": "user", "parts": [{"text": user}]}],
    }


@given(texts, texts)
def test_requests_differing_only_in_their_last_turn_share_the_key(a: str, b: str) -> None:
    for provider, build in (("openai", openai_body), ("gemini", gemini_body)):
        key_a, key_b = (
            prefix_key(provider, build(POLICY, a)),
            prefix_key(provider, build(POLICY, b)),
        )
        assert key_a is not None and key_a == key_b
    key_a = prefix_key("anthropic", anthropic_body(POLICY, a))
    assert key_a is not None and key_a == prefix_key("anthropic", anthropic_body(POLICY, b))


@given(texts)
def test_a_different_system_prompt_or_provider_is_another_prefix(user: str) -> None:
    assert prefix_key("openai", openai_body(POLICY, user)) != prefix_key(
        "openai", openai_body(POLICY + "!", user)
    )
    assert prefix_key("openai", openai_body(POLICY, user)) != prefix_key(
        "groq", openai_body(POLICY, user)
    )


@given(st.integers(min_value=1, max_value=4000))
def test_a_prefix_counts_only_from_the_minimum(min_tokens: int) -> None:
    prefix = shared_prefix("openai", openai_body(POLICY, "hi"), 1)
    assert prefix is not None
    counted = shared_prefix("openai", openai_body(POLICY, "hi"), min_tokens)
    assert (counted is not None) == (prefix.tokens >= min_tokens)
    assert counted is None or counted == prefix


def test_a_single_turn_without_system_has_no_prefix() -> None:
    assert prefix_key("openai", {"messages": [{"role": "user", "content": POLICY}]}, 1) is None
    assert prefix_key("openai", {"input": POLICY}, 1) is None  # the responses API, one input text
    assert prefix_key("openai", {"model": "m", "input": "x"}, 1) is None


def test_key_order_inside_the_prefix_does_not_matter() -> None:
    a = {
        "tools": [{"name": "t", "description": POLICY}],
        "messages": [{"role": "user", "content": "q"}],
    }
    b = {
        "messages": [{"content": "q", "role": "user"}],
        "tools": [{"description": POLICY, "name": "t"}],
    }
    assert prefix_key("anthropic", a) == prefix_key("anthropic", b) is not None


def _marks(body: dict[str, Any]) -> int:
    return json.dumps(body).count('"cache_control"')


def _unmarked(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with every breakpoint removed and one-block text lists back as strings."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "cache_control"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    out = strip(body)
    for holder, field in [(out, "system"), *((m, "content") for m in out.get("messages", []))]:
        value = holder.get(field)
        if isinstance(value, list) and len(value) == 1 and set(value[0]) == {"type", "text"}:
            holder[field] = value[0]["text"]
    return out


bodies = st.builds(
    anthropic_body,
    st.one_of(st.none(), texts, st.just([{"type": "text", "text": POLICY}])),
    texts,
    texts,
    texts,
) | st.builds(anthropic_body, texts, texts)


@given(bodies)
def test_a_breakpoint_is_the_only_change_and_the_last_turn_is_untouched(
    body: dict[str, Any],
) -> None:
    original = copy.deepcopy(body)
    marked = with_cache_breakpoint(body)
    assert body == original  # never modified in place
    assert marked is not None
    assert _marks(marked) == 1 and has_cache_control(marked)
    assert marked["messages"][-1] == body["messages"][-1]
    assert _unmarked(marked) == _unmarked(body)
    assert with_cache_breakpoint(marked) is None  # the caller's (or our) breakpoint stays alone


def test_the_breakpoint_lands_at_the_end_of_the_shared_prefix() -> None:
    conversation = with_cache_breakpoint(anthropic_body(POLICY, "q1", "a1", "q2"))
    assert conversation is not None
    assert conversation["messages"][1]["content"] == [
        {"type": "text", "text": "a1", "cache_control": EPHEMERAL}
    ]
    single = with_cache_breakpoint(anthropic_body(POLICY, "q"))
    assert single is not None and single["system"] == [
        {"type": "text", "text": POLICY, "cache_control": EPHEMERAL}
    ]
    tools_only = with_cache_breakpoint(
        {"tools": [{"name": "a"}, {"name": "b"}], "messages": [{"role": "user", "content": "q"}]}
    )
    assert tools_only is not None and tools_only["tools"][-1] == {
        "name": "b",
        "cache_control": EPHEMERAL,
    }
    assert tools_only["tools"][0] == {"name": "a"}


def test_requests_the_caller_marked_or_without_a_prefix_stay_as_written() -> None:
    marked_message = anthropic_body(
        None, [{"type": "text", "text": "q", "cache_control": {"type": "ephemeral"}}]
    )
    assert with_cache_breakpoint(marked_message) is None
    assert (
        with_cache_breakpoint(
            dict(anthropic_body(POLICY, "q"), cache_control={"type": "ephemeral"})
        )
        is None
    )
    assert with_cache_breakpoint(anthropic_body(None, "q")) is None
