"""OpenAI's batch input validation: what fails a batch, and what fails only its line (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import synth
from .faults import openai_body
from .openai_shapes import model_not_found
from .state import RequestRecord

MAX_REPORTED_ERRORS = 10
URL_MISMATCH = "The URL provided for this request does not prefix-match the batch endpoint."
DUPLICATE_CUSTOM_ID = (
    "The custom_id for this request is a duplicate of another request. "
    "The custom_id parameter must be unique for each request in a batch."
)
MISSING_MODEL = openai_body("you must provide a model parameter", "invalid_request_error")


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
