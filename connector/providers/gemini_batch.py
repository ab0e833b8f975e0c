"""Gemini batch mode adapter on ``google.genai.Client(...).aio``.

Requests travel inline while the batch stays under the inline limit, else as an uploaded
JSONL file. Inline requests go through the SDK's typed ``InlinedRequest``, which has no
room for REST fields the SDK does not model; a batch with such a body takes the file
route, where each request line is the REST body exactly as given.

Result files are read with ``files.download(destination=...)``: the SDK streams the body
in 1 MB chunks into any object with an (awaitable) ``write``. A bounded queue in between
turns that push into the pull of ``results``, so a 2 GB result file never sits in memory
and the download still uses the SDK's own HTTP client, auth and base URL. Inline results
arrive inside the batch job resource itself and are bounded by the inline input limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import IO, Any

import aiohttp
import httpx2
import orjson
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

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
from connector.providers.limits import GEMINI_LIMITS
from connector.providers.outcomes import (
    error_outcome,
    gemini_error_fields,
    gemini_outcome,
    parse_retry_after,
    refused_by_client,
)

log = logging.getLogger(__name__)

ENDPOINT = "generateContent"

_STATES = {
    "JOB_STATE_UNSPECIFIED": BatchState.PENDING,
    "JOB_STATE_QUEUED": BatchState.PENDING,
    "JOB_STATE_PENDING": BatchState.PENDING,
    "JOB_STATE_PAUSED": BatchState.PENDING,
    "JOB_STATE_RUNNING": BatchState.RUNNING,
    "JOB_STATE_UPDATING": BatchState.RUNNING,
    "JOB_STATE_SUCCEEDED": BatchState.ENDED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": BatchState.ENDED,
    "JOB_STATE_FAILED": BatchState.FAILED,
    "JOB_STATE_CANCELLING": BatchState.CANCELLING,
    "JOB_STATE_CANCELLED": BatchState.CANCELLED,
    "JOB_STATE_EXPIRED": BatchState.EXPIRED,
}

# REST GenerateContentRequest fields that GenerateContentConfig carries beside generationConfig.
_CONFIG_FIELDS = (
    "systemInstruction",
    "safetySettings",
    "tools",
    "toolConfig",
    "cachedContent",
    "labels",
)
_REQUEST_FIELDS = frozenset({"contents", "generationConfig", "model", *_CONFIG_FIELDS})

# A job created this long before ``created_after`` still counts, to absorb clock skew
# between this host and the provider.
FIND_CLOCK_SLACK_S = 300.0

_SDK_ONLY_FIELDS = {"sdk_http_response", "automatic_function_calling_history", "parsed"}
_DOWNLOAD_QUEUE_CHUNKS = 4  # of the SDK's 1 MB chunks: the memory bound of a download
_CONNECTION_ERRORS = (aiohttp.ClientError, httpx2.TransportError, TimeoutError, OSError)
# A response the SDK cannot read is a ValueError, but the server's doing, not the request's.
_SDK_ERRORS = (genai_errors.APIError, genai_errors.UnknownApiResponseError, *_CONNECTION_ERRORS)
# Batch creation is never retried by the SDK: a create whose answer was lost may have made a
# billed job, so the caller looks for it with find() first. Per-call retry options replace
# the client's (and switch off the SDK's implicit retry of a dropped aiohttp connection).
_ONE_ATTEMPT = types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1))


def model_name(model: str) -> str:
    """The SDK's model resource name for a bare model id."""
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


def encode_line(item: BatchItem) -> bytes:
    """One line of the batch input file."""
    line = {"key": item.custom_id, "request": item.body}
    return orjson.dumps(line) + b"\n"


