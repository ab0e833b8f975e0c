"""OpenAI's wire shapes: file and batch objects, endpoint answers and result lines (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import synth, validation
from .faults import OPENAI_ERRORS, openai_body
from .state import (
    NO_CACHE,
    BatchRecord,
    CacheUse,
    FileRecord,
    Final,
    Phase,
    Progress,
    RequestRecord,
    Result,
    count_results,
    result_of,
)

BATCH_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
)
EXPIRY_SECONDS = 24 * 3600
# Request errors the batch runner reports as the endpoint's HTTP answer (4xx: the request
# itself is wrong); the rest it reports in the line's ``error`` object.
RESPONSE_ERROR_KINDS = ("invalid_request", "policy")

_STATUS = {
    Phase.QUEUED: "validating",
    Phase.RUNNING: "in_progress",
    Phase.FINALIZING: "finalizing",
    Phase.CANCELLING: "cancelling",
}


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


@dataclass(frozen=True, slots=True)
class Answer:
    """What every endpoint's answer to one request is made of."""

    body: dict[str, Any]
    serialised: str
    completion: synth.Completion
    model: str
    ident: str  # hex, stable for the request text
    cache: CacheUse

    @classmethod
    def of(cls, body: dict[str, Any], serialised: str, cache: CacheUse) -> Answer:
        completion = synth.complete(serialised)
        read = min(cache.read, completion.input_tokens)
        written = min(cache.written, completion.input_tokens - read)
        return cls(
            body,
            serialised,
            completion,
            str(body.get("model", "unknown-model")),
            f"{synth.digest('id', serialised):016x}",
            CacheUse(read, written),
        )


def canonical_endpoint(endpoint: str) -> str:
    """The endpoint as OpenAI spells it (Azure spells batch endpoints without the /v1)."""
    return "/v1" + endpoint.removeprefix("/v1")


def endpoint_response(
    endpoint: str,
    body: dict[str, Any],
    serialised: str,
    created: int,
    cache: CacheUse = NO_CACHE,
) -> dict[str, Any]:
    """The body the synchronous ``endpoint`` would have answered ``body`` with."""
    build = _BUILDERS.get(canonical_endpoint(endpoint), _chat_completion)
    return build(Answer.of(body, serialised, cache), created)


def _chat_usage(a: Answer) -> dict[str, Any]:
    c = a.completion
    return {
        "prompt_tokens": c.input_tokens,
        "completion_tokens": c.output_tokens,
        "total_tokens": c.total_tokens,
        # prompt_tokens counts the cached ones too; cached_tokens is that part.
        "prompt_tokens_details": {
            "cached_tokens": a.cache.read,
            "cache_write_tokens": a.cache.written,
        },
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _chat_completion(a: Answer, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{a.ident}",
        "object": "chat.completion",
        "created": created,
        "model": a.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": a.completion.text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _chat_usage(a),
        "system_fingerprint": "fp_emulator",
    }


def _completion(a: Answer, created: int) -> dict[str, Any]:
    choice = {"index": 0, "text": a.completion.text, "finish_reason": "stop", "logprobs": None}
    return {
        "id": f"cmpl-{a.ident}",
        "object": "text_completion",
        "created": created,
        "model": a.model,
        "choices": [choice],
        "usage": _chat_usage(a),
    }


def _response(a: Answer, created: int) -> dict[str, Any]:
    c = a.completion
    return {
        "id": f"resp_{a.ident}",
        "object": "response",
        "created_at": created,
        "status": "completed",
        "model": a.model,
        "output": [
            {
                "type": "message",
                "id": f"msg_{a.ident}",
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
            "input_tokens_details": {
                "cached_tokens": a.cache.read,
                "cache_write_tokens": a.cache.written,
            },
            "output_tokens": c.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": c.total_tokens,
        },
    }


def _moderation(a: Answer, created: int) -> dict[str, Any]:
    return {
        "id": f"modr-{a.ident}",
        "model": a.model,
        "results": [{"flagged": False, "categories": {}, "category_scores": {}}],
    }


def _embeddings(a: Answer, created: int) -> dict[str, Any]:
    inputs = a.body.get("input", "")
    if isinstance(inputs, str) or (
        isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
    ):
        inputs = [inputs]
    as_base64 = a.body.get("encoding_format") == "base64"
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
    tokens = max(1, len(a.serialised) // 4)
    return {
        "object": "list",
        "data": data,
        "model": a.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


_BUILDERS: dict[str, Callable[[Answer, int], dict[str, Any]]] = {
    "/v1/chat/completions": _chat_completion,
    "/v1/completions": _completion,
    "/v1/responses": _response,
    "/v1/moderations": _moderation,
    "/v1/embeddings": _embeddings,
}


def model_not_found(model: str) -> dict[str, Any]:
    """The 404 body of an endpoint asked for a model it does not serve."""
    return openai_body(
        validation.openai_unknown_model(model), "invalid_request_error", "model_not_found"
    )


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
        "completion_window": extra.get("completion_window", "24h"),
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
            cached += min(request.cache.read, c.input_tokens)
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
        if (result is Result.SUCCEEDED) != errors:
            yield json.dumps(_result_line(batch, request, result, created)) + "\n"


def _result_line(
    batch: BatchRecord, request: RequestRecord, result: Result, created: int
) -> dict[str, Any]:
    """One request's line: the endpoint's HTTP answer, or an ``error`` when none was given."""
    line: dict[str, Any] = {
        "id": f"batch_req_{synth.digest(batch.id, request.key):016x}",
        "custom_id": request.key,
        "response": None,
        "error": None,
    }
    request_id = f"req_{synth.digest('request', batch.id, request.key):016x}"
    if result is Result.SUCCEEDED:
        body = endpoint_response(
            batch.extra["endpoint"], request.body, request.serialised, created, request.cache
        )
        line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
    elif result is Result.ERRORED and request.rejection is not None:
        line["response"] = {"request_id": request_id, **request.rejection}
    elif result is Result.ERRORED and request.error in RESPONSE_ERROR_KINDS:
        e = OPENAI_ERRORS[request.error]
        body = openai_body(e.message, e.type, e.code)
        line["response"] = {"status_code": e.status, "request_id": request_id, "body": body}
    else:
        line["error"] = _line_error(result, request.error)
    return line


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
