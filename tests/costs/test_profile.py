"""A queued request's profile: its shared prefix, its tenant, what its budget reserves."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from connector.config import CostSettings
from connector.costs.profile import RequestProfile, output_limit, profile_of, reserve_usd
from connector.emulator import synth
from connector.pricing import PriceTable
from connector.providers.base import Usage

PRICES = PriceTable.load()
POLICY = "Escalate a ticket to a human when the customer asks twice. " * 90


def request(
    body: dict,
    metadata: dict | None = None,
    provider: str = "anthropic",
    model: str = "claude-3-5-haiku-latest",
) -> dict:
    return {
        "request_id": "r",
        "provider": provider,
        "model": model,
        "endpoint": "/v1/messages",
        "body": json.dumps(body),
        "metadata": metadata or {},
    }


def test_output_limits_of_each_api() -> None:
    assert output_limit({"max_tokens": 10}, 99) == 10
    assert output_limit({"max_completion_tokens": 11}, 99) == 11
    assert output_limit({"max_output_tokens": 12}, 99) == 12
    assert output_limit({"generationConfig": {"maxOutputTokens": 13}}, 99) == 13
    assert output_limit({}, 99) == 99


def test_short_requests_without_budgets_need_no_profile() -> None:
    short = request({"messages": [{"role": "user", "content": "hi"}]})
    assert profile_of(short, CostSettings(), PRICES, budgets=False) is None


def test_a_long_shared_prefix_and_the_tenant_are_profiled() -> None:
    body = {"max_tokens": 50, "system": POLICY, "messages": [{"role": "user", "content": "hi"}]}
    profile = profile_of(request(body, {"tenant": "acme"}), CostSettings(), PRICES, budgets=True)
    assert profile is not None and profile.prefix is not None and profile.prefix_tokens > 1024
    assert profile.tenant == "acme" and profile.reserve_usd > 0
    assert RequestProfile.from_json(profile.to_json()) == profile
    off = profile_of(request(body), CostSettings(cache_aware_batching=False), PRICES, budgets=False)
    assert off is None


@given(
    st.text(max_size=3000),
    st.integers(min_value=1, max_value=4096),
    st.sampled_from(
        [
            ("anthropic", "claude-3-5-haiku-latest"),
            ("openai", "gpt-5-mini"),
            ("gemini", "gemini-2.5-flash"),
        ]
    ),
)
def test_the_reservation_covers_what_the_request_can_cost(
    text: str, max_tokens: int, target: tuple[str, str]
) -> None:
    provider, model = target
    body = {"max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
    req = request(body, provider=provider, model=model)
    reserved = reserve_usd(req, body, CostSettings(), PRICES)
    tokens = synth.complete(synth.serialise({**body, "model": model})).input_tokens
    for written in (0, tokens):
        usage = Usage(input_tokens=tokens, cache_write_tokens=written, output_tokens=max_tokens)
        assert reserved >= PRICES.costs(provider, model, usage, "batch").cost_usd
