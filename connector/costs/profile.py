"""What the cost rules need to know about one queued request, computed once. Pure.

The deferred lane computes a request's profile when it admits the request and keeps it in
the request's table entry, so closing, priming, budgeting and admitting batches never parse
a body again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connector.config import CostSettings
from connector.costs.admission import estimate_tokens
from connector.costs.prefixes import CHARS_PER_TOKEN, shared_prefix
from connector.providers.base import Usage

if TYPE_CHECKING:  # the lanes' queue records import this module: keep it light
    from connector.pricing import PriceTable

# Where each API takes the output limit of a request.
_OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# The most a prefix's JSON (``[["system", …], …]``) can be longer than the body it came from.
_PREFIX_FRAMING_CHARS = 64


@dataclass(frozen=True, slots=True)
class RequestProfile:
    """A queued request as the cost rules see it."""

    prefix: str | None = None  # the shared prefix key (see connector.costs.prefixes)
    prefix_tokens: int = 0
    tenant: str | None = None  # whose budget it spends
    reserve_usd: float = 0.0  # what its budget reserves for it at submit

    def to_json(self) -> dict[str, Any]:
        """The table form: only what is set."""
        value: dict[str, Any] = {}
        if self.prefix is not None:
            value.update(prefix=self.prefix, prefix_tokens=self.prefix_tokens)
        if self.tenant is not None:
            value["tenant"] = self.tenant
        if self.reserve_usd:
            value["reserve_usd"] = self.reserve_usd
        return value

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RequestProfile:
        """The table form back as a profile."""
        return cls(
            prefix=raw.get("prefix"),
            prefix_tokens=int(raw.get("prefix_tokens") or 0),
            tenant=raw.get("tenant"),
            reserve_usd=float(raw.get("reserve_usd") or 0.0),
        )


def output_limit(body: dict[str, Any], default: int) -> int:
    """The most output tokens the request allows (``default`` when it sets no limit)."""
    for name in _OUTPUT_LIMITS:
        if isinstance(body.get(name), int):
            return int(body[name])
    config = body.get("generationConfig") or body.get("generation_config")
    if isinstance(config, dict):
        for name in ("maxOutputTokens", "max_output_tokens"):
            if isinstance(config.get(name), int):
                return int(config[name])
    return default


def reserve_usd(
    request: dict[str, Any], body: dict[str, Any], cfg: CostSettings, prices: PriceTable
) -> float:
    """The budget reservation of a request: its estimated input, all of it written to the
    prompt cache (the dearest way), and its output limit, at the batch price: the most it
    can cost in the batch lane."""
    size = len(request["body"].encode("utf-8", "surrogatepass"))
    tokens = estimate_tokens(size, 1, cfg.bytes_per_token)
    usage = Usage(
        input_tokens=tokens,
        cache_write_tokens=tokens,
        output_tokens=output_limit(body, cfg.budget_output_tokens),
    )
    return prices.costs(request["provider"], request["model"], usage, "batch").cost_usd


def profile_of(
    request: dict[str, Any], cfg: CostSettings, prices: PriceTable, *, budgets: bool
) -> RequestProfile | None:
    """The profile of a valid request; None when no rule needs one."""
    # A body this much shorter than the minimum cannot hold a prefix that long: no parsing.
    size = len(request["body"]) + _PREFIX_FRAMING_CHARS
    wants_prefix = (
        cfg.cache_aware_batching and size >= cfg.cache_min_prefix_tokens * CHARS_PER_TOKEN
    )
    if not (wants_prefix or budgets):
        return None
    body = json.loads(request["body"])
    prefix = (
        shared_prefix(request["provider"], body, cfg.cache_min_prefix_tokens)
        if wants_prefix
        else None
    )
    tenant = (request.get("metadata") or {}).get(cfg.tenant_metadata_key) if budgets else None
    profile = RequestProfile(
        prefix=prefix.key if prefix else None,
        prefix_tokens=prefix.tokens if prefix else 0,
        tenant=tenant,
        reserve_usd=reserve_usd(request, body, cfg, prices) if budgets else 0.0,
    )
    return profile if profile != RequestProfile() else None
