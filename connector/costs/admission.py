"""Enqueued-token admission control: never send a batch the provider's quota cannot take. Pure.

OpenAI counts the input tokens of every batch in flight per model against an organisation
limit and fails a batch over it, after upload, with ``token_limit_exceeded``. With a limit
configured for a (provider, model), the connector cuts batches to fit it and submits a batch
only while its tokens fit next to the batches it has in flight; the others wait in INTENT,
oldest first, until earlier batches end.

**The token estimate** needs no tokenizer (nothing is downloaded): a batch of ``n``
requests whose bodies hold ``b`` UTF-8 bytes enqueues about ``ceil(b / bytes_per_token) +
8 n`` tokens. The default of 3 bytes a token over-estimates English text (about 4
characters a token) and matches scripts of 3-byte characters, so a batch the estimate
admits fits the provider's own count; the 8 tokens a request cover the message framing the
provider adds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

REQUEST_OVERHEAD_TOKENS = 8


def estimate_tokens(body_bytes: int, requests: int, bytes_per_token: float) -> int:
    """Input tokens of ``requests`` requests whose bodies hold ``body_bytes`` bytes in all."""
    return math.ceil(body_bytes / bytes_per_token) + REQUEST_OVERHEAD_TOKENS * requests


def token_limit(limits: Mapping[str, int], provider: str, model: str) -> int | None:
    """The enqueued-token limit configured for ``provider/model``, if any."""
    return limits.get(f"{provider}/{model}")


def cut_to_limit(sizes: Sequence[int], limit: int, bytes_per_token: float) -> list[int]:
    """Lengths of consecutive runs of ``sizes`` (body bytes) whose estimate fits ``limit``.

    A request too large for the limit on its own makes a run of its own.
    """
    runs: list[int] = []
    count = size = 0
    for request_bytes in sizes:
        if count and estimate_tokens(size + request_bytes, count + 1, bytes_per_token) > limit:
            runs.append(count)
            count = size = 0
        count += 1
        size += request_bytes
    if count:
        runs.append(count)
    return runs


@dataclass(frozen=True, slots=True)
class Gauge:
    """One batch of the (provider, model) as admission sees it."""

    batch_id: str
    submitted: bool  # in flight at the provider; else waiting in INTENT
    tokens: int
    closed_at: int


def admits(candidate: str, batches: Iterable[Gauge], limit: int) -> bool:
    """Whether batch ``candidate`` (waiting in INTENT) may be submitted now.

    Waiting batches go oldest first (by close time; batches closed at the same time in the
    order given, which is the order they were opened in): each is admitted while its
    tokens fit next to those in flight and those admitted before it, and the first that
    does not fit holds back every later one. A batch over the limit on its own goes alone,
    when nothing else is in flight, so that it cannot wait forever.
    """
    gauges = list(batches)
    room = limit - sum(g.tokens for g in gauges if g.submitted)
    in_flight = any(g.submitted for g in gauges)
    waiting = sorted((g for g in gauges if not g.submitted), key=lambda g: g.closed_at)
    for position, gauge in enumerate(waiting):
        if gauge.tokens > room:
            alone = position == 0 and not in_flight and gauge.tokens > limit
            return alone and gauge.batch_id == candidate
        room -= gauge.tokens
        if gauge.batch_id == candidate:
            return True
    return False
