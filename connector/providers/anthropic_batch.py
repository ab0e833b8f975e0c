"""Anthropic Message Batches adapter on ``anthropic.AsyncAnthropic``.

A Message Batch has no metadata field, so the connector's tag cannot travel with it.
``find`` therefore narrows by what a batch does show (its creation time and request count)
and adopts a candidate only after its results show exactly the custom ids the connector
submitted. Results are readable only once a batch has ended, so while a candidate that could
be the one is still running, ``find`` raises ``ReconcilePending`` instead of guessing.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from typing import Any

import anthropic
import orjson
from anthropic.types.messages import MessageBatch

from connector.config import ProviderSettings
from connector.providers.base import (
    BatchHandle,
    BatchItem,
    BatchState,
    BatchStatus,
    Outcome,
    OutcomeKind,
    Provider,
)
from connector.providers.exceptions import (
    BatchRejected,
    ProviderError,
    ProviderUnavailable,
    ReconcilePending,
    error_for_status,
)
from connector.providers.jsonl import lines_of, outcomes_from_lines
from connector.providers.limits import ANTHROPIC_LIMITS
from connector.providers.outcomes import (
    anthropic_error_fields,
    anthropic_outcome,
    anthropic_usage,
    error_outcome,
    parse_retry_after,
    refused_by_client,
    undecodable,
)

log = logging.getLogger(__name__)

ENDPOINT = "/v1/messages"

# list() is newest first; a batch created this long before ``created_after`` still counts,
# to absorb clock skew between this host and the provider.
FIND_CLOCK_SLACK_S = 60.0


def request_params(item: BatchItem) -> dict[str, Any]:
    """The Messages API body of one batch request (the item's model wins)."""
    return {**item.body, "model": item.model}


def encode_request(item: BatchItem) -> bytes:
    """The request as it appears in the batch create body (used for sizing)."""
    entry = {"custom_id": item.custom_id, "params": request_params(item)}
    return orjson.dumps(entry)


# ``error.details.error_code`` of a 429 that is a spending limit, not a rate limit.
SPEND_LIMIT_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
    }
)


def _is_quota(exc: anthropic.APIStatusError) -> bool:
    """A refusal that clears when the account is topped up: billing (402) or a spend limit."""
    return exc.status_code == 402 or (
        exc.status_code == 429 and exc.error_code in SPEND_LIMIT_CODES
    )


def to_provider_error(
    exc: anthropic.AnthropicError, provider: str, *, creating: bool = False
) -> ProviderError:
    """The project error for an ``anthropic`` SDK error (``creating``: see ``error_for_status``)."""
    if isinstance(exc, anthropic.APIStatusError):
        error_type, message = anthropic_error_fields(exc.body)
        return error_for_status(
            provider,
            message or str(exc),
            status=exc.status_code,
            code=exc.error_code or error_type,  # the specific cause, where the API names one
            retry_after=parse_retry_after(exc.response.headers),
            creating=creating,
            quota=creating and _is_quota(exc),
        )
    if isinstance(exc, anthropic.APIConnectionError):
        return error_for_status(provider, str(exc), status=None, code="connection_error")
    if creating:
        # A create that failed any other way (say, on its response) may have made a batch.
        return ProviderUnavailable(str(exc), provider=provider, code=type(exc).__name__)
    return ProviderError(str(exc), provider=provider, code=type(exc).__name__)


async def lists_exactly(lines: AsyncIterable[str | bytes], custom_ids: frozenset[str]) -> bool:
    """Whether result ``lines`` name each of ``custom_ids`` once and nothing else.

    Stops at the first foreign or repeated id. A line that cannot be read proves nothing
    either way; it counts towards the total, so one unreadable line still lets a batch
    whose every other line is ours be adopted (the request it hid is then retried).
    """
    seen: set[str] = set()
    unreadable = 0
    async for line in lines:
        if not line.strip():
            continue
        try:
            custom_id = json.loads(line)["custom_id"]
        except (ValueError, KeyError, TypeError):
            unreadable += 1
            continue
        if custom_id not in custom_ids or custom_id in seen:
            return False
        seen.add(custom_id)
    return len(seen) + unreadable == len(custom_ids)


def _state(batch: MessageBatch) -> BatchState:
    if batch.processing_status == "in_progress":
        return BatchState.RUNNING
    if batch.processing_status == "canceling":
        return BatchState.CANCELLING
    if batch.cancel_initiated_at is not None:
        return BatchState.CANCELLED
    if batch.request_counts.expired:
        return BatchState.EXPIRED
    return BatchState.ENDED


def _total(batch: MessageBatch) -> int:
    counts = batch.request_counts
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired


def batch_status(batch: MessageBatch) -> BatchStatus:
    """A Message Batch as a ``BatchStatus`` (Anthropic batches never fail as a whole)."""
    counts = batch.request_counts
    return BatchStatus(
        state=_state(batch),
        provider_state=batch.processing_status,
        total=_total(batch),
        succeeded=counts.succeeded,
        failed=counts.errored + counts.canceled + counts.expired,
    )


