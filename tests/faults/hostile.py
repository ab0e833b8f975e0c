"""Hostile input records: what each is, how to build it, and what it must end as.

Each case builds the raw records for one lane (deferred or realtime) from a fresh request
id; the connector must answer each with exactly one outcome — a result, or a dead letter
with a clear error class — and go on with the records after it. Sizes come from the
topic definitions in topics/, so the cases follow them when they change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector import schemas
from connector.client import make_request
from connector.config import Settings
from connector.testing.pipeline import MODELS, Pipeline
from connector.topics import load_specs
from tests.faults.runs import RESULT, OutcomeSpec, dead_letter
from tests.fixtures.records import sample

ANY = OutcomeSpec("any")
ONCE = OutcomeSpec("result", once=True)
REJECTED = dead_letter("invalid_input")
UNDECODABLE = dead_letter("decode_error")
# A request the provider refuses may also be refused up front, when the connector knows.
REFUSED = dead_letter("provider_rejected", "invalid_input")
MiB = 1024 * 1024
# Room for a record's other fields when sizing one field to a limit.
SLACK = 16 * 1024


@dataclass
class Lane:
    """Where a case's records go and what it needs to build them."""

    name: str  # "deferred" | "realtime"
    topic: str
    pipe: Pipeline
    limits: dict[str, int]  # topic role → max.message.bytes

    def encode(self, request: dict[str, Any]) -> bytes:
        return self.pipe.encode(request, self.topic)


@dataclass
class Built:
    """The records of one case and the request id its outcome may carry (None: no id)."""

    records: list[tuple[bytes | None, bytes | None]]
    request_id: str | None
    spec: OutcomeSpec


@dataclass
class Case:
    name: str
    build: Callable[[Lane, str], Built]
    lanes: tuple[str, ...] = ("deferred", "realtime")


def topic_limits(settings: Settings) -> dict[str, int]:
    """max.message.bytes of each topic role, as topics/*.yaml declares it."""
    return {
        spec.role: int(spec.configs["max.message.bytes"])
        for spec in load_specs(None, settings)
        if spec.role
    }


ENDPOINT_OF = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "generateContent",
}
BODY_OF = {
    "openai": {"messages": [{"role": "user", "content": "hello"}]},
    "anthropic": {"max_tokens": 32, "messages": [{"role": "user", "content": "hello"}]},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]},
}


def request(rid: str, template: str = "openai", body: Any = None, **fields: Any) -> dict[str, Any]:
    """A valid request to ``template``'s provider, but for ``body`` and ``fields`` (which override any field)."""
    body = BODY_OF[template] if body is None else body
    text = body if isinstance(body, str) else json.dumps(body)
    record = make_request(
        rid, template, MODELS[template], ENDPOINT_OF[template], text, validate=False
    )
    record.update(fields)
    return record


def keyed(rid: str, value: bytes | None) -> tuple[bytes | None, bytes | None]:
    return (rid.encode("utf-8", "surrogatepass") or None, value)


def valid(
    rid: str, spec: OutcomeSpec, template: str = "openai", body: Any = None, **fields: Any
) -> Callable[[Lane, str], Built]:
    """A case made of one request record, encoded as it is."""

    def build(lane: Lane, prefix: str) -> Built:
        record = request(f"{prefix}{rid}", template, body, **fields)
        return Built([keyed(record["request_id"], lane.encode(record))], record["request_id"], spec)

    return build


def raw(
    make: Callable[[Lane, dict[str, Any]], bytes | None], spec: OutcomeSpec = UNDECODABLE
) -> Callable[[Lane, str], Built]:
    """A case made of one record that is not (quite) an encoded request."""

    def build(lane: Lane, prefix: str) -> Built:
        record = request(f"{prefix}raw")
        return Built([(b"raw", make(lane, record))], None, spec)

    return build


def with_invalid_utf8(field: str) -> Callable[[Lane, dict[str, Any]], bytes]:
    """Avro whose ``field`` text holds the UTF-8 form of a lone surrogate (invalid UTF-8)."""
    placeholder = "@@@"  # as long as the surrogate's three bytes

    def make(lane: Lane, record: dict[str, Any]) -> bytes:
        if field == "metadata":
            record["metadata"] = {"k": placeholder}
        elif field == "body":
            record["body"] = json.dumps({"messages": [{"role": "user", "content": placeholder}]})
        else:
            record[field] = placeholder
        encoded = lane.encode(record)
        assert encoded.count(placeholder.encode()) == 1
        return encoded.replace(placeholder.encode(), "\ud800".encode("utf-8", "surrogatepass"))

    return make


def deeply_nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_messages(depth: int) -> dict[str, Any]:
    """A valid chat body with a metadata value nested ``depth`` levels deep."""
    inner: Any = "leaf"
    for _ in range(depth):
        inner = [inner]
    return {
        "messages": [{"role": "user", "content": "deep"}],
        "metadata": {"deep": json.dumps(inner)},
        "x_nested": inner,
    }