def sdk_request(body: dict[str, Any]) -> tuple[Any, types.GenerateContentConfig] | None:
    """``(contents, config)`` for the SDK from a REST GenerateContentRequest.

    None when the body has fields the SDK cannot carry.
    """
    if not set(body) <= _REQUEST_FIELDS or "contents" not in body:
        return None
    config_fields = dict(body.get("generationConfig") or {})
    config_fields.update({key: body[key] for key in _CONFIG_FIELDS if key in body})
    try:
        return body["contents"], types.GenerateContentConfig.model_validate(config_fields)
    except pydantic.ValidationError:
        return None


def response_json(response: pydantic.BaseModel) -> dict[str, Any]:
    """An SDK response as REST JSON (camelCase, unset fields left out, SDK-only fields dropped)."""
    return response.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude=_SDK_ONLY_FIELDS
    )


def _write_input(file: IO[bytes], items: Sequence[BatchItem]) -> None:
    file.writelines(encode_line(item) for item in items)
    file.seek(0)


def _api_error_fields(
    exc: genai_errors.APIError,
) -> tuple[int | None, str | None, str | None, float | None]:
    _, status_name, message = gemini_error_fields(exc.details)
    headers = getattr(exc.response, "headers", None)
    return exc.code, status_name or exc.status, message or exc.message, parse_retry_after(headers)


def to_provider_error(exc: Exception, provider: str, *, creating: bool = False) -> ProviderError:
    """The project error for a google-genai error or a transport error under it."""
    if isinstance(exc, genai_errors.APIError):
        status, code, message, retry_after = _api_error_fields(exc)
        return error_for_status(
            provider,
            message or str(exc),
            status=status,
            code=code,
            retry_after=retry_after,
            creating=creating,
            # Gemini says RESOURCE_EXHAUSTED (429) for a batch quota and a rate limit alike;
            # on create both mean "not now, and not soon".
            quota=creating and (status == 429 or code == "RESOURCE_EXHAUSTED"),
        )
    if isinstance(exc, _CONNECTION_ERRORS):
        return error_for_status(
            provider, str(exc) or type(exc).__name__, status=None, code="connection_error"
        )
    if creating:
        # A create that failed any other way (say, on its response) may have made a batch.
        return ProviderUnavailable(str(exc), provider=provider, code=type(exc).__name__)
    return ProviderError(str(exc), provider=provider, code=type(exc).__name__)


def job_status(job: types.BatchJob, submitted: int | None) -> BatchStatus:
    """A job as a ``BatchStatus``; ``submitted`` is the request count the job was created with."""
    provider_state = job.state.value if job.state else "JOB_STATE_UNSPECIFIED"
    # The Gemini Developer API's job carries no counts or error through the SDK
    # (only Vertex fills completion_stats / error); the total is what was submitted.
    stats = job.completion_stats
    succeeded = (stats.successful_count or 0) if stats else 0
    failed = (stats.failed_count or 0) if stats else 0
    state = _STATES.get(provider_state, BatchState.RUNNING)
    error = job.error
    return BatchStatus(
        state=state,
        provider_state=provider_state,
        total=int(submitted or succeeded + failed),
        succeeded=succeeded,
        failed=failed,
        error_code=str(error.code) if error and error.code is not None else None,
        error_message=error.message if error else None,
        quota_exceeded=state is BatchState.FAILED and _is_quota_error(error),
    )


def _is_quota_error(error: types.JobError | None) -> bool:
    """A job error that is a quota: RESOURCE_EXHAUSTED, as a google.rpc.Code (8) or HTTP 429.

    Only Vertex fills a job's error through the SDK; the Developer API's job resource as
    google-genai parses it has none, and refuses quota at create instead.
    """
    if error is None:
        return False
    return error.code in (8, 429) or "RESOURCE_EXHAUSTED" in (error.message or "")


class _ChunkQueue:
    """A download destination whose awaitable ``write`` hands chunks to a bounded queue."""

    def __init__(self, queue: asyncio.Queue[bytes | BaseException | None]) -> None:
        self._queue = queue

    async def write(self, chunk: bytes) -> None:
        """Hand one downloaded chunk to the reader (waits while the queue is full)."""
        await self._queue.put(chunk)


