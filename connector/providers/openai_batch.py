"""OpenAI Batch API adapter on ``openai.AsyncOpenAI``, and the providers that speak its API.

``OpenAIBatchProvider`` serves OpenAI itself and, under an operator's name, any provider
with OpenAI's files + batches API (``openai_compatible``: Groq, Together, …).
``AzureOpenAIBatchProvider`` is the same adapter on ``AsyncAzureOpenAI``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import IO, Any

import openai
import orjson
from openai.types import Batch

from connector.config import NamedProviderSettings, ProviderSettings
from connector.providers.base import (
    BatchHandle,
    BatchItem,
    BatchState,
    BatchStatus,
    Outcome,
    OutcomeKind,
    Provider,
    ProviderLimits,
)
from connector.providers.exceptions import (
    BatchRejected,
    ProviderError,
    ProviderUnavailable,
    error_for_status,
)
from connector.providers.jsonl import lines_of, outcomes_from_lines
from connector.providers.limits import OPENAI_LIMITS, named_limits
from connector.providers.outcomes import (
    error_outcome,
    openai_error_fields,
    openai_outcome,
    openai_usage,
    parse_retry_after,
    refused_by_client,
    undecodable,
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


def encode_line(item: BatchItem, url: str | None = None) -> bytes:
    """One line of the batch input file; ``url`` is the endpoint as the provider spells it."""
    line = {
        "custom_id": item.custom_id,
        "method": "POST",
        "url": url or item.endpoint,
        "body": {**item.body, "model": item.model},
    }
    return orjson.dumps(line) + b"\n"


def _write_input(file: IO[bytes], items: Sequence[BatchItem], url: str) -> None:
    file.writelines(encode_line(item, url) for item in items)
    file.seek(0)


_FILE_PREFIX, _FILE_SUFFIX = "batchbridge-", ".jsonl"


def input_file_name(tag: str) -> str:
    """The name the input file is uploaded under; ``find`` reads the tag back from it."""
    return f"{_FILE_PREFIX}{tag}{_FILE_SUFFIX}"


def to_provider_error(
    exc: openai.OpenAIError, provider: str, *, creating: bool = False
) -> ProviderError:
    """The project error for an ``openai`` SDK error (``creating``: see ``error_for_status``)."""
    if isinstance(exc, openai.APIStatusError):
        code, message = openai_error_fields(exc.body)
        return error_for_status(
            provider,
            message or str(exc),
            status=exc.status_code,
            code=code,
            retry_after=parse_retry_after(exc.response.headers),
            creating=creating,
            quota=creating and exc.status_code == 429 and code in QUOTA_CODES,
        )
    if isinstance(exc, openai.APIConnectionError):
        return error_for_status(provider, str(exc), status=None, code="connection_error")
    if creating:
        # A create that failed any other way (say, on its response) may have made a batch.
        return ProviderUnavailable(str(exc), provider=provider, code=type(exc).__name__)
    return ProviderError(str(exc), provider=provider, code=type(exc).__name__)


def batch_status(batch: Batch) -> BatchStatus:
    """An OpenAI batch object as a ``BatchStatus``."""
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


class OpenAIBatchProvider(Provider):
    """The OpenAI Batch API: a JSONL file upload, then a batch tagged through its metadata.

    ``name``, ``limits``, ``endpoints`` and ``completion_window`` default to OpenAI's own;
    ``named`` builds the same adapter for an ``openai_compatible`` provider.
    """

    name = "openai"
    limits = OPENAI_LIMITS
    endpoints = frozenset(ENDPOINTS)

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        client: openai.AsyncOpenAI | None = None,
        name: str | None = None,
        limits: ProviderLimits | None = None,
        endpoints: frozenset[str] | None = None,
        completion_window: str = "24h",
    ) -> None:
        self.name = name or self.name
        self.limits = limits or self.limits
        self.endpoints = endpoints or self.endpoints
        self.completion_window = completion_window
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

    @classmethod
    def named(cls, name: str, settings: NamedProviderSettings) -> OpenAIBatchProvider:
        """The adapter for an operator-declared provider of this kind."""
        return cls(
            settings,
            client=cls._client_for(settings),
            name=name,
            limits=named_limits(settings.max_requests, settings.max_bytes),
            endpoints=frozenset(settings.endpoints),
            completion_window=settings.completion_window,
        )

    @staticmethod
    def _client_for(settings: NamedProviderSettings) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key.get_secret_value(),
            max_retries=settings.max_retries,
            timeout=settings.timeout_s,
        )

    def wire_endpoint(self, endpoint: str) -> str:
        """The batch endpoint as this provider spells it (OpenAI: as the connector does)."""
        return endpoint

    @contextlib.contextmanager
    def _sdk_errors(self, *, creating: bool = False) -> Iterator[None]:
        """Re-raise an ``openai`` error from the block as the project's ``ProviderError``."""
        try:
            yield
        except openai.OpenAIError as exc:
            raise to_provider_error(exc, self.name, creating=creating) from exc

    async def submit(self, tag: str, items: Sequence[BatchItem]) -> BatchHandle:
        """Upload the input file, then create the batch (once; see ``Provider.submit``)."""
        endpoint = self.wire_endpoint(self._endpoint_of(items))
        # A temporary file, not bytes: a 200 MB input must not sit in memory twice.
        with tempfile.TemporaryFile() as input_file:
            await asyncio.to_thread(_write_input, input_file, items, endpoint)
            # The upload keeps the SDK's retries: a file uploaded twice is not a batch.
            with self._sdk_errors(creating=True):
                uploaded = await self._client.files.create(
                    file=(input_file_name(tag), input_file, "application/jsonl"),
                    purpose="batch",
                )
        try:
            with self._sdk_errors(creating=True):
                batch = await self._create_client.batches.create(
                    input_file_id=uploaded.id,
                    endpoint=endpoint,  # type: ignore[arg-type]
                    completion_window=self.completion_window,  # type: ignore[arg-type]
                    metadata={TAG_METADATA_KEY: tag},
                )
        except ProviderError as error:
            if not isinstance(error, ProviderUnavailable):
                # Refused: no batch reads the file. Otherwise a batch may exist that needs it.
                await self._delete_file(uploaded.id)
            raise
        return BatchHandle(
            provider=self.name,
            batch_id=batch.id,
            tag=tag,
            created_at=float(batch.created_at),
            extra={"input_file_id": uploaded.id},
        )

    def _endpoint_of(self, items: Sequence[BatchItem]) -> str:
        """The one endpoint of a valid batch; ``BatchRejected`` for anything else."""
        if not items:
            raise BatchRejected("a batch needs at least one request", provider=self.name)
        endpoints = {item.endpoint for item in items}
        models = {item.model for item in items}
        if len(endpoints) != 1 or len(models) != 1:
            raise BatchRejected(
                f"one model and one endpoint per batch, got {sorted(models)} / {sorted(endpoints)}",
                provider=self.name,
            )
        return endpoints.pop()

    async def _delete_file(self, file_id: str) -> None:
        try:
            await self._client.files.delete(file_id)
        except openai.OpenAIError:
            log.warning("could not delete orphaned input file %s", file_id, exc_info=True)

    async def poll(self, handle: BatchHandle) -> BatchStatus:
        """The batch's state, counts and batch-level error."""
        with self._sdk_errors():
            return batch_status(await self._client.batches.retrieve(handle.batch_id))

    async def results(self, handle: BatchHandle) -> AsyncIterator[Outcome]:
        """Every line of the output file, then of the error file (either may be missing)."""
        with self._sdk_errors():
            batch = await self._client.batches.retrieve(handle.batch_id)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                async for outcome in self._read_file(file_id):
                    yield outcome

    async def _read_file(self, file_id: str) -> AsyncIterator[Outcome]:
        with self._sdk_errors():
            async with self._client.files.with_streaming_response.content(file_id) as response:
                async for outcome in outcomes_from_lines(
                    lines_of(response.iter_bytes()),
                    openai_outcome,
                    source=f"{self.name} file {file_id}",
                    on_malformed=self._count_malformed,
                ):
                    yield outcome

    async def cancel(self, handle: BatchHandle) -> None:
        """Ask for cancellation; a batch that already ended counts as cancelled."""
        try:
            with self._sdk_errors():
                await self._client.batches.cancel(handle.batch_id)
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
        """The newest batch tagged ``tag``; the tag alone is exact.

        The tag is the batch's metadata entry or, on a provider that drops metadata, the
        name of its input file.
        """
        with self._sdk_errors():
            async for batch in self._client.batches.list(limit=100):
                if (
                    created_after is not None
                    and batch.created_at < created_after - FIND_CLOCK_SLACK_S
                ):
                    return None
                if await self._tag_of(batch) == tag:
                    return BatchHandle(
                        provider=self.name,
                        batch_id=batch.id,
                        tag=tag,
                        created_at=float(batch.created_at),
                        extra={"input_file_id": batch.input_file_id},
                    )
        return None

    async def _tag_of(self, batch: Batch) -> str | None:
        """The connector tag a batch carries, if any."""
        tag = (batch.metadata or {}).get(TAG_METADATA_KEY)
        if tag is not None or batch.metadata:
            return tag  # tagged, or someone else's batch
        try:
            file = await self._client.files.retrieve(batch.input_file_id)
        except openai.NotFoundError:  # expired input files are deleted
            return None
        name = file.filename
        if name.startswith(_FILE_PREFIX) and name.endswith(_FILE_SUFFIX):
            return name.removeprefix(_FILE_PREFIX).removesuffix(_FILE_SUFFIX)
        return None

    async def complete(self, item: BatchItem) -> Outcome:
        """One synchronous call; every failure becomes an outcome."""
        body = {
            key: value
            for key, value in item.body.items()
            if key not in ("stream", "stream_options")
        }
        body["model"] = item.model
        try:
            with self._sdk_errors():
                response = await self._create(item.endpoint, body)
        except ProviderError as error:
            return error_outcome(item.custom_id, error)
        except (KeyError, TypeError, ValueError) as exc:
            return refused_by_client(item.custom_id, exc)
        try:
            result = json.loads(response.content)
        except ValueError as exc:
            return undecodable(item.custom_id, exc, code="server_error")
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
        """Close the SDK client (the create copy shares its connection pool)."""
        await self._client.close()


class AzureOpenAIBatchProvider(OpenAIBatchProvider):
    """Azure OpenAI (Global) Batch on ``AsyncAzureOpenAI``.

    A request's ``model`` is the deployment name, which is what Azure expects in each
    batch line's ``body.model`` and what the SDK puts in the synchronous call's path. Azure
    spells batch endpoints without the ``/v1`` prefix (``/chat/completions``).
    """

    @staticmethod
    def _client_for(settings: NamedProviderSettings) -> openai.AsyncOpenAI:
        return openai.AsyncAzureOpenAI(
            azure_endpoint=settings.base_url or "",
            api_version=settings.api_version,
            api_key=settings.api_key.get_secret_value(),
            max_retries=settings.max_retries,
            timeout=settings.timeout_s,
        )

    def wire_endpoint(self, endpoint: str) -> str:
        """``/v1/chat/completions`` → ``/chat/completions``."""
        return endpoint.removeprefix("/v1")
