"""Prompt caching as each provider does it: prefixes with lifetimes, and who reads or writes.

Pure but for the ``PrefixCache`` it is handed. Every prefix is measured with synth's token
estimate (four characters a token) over the request's prompt in the order the model reads
it, so cached counts never exceed a request's input tokens. Sources:
- OpenAI (prompt-caching guide): automatic for prompts of 1,024 tokens or more; the longest
  previously seen prefix is reused in 128-token steps; ``usage.prompt_tokens_details.
  cached_tokens`` (chat) / ``input_tokens_details.cached_tokens`` (responses). Prefixes live
  5 to 10 minutes unused; ``prompt_cache_retention: "24h"`` keeps them a day.
- Anthropic (prompt-caching guide): ``cache_control`` breakpoints on tools, system and message
  blocks (at most four; a top-level ``cache_control`` marks the last block); the prefix up
  to a breakpoint is cached when it reaches the model's minimum (1,024 tokens; 2,048 for
  Haiku 3/3.5 and Sonnet 4.6; 4,096 for Haiku 4.5 and Opus 4.5/4.6). A hit reads the longest
  cached breakpoint; the rest up to the last breakpoint is written. ``input_tokens`` counts
  only what follows: input = cache_read + cache_creation + input_tokens. Lifetime 5 minutes,
  refreshed on use, or 1 hour with ``"ttl": "1h"``. Messages and Message Batches do not share
  a cache (Anthropic prompt-caching documentation).
- Gemini (context-caching guide, implicit caching): automatic on 2.5 and newer models from
  2,048 tokens (4,096 on Gemini 3); ``usageMetadata.cachedContentTokenCount``, included in
  ``promptTokenCount``. Gemini documents no step; the emulator reuses OpenAI's 128 tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .config import EmulatorConfig
from .state import NO_CACHE, CacheUse, PrefixCache
from .synth import CHARS_PER_TOKEN, serialise, tokens

STEP_TOKENS = 128
OPENAI_MIN_TOKENS = 1024
# Longest matching model-name prefix wins; None: the model caches nothing implicitly.
ANTHROPIC_MIN_TOKENS: tuple[tuple[str, int | None], ...] = (
    ("claude-opus-4-5", 4096),
    ("claude-opus-4-6", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-sonnet-4-6", 2048),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
    ("claude", 1024),
)
GEMINI_MIN_TOKENS: tuple[tuple[str, int | None], ...] = (
    ("gemini-1", None),
    ("gemini-2.0", None),
    ("gemini-2.5", 2048),
    ("gemini", 4096),
)


def min_tokens(
    table: tuple[tuple[str, int | None], ...], model: str, overrides: dict[str, int]
) -> int | None:
    """The smallest cacheable prompt for ``model``; ``overrides`` (by exact name) win."""
    model = model.removeprefix("models/")
    if model in overrides:
        return overrides[model]
    best: tuple[int, int | None] = (-1, None)
    for prefix, minimum in table:
        if model.startswith(prefix) and len(prefix) > best[0]:
            best = (len(prefix), minimum)
    return best[1]


def chained_keys(pieces: Iterable[str]) -> list[bytes]:
    """One key per piece: the hash of every piece up to and including it."""
    keys = []
    h = hashlib.blake2b(digest_size=16)
    for piece in pieces:
        h.update(piece.encode())
        keys.append(h.copy().digest())
    return keys


def automatic(
    cache: PrefixCache, scope: str, prompt: str, at: float, ttl: float, minimum: int | None
) -> CacheUse:
    """OpenAI's and Gemini's implicit caching of ``prompt`` at ``at``.

    Reads the longest cached prefix of at least ``minimum`` tokens, in whole steps, and
    writes (or refreshes) every step of this prompt from the minimum on.
    """
    if minimum is None:
        return NO_CACHE
    step_chars = STEP_TOKENS * CHARS_PER_TOKEN
    whole = len(prompt) // step_chars
    keys = chained_keys(prompt[i * step_chars : (i + 1) * step_chars] for i in range(whole))
    first = -(-minimum // STEP_TOKENS)  # the first step that reaches the minimum
    if whole < first:
        return NO_CACHE
    read = 0
    for k in range(whole, first - 1, -1):
        if cache.holds(scope, keys[k - 1], at):
            read = k * STEP_TOKENS
            break
    for k in range(first, whole + 1):
        cache.keep(scope, keys[k - 1], at, ttl)
    return CacheUse(read=read, written=whole * STEP_TOKENS - read)


@dataclass(frozen=True, slots=True)
class Block:
    """One piece of an Anthropic prompt, in reading order, and its cache marker if any."""

    text: str
    ttl: str | None  # "5m" or "1h" when the block carries cache_control


def anthropic_blocks(params: dict[str, Any]) -> list[Block]:
    """Tools, then system, then message content, as Anthropic builds the cached prefix."""
    blocks: list[Block] = []
    for tool in params.get("tools") or []:
        blocks.append(_block(tool))
    system = params.get("system")
    if isinstance(system, str):
        blocks.append(Block(serialise({"system": system}), None))
    elif isinstance(system, list):
        blocks.extend(_block(part) for part in system)
    for message in params.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):
            blocks.extend(_block(part, role) for part in content)
        else:
            blocks.append(Block(serialise({"role": role, "content": content}), None))
    top = params.get("cache_control")
    if blocks and isinstance(top, dict):
        blocks[-1] = Block(blocks[-1].text, _ttl(top))
    return blocks


def _block(part: Any, role: Any = None) -> Block:
    if not isinstance(part, dict):
        return Block(serialise(part), None)
    marker = part.get("cache_control")
    rest = {k: v for k, v in part.items() if k != "cache_control"}
    if role is not None:
        rest["role"] = role
    return Block(serialise(rest), _ttl(marker) if isinstance(marker, dict) else None)


def _ttl(marker: dict[str, Any]) -> str:
    return "1h" if marker.get("ttl") == "1h" else "5m"


def explicit(
    cache: PrefixCache,
    scope: str,
    blocks: list[Block],
    at: float,
    ttls: dict[str, float],
    minimum: int | None,
) -> CacheUse:
    """Anthropic's caching at ``cache_control`` breakpoints (see the module docstring)."""
    keys = chained_keys(block.text for block in blocks)
    ends, chars = [], 0
    for block in blocks:
        chars += len(block.text)
        ends.append(chars)
    marked = [i for i, block in enumerate(blocks) if block.ttl is not None]
    eligible = [i for i in marked if minimum is not None and tokens(ends[i]) >= minimum]
    if not eligible:
        return NO_CACHE
    read_end = 0
    for i in reversed(eligible):
        if cache.holds(scope, keys[i], at):
            read_end = ends[i]
            break
    written = written_1h = 0
    previous = read_end
    for i in eligible:
        ttl = blocks[i].ttl or "5m"
        if ends[i] > previous:
            segment = tokens(ends[i]) - tokens(previous)
            written += segment
            written_1h += segment if ttl == "1h" else 0
            previous = ends[i]
        cache.keep(scope, keys[i], at, ttls[ttl])
    return CacheUse(read=tokens(read_end), written=written, written_1h=written_1h)


