"""Cost of a request from its token usage, by service tier, with prompt caching.

Prices are data (``connector/data/prices.yaml``, or the file named by
``BATCHBRIDGE_PRICES_FILE``), never constants in code. A row gives the standard
(synchronous) price per million tokens of fresh input, cache reads, cache writes and output;
the batch tier takes the provider's ``batch_discount`` off. Where a provider's cache and
batch discounts do not stack (Vertex-style), cache reads are billed at the cache price with
no batch discount: the cache discount wins. OpenAI's Flex tier is billed at batch rates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from connector.errors import ConfigError
from connector.providers.base import Usage

DEFAULT_FILE = Path(__file__).resolve().parent / "data" / "prices.yaml"

Tier = Literal["batch", "standard", "flex"]
TIERS: tuple[Tier, ...] = ("batch", "standard", "flex")
_PER_TOKEN = 1e-6  # prices are per million tokens


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens at the standard price; cache prices default to ``input``."""

    input: float
    cached_input: float  # a cache read
    output: float
    cache_write: float | None = None  # None: the input price (no write premium)

    def cost(self, usage: Usage) -> float:
        """The standard price of ``usage`` with its cache reads and writes (no discount)."""
        fresh, read, write = split_input(usage)
        write_price = self.input if self.cache_write is None else self.cache_write
        return (
            fresh * self.input
            + read * self.cached_input
            + write * write_price
            + usage.output_tokens * self.output
        ) * _PER_TOKEN


@dataclass(frozen=True, slots=True)
class ProviderPrices:
    """One provider's models and how its discounts combine."""

    models: Mapping[str, ModelPrice]
    batch_discount: float = 0.5
    cache_stacks_with_batch: bool = True


@dataclass(frozen=True, slots=True)
class Costs:
    """What one request cost, and what it would have cost otherwise (USD)."""

    cost_usd: float  # at the price of the tier that served it, caching included
    realtime_cost_usd: float  # the same tokens at the standard price, with no caching
    cache_savings_usd: float = 0.0  # saved by cache reads/writes in this tier (< 0: cost)


# How many (model, token counts, tier) costs a price table remembers before it starts over.
COSTS_REMEMBERED = 4096


def split_input(usage: Usage) -> tuple[int, int, int]:
    """``(fresh, cache reads, cache writes)`` of the input tokens, clamped to add up."""
    read = max(0, min(usage.cached_tokens, usage.input_tokens))
    write = max(0, min(usage.cache_write_tokens, usage.input_tokens - read))
    return usage.input_tokens - read - write, read, write


def _uncached(usage: Usage) -> Usage:
    return Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)


class PriceTable:
    """Prices of every provider and model, loaded from a YAML price table."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._found: dict[tuple[str, str], ModelPrice] = {}  # model names resolved once
        # The costs of the token counts seen last: a batch's results repeat them a lot.
        self._priced: dict[tuple[str, str, Usage, str], Costs] = {}
        try:
            self._providers = {
                str(provider): _provider_prices(str(provider), entry)
                for provider, entry in data.items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"prices: malformed price table: {exc!r}") from exc

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """The table in ``path``, or the shipped one."""
        file = Path(path) if path else DEFAULT_FILE
        try:
            return cls(yaml.safe_load(file.read_text(encoding="utf-8")) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read price table {file}: {exc}") from exc

    def require(self, providers: Iterable[str]) -> None:
        """ConfigError unless every provider in ``providers`` has prices.

        Call it at start with the named providers: a provider with no prices would report
        $0 for everything it serves.
        """
        missing = sorted(set(providers) - set(self._providers))
        if missing:
            raise ConfigError(
                f"prices: no price table entry for provider(s) {missing}; add them to the "
                "file BATCHBRIDGE_PRICES_FILE names (a copy of connector/data/prices.yaml)"
            )

    def price(self, provider: str, model: str) -> ModelPrice:
        """The row for ``model``: exact, its family (dated snapshots), or ``default``."""
        key = (provider, model)
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = self._lookup(provider, model)
        return found

    def _lookup(self, provider: str, model: str) -> ModelPrice:
        entry = self._providers.get(provider)
        models = entry.models if entry else {}
        name = model.removeprefix("models/")
        if name in models:
            return models[name]
        family = max((m for m in models if name.startswith(m + "-")), key=len, default=None)
        if family:
            return models[family]
        return models.get("default", ModelPrice(0.0, 0.0, 0.0))

    def costs(
        self,
        provider: str,
        model: str,
        usage: Usage,
        tier: Tier | None = None,
        *,
        batch: bool | None = None,
    ) -> Costs:
        """The request's cost in ``tier``, the uncached standard cost and the cache saving.

        ``batch=True/False`` is the older spelling of ``tier="batch"/"standard"``.
        """
        if tier is None:
            tier = "batch" if batch else "standard"
        key = (provider, model, usage, tier)
        found = self._priced.get(key)
        if found is None:
            if len(self._priced) >= COSTS_REMEMBERED:
                self._priced.clear()
            found = self._priced[key] = self._costs(provider, model, usage, tier)
        return found

    def _costs(self, provider: str, model: str, usage: Usage, tier: Tier) -> Costs:
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
        price = self.price(provider, model)
        cost = self._tier_cost(provider, price, usage, tier)
        uncached = self._tier_cost(provider, price, _uncached(usage), tier)
        return Costs(
            round(cost, 10),
            round(price.cost(_uncached(usage)), 10),
            round(uncached - cost, 10),
        )

    def _tier_cost(self, provider: str, price: ModelPrice, usage: Usage, tier: Tier) -> float:
        standard = price.cost(usage)
        if tier == "standard":
            return standard
        entry = self._providers.get(provider)
        if entry is None:
            return standard
        keep = 1 - entry.batch_discount  # flex is billed at batch rates
        if entry.cache_stacks_with_batch:
            return standard * keep
        _, read, _ = split_input(usage)
        reads = read * price.cached_input * _PER_TOKEN  # the cache discount alone
        return reads + (standard - reads) * keep


def _provider_prices(provider: str, entry: Mapping[str, Any]) -> ProviderPrices:
    discount = float(entry.get("batch_discount", 0.5))
    if not 0 <= discount < 1:
        raise ConfigError(f"prices: {provider}.batch_discount must be in [0, 1)")
    stacks = entry.get("cache_stacks_with_batch", True)
    if not isinstance(stacks, bool):
        raise ConfigError(f"prices: {provider}.cache_stacks_with_batch must be true or false")
    models = {
        str(model): _model_price(f"{provider}.{model}", row)
        for model, row in entry["models"].items()
    }
    return ProviderPrices(models, discount, stacks)


def _model_price(where: str, row: Mapping[str, Any]) -> ModelPrice:
    price = ModelPrice(
        input=float(row["input"]),
        cached_input=float(row.get("cached_input", row["input"])),
        output=float(row["output"]),
        cache_write=float(row.get("cache_write", row["input"])),
    )
    if min(price.input, price.cached_input, price.output, price.cache_write or 0) < 0:
        raise ConfigError(f"prices: {where} has a negative price")
    if price.cached_input > price.input:
        raise ConfigError(f"prices: {where}: a cache read cannot cost more than fresh input")
    return price
