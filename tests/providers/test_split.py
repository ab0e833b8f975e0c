from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.providers.base import ProviderLimits
from connector.providers.limits import ANTHROPIC_LIMITS, GEMINI_LIMITS, LIMITS, OPENAI_LIMITS
from connector.providers.split import request_bytes, split_batches


@dataclass(frozen=True)
class Req:
    key: int
    model: str
    endpoint: str
    size_bytes: int


def small_limits(base: ProviderLimits) -> ProviderLimits:
    """The provider's rules at a scale hypothesis can explore."""
    return ProviderLimits(
        max_requests=7,
        max_bytes=4_000,
        one_model_per_batch=base.one_model_per_batch,
        custom_id_max_len=base.custom_id_max_len,
        custom_id_pattern=base.custom_id_pattern,
    )


requests = st.lists(
    st.builds(
        Req,
        key=st.integers(),
        model=st.sampled_from(["m1", "m2", "m3"]),
        endpoint=st.sampled_from(["/v1/chat/completions", "/v1/embeddings"]),
        size_bytes=st.integers(min_value=0, max_value=5_000),
    ),
    max_size=80,
).map(lambda reqs: [Req(i, r.model, r.endpoint, r.size_bytes) for i, r in enumerate(reqs)])

caps = st.one_of(st.none(), st.integers(min_value=1, max_value=10))
byte_caps = st.one_of(st.none(), st.integers(min_value=1_000, max_value=6_000))


@settings(max_examples=300)
@given(requests, st.sampled_from(list(LIMITS)), caps, byte_caps)
def test_split_properties(
    reqs: list[Req], provider: str, max_requests: int | None, max_bytes: int | None
) -> None:
    limits = small_limits(LIMITS[provider])
    result = split_batches(reqs, limits, max_requests=max_requests, max_bytes=max_bytes)

    placed = [r.key for batch in result.batches for r in batch]
    rejected = [rej.request.key for rej in result.rejected]
    assert sorted(placed + rejected) == [r.key for r in reqs]  # each exactly once

    for rejection in result.rejected:
        assert request_bytes(rejection.request) > limits.max_bytes
        assert rejection.reason
    for batch in result.batches:
        assert batch
        assert len(batch) <= limits.max_requests
        assert sum(request_bytes(r) for r in batch) <= limits.max_bytes
        assert len({r.endpoint for r in batch}) == 1
        if limits.one_model_per_batch:
            assert len({r.model for r in batch}) == 1
        assert [r.key for r in batch] == sorted(r.key for r in batch)  # order kept
        if max_requests is not None:
            assert len(batch) <= max_requests
        if max_bytes is not None and len(batch) > 1:
            assert sum(request_bytes(r) for r in batch) <= max_bytes


def test_oversize_request_is_rejected_not_dropped() -> None:
    big = Req(1, "m", "/v1/messages", OPENAI_LIMITS.max_bytes)
    ok = Req(2, "m", "/v1/messages", 10)
    result = split_batches([big, ok], OPENAI_LIMITS)
    assert [r.request for r in result.rejected] == [big]
    assert result.batches == [[ok]]


def test_request_over_caller_cap_goes_alone() -> None:
    reqs = [Req(i, "m", "/v1/messages", size) for i, size in enumerate([100, 5_000, 100])]
    result = split_batches(reqs, ANTHROPIC_LIMITS, max_bytes=2_000)
    assert [[r.key for r in batch] for batch in result.batches] == [[0], [1], [2]]
    assert not result.rejected


def test_provider_request_caps() -> None:
    reqs = [Req(i, "m", "/v1/chat/completions", 1) for i in range(120_001)]
    assert [len(b) for b in split_batches(reqs, OPENAI_LIMITS).batches] == [50_000, 50_000, 20_001]
    assert [len(b) for b in split_batches(reqs, ANTHROPIC_LIMITS).batches] == [100_000, 20_001]
    assert (
        max(len(b) for b in split_batches(reqs, GEMINI_LIMITS).batches)
        <= GEMINI_LIMITS.max_requests
    )


def test_anthropic_mixes_models_openai_does_not() -> None:
    reqs = [Req(i, f"m{i % 2}", "/v1/messages", 1) for i in range(4)]
    assert len(split_batches(reqs, ANTHROPIC_LIMITS).batches) == 1
    assert len(split_batches(reqs, OPENAI_LIMITS).batches) == 2
    assert len(split_batches(reqs, GEMINI_LIMITS).batches) == 2
