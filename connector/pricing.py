"""Cost of a request from its token usage, at batch and at realtime prices.

Prices are data (``connector/data/prices.yaml``, or the file named by
``BATCHBRIDGE_PRICES_FILE``), never constants in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from connector.errors import ConfigError
from connector.providers.base import Usage

DEFAULT_FILE = Path(__file__).resolve().parent / "data" / "prices.yaml"


@dataclass(frozen=True, slots=True)
class ModelPrice:
    input: float  # USD per million tokens
    cached_input: float
    output: float

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.input_tokens)
        fresh = usage.input_tokens - cached
        return (fresh * self.input + cached * self.cached_input + usage.output_tokens * self.output) / 1e6


@dataclass(frozen=True, slots=True)
class Costs:
    cost_usd: float  # at the price of the lane that served the request
    realtime_cost_usd: float  # the same tokens through the synchronous API


class PriceTable:
    def __init__(self, data: dict[str, Any]) -> None:
        self._discount: dict[str, float] = {}
        self._models: dict[str, dict[str, ModelPrice]] = {}
        try:
            for provider, entry in data.items():
                discount = float(entry.get("batch_discount", 0.5))
                if not 0 <= discount < 1:
                    raise ConfigError(f"prices: {provider}.batch_discount must be in [0, 1)")
                self._discount[provider] = discount
                self._models[provider] = {
                    model: ModelPrice(float(p["input"]), float(p.get("cached_input", p["input"])), float(p["output"]))
                    for model, p in entry["models"].items()
                }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"prices: malformed price table: {exc!r}") from exc

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        file = Path(path) if path else DEFAULT_FILE
        try:
            return cls(yaml.safe_load(file.read_text(encoding="utf-8")) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read price table {file}: {exc}") from exc

    def price(self, provider: str, model: str) -> ModelPrice:
        models = self._models.get(provider, {})
        name = model.removeprefix("models/")
        if name in models:
            return models[name]
        # Dated snapshots (gpt-4o-mini-2024-07-18) price like their family.
        family = max((m for m in models if name.startswith(m + "-")), key=len, default=None)
        if family:
            return models[family]
        return models.get("default", ModelPrice(0.0, 0.0, 0.0))

    def costs(self, provider: str, model: str, usage: Usage, *, batch: bool) -> Costs:
        realtime = self.price(provider, model).cost(usage)
        lane = realtime * (1 - self._discount.get(provider, 0.0)) if batch else realtime
        return Costs(round(lane, 10), round(realtime, 10))
