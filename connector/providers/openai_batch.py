"""OpenAI Batch API adapter on ``openai.AsyncOpenAI``."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import IO, Any

import openai

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
    error_for_status,
)
from connector.providers.jsonl import outcomes_from_lines
from connector.providers.limits import OPENAI_LIMITS
from connector.providers.outcomes import (
    failure,
    openai_error_fields,
    openai_outcome,
    openai_usage,
    parse_retry_after,
    refused_by_client,
)

log = logging.getLogger(__name__)

TAG_METADATA_KEY = "batchbridge_batch_id"
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")

_STATES = {
    "validating": BatchState.PENDING,
    "in_progress": BatchState.RUNNING,
    "finalizing": BatchState.RUNNING,
    "cancelling": BatchState.CANCELLING,
    "completed": BatchState.ENDED,
    "failed": BatchState.FAILED,
    "expired": BatchState.EXPIRED,
    "cancelled": BatchState.CANCELLED,
}

# A 429 on create with one of these codes is a quota, not a rate limit: the organisation is
# out of credit or over its enqueued-token limit for the model.
QUOTA_CODES = frozenset({"insufficient_quota", "token_limit_exceeded"})
# A batch that FAILED with one of these codes was refused for quota after its upload.
QUOTA_BATCH_ERRORS = frozenset({"token_limit_exceeded", "insufficient_quota"})

# list() is newest first; a batch created this long before ``created_after`` still counts,
# to absorb clock skew between this host and the provider.
FIND_CLOCK_SLACK_S = 300.0


def encode_line(item: BatchItem) -> bytes:
    """One line of the batch input file."""
    line = {
        "custom_id": item.custom_id,
        "method": "POST",
        "url": item.endpoint,
        "body": {**item.body, "model": item.model},
    }
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _write_input(file: IO[bytes], items: Sequence[BatchItem]) -> None:
    file.writelines(encode_line(item) for item in items)
    file.seek(0)


def _to_provider_error(exc: openai.OpenAIError, *, creating: bool = False) -> ProviderError:
    if isinstance(exc, openai.APIStatusError):
        code, message = openai_error_fields(exc.body)
        return error_for_status(
            "openai",
            message or str(exc),
            status=exc.status_code,
            code=code,
            retry_after=parse_retry_after(exc.response.headers),
            creating=creating,
            quota=creating and exc.status_code == 429 and code in QUOTA_CODES,
        )
    if isinstance(exc, openai.APIConnectionError):
        return error_for_status("openai", str(exc), status=None, code="connection_error")
    if creating:
        # A create that failed any other way (say, on its response) may have made a batch.
        return ProviderUnavailable(str(exc), provider="openai", code=type(exc).__name__)
    return ProviderError(str(exc), provider="openai")


class OpenAIBatchProvider(Provider):
    name = "openai"
    limits = OPENAI_LIMITS

    def __init__(
        self, settings: ProviderSettings, *, client: openai.AsyncOpenAI | None = None
    ) -> None:
        self._client = client or openai.AsyncOpenAI(
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

    async def submit(self, tag: str, items: Sequence[BatchItem]) -> BatchHandle:
        if not items:
            raise BatchRejected("a batch needs at least one request", provider=self.name)
        endpoints = {item.endpoint for item in items}
        models = {item.model for item in items}
        if len(endpoints) != 1 or len(models) != 1:
            raise BatchRejected(
                f"one model and one endpoint per batch, got {sorted(models)} / {sorted(endpoints)}",
                provider=self.name,
            )
        endpoint = endpoints.pop()
        # A temporary file, not bytes: a 200 MB input must not sit in memory twice.
        with tempfile.TemporaryFile() as input_file:
            await asyncio.to_thread(_write_input, input_file, items)
            try:
                # The upload keeps the SDK's retries: a file uploaded twice is not a batch
                # and costs nothing.
                uploaded = await self._client.files.create(
                    file=(f"batchbridge-{tag}.jsonl", input_file, "application/jsonl"),
                    purpose="batch",
                )
            except openai.OpenAIError as exc:
                raise _to_provider_error(exc, creating=True) from exc
        try:
            batch = await self._create_client.batches.create(
                input_file_id=uploaded.id,
                endpoint=endpoint,  # type: ignore[arg-type]
                completion_window="24h",
                metadata={TAG_METADATA_KEY: tag},
            )
        except openai.OpenAIError as exc:
            error = _to_provider_error(exc, creating=True)
            if not isinstance(error, ProviderUnavailable):
                # Refused: no batch reads the file. Otherwise a batch may exist that needs it.
                await self._delete_file(uploaded.id)
            raise error from exc
        return BatchHandle(
            provider=self.name,
            batch_id=batch.id,
            tag=tag,
            created_at=float(batch.created_at),
            extra={"input_file_id": uploaded.id},
        )

    async def _delete_file(self, file_id: str) -> None:
        try:
            await self._client.files.delete(file_id)
        except openai.OpenAIError:
            log.warning("could not delete orphaned input file %s", file_id, exc_info=True)

    async def _retrieve(self, batch_id: str) -> Any:
        try:
            return await self._client.batches.retrieve(batch_id)
        except openai.OpenAIError as exc:
            raise _to_provider_error(exc) from exc

    async def poll(self, handle: BatchHandle) -> BatchStatus:
        batch = await self._retrieve(handle.batch_id)
        counts = batch.request_counts
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        error = errors[0] if errors else None
        state = _STATES.get(batch.status, BatchState.RUNNING)
        return BatchStatus(
            state=state,
            provider_state=batch.status,
            total=counts.total if counts else 0,
            succeeded=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            error_code=error.code if error else None,
            error_message=error.message if error else None,
            quota_exceeded=state is BatchState.FAILED
            and any(e.code in QUOTA_BATCH_ERRORS for e in errors),
        )

    async def results(self, handle: BatchHandle) -> AsyncIterator[Outcome]:
        batch = await self._retrieve(handle.batch_id)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                async for outcome in self._read_file(file_id):
                    yield outcome

    async def _read_file(self, file_id: str) -> AsyncIterator[Outcome]:
        try:
            async with self._client.files.with_streaming_response.content(file_id) as response:
                async for outcome in outcomes_from_lines(
                    response.iter_lines(),
                    openai_outcome,
                    source=f"OpenAI file {file_id}",
                    on_malformed=self._count_malformed,
                ):
                    yield outcome
        except openai.OpenAIError as exc:
            raise _to_provider_error(exc) from exc

    async def cancel(self, handle: BatchHandle) -> None:
        try:
            await self._client.batches.cancel(handle.batch_id)
        except openai.APIStatusError as exc:
            # Cancelling a batch that already ended is refused; that is success here.
            if exc.status_code in (400, 409) and (await self.poll(handle)).state.is_final:
                return
            raise _to_provider_error(exc) from exc
        except openai.OpenAIError as exc:
            raise _to_provider_error(exc) from exc

    async def find(
        self,
        tag: str,
        *,
        created_after: float | None = None,
        expected_count: int | None = None,
        custom_ids: frozenset[str] | None = None,
    ) -> BatchHandle | None:
        """The newest batch whose metadata carries ``tag``; the tag alone is exact."""
        try:
            async for batch in self._client.batches.list(limit=100):
                if (
                    created_after is not None
                    and batch.created_at < created_after - FIND_CLOCK_SLACK_S
                ):
                    return None
                if (batch.metadata or {}).get(TAG_METADATA_KEY) == tag:
                    return BatchHandle(
                        provider=self.name,
                        batch_id=batch.id,
                        tag=tag,
                        created_at=float(batch.created_at),
                        extra={"input_file_id": batch.input_file_id},
                    )
        except openai.OpenAIError as exc:
            raise _to_provider_error(exc) from exc
        return None

    async def complete(self, item: BatchItem) -> Outcome:
        body = {
            key: value
            for key, value in item.body.items()
            if key not in ("stream", "stream_options")
        }
        body["model"] = item.model
        try:
            response = await self._create(item.endpoint, body)
        except openai.APIStatusError as exc:
            code, message = openai_error_fields(exc.body)
            return failure(
                item.custom_id,
                status=exc.status_code,
                code=code,
                message=message or str(exc),
                retry_after=parse_retry_after(exc.response.headers),
            )
        except openai.APIConnectionError as exc:
            return failure(item.custom_id, code="connection_error", message=str(exc))
        except openai.OpenAIError as exc:
            return failure(item.custom_id, code=type(exc).__name__, message=str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            return refused_by_client(item.custom_id, exc)
        try:
            result = json.loads(response.content)
        except ValueError as exc:
            return failure(
                item.custom_id, code="server_error", message=f"undecodable response: {exc}"
            )
        return Outcome(
            item.custom_id, OutcomeKind.SUCCEEDED, body=result, usage=openai_usage(result)
        )

    async def _create(self, endpoint: str, body: dict[str, Any]) -> Any:
        """Call the synchronous endpoint with the body sent as it is (unknown fields too)."""
        rest = dict(body)
        model = rest.pop("model")
        if endpoint == "/v1/chat/completions":
            messages = rest.pop("messages")
            return await self._client.chat.completions.with_raw_response.create(
                model=model, messages=messages, extra_body=rest
            )
        if endpoint == "/v1/responses":
            return await self._client.responses.with_raw_response.create(
                model=model, extra_body=rest
            )
        if endpoint == "/v1/embeddings":
            embed_input = rest.pop("input")
            # The SDK asks for base64 when no format is given; the API's default is float.
            encoding_format = rest.pop("encoding_format", "float")
            return await self._client.embeddings.with_raw_response.create(
                model=model, input=embed_input, encoding_format=encoding_format, extra_body=rest
            )
        raise ValueError(f"unsupported OpenAI endpoint {endpoint!r}; expected one of {ENDPOINTS}")

    async def aclose(self) -> None:
        await self._client.close()
