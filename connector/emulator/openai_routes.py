"""OpenAI: files, batches and the synchronous endpoints, as ``openai`` calls them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from . import synth, validation
from .faults import FLEX_UNAVAILABLE, error_for, openai_body
from .openai_input import parse_input
from .openai_quota import LEGACY_LIMIT, batch_tokens, enqueued, token_limit_error
from .openai_shapes import (
    BATCH_ENDPOINTS,
    batch_object,
    batch_status,
    batch_usage,
    canonical_endpoint,
    endpoint_response,
    file_object,
    model_not_found,
    result_lines,
)
from .services import Services
from .state import (
    BatchRecord,
    FileRecord,
    Final,
    Phase,
    Progress,
    Result,
    count_results,
    new_id,
    progress,
)

MAX_FILE_BYTES = 200 * 1024 * 1024
# The endpoints that take a service_tier and report the one used.
TIERED_ENDPOINTS = ("/v1/chat/completions", "/v1/responses")
BATCH_FAILED = {
    "code": "batch_failed",
    "message": "The batch failed (emulated).",
    "line": None,
    "param": None,
}


def _error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> web.Response:
    return web.json_response(openai_body(message, type_, code, param), status=status)


def _not_found(what: str, ident: str) -> web.Response:
    return _error(404, f"No {what} found with id '{ident}'.", code=None)


class OpenAIRoutes:
    """OpenAI's Files, Batches and synchronous endpoints.

    For another provider with the same API, ``provider`` names its own namespace (its files,
    batches and counters), ``endpoint_prefix`` is how it spells batch endpoints and
    ``completion_windows`` what it accepts.
    """

    def __init__(
        self,
        emu: Services,
        provider: str = "openai",
        *,
        endpoint_prefix: str = "/v1",
        completion_windows: tuple[str, ...] = ("24h",),
    ) -> None:
        self.emu = emu
        self.provider = provider
        self.batch_endpoints = tuple(
            endpoint_prefix + endpoint.removeprefix("/v1") for endpoint in BATCH_ENDPOINTS
        )
        self.completion_windows = completion_windows

    def state_name(self, prog: Progress) -> str:
        return batch_status(prog)

    def batch_name(self, batch: BatchRecord) -> str:
        return batch.id

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/files", self.upload_file)
        router.add_get("/v1/files/{id}/content", self.file_content)
        router.add_post("/v1/batches", self.create_batch)
        router.add_post("/v1/batches/{id}/cancel", self.cancel_batch)
        for endpoint in BATCH_ENDPOINTS:
            router.add_post(endpoint, self.sync_call)
        # GET /v1/batches, /v1/batches/{id} and /v1/files/{id} are shared with Gemini's v1
        # paths; routes.SharedV1Routes dispatches those to get_batch, list_batches, get_file.

    async def upload_file(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, web.FileField):
            return _error(400, "Missing file.", param="file")
        if purpose not in ("batch", "assistants", "fine-tune", "vision", "user_data", "evals"):
            return _error(400, f"Invalid purpose {purpose!r}.", param="purpose")
        content = upload.file.read()
        if len(content) > MAX_FILE_BYTES:
            return _error(400, f"Files may be at most {MAX_FILE_BYTES} bytes.", param="file")
        record = FileRecord(
            id=new_id("file-"),
            provider=self.provider,
            filename=upload.filename or "upload.jsonl",
            purpose=str(purpose),
            created_at=self.emu.now(),
            content=content,
        )
        self.emu.store.files[record.id] = record
        self.emu.store.files_uploaded += 1
        return web.json_response(file_object(record))

    async def get_file(self, request: web.Request) -> web.Response:
        record = self._file(request.match_info["id"])
        if record is None:
            return _not_found("file", request.match_info["id"])
        return web.json_response(file_object(record))

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        record = self._file(request.match_info["id"])
        if record is None:
            return _not_found("file", request.match_info["id"])
        return await self.emu.stream(
            request, record.chunks(), "application/octet-stream", result=record.content is None
        )

    def _file(self, file_id: str) -> FileRecord | None:
        record = self.emu.store.files.get(file_id)
        return record if record is not None and record.provider == self.provider else None

    async def create_batch(self, request: web.Request) -> web.Response:
        try:
            params = await request.json()
        except ValueError:
            return _error(400, "Invalid JSON body.")
        refused = self._params_problem(params)
        if refused is not None:
            return refused
        input_file = self._file(str(params.get("input_file_id")))
        if input_file is None or input_file.content is None:
            return _error(
                400,
                f"Input file {params.get('input_file_id')!r} does not exist.",
                param="input_file_id",
            )
        if input_file.purpose != "batch":
            return _error(400, "The input file must have purpose 'batch'.", param="input_file_id")
        batch = self._new_batch(params, input_file.id, input_file.content)
        return web.json_response(self.batch_json(batch))

    def _new_batch(self, params: dict[str, Any], file_id: str, content: bytes) -> BatchRecord:
        """Store the batch; validation errors fail it when it leaves ``validating``."""
        cfg = self.emu.config
        endpoint = params["endpoint"]
        parsed = parse_input(
            content,
            endpoint,
            cfg.openai_max_requests,
            lambda model: self.emu.knows_model(self.provider, model),
        )
        tokens = batch_tokens(parsed.requests)
        errors = parsed.errors or self._quota_errors(parsed.model, tokens)
        if not errors and cfg.batch_outcome == "failed":
            errors = [BATCH_FAILED]
        metadata = params.get("metadata")
        caching = self.emu.caching()
        cache_endpoint = canonical_endpoint(endpoint)
        return self.emu.new_batch(
            self.provider,
            new_id("batch_", 32, "0123456789abcdef"),
            parsed.requests,
            tag=(metadata or {}).get("batchbridge_batch_id"),
            outcome=None if errors else cfg.batch_outcome,
            validation_errors=errors,
            extra={
                "endpoint": endpoint,
                "input_file_id": file_id,
                "metadata": metadata,
                "model": parsed.model,
                "enqueued_tokens": tokens,
                "completion_window": params["completion_window"],
            },
            cache=lambda request, at: caching.openai(cache_endpoint, request.body, at),
        )

    def _quota_errors(self, model: str | None, tokens: int) -> list[dict[str, Any]]:
        """The token_limit_exceeded failure of a batch that would pass its model's limit."""
        cfg = self.emu.config
        if cfg.openai_token_limit:
            return [token_limit_error(model, LEGACY_LIMIT)]
        limit = cfg.openai_enqueued_token_limit.get(str(model))
        if limit is None:
            return []
        in_flight = enqueued(self.emu.store.batches_of(self.provider), self.emu.now()).get(str(model), 0)
        return [token_limit_error(model, limit)] if in_flight + tokens > limit else []

    async def get_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request.match_info["id"])
        if batch is None:
            return _not_found("batch", request.match_info["id"])
        return web.json_response(self.batch_json(batch))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request.match_info["id"])
        if batch is None:
            return _not_found("batch", request.match_info["id"])
        prog = progress(batch, self.emu.now())
        if prog.is_final:
            return _error(400, f"Cannot cancel a batch with status '{batch_status(prog)}'.")
        if batch.cancel_requested_at is None and prog.phase is not Phase.CANCELLING:
            batch.cancel_requested_at = self.emu.now()
        return web.json_response(self.batch_json(batch))

    async def list_batches(self, request: web.Request) -> web.Response:
        batches = self.emu.store.batches_of(self.provider)
        after = request.query.get("after")
        limit = _limit(request.query.get("limit"), default=20, maximum=100)
        if limit is None:
            return _error(400, "limit must be an integer between 1 and 100.", param="limit")
        if after:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        page = batches[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": [self.batch_json(b) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(batches) > limit,
            }
        )

    def _batch(self, batch_id: str) -> BatchRecord | None:
        batch = self.emu.store.batches.get(batch_id)
        return batch if batch is not None and batch.provider == self.provider else None

    def batch_json(self, batch: BatchRecord) -> dict[str, Any]:
        prog = progress(batch, self.emu.now())
        if prog.is_final and "usage" not in batch.extra:
            # Settled once, when the batch is first seen final: its files and usage never change.
            batch.extra["usage"] = batch_usage(batch, prog)
            if prog.final is not Final.FAILED:
                self._write_result_files(batch, prog)
        return batch_object(batch, prog)

    def _write_result_files(self, batch: BatchRecord, prog: Progress) -> None:
        counts = count_results(batch, prog)
        malformed = batch.malformed_lines
        outputs = counts[Result.SUCCEEDED] > 0
        failures = batch.total - counts[Result.SUCCEEDED] > 0
        batch.extra["output_file_id"] = None
        batch.extra["error_file_id"] = None
        for errors, present in ((False, outputs), (True, failures)):
            # Garbage goes to the output file, or to the error file when there is none.
            garbage = malformed if errors == (not outputs) else 0
            if not present and not garbage:
                continue
            record = FileRecord(
                id=new_id("file-"),
                provider=self.provider,
                filename="batch_error.jsonl" if errors else "batch_output.jsonl",
                purpose="batch_output",
                created_at=prog.ended_at or self.emu.now(),
                producer=_producer(batch, prog, errors, garbage),
            )
            self.emu.store.files[record.id] = record
            batch.extra["error_file_id" if errors else "output_file_id"] = record.id

    async def sync_call(self, request: web.Request) -> web.Response:
        """Chat completions, responses, completions, embeddings and moderations."""
        self.emu.store.count_sync_call(self.provider)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Invalid JSON body.")
        refused = self._sync_refusal(request.path, body)
        if refused is not None:
            return refused
        serialised = synth.serialise(body)
        kind = synth.marker_kind(serialised)
        if kind:
            status, payload = error_for("openai", kind)
            return web.json_response(payload, status=status)
        endpoint = request.path
        now = self.emu.now()
        cache = self.emu.caching().openai(endpoint, body, now)
        answer = endpoint_response(endpoint, body, serialised, int(now), cache)
        if endpoint in TIERED_ENDPOINTS:
            answer["service_tier"] = validation.served_tier(body.get("service_tier"))
        return web.json_response(answer)

    def _sync_refusal(self, endpoint: str, body: Any) -> web.Response | None:
        """The error answer a synchronous call gets before any work, or None."""
        if not isinstance(body, dict) or "model" not in body:
            return _error(400, "you must provide a model parameter", param="model")
        model = str(body["model"])
        if not self.emu.knows_model(self.provider, model):
            return web.json_response(model_not_found(model), status=404)
        if body.get("stream"):
            return _error(400, "Streaming is not supported by the emulator.", param="stream")
        tier = body.get("service_tier")
        if tier is not None and endpoint in TIERED_ENDPOINTS:
            flex_models = self.emu.config.openai_flex_models
            problem = validation.service_tier_problem(tier, model, flex_models)
            if problem is not None:
                return _error(400, problem, param="service_tier")
            if tier == "flex" and not self._flex_has_room():
                e = FLEX_UNAVAILABLE
                return _error(e.status, e.message, e.type, e.code)
        return None

    def _params_problem(self, params: Any) -> web.Response | None:
        """The 400 a create call with these parameters gets, or None."""
        if not isinstance(params, dict):
            return _error(400, "Invalid JSON body.")
        endpoint = params.get("endpoint")
        if endpoint not in self.batch_endpoints:
            return _error(400, f"Invalid endpoint {endpoint!r}.", param="endpoint")
        if params.get("completion_window") not in self.completion_windows:
            return _error(
                400,
                f"completion_window must be one of {', '.join(self.completion_windows)}.",
                param="completion_window",
            )
        problem = _metadata_problem(params.get("metadata"))
        if problem:
            return _error(400, problem, param="metadata")
        return None

    def _flex_has_room(self) -> bool:
        """Whether this Flex call is served or answered 429 Resource Unavailable.

        A seeded draw per Flex call (not per request text) decides, so a retry of the same
        request may be served where the first attempt was not, as on the real tier.
        """
        counts = self.emu.store.flex_calls
        n = counts["served"] + counts["unavailable"]
        rate = self.emu.config.flex_429_rate
        served = synth.unit_fraction(self.emu.config.seed, "flex", n) >= rate
        counts["served" if served else "unavailable"] += 1
        return served


def _producer(
    batch: BatchRecord, prog: Progress, errors: bool, garbage: int
) -> Callable[[], Iterator[str]]:
    def lines() -> Iterator[str]:
        return synth.with_malformed(result_lines(batch, prog, errors=errors), garbage, batch.id)

    return lines


def _metadata_problem(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        return "metadata must be an object with at most 16 keys."
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            return "metadata keys must be <= 64 chars and values strings <= 512 chars."
    return None


def _limit(raw: str | None, *, default: int, maximum: int) -> int | None:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 1 <= value <= maximum else None