def sized_body(
    lane: Lane, prefix: str, role: str, delta: int, spec: OutcomeSpec, text: str = ""
) -> Built:
    """A chat request whose encoded record is ``delta`` bytes off ``role``'s limit."""
    rid = f"{prefix}body-{role}-{'over' if delta > 0 else 'under'}"
    record = request(rid, body={"messages": [{"role": "user", "content": text}]})
    base = len(lane.encode(record))
    filler = max(0, lane.limits[role] + delta - base)
    record = request(rid, body={"messages": [{"role": "user", "content": text + "x" * filler}]})
    return Built([keyed(rid, lane.encode(record))], rid, spec)


def sized_result(lane: Lane, prefix: str, delta: int, spec: OutcomeSpec) -> Built:
    """A request whose metadata (copied onto its result) puts the result ``delta`` off the results topic's limit."""
    rid = f"{prefix}result-{'over' if delta > 0 else 'under'}"
    result = sample(schemas.RESULT) | {
        "request_id": rid,
        "response": "x" * 600,
    }  # an answer of about this size
    base = len(lane.pipe.codec.encode(schemas.RESULT, result, "results"))
    filler = max(0, lane.limits["results"] + delta - base)
    record = request(rid, metadata={"filler": "m" * filler})
    return Built([keyed(rid, lane.encode(record))], rid, spec)


def undecodable_sized(role: str, delta: int) -> Callable[[Lane, str], Built]:
    """Bytes that are no request, sized ``delta`` off ``role``'s limit (a dead letter carries them)."""

    def build(lane: Lane, prefix: str) -> Built:
        size = lane.limits[role] + delta
        return Built([(b"raw", b"\xff" * size)], None, UNDECODABLE)

    return build


def same_id_twice(lane: Lane, prefix: str) -> Built:
    """The design: a repeated request id within the de-dup window is a replay, ignored."""
    rid = f"{prefix}twice"
    first = request(rid, body={"messages": [{"role": "user", "content": "FIRST body"}]})
    second = request(
        rid, body={"messages": [{"role": "user", "content": "SECOND body, different"}]}
    )
    return Built([keyed(rid, lane.encode(first)), keyed(rid, lane.encode(second))], rid, ONCE)


def now_ms() -> int:
    return int(time.time() * 1000)