def openai_prompt(endpoint: str, body: dict[str, Any]) -> str | None:
    """The prompt text OpenAI caches, in reading order; None where nothing is cached."""
    head = _present(body, "tools", "response_format")
    if endpoint == "/v1/chat/completions":
        return head + "".join(serialise(m) for m in body.get("messages") or [])
    if endpoint == "/v1/responses":
        items = body.get("input")
        text = serialise(items) if isinstance(items, str) else "".join(map(serialise, items or []))
        return _present(body, "instructions") + head + text
    if endpoint == "/v1/completions":
        return _present(body, "prompt")
    return None


def _present(body: dict[str, Any], *names: str) -> str:
    return "".join(serialise(body[name]) for name in names if body.get(name) is not None)


def gemini_prompt(body: dict[str, Any]) -> str:
    """The prompt text Gemini caches implicitly, in reading order."""
    head = _present(body, "systemInstruction", "system_instruction", "tools")
    return head + "".join(serialise(c) for c in body.get("contents") or [])


class PromptCaching:
    """Each provider's caching decision for one request, under the emulator's settings.

    Scopes keep caches apart: per provider and model, and for Anthropic also between the
    Messages API and Message Batches, which do not share a cache.
    """

    def __init__(self, cache: PrefixCache, config: EmulatorConfig) -> None:
        self.cache = cache
        self.config = config

    def openai(
        self, endpoint: str, body: dict[str, Any], at: float, provider: str = "openai"
    ) -> CacheUse:
        """OpenAI's automatic caching; ``provider`` keeps each OpenAI-kind provider's apart."""
        prompt = openai_prompt(endpoint, body)
        if not self.config.prompt_caching or prompt is None:
            return NO_CACHE
        model = str(body.get("model"))
        ttls = self.config.cache_ttl_s
        ttl = ttls["openai_24h"] if body.get("prompt_cache_retention") == "24h" else ttls["openai"]
        minimum = self.config.cache_min_tokens.get(model, OPENAI_MIN_TOKENS)
        return automatic(self.cache, f"{provider}/{model}", prompt, at, ttl, minimum)

    def anthropic(self, params: dict[str, Any], at: float, *, batch: bool) -> CacheUse:
        if not self.config.prompt_caching:
            return NO_CACHE
        model = str(params.get("model"))
        ttls = self.config.cache_ttl_s
        return explicit(
            self.cache,
            f"anthropic/{'batches' if batch else 'messages'}/{model}",
            anthropic_blocks(params),
            at,
            {"5m": ttls["anthropic_5m"], "1h": ttls["anthropic_1h"]},
            min_tokens(ANTHROPIC_MIN_TOKENS, model, self.config.cache_min_tokens),
        )

    def gemini(self, model: str, body: dict[str, Any], at: float) -> CacheUse:
        if not self.config.prompt_caching:
            return NO_CACHE
        model = model.removeprefix("models/")
        return automatic(
            self.cache,
            f"gemini/{model}",
            gemini_prompt(body),
            at,
            self.config.cache_ttl_s["gemini"],
            min_tokens(GEMINI_MIN_TOKENS, model, self.config.cache_min_tokens),
        )
