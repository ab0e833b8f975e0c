"""Gemini Developer API: batch mode, the Files API and generateContent, as ``google-genai`` calls them.

Batches come back operation-shaped (``{"name", "metadata": {...}, "done"}``) with
``BATCH_STATE_*`` states; the SDK's ``_BatchJob_from_mldev`` turns them into ``BatchJob``
objects with ``JOB_STATE_*`` values.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from . import synth, validation
from .faults import GEMINI_ERRORS, error_for, gemini_body
from .services import Services
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
    new_id,
    progress,
    result_of,
)
from .wire import base_url, iso

VERSIONS = "{ver:v1beta|v1}"
LOWER_ALNUM = string.ascii_lowercase + string.digits
TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1beta."
FILE_TTL_SECONDS = 48 * 3600

_STATE = {
    Phase.QUEUED: "BATCH_STATE_PENDING",
    Phase.RUNNING: "BATCH_STATE_RUNNING",
    Phase.FINALIZING: "BATCH_STATE_RUNNING",
    Phase.CANCELLING: "BATCH_STATE_RUNNING",
}
_FINAL_STATE = {
    Final.COMPLETED: "BATCH_STATE_SUCCEEDED",
    Final.FAILED: "BATCH_STATE_FAILED",
    Final.EXPIRED: "BATCH_STATE_EXPIRED",
    Final.CANCELLED: "BATCH_STATE_CANCELLED",
}


def is_gemini(request: web.Request) -> bool:
    """google-genai always sends these; the OpenAI SDK never does (they share /v1 paths)."""
    return "x-goog-api-key" in request.headers or "x-goog-api-client" in request.headers


# --- pure wire shapes ---------------------------------------------------------------------


def batch_state(prog: Progress) -> str:
    return _FINAL_STATE[prog.final] if prog.final else _STATE[prog.phase]


def generate_response(model: str, serialised: str, cache: CacheUse = NO_CACHE) -> dict[str, Any]:
    """A GenerateContentResponse; ``cache`` is how the request used the implicit cache."""
    c = synth.complete(serialised)
    usage: dict[str, Any] = {
        # promptTokenCount includes the cached part, which cachedContentTokenCount names.
        "promptTokenCount": c.input_tokens,
        "candidatesTokenCount": c.output_tokens,
        "totalTokenCount": c.total_tokens,
    }
    if cache.read:
        usage["cachedContentTokenCount"] = min(cache.read, c.input_tokens)
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": c.text}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": usage,
        "modelVersion": model.removeprefix("models/"),
        "responseId": f"{synth.digest('gemini', serialised):016x}",
    }


def request_error(kind: str) -> dict[str, Any]:
    """A google.rpc.Status for a failed request inside a batch."""
    e = GEMINI_ERRORS[kind]
    return {"code": e.rpc_code, "message": f"{e.status_name}: {e.message}"}


def failed_request(request: RequestRecord) -> dict[str, Any]:
    """The google.rpc.Status a failed request of a batch ends with."""
    return request.rejection or request_error(request.error or "server_error")


def inline_responses(batch: BatchRecord, prog: Progress) -> list[dict[str, Any]]:
    """One entry per request, in request order (inline requests carry no key)."""
    out = []
    for index, request in enumerate(batch.requests):
        entry: dict[str, Any] = {}
        if result_of(request, index, prog) is Result.SUCCEEDED:
            entry["response"] = generate_response(
                batch.extra["model"], request.serialised, request.cache
            )
        else:
            entry["error"] = failed_request(request)
        metadata = request.body.get("metadata") if isinstance(request.body, dict) else None
        if metadata:
            entry["metadata"] = metadata
        out.append(entry)
    return out


def file_result_lines(batch: BatchRecord, prog: Progress) -> Iterator[str]:
    for index in synth.shuffled(batch.total, batch.seed, batch.id):
        request = batch.requests[index]
        line: dict[str, Any] = {"key": request.key}
        if result_of(request, index, prog) is Result.SUCCEEDED:
            line["response"] = generate_response(
                batch.extra["model"], request.serialised, request.cache
            )
        else:
            line["error"] = failed_request(request)
        yield json.dumps(line) + "\n"


def parse_file_requests(content: bytes) -> list[RequestRecord]:
    """Requests from an uploaded ``{"key", "request"}`` JSONL file.

    A file is validated line by line while the job runs: a line that is not a request, or a
    request that is not a valid GenerateContentRequest, fails alone with INVALID_ARGUMENT.
    """
    requests = []
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            key = str(item["key"])
            body = item["request"]
        except (ValueError, KeyError, TypeError):
            requests.append(
                RequestRecord(f"line-{number}", raw.decode(errors="replace"), {}, "invalid_request")
            )
            continue
        record = RequestRecord(key, synth.serialise(body), item)
        problem = validation.gemini_request_problem(body)
        if problem is not None:
            record.error = "invalid_request"
            record.rejection = {
                "code": GEMINI_ERRORS["invalid_request"].rpc_code,
                "message": problem,
            }
        requests.append(record)
    return requests


def inline_problem(items: list[Any]) -> str | None:
    """Why inline batch requests are refused as a whole (400 INVALID_ARGUMENT), or None."""
    for index, item in enumerate(items):
        request = item.get("request") if isinstance(item, dict) else None
        problem = validation.gemini_request_problem(
            request,
            f"batch.input_config.requests.requests[{index}].request.",
            "BatchGenerateContentRequest",
        )
        if problem is not None:
            return problem
    return None


def file_object(f: FileRecord, base_url: str, version: str) -> dict[str, Any]:
    digest = hashlib.sha256(b"".join(f.chunks())).digest() if f.content is not None else b""
    obj: dict[str, Any] = {
        "name": f.id,
        "mimeType": f.mime_type,
        "sizeBytes": str(f.size),
        "createTime": iso(f.created_at),
        "updateTime": iso(f.created_at),
        "expirationTime": iso(f.created_at + FILE_TTL_SECONDS),
        "sha256Hash": base64.b64encode(digest).decode(),
        "uri": f"{base_url}/{version}/{f.id}",
        "state": "ACTIVE",
        "source": "UPLOADED" if f.content is not None else "GENERATED",
    }
    if f.display_name:
        obj["displayName"] = f.display_name
    if f.content is None:
        obj["downloadUri"] = f"{base_url}/{version}/{f.id}:download?alt=media"
    return obj


# --- handlers -----------------------------------------------------------------------------


def _error(status: int, status_name: str, message: str) -> web.Response:
    return web.json_response(gemini_body(status, status_name, message), status=status)


class GeminiRoutes:
    """Gemini's batch mode, Files API and generateContent."""

    provider = "gemini"

    def __init__(self, emu: Services) -> None:
        self.emu = emu

    def state_name(self, prog: Progress) -> str:
        return batch_state(prog).replace("BATCH_STATE_", "JOB_STATE_")

    def batch_name(self, batch: BatchRecord) -> str:
        return f"batches/{batch.id}"

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post(
            f"/{VERSIONS}/models/{{model:[^/:]+}}:batchGenerateContent", self.create_batch
        )
        router.add_post(
            f"/{VERSIONS}/models/{{model:[^/:]+}}:generateContent", self.generate_content
        )
        router.add_post(f"/{VERSIONS}/batches/{{id:[^/:]+}}:cancel", self.cancel_batch)
        router.add_get(f"/{VERSIONS}/files/{{id:[^/:]+}}:download", self.download_file)
        router.add_post(f"/upload/{VERSIONS}/files", self.upload)
        # /v1/batches and /v1/files/{id} are shared with OpenAI; routes.SharedV1Routes
        # dispatches those.
        router.add_get("/{ver:v1beta}/batches", self.list_batches)
        router.add_get("/{ver:v1beta}/batches/{id:[^/:]+}", self.get_batch)
        router.add_get("/{ver:v1beta}/files/{id:[^/:]+}", self.get_file)

    async def create_batch(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            batch_spec = payload["batch"]
            input_config = batch_spec["inputConfig"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "INVALID_ARGUMENT", "batch.inputConfig is required.")
        refused = self._unknown_model(request, "batchGenerateContent")
        if refused is not None:
            return refused
        if "fileName" in input_config:
            requests = self._file_requests(str(input_config["fileName"]))
            source = "file"
        else:
            requests = self._inline_requests(request, input_config)
            source = "inline"
        if isinstance(requests, web.Response):
            return requests
        if not requests:
            return _error(400, "INVALID_ARGUMENT", "The batch contains no requests.")
        display_name = batch_spec.get("displayName")
        model = request.match_info["model"]
        caching = self.emu.caching()
        batch = self.emu.new_batch(
            "gemini",
            new_id("", 20, LOWER_ALNUM),
            requests,
            tag=display_name,
            outcome=self.emu.config.batch_outcome,
            extra={
                "model": f"models/{model}",
                "display_name": display_name,
                "source": source,
                "file_name": input_config.get("fileName"),
            },
            cache=lambda r, at: caching.gemini(model, r.body.get("request") or {}, at),
        )
        return web.json_response(self._json(batch))

    def _file_requests(self, file_name: str) -> list[RequestRecord] | web.Response:
        record = self.emu.store.files.get(file_name)
        if record is None or record.provider != "gemini" or record.content is None:
            return _error(404, "NOT_FOUND", f"File {file_name} not found.")
        return parse_file_requests(record.content)

    def _inline_requests(
        self, request: web.Request, input_config: dict[str, Any]
    ) -> list[RequestRecord] | web.Response:
        """Inline requests are part of the create call: one invalid request refuses it all."""
        limit = self.emu.config.gemini_max_inline_bytes
        if (request.content_length or 0) > limit:
            message = f"Request payload size exceeds the limit: {limit} bytes."
            return _error(400, "INVALID_ARGUMENT", message)
        items = (input_config.get("requests") or {}).get("requests") or []
        problem = inline_problem(items)
        if problem is not None:
            return _error(400, "INVALID_ARGUMENT", problem)
        return [
            RequestRecord(
                str((item.get("metadata") or {}).get("key", index)),
                synth.serialise(item.get("request", {})),
                item,
            )
            for index, item in enumerate(items)
        ]

    async def get_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request.match_info["id"])
        if batch is None:
            return self._not_found(request)
        return web.json_response(self._json(batch))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request.match_info["id"])
        if batch is None:
            return self._not_found(request)
        prog = progress(batch, self.emu.now())
        if prog.is_final:
            return _error(
                400, "FAILED_PRECONDITION", f"Batch is already in state {batch_state(prog)}."
            )
        if batch.cancel_requested_at is None and prog.phase is not Phase.CANCELLING:
            batch.cancel_requested_at = self.emu.now()
        return web.json_response({})

    async def list_batches(self, request: web.Request) -> web.Response:
        batches = self.emu.store.batches_of("gemini")
        try:
            size = int(request.query.get("pageSize", "50"))
            start = int(request.query.get("pageToken") or "0")
        except ValueError:
            return _error(400, "INVALID_ARGUMENT", "Invalid pageSize or pageToken.")
        size = max(1, min(size, 1000))
        page = batches[start : start + size]
        body: dict[str, Any] = {"operations": [self._json(b) for b in page]}
        if start + size < len(batches):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    async def generate_content(self, request: web.Request) -> web.Response:
        self.emu.store.count_sync_call("gemini")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload.")
        refused = self._unknown_model(request, "generateContent")
        if refused is not None:
            return refused
        problem = validation.gemini_request_problem(body)
        if problem is not None:
            return _error(400, "INVALID_ARGUMENT", problem)
        serialised = synth.serialise(body)
        kind = synth.marker_kind(serialised)
        if kind:
            status, payload = error_for("gemini", kind)
            return web.json_response(payload, status=status)
        model = request.match_info["model"]
        cache = self.emu.caching().gemini(model, body, self.emu.now())
        return web.json_response(generate_response(model, serialised, cache))

    def _unknown_model(self, request: web.Request, method: str) -> web.Response | None:
        """The 404 a call on a model Gemini does not serve gets, or None."""
        model = request.match_info["model"]
        if self.emu.knows_model("gemini", model):
            return None
        message = validation.gemini_unknown_model(model, request.match_info["ver"], method)
        return _error(404, "NOT_FOUND", message)

    async def upload(self, request: web.Request) -> web.Response:
        """The resumable upload protocol: a ``start`` call, then chunks up to ``finalize``."""
        upload_id = request.query.get("upload_id")
        if upload_id is None:
            return await self._start_upload(request)
        pending = self.emu.store.uploads.get(upload_id)
        if pending is None:
            return _error(404, "NOT_FOUND", "Unknown upload id.")
        record, buffer = pending
        offset = int(request.headers.get("X-Goog-Upload-Offset", len(buffer)))
        if offset != len(buffer):
            return _error(
                400,
                "INVALID_ARGUMENT",
                f"Upload offset {offset} does not match {len(buffer)} bytes received.",
            )
        buffer.extend(await request.read())
        command = request.headers.get("X-Goog-Upload-Command", "")
        if "finalize" not in command:
            return web.Response(headers={"X-Goog-Upload-Status": "active"})
        store = self.emu.store
        del store.uploads[upload_id]
        record.content = bytes(buffer)
        store.files[record.id] = record
        store.files_uploaded += 1
        body = {"file": file_object(record, base_url(request), request.match_info["ver"])}
        return web.json_response(body, headers={"X-Goog-Upload-Status": "final"})

    async def _start_upload(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Goog-Upload-Command", "").strip() != "start":
            return _error(
                400, "INVALID_ARGUMENT", "Only the resumable upload protocol is supported."
            )
        try:
            spec = (await request.json()).get("file") or {}
        except ValueError:
            spec = {}
        name = spec.get("name") or f"files/{new_id('', 12, LOWER_ALNUM)}"
        record = FileRecord(
            id=name,
            provider="gemini",
            filename=name,
            purpose="batch",
            created_at=self.emu.now(),
            mime_type=str(
                spec.get("mimeType")
                or spec.get("mime_type")
                or request.headers.get(
                    "X-Goog-Upload-Header-Content-Type", "application/octet-stream"
                )
            ),
            # The SDK sends snake_case field names here; the API accepts both spellings.
            display_name=spec.get("displayName") or spec.get("display_name"),
        )
        upload_id = new_id("", 24, LOWER_ALNUM)
        self.emu.store.uploads[upload_id] = (record, bytearray())
        version = request.match_info["ver"]
        url = f"{base_url(request)}/upload/{version}/files?upload_id={upload_id}&upload_protocol=resumable"
        return web.Response(headers={"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"})

    async def get_file(self, request: web.Request) -> web.Response:
        record = self._file(request.match_info["id"])
        if record is None:
            return _error(404, "NOT_FOUND", f"File files/{request.match_info['id']} not found.")
        version = request.path.split("/")[1]
        return web.json_response(file_object(record, base_url(request), version))

    async def download_file(self, request: web.Request) -> web.StreamResponse:
        record = self._file(request.match_info["id"])
        if record is None:
            return _error(404, "NOT_FOUND", f"File files/{request.match_info['id']} not found.")
        return await self.emu.stream(
            request, record.chunks(), record.mime_type, result=record.content is None
        )

    def _file(self, file_id: str) -> FileRecord | None:
        record = self.emu.store.files.get(f"files/{file_id}")
        return record if record is not None and record.provider == "gemini" else None

    def _batch(self, batch_id: str) -> BatchRecord | None:
        batch = self.emu.store.batches.get(batch_id)
        return batch if batch is not None and batch.provider == "gemini" else None

    @staticmethod
    def _not_found(request: web.Request) -> web.Response:
        return _error(404, "NOT_FOUND", f"Batch batches/{request.match_info['id']} not found.")

    def _json(self, batch: BatchRecord) -> dict[str, Any]:
        prog = progress(batch, self.emu.now())
        counts = count_results(batch, prog)
        name = f"batches/{batch.id}"
        metadata: dict[str, Any] = {
            "@type": TYPE_PREFIX + "GenerateContentBatch",
            "name": name,
            "model": batch.extra["model"],
            "createTime": iso(batch.created_at),
            "updateTime": iso(
                prog.ended_at or prog.cancelling_at or prog.started_at or batch.created_at
            ),
            "batchStats": {
                "requestCount": str(batch.total),
                "pendingRequestCount": str(counts[Result.PROCESSING]),
                "successfulRequestCount": str(counts[Result.SUCCEEDED]),
                "failedRequestCount": str(counts[Result.ERRORED]),
            },
            "state": batch_state(prog),
        }
        if batch.extra["display_name"]:
            metadata["displayName"] = batch.extra["display_name"]
        if batch.extra["file_name"]:
            metadata["inputConfig"] = {"fileName": batch.extra["file_name"]}
        if prog.ended_at is not None:
            metadata["endTime"] = iso(prog.ended_at)
        operation: dict[str, Any] = {"name": name, "metadata": metadata, "done": prog.is_final}
        if prog.final is Final.COMPLETED:
            output = self._output(batch, prog)
            metadata["output"] = output
            operation["response"] = {"@type": TYPE_PREFIX + "GenerateContentBatchOutput", **output}
        elif prog.final is Final.FAILED:
            operation["error"] = {"code": 13, "message": "The batch failed (emulated)."}
        return operation

    def _output(self, batch: BatchRecord, prog: Progress) -> dict[str, Any]:
        if batch.extra["source"] == "inline":
            return {"inlinedResponses": {"inlinedResponses": inline_responses(batch, prog)}}
        file_id = f"files/batch-{batch.id}"
        if file_id not in self.emu.store.files:
            self.emu.store.files[file_id] = FileRecord(
                id=file_id,
                provider="gemini",
                filename=file_id,
                purpose="batch_output",
                created_at=prog.ended_at or self.emu.now(),
                producer=lambda: synth.with_malformed(
                    file_result_lines(batch, prog), batch.malformed_lines, batch.id
                ),
            )
        return {"responsesFile": file_id}
