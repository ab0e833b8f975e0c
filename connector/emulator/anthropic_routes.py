"""Anthropic: Message Batches and Messages, as ``anthropic`` calls them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from . import synth, validation
from .faults import ANTHROPIC_ERRORS, anthropic_body, error_for
from .services import Services
from .state import (
    NO_CACHE,
    BatchRecord,
    CacheUse,
    Phase,
    Progress,
    RequestRecord,
    Result,
    count_results,
    new_id,
    progress,
    result_of,
)
from .wire import base_url, iso

CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EXPIRY_SECONDS = 24 * 3600
RETENTION_SECONDS = 29 * 24 * 3600


# --- pure wire shapes ---------------------------------------------------------------------


def message(
    body: dict[str, Any], serialised: str, salt: str = "", cache: CacheUse = NO_CACHE
) -> dict[str, Any]:
    """A Messages API answer; ``cache`` is how the request used the prompt cache."""
    c = synth.complete(serialised)
    read = min(cache.read, c.input_tokens)
    written = min(cache.written, c.input_tokens - read)
    written_1h = min(cache.written_1h, written)
    return {
        "id": f"msg_{synth.digest('msg', salt, serialised):016x}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "unknown-model"),
        "content": [{"type": "text", "text": c.text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            # input_tokens is only what follows the last breakpoint: the whole input is
            # cache_read_input_tokens + cache_creation_input_tokens + input_tokens.
            "input_tokens": c.input_tokens - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": written - written_1h,
                "ephemeral_1h_input_tokens": written_1h,
            },
            "output_tokens": c.output_tokens,
        },
    }


def validate_requests(requests: Any, max_requests: int) -> str | None:
    """The reason the create call is rejected (400), or None.

    Only the batch's own shape is checked here; each request's params are validated
    asynchronously and fail that request alone (see ``rejection``).
    """
    if not isinstance(requests, list) or not requests:
        return "requests: must contain at least one request"
    if len(requests) > max_requests:
        return f"requests: at most {max_requests} requests are allowed in a batch"
    seen: set[str] = set()
    for index, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID_RE.match(custom_id):
            return (
                f"requests.{index}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )
        if custom_id in seen:
            return f"requests.{index}.custom_id: Duplicate custom_id '{custom_id}'"
        seen.add(custom_id)
        params = item.get("params")
        if not isinstance(params, dict):
            return f"requests.{index}.params: Input should be a valid dictionary"
        if params.get("stream"):
            return f"requests.{index}.params.stream: streaming is not supported in batches"
    return None


def rejection(params: dict[str, Any], knows_model: Callable[[str], bool]) -> dict[str, Any] | None:
    """The error a Messages API call with ``params`` is refused with, or None.

    Missing or mistyped fields are ``invalid_request_error`` (400); an unknown model is
    ``not_found_error`` (404), the same body inside a batch's results.
    """
    problem = validation.anthropic_params_problem(params)
    if problem is not None:
        return anthropic_body("invalid_request_error", problem)
    if not knows_model(params["model"]):
        return anthropic_body(
            "not_found_error", validation.anthropic_unknown_model(params["model"])
        )
    return None


def processing_status(prog: Progress) -> str:
    if prog.is_final:
        return "ended"
    return "canceling" if prog.phase is Phase.CANCELLING else "in_progress"


def batch_object(batch: BatchRecord, prog: Progress, base_url: str) -> dict[str, Any]:
    counts = count_results(batch, prog)
    ended = prog.is_final
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": processing_status(prog),
        "request_counts": {
            "processing": counts[Result.PROCESSING],
            "succeeded": counts[Result.SUCCEEDED],
            "errored": counts[Result.ERRORED],
            "canceled": counts[Result.CANCELLED],
            "expired": counts[Result.EXPIRED],
        },
        "created_at": iso(batch.created_at),
        "expires_at": iso(batch.created_at + EXPIRY_SECONDS),
        "ended_at": iso(prog.ended_at),
        "archived_at": None,
        "cancel_initiated_at": iso(prog.cancelling_at),
        "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
    }


def result_lines(batch: BatchRecord, prog: Progress) -> Iterator[str]:
    for index in synth.shuffled(batch.total, batch.seed, batch.id):
        request = batch.requests[index]
        outcome = result_of(request, index, prog)
        if outcome is Result.SUCCEEDED:
            answer = message(
                request.body, request.serialised, batch.id + request.key, request.cache
            )
            result: dict[str, Any] = {"type": "succeeded", "message": answer}
        elif outcome is Result.ERRORED:
            e = ANTHROPIC_ERRORS[request.error or "server_error"]
            error = request.rejection or anthropic_body(e.type, e.message)
            result = {"type": "errored", "error": error}
        elif outcome is Result.EXPIRED:
            result = {"type": "expired"}
        else:
            result = {"type": "canceled"}
        yield json.dumps({"custom_id": request.key, "result": result}) + "\n"


# --- handlers -----------------------------------------------------------------------------


def _error(status: int, type_: str, message_: str) -> web.Response:
    return web.json_response(anthropic_body(type_, message_), status=status)


class AnthropicRoutes:
    """Anthropic's Message Batches and Messages."""

    provider = "anthropic"

    def __init__(self, emu: Services) -> None:
        self.emu = emu

    def state_name(self, prog: Progress) -> str:
        return processing_status(prog)

    def batch_name(self, batch: BatchRecord) -> str:
        return batch.id

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/messages/batches", self.create_batch)
        router.add_get("/v1/messages/batches", self.list_batches)
        router.add_get("/v1/messages/batches/{id}", self.get_batch)
        router.add_post("/v1/messages/batches/{id}/cancel", self.cancel_batch)
        router.add_get("/v1/messages/batches/{id}/results", self.results)
        router.add_post("/v1/messages", self.create_message)

    async def create_batch(self, request: web.Request) -> web.Response:
        cfg = self.emu.config
        if request.content_length is not None and request.content_length > cfg.anthropic_max_bytes:
            return _error(
                413,
                "request_too_large",
                f"Request exceeds the maximum size of {cfg.anthropic_max_bytes} bytes.",
            )
        raw = await request.read()
        if len(raw) > cfg.anthropic_max_bytes:
            return _error(
                413,
                "request_too_large",
                f"Request exceeds the maximum size of {cfg.anthropic_max_bytes} bytes.",
            )
        try:
            payload = json.loads(raw)
        except ValueError:
            return _error(400, "invalid_request_error", "Invalid JSON body.")
        items = payload.get("requests") if isinstance(payload, dict) else None
        problem = validate_requests(items, cfg.anthropic_max_requests)
        if problem:
            return _error(400, "invalid_request_error", problem)
        assert isinstance(items, list)
        requests = []
        for item in items:
            params = item["params"]
            record = RequestRecord(item["custom_id"], synth.serialise(params), params)
            record.rejection = rejection(params, self._knows_model)
            if record.rejection is not None:
                record.error = "invalid_request"
            requests.append(record)
        outcome = cfg.batch_outcome
        if outcome == "failed":
            # A Message Batch never fails as a whole: every request errors instead.
            for r in requests:
                r.error = r.error or "server_error"
            outcome = None
        caching = self.emu.caching()
        batch = self.emu.new_batch(
            "anthropic",
            new_id("msgbatch_"),
            requests,
            tag=None,
            outcome=outcome,
            cache=lambda request, at: caching.anthropic(request.body, at, batch=True),
        )
        return web.json_response(self._json(request, batch))

    async def get_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request.match_info["id"])
        if batch is None:
            return self._not_found(request)
        return web.json_response(self._json(request, batch))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request.match_info["id"])
        if batch is None:
            return self._not_found(request)
        prog = progress(batch, self.emu.now())
        if (
            not prog.is_final
            and batch.cancel_requested_at is None
            and prog.phase is not Phase.CANCELLING
        ):
            batch.cancel_requested_at = self.emu.now()
        return web.json_response(self._json(request, batch))

    async def list_batches(self, request: web.Request) -> web.Response:
        batches = self.emu.store.batches_of("anthropic")
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return _error(400, "invalid_request_error", "limit: must be between 1 and 1000")
        ids = [b.id for b in batches]
        after_id = request.query.get("after_id")
        before_id = request.query.get("before_id")
        if before_id:
            end = ids.index(before_id) if before_id in ids else 0
            page = batches[max(0, end - limit) : end]
            has_more = end - limit > 0
        else:
            start = ids.index(after_id) + 1 if after_id in ids else (len(ids) if after_id else 0)
            page = batches[start : start + limit]
            has_more = start + limit < len(batches)
        return web.json_response(
            {
                "data": [self._json(request, b) for b in page],
                "has_more": has_more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    async def results(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch(request.match_info["id"])
        if batch is None:
            return self._not_found(request)
        prog = progress(batch, self.emu.now())
        if not prog.is_final:
            return _error(
                400,
                "invalid_request_error",
                f"Batch {batch.id} is still processing; results are not available yet.",
            )
        lines = synth.with_malformed(result_lines(batch, prog), batch.malformed_lines, batch.id)
        return await self.emu.stream(
            request, (line.encode() for line in lines), "application/binary", result=True
        )

    async def create_message(self, request: web.Request) -> web.Response:
        self.emu.store.count_sync_call("anthropic")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "Invalid JSON body.")
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "Input should be a valid dictionary")
        refused = rejection(body, self._knows_model)
        if refused is not None:
            status = 404 if refused["error"]["type"] == "not_found_error" else 400
            return web.json_response(refused, status=status)
        if body.get("stream"):
            return _error(
                400, "invalid_request_error", "Streaming is not supported by the emulator."
            )
        serialised = synth.serialise(body)
        kind = synth.marker_kind(serialised)
        if kind:
            status, payload = error_for("anthropic", kind)
            return web.json_response(payload, status=status)
        cache = self.emu.caching().anthropic(body, self.emu.now(), batch=False)
        return web.json_response(message(body, serialised, cache=cache))

    def _batch(self, batch_id: str) -> BatchRecord | None:
        batch = self.emu.store.batches.get(batch_id)
        return batch if batch is not None and batch.provider == "anthropic" else None

    def _knows_model(self, model: str) -> bool:
        return self.emu.knows_model("anthropic", model)

    def _json(self, request: web.Request, batch: BatchRecord) -> dict[str, Any]:
        return batch_object(batch, progress(batch, self.emu.now()), base_url(request))

    @staticmethod
    def _not_found(request: web.Request) -> web.Response:
        return _error(
            404, "not_found_error", f"No batch found with id '{request.match_info['id']}'."
        )
