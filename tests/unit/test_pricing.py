import pytest

from connector.errors import ConfigError
from connector.pricing import PriceTable
from connector.providers.base import Usage


@pytest.fixture(scope="module")
def table():
    return PriceTable.load()


def test_batch_is_half_of_realtime(table):
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    batch = table.costs("openai", "gpt-4o-mini", usage, batch=True)
    realtime = table.costs("openai", "gpt-4o-mini", usage, batch=False)
    assert realtime.cost_usd == pytest.approx(0.75)
    assert batch.cost_usd == pytest.approx(0.375)
    assert batch.realtime_cost_usd == realtime.cost_usd


def test_cached_tokens_use_the_cached_price(table):
    usage = Usage(input_tokens=1_000_000, cached_tokens=1_000_000)
    assert table.costs("anthropic", "claude-3-5-haiku-latest", usage, batch=False).cost_usd == pytest.approx(0.08)


def test_dated_snapshot_and_models_prefix_and_default(table):
    usage = Usage(input_tokens=1_000_000)
    assert table.price("openai", "gpt-4o-mini-2024-07-18").input == 0.15
    assert table.price("gemini", "models/gemini-2.5-flash").input == 0.30
    assert table.price("gemini", "gemini-unknown").input == 1.25
    assert table.costs("nobody", "x", usage, batch=True).cost_usd == 0


def test_bad_tables_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        PriceTable({"openai": {"batch_discount": 1.5, "models": {}}})
    with pytest.raises(ConfigError):
        PriceTable({"openai": {"models": {"x": {"input": "cheap"}}}})
    bad = tmp_path / "p.yaml"
    bad.write_text("openai: [")
    with pytest.raises(ConfigError):
        PriceTable.load(bad)
