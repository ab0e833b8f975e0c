"""OpenAI: files, batches and the synchronous endpoints, as ``openai`` calls them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import synth, validation
from .faults import OPENAI_ERRORS, error_for, openai_body
from .state import (
    BatchRecord,
    FileRecord,
    Final,
    Phase,
    Progress,
    RequestRecord,
    Result,
    count_results,
    new_id,
    progress,
    result_of,
)

if TYPE_CHECKING:
    from .server import Emulator

BATCH_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
)
EXPIRY_SECONDS = 24 * 3600
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_REPORTED_ERRORS = 10
# Request errors the batch runner reports as the endpoint's HTTP answer (4xx: the request
# itself is wrong); the rest it reports in the line's ``error`` object.
RESPONSE_ERROR_KINDS = ("invalid_request", "policy")
URL_MISMATCH = "The URL provided for this request does not prefix-match the batch endpoint."
DUPLICATE_CUSTOM_ID = (
    "The custom_id for this request is a duplicate of another request. "
    "The custom_id parameter must be unique for each request in a batch."
)
MISSING_MODEL = openai_body("you must provide a model parameter", "invalid_request_error")

_STATUS = {
    Phase.QUEUED: "validating",
    Phase.RUNNING: "in_progress",
    Phase.FINALIZING: "finalizing",
    Phase.CANCELLING: "cancelling",
}


# --- pure wire shapes ---------------------------------------------------------------------


def file_object(f: FileRecord) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.size,
        "created_at": int(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def endpoint_response(
    endpoint: str, body: dict[str, Any], serialised: str, created: int
) -> dict[str, Any]:
    """The body the synchronous ``endpoint`` would have answered ``body`` with."""
    c = synth.complete(serialised)
    model = str(body.get("model", "unknown-model"))
    h = synth.digest("id", serialised)
    if endpoint == "/v1/embeddings":
        return _embeddings(body, serialised, model)
    if endpoint == "/v1/responses":
        return {
            "id": f"resp_{h:016x}",
            "object": "response",
            "created_at": created,
            "status": "completed",
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{h:016x}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": c.text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": c.input_tokens,
                "input_tokens_details": {"cached_tokens": c.cached_tokens, "cache_write_tokens": 0},
                "output_tokens": c.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": c.total_tokens,
            },
        }
    if endpoint == "/v1/moderations":
        return {
            "id": f"modr-{h:016x}",
            "model": model,
            "results": [{"flagged": False, "categories": {}, "category_scores": {}}],
        }
    usage = {
        "prompt_tokens": c.input_tokens,
        "completion_tokens": c.output_tokens,
        "total_tokens": c.total_tokens,
        "prompt_tokens_details": {"cached_tokens": c.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    if endpoint == "/v1/completions":
        return {
            "id": f"cmpl-{h:016x}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": c.text, "finish_reason": "stop", "logprobs": None}],
            "usage": usage,
        }
    return {
        "id": f"chatcmpl-{h:016x}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": c.text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
        "system_fingerprint": "fp_emulator",
    }


def _embeddings(body: dict[str, Any], serialised: str, model: str) -> dict[str, Any]:
    inputs = body.get("input", "")
    if isinstance(inputs, str) or (
        isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
    ):
        inputs = [inputs]
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        vector = synth.embedding(synth.serialise(item))
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": synth.embedding_base64(vector) if as_base64 else vector,
            }
        )
    tokens = max(1, len(serialised) // 4)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@dataclass
class ParsedInput:
    """An input file as the batch validator sees it: any error fails the whole batch."""

    requests: list[RequestRecord]
    errors: list[dict[str, Any]]
    model: str | None


def parse_input(
    content: bytes, endpoint: str, max_requests: int, knows_model: Callable[[str], bool]
) -> ParsedInput:
    """Validate an input file as OpenAI's batch validator does.

    Malformed lines, a ``url`` other than the batch's endpoint, duplicate custom_ids and a
    second model fail the batch (``errors.data``); an unknown model only fails its lines,
    with the 404 the endpoint would answer (openai/openai-python#3071).
    """
    check = _LineChecker(endpoint, knows_model)
    requests = []
    for number, raw in enumerate(content.splitlines(), start=1):
        record = check.line(number, raw) if raw.strip() else None
        if record is not None:
            requests.append(record)
    if not requests and not check.errors:
        check.fail("empty_file", "The input file contains no requests.", None)
    if len(requests) > max_requests:
        check.fail(
            "too_many_requests", f"A batch may contain at most {max_requests} requests.", None
        )
    return ParsedInput(requests, check.errors, check.model)


class _LineChecker:
    """Checks input lines one by one, collecting errors in ``errors.data`` form."""

    def __init__(self, endpoint: str, knows_model: Callable[[str], bool]) -> None:
        self.endpoint = endpoint
        self.knows_model = knows_model
        self.errors: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.model: str | None = None

    def fail(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"code": code, "message": message, "line": line, "param": param})

    def line(self, number: int, raw: bytes) -> RequestRecord | None:
        try:
            item = json.loads(raw)
        except ValueError:
            self.fail("invalid_json_line", "This line is not parseable as valid JSON.", number)
            return None
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
            self.fail("missing_required_parameter", "Missing custom_id.", number, "custom_id")
            return None
        if item.get("method") != "POST":
            self.fail("invalid_request", "The only supported method is POST.", number, "method")
        if item.get("url") != self.endpoint:
            # The wording of OpenAI's Batch API FAQ; the code as OpenAI-compatible batch
            # validators (llama-stack's reference Batches API) report it.
            self.fail("invalid_url", URL_MISMATCH, number, "url")
        body = item.get("body")
        if not isinstance(body, dict):
            self.fail("missing_required_parameter", "Missing body.", number, "body")
            return None
        self._unique(item["custom_id"], number)
        self._one_model(body, number)
        return self._record(item["custom_id"], body)

    def _unique(self, custom_id: str, number: int) -> None:
        if custom_id in self.seen:
            self.fail("duplicate_custom_id", DUPLICATE_CUSTOM_ID, number, "custom_id")
        self.seen.add(custom_id)

    def _one_model(self, body: dict[str, Any], number: int) -> None:
        model = body.get("model")
        if not isinstance(model, str):
            return
        if self.model is None:
            self.model = model
        elif model != self.model:
            message = "All requests in a batch must use the same model."
            self.fail("mismatched_model", message, number, "body.model")

    def _record(self, custom_id: str, body: dict[str, Any]) -> RequestRecord:
        record = RequestRecord(custom_id, synth.serialise(body), body)
        model = body.get("model")
        if not isinstance(model, str):
            record.rejection = {"status_code": 400, "body": MISSING_MODEL}
        elif not self.knows_model(model):
            record.rejection = {"status_code": 404, "body": model_not_found(model)}
        if record.rejection is not None:
            record.error = "invalid_request"
        return record


def model_not_found(model: str) -> dict[str, Any]:
    """The 404 body of an endpoint asked for a model it does not serve."""
    return openai_body(
        validation.openai_unknown_model(model), "invalid_request_error", "model_not_found"
    )


def token_limit_error(model: str | None) -> dict[str, Any]:
    return {
        "code": "token_limit_exceeded",
        "message": (
            f"Enqueued token limit reached for {model} in organization org-emulator. "
            "Limit: 90,000 enqueued tokens. Please try submitting fewer tokens or wait."
        ),
        "line": None,
        "param": None,
    }


def batch_status(prog: Progress) -> str:
    return prog.final.value if prog.final else _STATUS[prog.phase]


def batch_object(batch: BatchRecord, prog: Progress) -> dict[str, Any]:
    extra = batch.extra
    failed = prog.final is Final.FAILED
    counts = count_results(batch, prog)
    done_failed = counts[Result.ERRORED] + counts[Result.EXPIRED] + counts[Result.CANCELLED]
    final_at = int(prog.ended_at) if prog.ended_at is not None else None
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": extra["endpoint"],
        "model": extra.get("model"),
        "errors": {"object": "list", "data": batch.validation_errors} if failed else None,
        "input_file_id": extra["input_file_id"],
        "completion_window": "24h",
        "status": batch_status(prog),
        "output_file_id": extra.get("output_file_id"),
        "error_file_id": extra.get("error_file_id"),
        "created_at": int(batch.created_at),
        "in_progress_at": _int(prog.started_at),
        "expires_at": int(batch.created_at) + EXPIRY_SECONDS,
        "finalizing_at": _int(prog.finalizing_at),
        "completed_at": final_at if prog.final is Final.COMPLETED else None,
        "failed_at": final_at if failed else None,
        "expired_at": final_at if prog.final is Final.EXPIRED else None,
        "cancelling_at": _int(prog.cancelling_at),
        "cancelled_at": final_at if prog.final is Final.CANCELLED else None,
        "request_counts": {
            "total": 0 if failed else batch.total,
            "completed": 0 if failed else counts[Result.SUCCEEDED],
            "failed": 0 if failed else done_failed,
        },
        "usage": extra.get("usage"),
        "metadata": extra.get("metadata"),
    }


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def batch_usage(batch: BatchRecord, prog: Progress) -> dict[str, Any]:
    input_tokens = output_tokens = cached = 0
    for index, request in enumerate(batch.requests):
        if result_of(request, index, prog) is Result.SUCCEEDED:
            c = synth.complete(request.serialised)
            input_tokens += c.input_tokens
            output_tokens += c.output_tokens
            cached += c.cached_tokens
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def result_lines(batch: BatchRecord, prog: Progress, *, errors: bool) -> Iterator[str]:
    """The output file (``errors=False``) or the error file, one JSON line per request."""
    created = int(prog.ended_at or batch.created_at)
    for index in synth.shuffled(batch.total, batch.seed, batch.id):
        request = batch.requests[index]
        result = result_of(request, index, prog)
        if (result is Result.SUCCEEDED) == errors:
            continue
        line_id = f"batch_req_{synth.digest(batch.id, request.key):016x}"
        request_id = f"req_{synth.digest('request', batch.id, request.key):016x}"
        if result is Result.SUCCEEDED:
            body = endpoint_response(
                batch.extra["endpoint"], request.body, request.serialised, created
            )
            response = {"status_code": 200, "request_id": request_id, "body": body}
            line = {"id": line_id, "custom_id": request.key, "response": response, "error": None}
        elif result is Result.ERRORED and request.rejection is not None:
            response = {"request_id": request_id, **request.rejection}
            line = {"id": line_id, "custom_id": request.key, "response": response, "error": None}
        elif result is Result.ERRORED and request.error in RESPONSE_ERROR_KINDS:
            e = OPENAI_ERRORS[request.error]
            response = {
                "status_code": e.status,
                "request_id": request_id,
                "body": openai_body(e.message, e.type, e.code),
            }
            line = {"id": line_id, "custom_id": request.key, "response": response, "error": None}
        else:
            error = _line_error(result, request.error)
            line = {"id": line_id, "custom_id": request.key, "response": None, "error": error}
        yield json.dumps(line) + "\n"


def _line_error(result: Result, kind: str | None) -> dict[str, str]:
    if result is Result.EXPIRED:
        return {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        }
    if result is Result.CANCELLED:
        return {
            "code": "batch_cancelled",
            "message": "This request was not executed because the batch was cancelled.",
        }
    e = OPENAI_ERRORS[kind or "server_error"]
    return {"code": e.code or e.type, "message": e.message}


# --- handlers -----------------------------------------------------------------------------


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
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/files", self.upload_file)
        router.add_get("/v1/files/{id}/content", self.file_content)
        router.add_post("/v1/batches", self.create_batch)
        router.add_post("/v1/batches/{id}/cancel", self.cancel_batch)
        for endpoint in BATCH_ENDPOINTS:
            router.add_post(endpoint, self.sync_call)
        # GET /v1/batches, /v1/batches/{id} and /v1/files/{id} are shared with Gemini's v1
        # paths; the server dispatches those to get_batch, list_batches and get_file.

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
            provider="openai",
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
        return record if record is not None and record.provider == "openai" else None

    async def create_batch(self, request: web.Request) -> web.Response:
        try:
            params = await request.json()
        except ValueError:
            return _error(400, "Invalid JSON body.")
        endpoint = params.get("endpoint")
        if endpoint not in BATCH_ENDPOINTS:
            return _error(400, f"Invalid endpoint {endpoint!r}.", param="endpoint")
        if params.get("completion_window") != "24h":
            return _error(400, "completion_window must be '24h'.", param="completion_window")
        metadata = params.get("metadata")
        problem = _metadata_problem(metadata)
        if problem:
            return _error(400, problem, param="metadata")
        input_file = self._file(str(params.get("input_file_id")))
        if input_file is None or input_file.content is None:
            return _error(
                400,
                f"Input file {params.get('input_file_id')!r} does not exist.",
                param="input_file_id",
            )
        if input_file.purpose != "batch":
            return _error(400, "The input file must have purpose 'batch'.", param="input_file_id")

        cfg = self.emu.config
        parsed = parse_input(
            input_file.content,
            endpoint,
            cfg.openai_max_requests,
            lambda model: self.emu.knows_model("openai", model),
        )
        requests, errors, model = parsed.requests, parsed.errors, parsed.model
        if not errors and cfg.openai_token_limit:
            errors = [token_limit_error(model)]
        if not errors and cfg.batch_outcome == "failed":
            errors = [
                {
                    "code": "batch_failed",
                    "message": "The batch failed (emulated).",
                    "line": None,
                    "param": None,
                }
            ]
        batch = self.emu.new_batch(
            "openai",
            new_id("batch_", 32, "0123456789abcdef"),
            requests,
            tag=(metadata or {}).get("batchbridge_batch_id"),
            outcome=None if errors else cfg.batch_outcome,
            validation_errors=errors,
            extra={
                "endpoint": endpoint,
                "input_file_id": input_file.id,
                "metadata": metadata,
                "model": model,
            },
        )
        return web.json_response(self.batch_json(batch))

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
        batches = self.emu.store.batches_of("openai")
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
        return batch if batch is not None and batch.provider == "openai" else None

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
                provider="openai",
                filename="batch_error.jsonl" if errors else "batch_output.jsonl",
                purpose="batch_output",
                created_at=prog.ended_at or self.emu.now(),
                producer=_producer(batch, prog, errors, garbage),
            )
            self.emu.store.files[record.id] = record
            batch.extra["error_file_id" if errors else "output_file_id"] = record.id

    async def sync_call(self, request: web.Request) -> web.Response:
        self.emu.store.sync_calls["openai"] += 1
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Invalid JSON body.")
        if not isinstance(body, dict) or "model" not in body:
            return _error(400, "you must provide a model parameter", param="model")
        if not self.emu.knows_model("openai", str(body["model"])):
            return web.json_response(model_not_found(str(body["model"])), status=404)
        if body.get("stream"):
            return _error(400, "Streaming is not supported by the emulator.", param="stream")
        serialised = synth.serialise(body)
        kind = synth.marker_kind(serialised)
        if kind:
            status, payload = error_for("openai", kind)
            return web.json_response(payload, status=status)
        endpoint = request.path
        return web.json_response(endpoint_response(endpoint, body, serialised, int(self.emu.now())))


def _producer(batch: BatchRecord, prog: Progress, errors: bool, garbage: int):
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
