"""Domain rules for requests, independent of any wire format or I/O.

A request record is the dict form of ``schemas/InferenceRequest.avsc``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from connector.errors import ValidationError

MAX_REQUEST_ID_LEN = 256
# JSON nesting a body may have: the batch lines wrap it two levels deeper, orjson writes 254.
MAX_BODY_DEPTH = 252

#: Endpoints each built-in provider's batch API (and synchronous API) accepts. Named
#: providers add theirs: ``connector.providers.registry.endpoints_of`` gives the full map.
ENDPOINTS: dict[str, frozenset[str]] = {
    "openai": frozenset({"/v1/chat/completions", "/v1/responses", "/v1/embeddings"}),
    "anthropic": frozenset({"/v1/messages"}),
    "gemini": frozenset({"generateContent"}),
}


@dataclass(frozen=True, slots=True, order=True)
class BatchKey:
    """Requests with the same key can share one provider batch.

    ``shard`` spreads one (provider, model, endpoint) over several keys — and so over
    several work partitions and workers — when one model's volume needs it.
    """

    provider: str
    model: str
    endpoint: str
    shard: int = 0

    def __str__(self) -> str:
        base = f"{self.provider}|{self.model}|{self.endpoint}"
        return f"{base}|{self.shard}" if self.shard else base

    @classmethod
    def parse(cls, text: str) -> BatchKey:
        """The key written as ``str(key)``; parsed once per distinct text (keys are few)."""
        return _parse_key(text)

    @classmethod
    def of(cls, request: dict[str, Any], shards: int = 1) -> BatchKey:
        # crc32, not hash(): the shard must be the same in every process and after restarts.
        shard = (
            zlib.crc32(request["request_id"].encode("utf-8", "surrogatepass")) % shards
            if shards > 1
            else 0
        )
        return cls(request["provider"], request["model"], request["endpoint"], shard)


def parse_body(request: dict[str, Any]) -> dict[str, Any]:
    """The provider-native body as a dict; ValidationError if it is not a JSON object."""
    try:
        body = orjson.loads(request["body"])
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValidationError(f"body must be a JSON object, got {type(body).__name__}")
    text = request["body"]
    if text.count("[") + text.count("{") > MAX_BODY_DEPTH:
        # Only then can it be nested too deeply to write back out: the batch files and
        # request lines wrap the body two levels deeper, and orjson writes at most 254.
        try:
            orjson.dumps([[body]])
        except TypeError as exc:
            raise ValidationError(
                f"body is nested too deeply (at most {MAX_BODY_DEPTH} levels): {exc}"
            ) from exc
    return body


def validate_request(
    request: dict[str, Any],
    *,
    reply_allowlist: frozenset[str] | set[str] = frozenset(),
    endpoints: Mapping[str, frozenset[str]] = ENDPOINTS,
) -> dict[str, Any]:
    """Check a decoded request; return its parsed body. Raises ValidationError with the reason.

    ``endpoints`` maps every provider name requests may use to the endpoints it serves
    (default: the three built-ins).
    """
    request_id = request.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise ValidationError("request_id must be a non-empty string")
    if len(request_id) > MAX_REQUEST_ID_LEN:
        raise ValidationError(
            f"request_id is {len(request_id)} characters; at most {MAX_REQUEST_ID_LEN}"
        )
    provider = request.get("provider")
    if not isinstance(provider, str) or provider not in endpoints:
        raise ValidationError(
            f"unknown provider {provider!r}; expected one of {', '.join(endpoints)}"
        )
    if not request.get("model"):
        raise ValidationError("model must be set")
    if "|" in request["model"]:
        raise ValidationError("model must not contain '|'")
    endpoint = request.get("endpoint")
    if endpoint not in endpoints[provider]:
        raise ValidationError(
            f"endpoint {endpoint!r} is not supported for {provider}; expected one of {', '.join(sorted(endpoints[provider]))}"
        )
    attempt = request.get("attempt", 1)
    if not isinstance(attempt, int) or attempt < 1:
        raise ValidationError(f"attempt must be an integer >= 1, got {attempt!r}")
    reply = request.get("reply_topic")
    if reply is not None and reply not in reply_allowlist:
        raise ValidationError(f"reply_topic {reply!r} is not on the allow-list")
    body = parse_body(request)
    if body.get("stream"):
        raise ValidationError("streaming requests cannot be batched or answered as one event")
    return body


@lru_cache(maxsize=4096)
def _parse_key(text: str) -> BatchKey:
    provider, model, endpoint, *shard = text.split("|", 3)
    return BatchKey(provider, model, endpoint, int(shard[0]) if shard else 0)
