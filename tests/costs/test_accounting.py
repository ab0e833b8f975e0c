"""The accounting: cache reads never billed at the full input price; per-result costs add up
to the report's totals and its breakdown."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from connector.lanes import records
from connector.pricing import DEFAULT_FILE, TIERS, PriceTable
from connector.providers.base import Outcome, OutcomeKind, Usage
from connector.summary import cost_report

PRICES = PriceTable.load()
SHIPPED = yaml.safe_load(DEFAULT_FILE.read_text())
MODELS = [(p, m) for p, entry in SHIPPED.items() for m in entry["models"] if m != "default"]


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    fresh, read, written = (draw(st.integers(min_value=0, max_value=200_000)) for _ in range(3))
    return Usage(
        fresh + read + written, draw(st.integers(min_value=0, max_value=5_000)), read, written
    )


@given(st.sampled_from(MODELS), usages(), st.sampled_from(TIERS))
def test_cache_reads_are_never_billed_at_the_full_input_price(
    model: tuple[str, str], usage: Usage, tier: str
) -> None:
    provider, name = model
    price = PRICES.price(provider, name)
    costs = PRICES.costs(provider, name, usage, tier)  # type: ignore[arg-type]
    reads_as_fresh = Usage(usage.input_tokens, usage.output_tokens, 0, usage.cache_write_tokens)
    if usage.cached_tokens and price.cached_input < price.input:
        assert costs.cost_usd < PRICES.costs(provider, name, reads_as_fresh, tier).cost_usd  # type: ignore[arg-type]
    uncached = PRICES.costs(provider, name, Usage(usage.input_tokens, usage.output_tokens), tier)  # type: ignore[arg-type]
    assert costs.cost_usd + costs.cache_savings_usd == pytest.approx(uncached.cost_usd, abs=1e-9)
    assert costs.realtime_cost_usd == pytest.approx(
        PRICES.costs(
            provider, name, Usage(usage.input_tokens, usage.output_tokens), "standard"
        ).cost_usd
    )


results = st.lists(
    st.tuples(
        st.sampled_from(MODELS),
        usages(),
        st.sampled_from([("batch", "batch"), ("realtime", "standard"), ("realtime", "flex")]),
    ),
    max_size=30,
)


@given(results)
def test_per_result_costs_add_up_to_the_report(drawn: list) -> None:
    built = []
    for i, ((provider, model), usage, (lane, tier)) in enumerate(drawn):
        request = {
            "request_id": f"r{i}",
            "provider": provider,
            "model": model,
            "endpoint": "e",
            "created_at": 0,
        }
        outcome = Outcome(f"c{i}", OutcomeKind.SUCCEEDED, body={}, usage=usage)
        costs = PRICES.costs(provider, model, usage, tier)
        built.append(
            records.result_record(
                request, outcome, lane=lane, costs=costs, now=1, service_tier=tier
            )
        )
    total = cost_report(built).total
    assert total.cost_usd == pytest.approx(sum(r["cost_usd"] for r in built))
    assert total.realtime_cost_usd == pytest.approx(sum(r["realtime_cost_usd"] for r in built))
    assert total.savings.cache_usd == pytest.approx(sum(r["cache_savings_usd"] for r in built))
    assert total.savings.total_usd == pytest.approx(total.saving_usd)
    flex = [r for r in built if r["service_tier"] == "flex"]
    assert total.savings.flex_usd == pytest.approx(
        sum(r["realtime_cost_usd"] - r["cost_usd"] - r["cache_savings_usd"] for r in flex)
    )
    assert total.savings.other_usd == pytest.approx(0, abs=1e-9)  # standard saves only by its cache