def _file_line_outcome(record: dict[str, Any]) -> Outcome:
    return gemini_outcome(
        str(record["key"]), record.get("response"), record.get("error") or record.get("status")
    )


class GeminiBatchProvider(Provider):
    """Gemini batch mode: inline requests while they fit, else an uploaded JSONL file."""

    name = "gemini"
    limits = GEMINI_LIMITS
    endpoints = frozenset({ENDPOINT})

    def __init__(self, settings: ProviderSettings, *, client: genai.Client | None = None) -> None:
        client = client or genai.Client(
            api_key=settings.api_key.get_secret_value(),
            http_options=types.HttpOptions(
                base_url=settings.base_url,
                timeout=int(settings.timeout_s * 1000),
                retry_options=types.HttpRetryOptions(attempts=settings.max_retries + 1),
            ),
        )
        self._client = client.aio
        self.malformed_lines = 0

    @contextlib.contextmanager
    def _sdk_errors(self, *, creating: bool = False) -> Iterator[None]:
        """Re-raise a google-genai or transport error from the block as a ``ProviderError``."""
        try:
            yield
        except _SDK_ERRORS as exc:
            raise to_provider_error(exc, self.name, creating=creating) from exc

    async def submit(self, tag: str, items: Sequence[BatchItem]) -> BatchHandle:
        """Create the job, inline or from an uploaded file (once; see ``Provider.submit``)."""
        if not items:
            raise BatchRejected("a batch needs at least one request", provider=self.name)
        models = {model_name(item.model) for item in items}
        if len(models) != 1:
            raise BatchRejected(f"one model per batch, got {sorted(models)}", provider=self.name)
        model = models.pop()
        inline = self._inline_requests(items)
        config = types.CreateBatchJobConfig(display_name=tag, http_options=_ONE_ATTEMPT)
        with self._sdk_errors(creating=True):
            if inline is not None:
                job = await self._client.batches.create(model=model, src=inline, config=config)
            else:
                job = await self._create_from_file(tag, model, items, config)
        if not job.name:
            raise ProviderUnavailable("the job was created without a name", provider=self.name)
        return BatchHandle(
            provider=self.name,
            batch_id=job.name,
            tag=tag,
            created_at=job.create_time.timestamp() if job.create_time else None,
            extra={"count": len(items), "inline": inline is not None},
        )

    def _inline_requests(self, items: Sequence[BatchItem]) -> list[types.InlinedRequest] | None:
        """The SDK's inline requests, or None when the batch must go by file."""
        inline_max = self.limits.inline_max_bytes or 0
        if sum(len(encode_line(item)) for item in items) > inline_max:
            return None
        requests = []
        for item in items:
            converted = sdk_request(item.body)
            if converted is None:
                return None
            contents, config = converted
            try:
                request = types.InlinedRequest(
                    contents=contents, config=config, metadata={"key": item.custom_id}
                )
            except pydantic.ValidationError:
                # The file route sends the body as given; the provider answers for it alone.
                return None
            requests.append(request)
        return requests

    async def _create_from_file(
        self, tag: str, model: str, items: Sequence[BatchItem], config: types.CreateBatchJobConfig
    ) -> types.BatchJob:
        with tempfile.TemporaryFile() as input_file:
            await asyncio.to_thread(_write_input, input_file, items)
            # The upload keeps the SDK's retries: a file uploaded twice is not a batch.
            uploaded = await self._client.files.upload(
                file=input_file,
                config=types.UploadFileConfig(mime_type="jsonl", display_name=tag),
            )
        return await self._client.batches.create(model=model, src=uploaded.name, config=config)  # type: ignore[arg-type]

    async def _get(self, batch_id: str) -> types.BatchJob:
        with self._sdk_errors():
            return await self._client.batches.get(name=batch_id)

    async def poll(self, handle: BatchHandle) -> BatchStatus:
        """The job's state (counts only where the API reports them)."""
        return job_status(await self._get(handle.batch_id), handle.extra.get("count"))

    async def results(self, handle: BatchHandle) -> AsyncIterator[Outcome]:
        """Inline responses from the job itself, or the lines of its result file."""
        job = await self._get(handle.batch_id)
        dest = job.dest
        if dest is None:
            return
        for index, inlined in enumerate(dest.inlined_responses or ()):
            key = (inlined.metadata or {}).get("key")
            if not key:
                self.malformed_lines += 1
                log.warning("inline response %d of %s has no key; skipped", index, handle.batch_id)
                continue
            yield gemini_outcome(
                key,
                response_json(inlined.response) if inlined.response else None,
                inlined.error.model_dump(mode="json", exclude_none=True) if inlined.error else None,
            )
        if dest.file_name:
            async for outcome in self._read_file(dest.file_name):
                yield outcome

    async def _read_file(self, file_name: str) -> AsyncIterator[Outcome]:
        async for outcome in outcomes_from_lines(
            self._download_lines(file_name),
            _file_line_outcome,
            source=f"{self.name} file {file_name}",
            on_malformed=self._count_malformed,
        ):
            yield outcome

    async def _download_lines(self, file_name: str) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(
            maxsize=_DOWNLOAD_QUEUE_CHUNKS
        )

        async def download() -> None:
            try:
                await self._client.files.download(file=file_name, destination=_ChunkQueue(queue))  # type: ignore[call-overload]
            except Exception as exc:  # handed to the reader, which raises it
                await queue.put(exc)
            else:
                await queue.put(None)

        task = asyncio.create_task(download())
        try:
            pending = b""
            while (chunk := await queue.get()) is not None:
                if isinstance(chunk, BaseException):
                    with self._sdk_errors():  # an SDK or transport error becomes ours
                        raise chunk
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    yield line
            if pending:
                yield pending
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def cancel(self, handle: BatchHandle) -> None:
        """Ask for cancellation; a job that already ended counts as cancelled."""
        try:
            with self._sdk_errors():
                await self._client.batches.cancel(name=handle.batch_id)
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
        """The job whose display name is ``tag`` (the newest, if creation was repeated).

        The tag alone is exact; ``custom_ids`` is not needed.
        """
        found: types.BatchJob | None = None
        with self._sdk_errors():
            async for job in await self._client.batches.list(config={"page_size": 100}):
                if job.display_name != tag:
                    continue
                created = job.create_time.timestamp() if job.create_time else None
                if (
                    created_after is not None
                    and created is not None
                    and created < created_after - FIND_CLOCK_SLACK_S
                ):
                    continue
                if found is None or (created or 0) > (
                    found.create_time.timestamp() if found.create_time else 0
                ):
                    found = job
        if found is None:
            return None
        return BatchHandle(
            provider=self.name,
            batch_id=found.name or "",
            tag=tag,
            created_at=found.create_time.timestamp() if found.create_time else None,
            extra={"count": expected_count} if expected_count is not None else {},
        )

    async def complete(self, item: BatchItem) -> Outcome:
        """One synchronous generateContent call; every failure becomes an outcome."""
        converted = sdk_request(item.body)
        if converted is None:
            return Outcome(
                item.custom_id,
                OutcomeKind.PERMANENT,
                error_code="INVALID_ARGUMENT",
                error_message="request body has fields the google-genai SDK cannot send",
            )
        contents, config = converted
        try:
            with self._sdk_errors():
                response = await self._client.models.generate_content(
                    model=model_name(item.model), contents=contents, config=config
                )
        except ProviderError as error:
            return error_outcome(item.custom_id, error)
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError too
            return refused_by_client(item.custom_id, exc)
        return gemini_outcome(item.custom_id, response_json(response), None)

    async def aclose(self) -> None:
        """Close the SDK's async client."""
        await self._client.aclose()
