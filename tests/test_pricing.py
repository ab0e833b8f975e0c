"""Cost arithmetic: tiers, prompt caching, whether the cache and batch discounts stack."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import ConfigError
from connector.pricing import DEFAULT_FILE, TIERS, PriceTable, split_input
from connector.providers.base import Usage

TABLE = PriceTable.load()
SHIPPED = yaml.safe_load(DEFAULT_FILE.read_text())
MODELS = [(provider, model) for provider, entry in SHIPPED.items() for model in entry["models"]]
M = 1_000_000


def test_batch_is_half_of_realtime() -> None:
    usage = Usage(input_tokens=M, output_tokens=M)
    batch = TABLE.costs("openai", "gpt-4o-mini", usage, batch=True)
    realtime = TABLE.costs("openai", "gpt-4o-mini", usage, batch=False)
    assert realtime.cost_usd == pytest.approx(0.75)
    assert batch.cost_usd == pytest.approx(0.375)
    assert batch.realtime_cost_usd == realtime.cost_usd
    assert TABLE.costs("openai", "gpt-4o-mini", usage, "batch") == batch
    assert TABLE.costs("openai", "gpt-4o-mini", usage, "standard") == realtime


def test_flex_is_billed_at_batch_rates() -> None:
    usage = Usage(input_tokens=3 * M, output_tokens=M, cached_tokens=M)
    assert TABLE.costs("openai", "gpt-4.1", usage, "flex") == TABLE.costs(
        "openai", "gpt-4.1", usage, "batch"
    )


def test_anthropic_cache_reads_and_writes_stack_with_the_batch_discount() -> None:
    # 1M fresh, 2M read from the cache, 1M written to it, 1M out (claude-haiku-4-5).
    usage = Usage(input_tokens=4 * M, output_tokens=M, cached_tokens=2 * M, cache_write_tokens=M)
    standard = 1.00 + 2 * 0.10 + 1.25 + 5.00
    costs = TABLE.costs("anthropic", "claude-haiku-4-5", usage, "batch")
    assert costs.cost_usd == pytest.approx(standard / 2)
    assert costs.realtime_cost_usd == pytest.approx(4 * 1.00 + 5.00)  # uncached standard
    assert costs.cache_savings_usd == pytest.approx((4 * 1.00 + 5.00) / 2 - standard / 2)


def test_a_cache_write_alone_costs_more_than_no_cache() -> None:
    usage = Usage(input_tokens=M, cache_write_tokens=M)
    costs = TABLE.costs("anthropic", "claude-haiku-4-5", usage, "standard")
    assert costs.cost_usd == pytest.approx(1.25)
    assert costs.cache_savings_usd == pytest.approx(-0.25)


def test_where_discounts_do_not_stack_the_cache_discount_wins() -> None:
    # gemini-2.5-flash: cache reads at 0.075 with no batch discount, the rest at half price.
    usage = Usage(input_tokens=3 * M, output_tokens=M, cached_tokens=2 * M)
    costs = TABLE.costs("gemini", "gemini-2.5-flash", usage, "batch")
    assert costs.cost_usd == pytest.approx(2 * 0.075 + (0.30 + 2.50) / 2)
    assert costs.cache_savings_usd == pytest.approx(2 * (0.30 / 2 - 0.075))
    assert costs.realtime_cost_usd == pytest.approx(3 * 0.30 + 2.50)


def test_dated_snapshot_and_models_prefix_and_default() -> None:
    usage = Usage(input_tokens=M)
    assert TABLE.price("openai", "gpt-4o-mini-2024-07-18").input == 0.15
    assert TABLE.price("gemini", "models/gemini-2.5-flash").input == 0.30
    assert TABLE.price("gemini", "gemini-unknown").input == 1.25
    assert TABLE.costs("nobody", "x", usage, batch=True).cost_usd == 0


def test_inconsistent_usage_is_clamped() -> None:
    assert split_input(Usage(input_tokens=10, cached_tokens=8, cache_write_tokens=8)) == (0, 8, 2)
    assert split_input(Usage(input_tokens=5, cached_tokens=9)) == (0, 5, 0)


def test_named_providers_must_have_prices() -> None:
    TABLE.require(["openai", "gemini"])
    with pytest.raises(ConfigError, match="together"):
        TABLE.require(["openai", "together"])


def test_every_shipped_row_says_where_its_numbers_come_from() -> None:
    for provider, entry in SHIPPED.items():
        assert entry.get("source"), provider
        assert isinstance(entry.get("cache_stacks_with_batch"), bool), provider
        for model, row in entry["models"].items():
            assert row.get("source"), (provider, model)


@pytest.mark.parametrize(
    "data",
    [
        {"openai": {"batch_discount": 1.5, "models": {}}},
        {"openai": {"models": {"x": {"input": "cheap"}}}},
        {"openai": {"models": {"x": {"input": 1, "output": 1, "cached_input": 2}}}},
        {"openai": {"models": {"x": {"input": 1, "output": -1}}}},
        {"openai": {"cache_stacks_with_batch": "no", "models": {}}},
    ],
)
def test_bad_tables_are_config_errors(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PriceTable(data)


def test_unreadable_table_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "p.yaml"
    bad.write_text("openai: [")
    with pytest.raises(ConfigError):
        PriceTable.load(bad)


def test_an_unknown_tier_is_refused() -> None:
    with pytest.raises(ValueError):
        TABLE.costs("openai", "gpt-4o", Usage(1, 1), "priority")  # type: ignore[arg-type]


# --- properties over every shipped model ---------------------------------------------------

tokens = st.integers(min_value=0, max_value=5 * M)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    read = draw(tokens)
    write = draw(tokens)
    fresh = draw(tokens)
    return Usage(fresh + read + write, draw(tokens), read, write)


@given(st.sampled_from(MODELS), usages(), st.sampled_from(TIERS))
def test_costs_add_up(model: tuple[str, str], usage: Usage, tier: str) -> None:
    provider, name = model
    costs = TABLE.costs(provider, name, usage, tier)  # type: ignore[arg-type]
    uncached = Usage(usage.input_tokens, usage.output_tokens)
    without = TABLE.costs(provider, name, uncached, tier)  # type: ignore[arg-type]
    assert costs.cost_usd >= 0
    # The realtime comparison ignores the tier and the cache.
    assert costs.realtime_cost_usd == without.realtime_cost_usd
    assert costs.realtime_cost_usd == TABLE.costs(provider, name, uncached, "standard").cost_usd
    # What caching saved is the difference to the same tier without it.
    assert costs.cost_usd + costs.cache_savings_usd == pytest.approx(without.cost_usd, abs=1e-9)
    assert without.cache_savings_usd == 0
    # A discounted tier never costs more than the standard one.
    standard = TABLE.costs(provider, name, usage, "standard")
    assert costs.cost_usd <= standard.cost_usd + 1e-9


@given(st.sampled_from(MODELS), usages(), st.sampled_from(TIERS), st.integers(1, M))
def test_cached_tokens_are_never_billed_at_the_full_input_price(
    model: tuple[str, str], usage: Usage, tier: str, read: int
) -> None:
    provider, name = model
    price = TABLE.price(provider, name)
    if price.output == 0 and price.cached_input == price.input:
        return  # embeddings: nothing is cached, nothing to bill as cached
    fresh = Usage(usage.input_tokens + read, usage.output_tokens, usage.cached_tokens)
    cached = Usage(usage.input_tokens + read, usage.output_tokens, usage.cached_tokens + read)
    cost_fresh = TABLE.costs(provider, name, fresh, tier).cost_usd  # type: ignore[arg-type]
    cost_cached = TABLE.costs(provider, name, cached, tier).cost_usd  # type: ignore[arg-type]
    assert cost_cached < cost_fresh  # and so reads-only caching always saves
    assert TABLE.costs(provider, name, cached, tier).cache_savings_usd > 0  # type: ignore[arg-type]


@given(st.sampled_from(MODELS), usages(), usages(), st.sampled_from(TIERS))
def test_costs_are_additive_over_requests(
    model: tuple[str, str], a: Usage, b: Usage, tier: str
) -> None:
    provider, name = model
    both = Usage(
        *(
            x + y
            for x, y in zip(
                (a.input_tokens, a.output_tokens, a.cached_tokens, a.cache_write_tokens),
                (b.input_tokens, b.output_tokens, b.cached_tokens, b.cache_write_tokens),
                strict=True,
            )
        )
    )
    one, two, sum_ = (TABLE.costs(provider, name, u, tier) for u in (a, b, both))  # type: ignore[arg-type]
    assert sum_.cost_usd == pytest.approx(one.cost_usd + two.cost_usd, abs=1e-8)
    assert sum_.realtime_cost_usd == pytest.approx(
        one.realtime_cost_usd + two.realtime_cost_usd, abs=1e-8
    )
