"""Pure prompt-cache logic: prefix lifetimes, automatic steps, explicit breakpoints."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.emulator.caching import (
    ANTHROPIC_MIN_TOKENS,
    GEMINI_MIN_TOKENS,
    Block,
    anthropic_blocks,
    automatic,
    explicit,
    min_tokens,
)
from connector.emulator.state import NO_CACHE, PRUNE_FLOOR, CacheUse, PrefixCache

TTLS = {"5m": 300.0, "1h": 3600.0}


def text(tokens: int, seed: str = "a") -> str:
    return (seed * 4 * tokens)[: 4 * tokens]


def test_a_prefix_lives_from_its_write_for_its_ttl_and_a_use_extends_it() -> None:
    cache = PrefixCache()
    cache.keep("s", b"k", 100.0, 300.0)
    assert not cache.holds("s", b"k", 99.0)  # written later than this moment
    assert cache.holds("s", b"k", 100.0) and cache.holds("s", b"k", 399.0)
    assert not cache.holds("s", b"k", 400.0) and not cache.holds("other", b"k", 200.0)
    cache.keep("s", b"k", 350.0, 300.0)  # a read refreshes the lifetime
    assert cache.holds("s", b"k", 649.0) and not cache.holds("s", b"k", 650.0)
    cache.keep("s", b"k", 2000.0, 300.0)  # long expired: written anew
    assert not cache.holds("s", b"k", 700.0) and cache.holds("s", b"k", 2000.0)


def test_pruning_forgets_only_expired_prefixes_and_only_once_the_cache_has_grown() -> None:
    cache = PrefixCache()
    for i in range(PRUNE_FLOOR):
        cache.keep("s", i.to_bytes(4, "big"), 0.0, 10.0 if i % 2 else 100.0)
    small = PrefixCache()
    small.keep("s", b"k", 0.0, 10.0)
    small.prune(50.0)
    assert len(small) == 1  # below the floor nothing is pruned
    cache.prune(50.0)
    assert len(cache) == PRUNE_FLOOR // 2
    assert cache.holds("s", (0).to_bytes(4, "big"), 50.0)
    cache.prune(500.0)  # not grown since: the expired rest waits for the next round
    assert len(cache) == PRUNE_FLOOR // 2


def test_automatic_caching_reads_the_longest_prefix_in_128_token_steps() -> None:
    cache = PrefixCache()
    shared = text(1500)
    first = automatic(cache, "s", shared + text(100, "x"), 0.0, 300.0, 1024)
    assert first == CacheUse(read=0, written=1536)  # 1600 tokens: 12 whole steps
    second = automatic(cache, "s", shared + text(700, "y"), 1.0, 300.0, 1024)
    assert second.read == 1408  # 1500 shared tokens, floored to 11 steps
    assert second.written == 2176 - 1408


def test_automatic_caching_needs_the_minimum_and_a_model_that_caches() -> None:
    cache = PrefixCache()
    short = text(1000)
    assert automatic(cache, "s", short, 0.0, 300.0, 1024) == NO_CACHE
    assert automatic(cache, "s", short, 1.0, 300.0, 1024) == NO_CACHE
    assert automatic(cache, "s", text(5000), 0.0, 300.0, None) == NO_CACHE
    automatic(cache, "s", text(3000), 0.0, 300.0, 2048)
    assert automatic(cache, "s", text(3000), 301.0, 300.0, 2048).read == 0  # expired


@given(
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=1, max_value=4096),
)
def test_automatic_reads_never_exceed_the_shared_prefix(
    shared: int, extra: int, minimum: int
) -> None:
    cache = PrefixCache()
    automatic(cache, "s", text(shared) + text(extra, "p"), 0.0, 300.0, minimum)
    use = automatic(cache, "s", text(shared) + text(extra, "q"), 1.0, 300.0, minimum)
    assert use.read <= max(shared, 0) and use.read % 128 == 0
    assert use.read == 0 or use.read >= minimum


def blocks(*parts: tuple[int, str | None], seed: str = "a") -> list[Block]:
    return [Block(text(n, seed + str(i)), ttl) for i, (n, ttl) in enumerate(parts)]


def test_explicit_caching_writes_up_to_the_last_breakpoint_then_reads_it() -> None:
    cache = PrefixCache()
    prompt = blocks((2000, "5m"), (50, None))
    assert explicit(cache, "s", prompt, 0.0, TTLS, 1024) == CacheUse(read=0, written=2000)
    assert explicit(cache, "s", prompt, 5.0, TTLS, 1024) == CacheUse(read=2000, written=0)
    other_tail = prompt[:1] + blocks((70, None), seed="z")
    assert explicit(cache, "s", other_tail, 6.0, TTLS, 1024) == CacheUse(read=2000)


def test_explicit_caching_reads_the_longest_breakpoint_and_writes_the_rest() -> None:
    cache = PrefixCache()
    explicit(cache, "s", blocks((1500, "1h")), 0.0, TTLS, 1024)
    grown = blocks((1500, "1h"), (800, "5m"), (10, None))
    use = explicit(cache, "s", grown, 10.0, TTLS, 1024)
    assert use == CacheUse(read=1500, written=800, written_1h=0)
    # The 5-minute entry is gone after 5 minutes; the 1-hour one is not.
    assert explicit(cache, "s", grown, 10.0 + 301, TTLS, 1024) == CacheUse(read=1500, written=800)


def test_explicit_caching_ignores_prefixes_below_the_minimum() -> None:
    cache = PrefixCache()
    prompt = blocks((900, "5m"), (10, None))
    assert explicit(cache, "s", prompt, 0.0, TTLS, 1024) == NO_CACHE
    assert explicit(cache, "s", prompt, 1.0, TTLS, 1024) == NO_CACHE
    assert explicit(cache, "s", blocks((5000, None)), 0.0, TTLS, 1024) == NO_CACHE


def test_one_hour_writes_are_told_apart() -> None:
    use = explicit(PrefixCache(), "s", blocks((1100, "1h"), (300, "5m")), 0.0, TTLS, 1024)
    assert use == CacheUse(read=0, written=1400, written_1h=1100)


def test_anthropic_blocks_follow_tools_system_messages_and_the_top_level_marker() -> None:
    params = {
        "tools": [{"name": "t", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "system": [{"type": "text", "text": "policy", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "question"},
            {"role": "user", "content": [{"type": "text", "text": "more"}]},
        ],
        "cache_control": {"type": "ephemeral"},
    }
    got = anthropic_blocks(params)
    assert [b.ttl for b in got] == ["1h", "5m", None, "5m"]
    assert "cache_control" not in got[0].text and '"name":"t"' in got[0].text


def test_minimum_cacheable_lengths_by_model() -> None:
    assert min_tokens(ANTHROPIC_MIN_TOKENS, "claude-sonnet-4-5", {}) == 1024
    assert min_tokens(ANTHROPIC_MIN_TOKENS, "claude-haiku-4-5-20251001", {}) == 4096
    assert min_tokens(ANTHROPIC_MIN_TOKENS, "claude-3-5-haiku-latest", {}) == 2048
    assert (
        min_tokens(ANTHROPIC_MIN_TOKENS, "claude-3-5-haiku-latest", {"claude-3-5-haiku-latest": 10})
        == 10
    )
    assert min_tokens(GEMINI_MIN_TOKENS, "models/gemini-2.5-flash", {}) == 2048
    assert min_tokens(GEMINI_MIN_TOKENS, "gemini-3-pro-preview", {}) == 4096
    assert min_tokens(GEMINI_MIN_TOKENS, "gemini-2.0-flash", {}) is None
