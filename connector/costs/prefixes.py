"""The shared prompt prefix of a request, and Anthropic's cache breakpoint. Pure.

Providers cache the beginning of a prompt: OpenAI and Gemini automatically, Anthropic up to
a ``cache_control`` breakpoint. Requests that start the same way share a cache entry, so
the connector puts them into the same batch and, for Anthropic, marks where the shared part
ends.

**The shared prefix** of a request is everything the model reads before the last turn of
the conversation: tools, the response format, the system prompt (``system``,
``instructions``, ``systemInstruction``) and every message (``messages``, ``contents`` or a
list ``input``) but the last. Requests of one batch key with the same shared prefix share a
:func:`prefix_key`. A prefix counts only from ``min_tokens`` tokens, estimated as one token
per :data:`CHARS_PER_TOKEN` characters of its compact JSON: shorter prefixes are not cached
by the providers (OpenAI from 1,024 tokens, Anthropic from 1,024 to 4,096 by model, Gemini
2.5 from 2,048), so grouping them would gain nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
#: Body fields read before the conversation, in the order the providers read them.
_HEAD_FIELDS = (
    "tools",
    "toolConfig",
    "tool_config",
    "response_format",
    "system",
    "instructions",
    "systemInstruction",
    "system_instruction",
)
_TURN_FIELDS = ("messages", "contents", "input")
EPHEMERAL = {"type": "ephemeral"}


@dataclass(frozen=True, slots=True)
class Prefix:
    """A request's shared prefix: its key and its estimated length in tokens."""

    key: str
    tokens: int


def _turns(body: dict[str, Any]) -> list[Any]:
    for name in _TURN_FIELDS:
        turns = body.get(name)
        if isinstance(turns, list):
            return turns
    return []


def prefix_parts(body: dict[str, Any]) -> list[Any]:
    """What the model reads before the last turn, as ``[field, value]`` pairs."""
    parts: list[Any] = [[name, body[name]] for name in _HEAD_FIELDS if body.get(name) is not None]
    turns = _turns(body)
    if len(turns) > 1:
        parts.append(["turns", turns[:-1]])
    return parts


def shared_prefix(provider: str, body: dict[str, Any], min_tokens: int) -> Prefix | None:
    """The request's shared prefix, or None when it is shorter than ``min_tokens``."""
    parts = prefix_parts(body)
    if not parts:
        return None
    text = json.dumps(parts, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    tokens = len(text) // CHARS_PER_TOKEN
    if tokens < min_tokens:
        return None
    digest = hashlib.blake2b(f"{provider}\x1f{text}".encode(), digest_size=12).hexdigest()
    return Prefix(digest, tokens)


def prefix_key(provider: str, body: dict[str, Any], min_tokens: int = 1024) -> str | None:
    """Equal for requests that share a prefix of at least ``min_tokens``; None otherwise."""
    prefix = shared_prefix(provider, body, min_tokens)
    return prefix.key if prefix else None


def has_cache_control(body: dict[str, Any]) -> bool:
    """Whether the caller placed any Anthropic ``cache_control`` breakpoint already."""
    if body.get("cache_control") is not None:
        return True
    blocks: list[Any] = list(body.get("tools") or [])
    system = body.get("system")
    if isinstance(system, list):
        blocks += system
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            blocks += content
    return any(isinstance(block, dict) and "cache_control" in block for block in blocks)


def _marked(content: Any) -> list[Any] | None:
    """``content`` (a string or a list of blocks) with a breakpoint on its last block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content, "cache_control": dict(EPHEMERAL)}]
    if isinstance(content, list) and content and isinstance(content[-1], dict):
        return [*content[:-1], {**content[-1], "cache_control": dict(EPHEMERAL)}]
    return None


def with_cache_breakpoint(body: dict[str, Any]) -> dict[str, Any] | None:
    """An Anthropic Messages body with a breakpoint where its shared prefix ends.

    The breakpoint goes on the last block before the last message: the next-to-last
    message, else the system prompt, else the last tool. Returns None, leaving the request
    as the caller wrote it, when it has a breakpoint already or no shared prefix.
    """
    if has_cache_control(body):
        return None
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > 1 and isinstance(messages[-2], dict):
        content = _marked(messages[-2].get("content"))
        if content is not None:
            marked = {**messages[-2], "content": content}
            return {**body, "messages": [*messages[:-2], marked, messages[-1]]}
    system = body.get("system")
    if system:
        content = _marked(system)
        if content is not None:
            return {**body, "system": content}
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[-1], dict):
        tool = {**tools[-1], "cache_control": dict(EPHEMERAL)}
        return {**body, "tools": [*tools[:-1], tool]}
    return None
