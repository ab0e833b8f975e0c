"""OpenAI's Flex tier for synchronous calls that can wait a little: when, and when not. Pure.

Flex answers Chat Completions and Responses calls at batch prices, more slowly, and
sometimes with 429 "Resource Unavailable". The realtime lane uses it for a request that
opts in (its ``service_tier`` field, or the metadata key :data:`TIER_METADATA_KEY`, says
``"flex"``) and, with ``COST__FLEX_FOR_ESCALATIONS``, for a deferred request escalated near
its deadline, when the model has Flex (``COST__FLEX_MODELS``, dated snapshots included).

A Flex attempt may take at most ``COST__FLEX_TIMEOUT_S``, and never so long that the
deadline leaves less than ``COST__FLEX_STANDARD_RESERVE_S`` for a standard call. On a 429 or
a timeout, Flex is tried again after the usual backoff while the deadline leaves room for
another attempt; otherwise, and once attempts run out, the request goes to the standard
tier. A request whose body names a ``service_tier`` of its own is sent as written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from connector.pricing import Tier

FLEX: Final = "flex"
STANDARD: Final = "standard"
BATCH: Final = "batch"
#: Metadata fallback of the request field ``service_tier`` (producers on an older schema).
TIER_METADATA_KEY = "batchbridge.service_tier"
#: Set by the deferred lane on the requests it escalates to the realtime lane.
ESCALATED_KEY = "batchbridge.escalated"
FLEX_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/responses"})
#: A Flex attempt with less time than this is not worth starting.
MIN_FLEX_WINDOW_S = 1.0
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def requested_tier(request: dict[str, Any]) -> str | None:
    """The tier the request asks for: its ``service_tier`` field, else the metadata key."""
    return request.get("service_tier") or (request.get("metadata") or {}).get(TIER_METADATA_KEY)


def is_escalated(request: dict[str, Any]) -> bool:
    """Whether the deferred lane escalated this request near its deadline."""
    return (request.get("metadata") or {}).get(ESCALATED_KEY) == "true"


def has_flex(provider: str, model: str, endpoint: str, flex_models: Sequence[str]) -> bool:
    """Whether OpenAI serves this model and endpoint at the Flex tier."""
    base = _SNAPSHOT.sub("", model)
    return provider == "openai" and endpoint in FLEX_ENDPOINTS and base in flex_models


def plans_flex(
    request: dict[str, Any],
    body: dict[str, Any],
    flex_models: Sequence[str],
    *,
    for_escalations: bool,
) -> bool:
    """Whether the realtime lane tries Flex first for this request."""
    if body.get("service_tier") is not None:
        return False  # the caller chose a tier in the body: sent as written
    wanted = requested_tier(request) == FLEX or (for_escalations and is_escalated(request))
    return wanted and has_flex(
        request["provider"], request["model"], request["endpoint"], flex_models
    )


def flex_window_s(
    deadline_ms: int | None, now_ms: int, *, timeout_s: float, reserve_s: float
) -> float | None:
    """How long the next Flex attempt may take; None when the deadline leaves no room."""
    window = timeout_s
    if deadline_ms is not None:
        window = min(window, (deadline_ms - now_ms) / 1000 - reserve_s)
    return window if window >= MIN_FLEX_WINDOW_S else None


def reported_tier(body: dict[str, Any] | None) -> str | None:
    """The tier a synchronous answer says served it (OpenAI top level, Anthropic in usage)."""
    body = body or {}
    usage = body.get("usage")
    tier = body.get("service_tier") or (
        usage.get("service_tier") if isinstance(usage, dict) else None
    )
    return str(tier) if tier else None


def served_tier(asked: str, reported: str | None) -> tuple[str, Tier]:
    """The tier a synchronous result records and the tier it is priced at (``asked``: what
    the call asked for, flex or standard).

    What the provider reported wins; ``default``/``auto`` are the standard tier. A tier the
    price table has no price for (``priority``, ``scale``) is recorded as reported and priced
    at the standard price.
    """
    if reported is None:
        return asked, FLEX if asked == FLEX else STANDARD
    if reported == FLEX:
        return FLEX, FLEX
    if reported in ("default", "auto", STANDARD):
        return STANDARD, STANDARD
    return reported, STANDARD
