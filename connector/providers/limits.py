"""Per-provider batch limits (docs/architecture.md, provider facts), rounded down to decimal units to stay safe."""

from __future__ import annotations

from connector.providers.base import ProviderLimits
from connector.providers.ids import CUSTOM_ID_MAX_LEN, CUSTOM_ID_PATTERN

OPENAI_LIMITS = ProviderLimits(
    max_requests=50_000,
    max_bytes=200_000_000,
    one_model_per_batch=True,
    custom_id_max_len=CUSTOM_ID_MAX_LEN,
    custom_id_pattern=CUSTOM_ID_PATTERN,
)

ANTHROPIC_LIMITS = ProviderLimits(
    max_requests=100_000,
    max_bytes=256_000_000,
    one_model_per_batch=False,
    custom_id_max_len=CUSTOM_ID_MAX_LEN,
    custom_id_pattern=CUSTOM_ID_PATTERN,
)

# Gemini documents no request cap; 50,000 keeps a job's result file and listing in the
# same range as OpenAI's, which is known to work.
GEMINI_LIMITS = ProviderLimits(
    max_requests=50_000,
    max_bytes=2_000_000_000,
    one_model_per_batch=True,
    custom_id_max_len=CUSTOM_ID_MAX_LEN,
    custom_id_pattern=CUSTOM_ID_PATTERN,
    inline_max_bytes=20_000_000,
)

LIMITS: dict[str, ProviderLimits] = {
    "openai": OPENAI_LIMITS,
    "anthropic": ANTHROPIC_LIMITS,
    "gemini": GEMINI_LIMITS,
}


def named_limits(max_requests: int, max_bytes: int) -> ProviderLimits:
    """Limits of an operator-declared OpenAI-kind provider (one model per batch, as OpenAI)."""
    return ProviderLimits(
        max_requests=max_requests,
        max_bytes=max_bytes,
        one_model_per_batch=True,
        custom_id_max_len=CUSTOM_ID_MAX_LEN,
        custom_id_pattern=CUSTOM_ID_PATTERN,
    )


# What a request costs in the batch input beyond its body: the JSONL envelope
# (custom_id, method, url / key / params wrapper) and the newline.
ENVELOPE_BYTES = 256
