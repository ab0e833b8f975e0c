"""When a synchronous call uses OpenAI's Flex tier, how long it may take, how it is priced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.config import FLEX_MODELS
from connector.costs.flex import (
    ESCALATED_KEY,
    FLEX,
    MIN_FLEX_WINDOW_S,
    STANDARD,
    TIER_METADATA_KEY,
    flex_window_s,
    has_flex,
    plans_flex,
    reported_tier,
    served_tier,
)


def request(
    model: str = "gpt-5-mini",
    *,
    field: str | None = None,
    metadata: dict | None = None,
    provider: str = "openai",
    endpoint: str = "/v1/chat/completions",
) -> dict:
    return {
        "provider": provider,
        "model": model,
        "endpoint": endpoint,
        "service_tier": field,
        "metadata": metadata or {},
    }


def test_flex_needs_openai_a_flex_model_and_a_tiered_endpoint() -> None:
    assert has_flex("openai", "gpt-5-mini", "/v1/chat/completions", FLEX_MODELS)
    assert has_flex(
        "openai", "o4-mini-2025-04-16", "/v1/responses", FLEX_MODELS
    )  # a dated snapshot
    assert not has_flex("openai", "gpt-4o-mini", "/v1/chat/completions", FLEX_MODELS)
    assert not has_flex("openai", "gpt-5-chat-latest", "/v1/chat/completions", FLEX_MODELS)
    assert not has_flex("openai", "gpt-5-mini", "/v1/embeddings", FLEX_MODELS)
    assert not has_flex("azure", "gpt-5-mini", "/v1/chat/completions", FLEX_MODELS)


def test_who_opts_in() -> None:
    def plans(req: dict, body: dict | None = None, escalations: bool = True) -> bool:
        return plans_flex(req, body or {}, FLEX_MODELS, for_escalations=escalations)

    assert plans(request(field="flex"))
    assert plans(request(metadata={TIER_METADATA_KEY: "flex"}))  # producers on an older schema
    assert plans(request(metadata={ESCALATED_KEY: "true"}))
    assert not plans(request(metadata={ESCALATED_KEY: "true"}), escalations=False)
    assert not plans(request())  # realtime without opting in: the standard tier
    assert not plans(request(field="flex", model="gpt-4o-mini"))  # no Flex for the model
    assert not plans(request(field="flex"), {"service_tier": "priority"})  # the caller's own tier


@given(
    st.none() | st.integers(min_value=-10_000, max_value=10_000_000),
    st.floats(min_value=0.5, max_value=900),
    st.floats(min_value=0, max_value=60),
)
def test_a_flex_attempt_leaves_the_reserve_before_the_deadline(
    deadline: int | None, timeout: float, reserve: float
) -> None:
    now = 1_000
    window = flex_window_s(
        None if deadline is None else now + deadline, now, timeout_s=timeout, reserve_s=reserve
    )
    if window is None:
        assert timeout < MIN_FLEX_WINDOW_S or (
            deadline is not None and deadline / 1000 - reserve < MIN_FLEX_WINDOW_S
        )
        return
    assert MIN_FLEX_WINDOW_S <= window <= timeout
    if deadline is not None:
        assert now + (window + reserve) * 1000 <= now + deadline + 1e-6


def test_what_the_provider_reports_decides_the_price() -> None:
    assert served_tier(FLEX, "flex") == (FLEX, FLEX)
    assert served_tier(FLEX, "default") == (STANDARD, STANDARD)  # asked for Flex, got standard
    assert served_tier(FLEX, None) == (FLEX, FLEX)
    assert served_tier(STANDARD, None) == (STANDARD, STANDARD)
    assert served_tier(STANDARD, "priority") == ("priority", STANDARD)
    assert reported_tier({"service_tier": "flex"}) == "flex"
    assert reported_tier({"usage": {"service_tier": "standard"}}) == "standard"  # Anthropic
    assert reported_tier({"usage": {}}) is None and reported_tier(None) is None
