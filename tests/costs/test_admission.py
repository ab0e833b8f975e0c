"""Enqueued-token admission: the estimate, cutting batches to the limit, who may go now."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from connector.costs.admission import (
    REQUEST_OVERHEAD_TOKENS,
    Gauge,
    admits,
    cut_to_limit,
    estimate_tokens,
    token_limit,
)
from connector.emulator import synth

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=200),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
bodies = st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=5)


@given(bodies, st.sampled_from(["gpt-4o-mini", "gpt-5-mini", "gpt-4.1-2025-04-14"]), st.booleans())
def test_the_estimate_never_undercounts_the_emulators_count(
    body: dict, model: str, compact: bool
) -> None:
    # As a caller may write it (the tightest: compact, unescaped); the adapter adds the model.
    sent = (
        json.dumps(body, separators=(",", ":"), ensure_ascii=False) if compact else json.dumps(body)
    )
    counted = synth.complete(synth.serialise({**body, "model": model})).input_tokens
    assert estimate_tokens(len(sent.encode()), 1, 3.0) >= counted


@given(
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=50),
    st.floats(min_value=1, max_value=5),
)
def test_estimates_add_up_over_requests(sizes: list[int], bpt: float) -> None:
    whole = estimate_tokens(sum(sizes), len(sizes), bpt)
    assert whole <= sum(estimate_tokens(s, 1, bpt) for s in sizes)
    assert whole >= REQUEST_OVERHEAD_TOKENS * len(sizes)


@given(
    st.lists(st.integers(min_value=0, max_value=5_000), max_size=60),
    st.integers(min_value=1, max_value=20_000),
)
def test_cut_runs_fit_the_limit_and_are_as_long_as_they_can_be(
    sizes: list[int], limit: int
) -> None:
    runs = cut_to_limit(sizes, limit, 3.0)
    assert sum(runs) == len(sizes) and all(r >= 1 for r in runs)
    start = 0
    for run in runs:
        part = sizes[start : start + run]
        assert run == 1 or estimate_tokens(sum(part), run, 3.0) <= limit
        end = start + run
        if end < len(sizes):  # one more would not have fitted
            assert estimate_tokens(sum(sizes[start : end + 1]), run + 1, 3.0) > limit
        start = end


def test_limits_are_per_provider_and_model() -> None:
    limits = {"openai/gpt-4o": 90_000}
    assert token_limit(limits, "openai", "gpt-4o") == 90_000
    assert token_limit(limits, "openai", "gpt-4o-mini") is None
    assert token_limit(limits, "azure", "gpt-4o") is None


gauges = st.lists(
    st.tuples(
        st.booleans(),
        st.integers(min_value=1, max_value=400),
        st.integers(min_value=0, max_value=20),
    ),
    max_size=12,
)


def _build(raw: list[tuple[bool, int, int]]) -> list[Gauge]:
    return [
        Gauge(f"b{i}", submitted, tokens, closed)
        for i, (submitted, tokens, closed) in enumerate(raw)
    ]


@given(gauges, st.integers(min_value=1, max_value=1000))
def test_admitted_batches_fit_and_go_oldest_first(
    raw: list[tuple[bool, int, int]], limit: int
) -> None:
    batches = _build(raw)
    waiting = sorted((g for g in batches if not g.submitted), key=lambda g: g.closed_at)
    verdicts = [admits(g.batch_id, batches, limit) for g in waiting]
    # A prefix of the queue goes: nobody overtakes a batch that must wait.
    assert verdicts == sorted(verdicts, reverse=True)
    going = [g for g, ok in zip(waiting, verdicts, strict=True) if ok]
    in_flight = sum(g.tokens for g in batches if g.submitted)
    alone = len(going) == 1 and in_flight == 0 and going[0].tokens > limit
    assert alone or in_flight + sum(g.tokens for g in going) <= max(limit, in_flight)
    if going and not alone:  # whoever goes, the next one in the queue did not fit
        rest = waiting[len(going) :]
        assert not rest or in_flight + sum(g.tokens for g in going) + rest[0].tokens > limit


@given(
    st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=15),
    st.integers(min_value=1, max_value=600),
)
def test_submitting_what_is_admitted_never_passes_the_limit(sizes: list[int], limit: int) -> None:
    """Batches wait, go when admitted and end one by one: the enqueued total stays within the
    limit, except for a batch over the limit on its own, which goes alone."""
    batches = {f"b{i}": Gauge(f"b{i}", False, tokens, i) for i, tokens in enumerate(sizes)}
    ended = 0
    while len(batches) > 0:
        for batch_id, gauge in sorted(batches.items()):
            if not gauge.submitted and admits(batch_id, batches.values(), limit):
                batches[batch_id] = Gauge(batch_id, True, gauge.tokens, gauge.closed_at)
        flying = [g for g in batches.values() if g.submitted]
        assert flying, "something must always be able to go"
        total = sum(g.tokens for g in flying)
        assert total <= limit or (len(flying) == 1 and flying[0].tokens > limit)
        oldest = min(flying, key=lambda g: g.closed_at)
        del batches[oldest.batch_id]
        ended += 1
    assert ended == len(sizes)