CASES: list[Case] = [
    # --- not a request at all
    Case("undecodable bytes", raw(lambda lane, r: b"\x00\xffnot avro at all\xfe")),
    Case("truncated Avro", raw(lambda lane, r: lane.encode(r)[: len(lane.encode(r)) // 2])),
    Case("trailing bytes after Avro", raw(lambda lane, r: lane.encode(r) + b"\x02\x04trailing")),
    Case("tombstone (no value)", raw(lambda lane, r: None)),
    Case("empty value", raw(lambda lane, r: b"")),
    Case("JSON instead of Avro", raw(lambda lane, r: json.dumps(r).encode())),
    Case(
        "wrong schema (a BatchEvent)",
        raw(
            lambda lane, r: lane.pipe.codec.encode(
                schemas.BATCH_EVENT, sample(schemas.BATCH_EVENT), lane.topic
            ),
            dead_letter("decode_error", "invalid_input"),
        ),
    ),
    Case("lone surrogate in request_id (invalid UTF-8)", raw(with_invalid_utf8("request_id"))),
    Case("lone surrogate in metadata (invalid UTF-8)", raw(with_invalid_utf8("metadata"))),
    Case("lone surrogate in body text (invalid UTF-8)", raw(with_invalid_utf8("body"))),
    Case(
        "deadline beyond year 9999",
        raw(
            lambda lane, r: lane.encode(r | {"deadline": 2**62}),
            dead_letter("decode_error", "invalid_input"),
        ),
    ),
    # --- a request that breaks a validation rule (connector/model.py)
    Case("empty request_id", raw(lambda lane, r: lane.encode(r | {"request_id": ""}), REJECTED)),
    Case("request_id of 257 characters", valid("x" * 257, REJECTED)),
    Case(
        "unknown provider",
        valid("unknown-provider", REJECTED, provider="mistral"),
    ),
    Case("empty model", valid("empty-model", REJECTED, model="")),
    Case("model with '|'", valid("pipe-model", REJECTED, model="gpt-4o|mini")),
    Case(
        "unsupported endpoint", valid("bad-endpoint", REJECTED, endpoint="/v1/images/generations")
    ),
    Case(
        "another provider's endpoint", valid("foreign-endpoint", REJECTED, endpoint="/v1/messages")
    ),
    Case("attempt 0", valid("attempt-0", REJECTED, attempt=0)),
    Case(
        "reply_topic not on the allow-list",
        valid("reply-topic", REJECTED, reply_topic="somebody.elses.topic"),
    ),
    Case("body is not JSON", valid("not-json", REJECTED, body="this is not json {")),
    Case("body is a JSON array", valid("json-array", REJECTED, body="[1, 2, 3]")),
    Case("body is JSON null", valid("json-null", REJECTED, body="null")),
    Case("streaming request", valid("stream", REJECTED, body={"messages": [], "stream": True})),
    Case(
        "body nested 100,000 levels deep",
        valid("deep", dead_letter("invalid_input", "decode_error"), body=deeply_nested(100_000)),
    ),
    Case(
        "body nested 900 levels deep (under Python's recursion limit)",
        valid("deep-900", ANY, body=nested_messages(900)),
    ),
    Case(
        "NUL raw inside the body JSON",
        valid("nul-raw", REJECTED, body='{"messages": [{"role": "user", "content": "a\x00b"}]}'),
    ),
    # --- a request the provider refuses
    Case(
        "Gemini contents: 5",
        valid("gemini-contents", REFUSED, "gemini", body={"contents": 5}),
    ),
    Case(
        "Anthropic params without max_tokens",
        valid(
            "no-max-tokens",
            REFUSED,
            "anthropic",
            body={"messages": [{"role": "user", "content": "hi"}]},
        ),
    ),
    Case(
        "Anthropic params without messages",
        valid("no-messages", REFUSED, "anthropic", body={"max_tokens": 10}),
    ),
    Case("unknown OpenAI model", valid("openai-model", REFUSED, model="gpt-does-not-exist")),
    Case(
        "unknown Anthropic model",
        valid("anthropic-model", REFUSED, "anthropic", model="claude-does-not-exist"),
    ),
    Case(
        "unknown Gemini model",
        valid("gemini-model", REFUSED, "gemini", model="gemini-does-not-exist"),
    ),
    # --- odd but valid text
    Case(
        "NUL bytes in request_id and metadata", valid("nul\x00id", ANY, metadata={"k\x00": "v\x00"})
    ),
    Case(
        "lone surrogate escape in the body JSON",
        valid(
            "surrogate-escape",
            ANY,
            body='{"messages": [{"role": "user", "content": "\\ud800 alone"}]}',
        ),
    ),
    Case(
        "request_id of 256 non-ASCII characters",
        lambda lane, p: valid("ü" * (256 - len(p) - 5) + "-edge", RESULT)(lane, p),
    ),
    # --- deadlines
    Case(
        "deadline in the past",
        lambda lane, p: valid("past-deadline", ANY, deadline=now_ms() - 3_600_000)(lane, p),
    ),
    Case("deadline at the epoch", valid("epoch-deadline", ANY, deadline=0)),
    # --- sizes (limits from topics/*.yaml; Faust's producer sends at most 1 MB unless told)
    Case(
        "huge metadata map (50,000 entries)",
        valid("huge-metadata", ANY, metadata={f"k{i}": "v" * 30 for i in range(50_000)}),
        lanes=("deferred",),
    ),
    Case(
        "huge provider string (3 MiB)",
        valid(
            "huge-provider",
            dead_letter("invalid_input", "oversize"),
            provider="p" * (3 * MiB),
        ),
        lanes=("deferred",),
    ),
    Case(
        "body of 1.5 MiB (over the producer's 1 MB default)",
        valid(
            "body-1.5mib",
            RESULT,
            body={"messages": [{"role": "user", "content": "x" * (3 * MiB // 2)}]},
        ),
    ),
    Case(
        "rejected body of 1.5 MiB (its dead letter carries it)",
        valid(
            "rejected-1.5mib",
            REFUSED,
            body={
                "messages": [
                    {
                        "role": "user",
                        "content": "EMULATOR_FAIL:invalid_request " + "x" * (3 * MiB // 2),
                    }
                ]
            },
        ),
        lanes=("deferred",),
    ),
    Case(
        "body just under the input topic's max.message.bytes",
        lambda lane, p: sized_body(lane, p, lane.name, -SLACK, RESULT),
    ),
    Case(
        "body just over the input topic's max.message.bytes",
        lambda lane, p: sized_body(lane, p, lane.name, SLACK, ANY),
        lanes=("deferred",),
    ),
    Case(
        "result just under the results topic's max.message.bytes",
        lambda lane, p: sized_result(lane, p, -SLACK, RESULT),
        lanes=("deferred",),
    ),
    Case(
        "result just over the results topic's max.message.bytes",
        lambda lane, p: sized_result(lane, p, 1024, ANY),
        lanes=("deferred",),
    ),
    Case(
        "dead letter just under the dead-letter topic's max.message.bytes",
        undecodable_sized("deadletter", -SLACK),
        lanes=("deferred",),
    ),
    Case(
        "dead letter just over the dead-letter topic's max.message.bytes",
        undecodable_sized("deadletter", SLACK),
        lanes=("deferred",),
    ),
    # --- the same request id twice
    Case("same request_id twice, different bodies", same_id_twice),
]
