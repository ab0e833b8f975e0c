"""In-memory records and the time-driven batch lifecycle (no I/O).

A batch's state is never stored: it is computed from its creation time, the processing time
it was created with, its injected outcome and any cancel request, whenever someone looks.
The timeline, as fractions of the processing time P after creation:

    [0, 0.2P) queued (validating / pending) · [0.2P, 0.8P) running · [0.8P, P) finalizing · P: final
"""

from __future__ import annotations

import secrets
import string
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

PROVIDERS = ("openai", "anthropic", "gemini")

QUEUED_FRACTION = 0.2
FINALIZING_FRACTION = 0.8
CANCELLING_FRACTION = 0.2
# A batch whose injected outcome is "cancelled" is cancelled half way through.
CANCELLED_OUTCOME_AT = 0.5


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINALIZING = "finalizing"
    CANCELLING = "cancelling"
    FINAL = "final"


class Final(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Result(StrEnum):
    """What one request inside a batch came to (error kinds are kept separately)."""

    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


def new_id(
    prefix: str, length: int = 24, alphabet: str = string.ascii_letters + string.digits
) -> str:
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass(frozen=True, slots=True)
class CacheUse:
    """How one request used the provider's prompt cache (tokens).

    ``read`` came from the cache; ``written`` was stored in it by this request, of which
    ``written_1h`` with Anthropic's one-hour lifetime.
    """

    read: int = 0
    written: int = 0
    written_1h: int = 0


NO_CACHE = CacheUse()


@dataclass(slots=True)
class RequestRecord:
    """One request of a batch: its key (custom_id), body, and the error it is made to end with.

    ``error`` is an error kind (see ``config.ERROR_KINDS``); ``rejection``, when set, is the
    provider's own error object for a request the real API refuses (unknown model, invalid
    params), rendered in its result instead of the kind's generic error. ``cache`` is fixed
    when the batch is created, from when the request will run.
    """

    key: str
    serialised: str
    body: Any
    error: str | None = None
    rejection: dict[str, Any] | None = None
    cache: CacheUse = NO_CACHE


@dataclass
class BatchRecord:
    provider: str
    id: str
    created_at: float
    processing_seconds: float
    requests: list[RequestRecord]
    outcome: str | None = None
    tag: str | None = None
    seed: int = 0
    malformed_lines: int = 0
    # Non-empty: the batch is rejected at validation time (OpenAI) with these errors.
    validation_errors: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    webhook_sent: bool = False
    # Result counts never change once a batch is final; large batches are polled often.
    final_counts: dict[Result, int] | None = None

    @property
    def total(self) -> int:
        return len(self.requests)


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a batch stands at one instant."""

    phase: Phase
    final: Final | None
    done: int  # requests, in input order, that have their result
    started_at: float | None
    finalizing_at: float | None
    cancelling_at: float | None
    ended_at: float | None

    @property
    def is_final(self) -> bool:
        return self.phase is Phase.FINAL


def _done_by(batch: BatchRecord, t: float) -> int:
    p = batch.processing_seconds
    start = batch.created_at + QUEUED_FRACTION * p
    span = (FINALIZING_FRACTION - QUEUED_FRACTION) * p
    if t < start:
        return 0
    if span <= 0:
        return batch.total
    # The epsilon keeps float noise from losing a request at exact boundaries.
    return min(batch.total, int(batch.total * (t - start) / span + 1e-9))


def progress(batch: BatchRecord, now: float) -> Progress:
    """The batch's lifecycle position at ``now`` (pure; see the module docstring)."""
    p = batch.processing_seconds
    t0 = batch.created_at
    started = t0 + QUEUED_FRACTION * p
    finalizing = t0 + FINALIZING_FRACTION * p
    end = t0 + p

    if batch.validation_errors:
        if now < started:
            return Progress(Phase.QUEUED, None, 0, None, None, None, None)
        return Progress(Phase.FINAL, Final.FAILED, 0, None, None, None, started)

    cancel_at = batch.cancel_requested_at
    if batch.outcome == "cancelled" and cancel_at is None:
        cancel_at = t0 + CANCELLED_OUTCOME_AT * p
    stuck = batch.outcome == "stuck"
    natural_end = None if stuck else end
    if cancel_at is not None and (natural_end is None or cancel_at < natural_end):
        cancelled_at = cancel_at + CANCELLING_FRACTION * p
        done = _done_by(batch, cancel_at)
        began = started if cancel_at >= started else None
        if now < cancel_at:
            return _running(batch, now, started, finalizing)
        if now < cancelled_at:
            return Progress(Phase.CANCELLING, None, done, began, None, cancel_at, None)
        return Progress(Phase.FINAL, Final.CANCELLED, done, began, None, cancel_at, cancelled_at)

    if stuck:
        return _running(batch, now, started, None)
    if now < end:
        return _running(batch, now, started, finalizing)
    if batch.outcome == "expired":
        return Progress(Phase.FINAL, Final.EXPIRED, batch.total // 2, started, None, None, end)
    if batch.outcome == "failed":
        return Progress(Phase.FINAL, Final.FAILED, 0, started, None, None, end)
    return Progress(Phase.FINAL, Final.COMPLETED, batch.total, started, finalizing, None, end)


def processed_count(batch: BatchRecord) -> int:
    """How many requests, in input order, the batch runs (a later cancel request aside)."""
    if batch.validation_errors or batch.outcome == "failed":
        return 0
    if batch.outcome == "expired":
        return batch.total // 2
    if batch.outcome == "cancelled":
        return _done_by(batch, batch.created_at + CANCELLED_OUTCOME_AT * batch.processing_seconds)
    return batch.total


def processed_at(batch: BatchRecord, index: int) -> float:
    """When the ``index``-th request gets its result (the inverse of the timeline's count)."""
    p = batch.processing_seconds
    start = batch.created_at + QUEUED_FRACTION * p
    span = (FINALIZING_FRACTION - QUEUED_FRACTION) * p
    return start + span * (index + 1) / max(1, batch.total)


def _running(batch: BatchRecord, now: float, started: float, finalizing: float | None) -> Progress:
    if now < started:
        return Progress(Phase.QUEUED, None, 0, None, None, None, None)
    if finalizing is not None and now >= finalizing:
        return Progress(Phase.FINALIZING, None, batch.total, started, finalizing, None, None)
    return Progress(Phase.RUNNING, None, _done_by(batch, now), started, None, None, None)


def result_of(request: RequestRecord, index: int, prog: Progress) -> Result:
    """The result of the ``index``-th request given the batch's progress."""
    if prog.final is Final.FAILED:
        return Result.ERRORED
    if index >= prog.done:
        if prog.final is Final.EXPIRED:
            return Result.EXPIRED
        if prog.final is Final.CANCELLED:
            return Result.CANCELLED
        return Result.PROCESSING
    return Result.ERRORED if request.error else Result.SUCCEEDED


def count_results(batch: BatchRecord, prog: Progress) -> dict[Result, int]:
    if prog.is_final and batch.final_counts is not None:
        return batch.final_counts
    counts = dict.fromkeys(Result, 0)
    for index, request in enumerate(batch.requests):
        counts[result_of(request, index, prog)] += 1
    if prog.is_final:
        batch.final_counts = counts
    return counts


@dataclass
class FileRecord:
    """An uploaded file (bytes) or a result file (generated on every read)."""

    id: str
    provider: str
    filename: str
    purpose: str
    created_at: float
    mime_type: str = "application/jsonl"
    content: bytes | None = None
    producer: Callable[[], Iterable[str]] | None = None
    display_name: str | None = None
    _size: int | None = None

    def chunks(self) -> Iterable[bytes]:
        if self.content is not None:
            yield self.content
            return
        assert self.producer is not None
        for line in self.producer():
            yield line.encode()

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = sum(len(chunk) for chunk in self.chunks())
        return self._size


# Below this many prefixes the prompt cache is never pruned.
PRUNE_FLOOR = 10_000


class PrefixCache:
    """Prompt prefixes by (scope, hash), each alive over a span of time.

    A prefix written at ``t`` is seen by requests at ``t`` or later until it expires; a use
    extends its life. Batches are settled ahead of time, so a write may lie in the future
    of a synchronous call, which then does not see it.
    """

    def __init__(self) -> None:
        self._spans: dict[tuple[str, bytes], tuple[float, float]] = {}
        self._prune_at = PRUNE_FLOOR

    def __len__(self) -> int:
        return len(self._spans)

    def prune(self, now: float) -> None:
        """Forget prefixes expired by ``now``, once the cache has doubled since last time.

        Keeps a long-running emulator's memory bounded at a cost spread over many calls.
        """
        if len(self._spans) < self._prune_at:
            return
        self._spans = {key: span for key, span in self._spans.items() if span[1] > now}
        self._prune_at = max(PRUNE_FLOOR, 2 * len(self._spans))

    def holds(self, scope: str, key: bytes, at: float) -> bool:
        span = self._spans.get((scope, key))
        return span is not None and span[0] <= at < span[1]

    def keep(self, scope: str, key: bytes, at: float, ttl: float) -> None:
        """Write or refresh the prefix at ``at`` for ``ttl`` seconds."""
        span = self._spans.get((scope, key))
        if span is None or span[1] <= at or span[0] > at + ttl:
            self._spans[(scope, key)] = (at, at + ttl)
        else:
            self._spans[(scope, key)] = (min(span[0], at), max(span[1], at + ttl))


@dataclass
class Store:
    """Everything the emulator remembers; ``reset`` replaces it wholesale."""

    batches: dict[str, BatchRecord] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)
    # Counters, not dicts: providers served under another name (compat, Azure) count too.
    batches_created: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(PROVIDERS, 0)))
    requests_submitted: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(PROVIDERS, 0)))
    sync_calls: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(PROVIDERS, 0)))
    files_uploaded: int = 0
    # OpenAI Flex calls accepted and answered 429 Resource Unavailable.
    flex_calls: dict[str, int] = field(default_factory=lambda: {"served": 0, "unavailable": 0})
    # Gemini resumable uploads in flight: upload id -> (file record, bytes so far).
    uploads: dict[str, tuple[FileRecord, bytearray]] = field(default_factory=dict)
    prompt_cache: PrefixCache = field(default_factory=PrefixCache)

    def add_batch(self, batch: BatchRecord) -> None:
        self.batches[batch.id] = batch
        provider = batch.provider
        self.batches_created[provider] = self.batches_created.get(provider, 0) + 1
        self.requests_submitted[provider] = self.requests_submitted.get(provider, 0) + batch.total

    def count_sync_call(self, provider: str) -> None:
        self.sync_calls[provider] = self.sync_calls.get(provider, 0) + 1

    def batches_of(self, provider: str) -> list[BatchRecord]:
        """Newest first, as every provider lists them."""
        return [b for b in reversed(self.batches.values()) if b.provider == provider]
