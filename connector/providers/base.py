"""The provider interface shared by every batch API adapter.

Pure data types plus one abstract class. Adapters live beside this module
(``openai_batch.py``, ``anthropic_batch.py``, ``gemini_batch.py``) and talk to the providers
only through their official SDKs, pointed at any base URL (the emulator in tests).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from connector.providers.exceptions import ProviderError


class BatchState(StrEnum):
    """Provider batch states, normalised across the three APIs."""

    PENDING = "pending"  # accepted, not yet running (validating, JOB_STATE_PENDING/QUEUED)
    RUNNING = "running"  # in_progress, finalizing, JOB_STATE_RUNNING
    CANCELLING = "cancelling"  # cancel requested, not yet final
    ENDED = "ended"  # completed / ended / JOB_STATE_SUCCEEDED: results are readable
    FAILED = "failed"  # the whole batch was rejected (validation, quota); no results
    EXPIRED = "expired"  # hit the provider's window; partial results may be readable
    CANCELLED = "cancelled"  # cancelled; partial results may be readable

    @property
    def is_final(self) -> bool:
        """Whether the batch will not change any more."""
        return self in {
            BatchState.ENDED,
            BatchState.FAILED,
            BatchState.EXPIRED,
            BatchState.CANCELLED,
        }


class OutcomeKind(StrEnum):
    """What happened to one request inside a batch (or one synchronous call)."""

    SUCCEEDED = "succeeded"
    RETRYABLE = "retryable"  # rate limit, overloaded, server error, expired, cancelled
    PERMANENT = "permanent"  # invalid request, policy, … — retrying cannot help


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one request, meaning the same for every provider.

    ``input_tokens`` counts every input token: fresh ones, those read from the prompt cache
    and those written to it. ``cached_tokens`` are the cache reads among them,
    ``cache_write_tokens`` the cache writes. Output includes reasoning/thinking tokens.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One request as the provider will see it.

    ``custom_id`` is the provider-safe id (see ``connector.providers.ids``); ``body`` is the
    provider-native request JSON (already parsed).
    """

    custom_id: str
    model: str
    endpoint: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """What one provider batch may hold; ``split`` packs requests to these."""

    max_requests: int  # per batch
    max_bytes: int  # per batch, serialised input
    one_model_per_batch: bool
    custom_id_max_len: int
    custom_id_pattern: str  # regex the custom id must fully match
    inline_max_bytes: int | None = None  # Gemini: above this, upload a JSONL file


@dataclass(frozen=True, slots=True)
class BatchHandle:
    """What the connector must remember to find a submitted batch again."""

    provider: str
    batch_id: str  # the provider's id (OpenAI batch_…, Anthropic msgbatch_…, Gemini batches/…)
    tag: str  # the connector's own batch id, attached to the provider batch where possible
    created_at: float | None = None  # epoch seconds, provider clock
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. input_file_id


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """A provider batch's state and counts, as one ``poll`` saw them."""

    state: BatchState
    provider_state: str
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    error_code: str | None = None  # batch-level error, e.g. token_limit_exceeded
    error_message: str | None = None
    # FAILED for a quota (OpenAI token_limit_exceeded, Gemini RESOURCE_EXHAUSTED): the same
    # requests can go again later. The adapter knows its provider's codes; callers don't.
    quota_exceeded: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """The normalised result of one request."""

    custom_id: str
    kind: OutcomeKind
    body: dict[str, Any] | None = None  # provider-native response JSON on success
    usage: Usage = Usage()
    error_code: str | None = None  # the provider's own code, kept verbatim
    error_message: str | None = None
    retry_after: float | None = None  # seconds, when the provider said so (realtime calls)


class Provider(abc.ABC):
    """One batch API. Every method goes through the official SDK."""

    name: str  # what a request's ``provider`` says
    limits: ProviderLimits
    endpoints: frozenset[str] = frozenset()  # what a request's ``endpoint`` may say

    @abc.abstractmethod
    async def submit(self, tag: str, items: Sequence[BatchItem]) -> BatchHandle:
        """Create a provider batch for ``items`` (one valid batch: see ``split``), tagged ``tag``.

        The create call is sent once: the SDK's retries are off for it, because a create
        whose answer was lost may still have made a billed batch. Uploads that feed it keep
        the SDK's retries (a file uploaded twice is not a batch).

        Raises:
            BatchRejected: the provider definitely refused the batch (a 4xx other than
                408/409/425/429): nothing was created and the same batch will be refused again.
            ProviderAuthError: 401/403; nothing was created, the settings need fixing.
            ProviderUnavailable: anything that may have reached the provider: a timeout, a
                connection error (a dropped response included), 408/409/425/429, a 5xx, an
                unreadable answer. A batch may exist: call ``find()`` before submitting again.
        """

    @abc.abstractmethod
    async def poll(self, handle: BatchHandle) -> BatchStatus:
        """Current normalised state and counts."""

    @abc.abstractmethod
    def results(self, handle: BatchHandle) -> AsyncIterator[Outcome]:
        """Stream every per-request outcome of an ended/expired/cancelled batch.

        Streams (never loads a whole result file), reads both success and error output,
        maps by custom_id (never by order). Malformed lines yield nothing for that line and
        are counted in ``malformed_lines``; requests with no line at all are the caller's to
        detect (it knows what it submitted).
        """

    @abc.abstractmethod
    async def cancel(self, handle: BatchHandle) -> None:
        """Ask the provider to cancel; idempotent."""

    @abc.abstractmethod
    async def find(
        self,
        tag: str,
        *,
        created_after: float | None = None,
        expected_count: int | None = None,
        custom_ids: frozenset[str] | None = None,
    ) -> BatchHandle | None:
        """The provider batch an earlier ``submit(tag, items)`` made, or None if there is none.

        Reconciliation after a crash or a ``ProviderUnavailable`` from ``submit``: call it
        before submitting again. ``created_after`` (epoch seconds, when the intent was
        written) bounds the search; ``custom_ids`` are the items' ids exactly as submitted.
        OpenAI and Gemini match the tag they carry; Anthropic batches carry none, so a batch
        is adopted only once its results show exactly ``custom_ids``.

        Raises:
            ReconcilePending: not decidable yet (a candidate has not ended); wait
                ``retry_after`` and call again. Never submit meanwhile.
        """

    @abc.abstractmethod
    async def complete(self, item: BatchItem) -> Outcome:
        """One synchronous call (realtime lane). Never raises for per-request errors."""

    malformed_lines: int = 0  # result lines skipped as unparseable, over this adapter's life

    def _count_malformed(self) -> None:
        self.malformed_lines += 1

    async def _already_final(self, error: ProviderError, handle: BatchHandle) -> bool:
        """Whether a refused cancel (400/409) was refused because the batch already ended."""
        return error.status in (400, 409) and (await self.poll(handle)).state.is_final

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release SDK clients."""