class AnthropicBatchProvider(Provider):
    """Anthropic Message Batches: requests inline in the create call, no tag on the batch."""

    name = "anthropic"
    limits = ANTHROPIC_LIMITS
    endpoints = frozenset({ENDPOINT})

    def __init__(
        self, settings: ProviderSettings, *, client: anthropic.AsyncAnthropic | None = None
    ) -> None:
        self._client = client or anthropic.AsyncAnthropic(
            base_url=settings.base_url,
            api_key=settings.api_key.get_secret_value(),
            max_retries=settings.max_retries,
            timeout=settings.timeout_s,
        )
        # Batch creation is never retried by the SDK: a create whose answer was lost may
        # have made a billed batch, so the caller looks for it with find() first. The copy
        # shares the client's connection pool.
        self._create_client = self._client.with_options(max_retries=0)
        self.malformed_lines = 0

    @contextlib.contextmanager
    def _sdk_errors(self, *, creating: bool = False) -> Iterator[None]:
        """Re-raise an ``anthropic`` error from the block as the project's ``ProviderError``."""
        try:
            yield
        except anthropic.AnthropicError as exc:
            raise to_provider_error(exc, self.name, creating=creating) from exc

    async def submit(self, tag: str, items: Sequence[BatchItem]) -> BatchHandle:
        """Create the batch with every request inline (once; see ``Provider.submit``)."""
        if not items:
            raise BatchRejected("a batch needs at least one request", provider=self.name)
        requests = [{"custom_id": item.custom_id, "params": request_params(item)} for item in items]
        with self._sdk_errors(creating=True):
            batch = await self._create_client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        return BatchHandle(
            provider=self.name,
            batch_id=batch.id,
            tag=tag,
            created_at=batch.created_at.timestamp(),
            extra={"count": len(items)},
        )

    async def poll(self, handle: BatchHandle) -> BatchStatus:
        """The batch's processing status and request counts."""
        with self._sdk_errors():
            return batch_status(await self._client.messages.batches.retrieve(handle.batch_id))

    async def results(self, handle: BatchHandle) -> AsyncIterator[Outcome]:
        """Every line of the batch's results file."""
        # The SDK's own JSONL decoder stops at the first malformed line and reads 64-byte
        # chunks; the streamed raw response gives its byte chunks, cut into lines here.
        with self._sdk_errors():
            async with self._client.messages.batches.with_streaming_response.results(
                handle.batch_id
            ) as response:
                async for outcome in outcomes_from_lines(
                    lines_of(response.iter_bytes()),
                    anthropic_outcome,
                    source=f"results of {handle.batch_id}",
                    on_malformed=self._count_malformed,
                ):
                    yield outcome

    async def cancel(self, handle: BatchHandle) -> None:
        """Ask for cancellation; a batch that already ended counts as cancelled."""
        try:
            with self._sdk_errors():
                await self._client.messages.batches.cancel(handle.batch_id)
        except ProviderError as error:
            if not await self._already_final(error, handle):
                raise

    async def find(
        self,
        tag: str,
        *,
        created_after: float | None = None,
        expected_count: int | None = None,
        custom_ids: frozenset[str] | None = None,
    ) -> BatchHandle | None:
        """The batch holding exactly ``custom_ids``, created at or after ``created_after``.

        Candidates: batches created since ``created_after`` (less clock slack) with
        ``len(custom_ids)`` requests (``expected_count`` is not needed). The newest candidate
        whose results list exactly ``custom_ids`` is adopted, unless a newer candidate has not
        ended: that one could be the batch, so ``ReconcilePending`` is raised. Without
        ``created_after`` or ``custom_ids`` nothing can be verified, so nothing is found.
        """
        if created_after is None or not custom_ids:
            return None
        pending: list[str] = []
        for batch in await self._candidates(created_after - FIND_CLOCK_SLACK_S, len(custom_ids)):
            if batch.processing_status != "ended":
                pending.append(batch.id)
            elif await self._holds_exactly(batch.id, custom_ids):
                if pending:
                    break
                return BatchHandle(
                    provider=self.name,
                    batch_id=batch.id,
                    tag=tag,
                    created_at=batch.created_at.timestamp(),
                    extra={"count": len(custom_ids)},
                )
        if pending:
            raise ReconcilePending(
                f"tag {tag}: candidate batches {pending} have not ended; their results will "
                "show whether one of them is this batch",
                provider=self.name,
            )
        return None

    async def _candidates(self, since: float, count: int) -> list[MessageBatch]:
        """Batches created at or after ``since`` with ``count`` requests, newest first."""
        found = []
        with self._sdk_errors():
            async for batch in self._client.messages.batches.list(limit=100):
                if batch.created_at.timestamp() < since:
                    break
                if _total(batch) == count:
                    found.append(batch)
        return found

    async def _holds_exactly(self, batch_id: str, custom_ids: frozenset[str]) -> bool:
        """Whether an ended batch's results list exactly ``custom_ids`` (read until a foreign one)."""
        with self._sdk_errors():
            async with self._client.messages.batches.with_streaming_response.results(
                batch_id
            ) as response:
                return await lists_exactly(response.iter_lines(), custom_ids)

    async def complete(self, item: BatchItem) -> Outcome:
        """One synchronous Messages call; every failure becomes an outcome."""
        rest = {key: value for key, value in item.body.items() if key != "stream"}
        try:
            max_tokens = rest.pop("max_tokens")
            messages = rest.pop("messages")
            rest.pop("model", None)
            with self._sdk_errors():
                response = await self._client.messages.with_raw_response.create(
                    model=item.model, max_tokens=max_tokens, messages=messages, extra_body=rest
                )
        except ProviderError as error:
            return error_outcome(item.custom_id, error)
        except (KeyError, TypeError, ValueError) as exc:
            return refused_by_client(item.custom_id, exc)
        try:
            with self._sdk_errors():
                result = json.loads(await response.read())
        except (ProviderError, ValueError) as exc:
            return undecodable(item.custom_id, exc, code="api_error")
        return Outcome(
            item.custom_id, OutcomeKind.SUCCEEDED, body=result, usage=anthropic_usage(result)
        )

    async def aclose(self) -> None:
        """Close the SDK client (the create copy shares its connection pool)."""
        await self._client.close()
