"""OpenAI's enqueued-token limit: what each model has in flight, and the batch over it (no I/O).

OpenAI counts the input tokens of every batch of a model that is validating, in progress or
finalizing against the organisation's limit for that model; a batch that would pass it
fails validation after upload with ``token_limit_exceeded`` and the message quoted below
(as users report it, e.g. "Enqueued token limit reached for gpt-4o in organization XYZ.
Limit: 90,000 enqueued tokens. Please try again once some in_progress batches have been
completed."). The emulator decides when the batch is created, against the batches in
flight at that moment.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import synth
from .state import BatchRecord, Phase, RequestRecord, progress

IN_FLIGHT = (Phase.QUEUED, Phase.RUNNING, Phase.FINALIZING)
# The limit named by the old all-or-nothing fault (openai_token_limit=True).
LEGACY_LIMIT = 90_000


def batch_tokens(requests: Iterable[RequestRecord]) -> int:
    """The input tokens a batch enqueues, by the emulator's token estimate."""
    return sum(synth.complete(r.serialised).input_tokens for r in requests)


def enqueued(batches: Iterable[BatchRecord], now: float) -> dict[str, int]:
    """Input tokens in flight per model at ``now`` (batches that failed validation hold none)."""
    out: dict[str, int] = {}
    for batch in batches:
        if batch.validation_errors or progress(batch, now).phase not in IN_FLIGHT:
            continue
        model = str(batch.extra.get("model"))
        out[model] = out.get(model, 0) + int(batch.extra.get("enqueued_tokens", 0))
    return out


def token_limit_error(model: str | None, limit: int) -> dict[str, Any]:
    """The ``errors.data`` entry of a batch over the limit."""
    return {
        "code": "token_limit_exceeded",
        "message": (
            f"Enqueued token limit reached for {model} in organization org-emulator. "
            f"Limit: {limit:,} enqueued tokens. "
            "Please try again once some in_progress batches have been completed."
        ),
        "line": None,
        "param": None,
    }
