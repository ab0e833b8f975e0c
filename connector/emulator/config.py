"""Emulator settings: processing speed, limits and the faults to inject."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from .validation import DEFAULT_FLEX_MODELS, DEFAULT_KNOWN_MODELS

ERROR_KINDS = ("rate_limit", "server_error", "overloaded", "invalid_request", "policy")
BATCH_OUTCOMES = (None, "failed", "expired", "cancelled", "stuck")
# 404 is a provider-shaped not-found (a transient 404 on retrieve); None means "no error
# answer": only the delay or the dropped response applies.
HTTP_FAULT_STATUSES = (404, 429, 500, 503, None)
# Prompt-cache lifetimes in seconds, as the providers document them (see caching.py).
DEFAULT_CACHE_TTL_S = {
    "openai": 300.0,
    "openai_24h": 24 * 3600.0,
    "anthropic_5m": 300.0,
    "anthropic_1h": 3600.0,
    "gemini": 300.0,
}


@dataclass
class HttpFault:
    """Disturbs the next ``count`` requests matching ``path_regex`` (and ``method``).

    A matching request is first held ``delay_s`` seconds. Then, with ``drop_response``, the
    real route handles it (a batch is created and counted) and the connection is closed
    without any answer, so the client sees a disconnect; ``status`` is not used then.
    Otherwise ``status`` answers instead of the route (provider-shaped error body, with
    ``Retry-After`` when ``retry_after`` is set), or ``status=None`` lets the route answer.
    """

    path_regex: str
    status: int | None = 429
    count: int = 1
    method: str | None = None
    retry_after: float | None = None
    delay_s: float = 0.0
    drop_response: bool = False

    def __post_init__(self) -> None:
        if self.status not in HTTP_FAULT_STATUSES:
            raise ValueError(f"http fault status must be one of {HTTP_FAULT_STATUSES}")
        if self.count < 0:
            raise ValueError("http fault count must be >= 0")
        if self.delay_s < 0:
            raise ValueError("http fault delay_s must be >= 0")
        if self.drop_response:
            # The request is handled for real, so no error status can answer it.
            self.status = None
        try:
            re.compile(self.path_regex)
        except re.error as exc:
            raise ValueError(f"http fault path_regex is invalid: {exc}") from exc

    def matches(self, method: str, path: str) -> bool:
        if self.count <= 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return re.search(self.path_regex, path) is not None


@dataclass
class EmulatorConfig:
    """Everything the emulator can be told, at start or through ``POST /_emulator/faults``.

    Batch-shaping fields (error rate, outcome, malformed lines, token limit) are read when a
    batch is created, so changing them never alters a batch already submitted.
    """

    processing_seconds: float = 2.0
    error_rate: float = 0.0
    error_kinds: list[str] = field(default_factory=lambda: ["server_error"])
    seed: int = 0
    batch_outcome: str | None = None
    http_errors: list[HttpFault] = field(default_factory=list)
    # Fail every OpenAI batch with token_limit_exceeded (the old all-or-nothing fault).
    openai_token_limit: bool = False
    # Enqueued input tokens allowed per OpenAI model across batches in flight; a model not
    # listed is unlimited. A batch that would pass the limit fails with token_limit_exceeded.
    openai_enqueued_token_limit: dict[str, int] = field(default_factory=dict)
    malformed_lines: int = 0
    webhook_url: str | None = None
    webhook_secret: str | None = None
    openai_max_requests: int = 50_000
    anthropic_max_requests: int = 100_000
    anthropic_max_bytes: int = 256 * 1024 * 1024
    gemini_max_inline_bytes: int = 20 * 1024 * 1024
    # The next N result downloads stop after about half of their bytes (connection closed).
    cut_downloads: int = 0
    # Result downloads are paced to this rate; None sends as fast as the client reads.
    download_bytes_per_s: int | None = None
    # Models each provider serves; others are refused as the real API refuses them. A
    # provider left out serves any model.
    known_models: dict[str, list[str]] = field(
        default_factory=lambda: {p: list(models) for p, models in DEFAULT_KNOWN_MODELS.items()}
    )
    # Prompt caching: usage reports cached prefixes the way each provider does.
    prompt_caching: bool = True
    cache_ttl_s: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CACHE_TTL_S))
    # The smallest cacheable prompt per model name, over the providers' documented minimums.
    cache_min_tokens: dict[str, int] = field(default_factory=dict)
    # OpenAI Flex: the models that take service_tier="flex", and the share of Flex calls
    # answered 429 Resource Unavailable (decided by a seeded count of Flex calls).
    openai_flex_models: list[str] = field(default_factory=lambda: list(DEFAULT_FLEX_MODELS))
    flex_429_rate: float = 0.0

    def __post_init__(self) -> None:
        self.http_errors = [
            fault if isinstance(fault, HttpFault) else HttpFault(**fault)
            for fault in self.http_errors
        ]
        if self.processing_seconds < 0:
            raise ValueError("processing_seconds must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        if not self.error_kinds or any(kind not in ERROR_KINDS for kind in self.error_kinds):
            raise ValueError(f"error_kinds must be a non-empty subset of {ERROR_KINDS}")
        if self.batch_outcome not in BATCH_OUTCOMES:
            raise ValueError(f"batch_outcome must be one of {BATCH_OUTCOMES}")
        if self.malformed_lines < 0:
            raise ValueError("malformed_lines must be >= 0")
        if self.cut_downloads < 0:
            raise ValueError("cut_downloads must be >= 0")
        if self.download_bytes_per_s is not None and self.download_bytes_per_s <= 0:
            raise ValueError("download_bytes_per_s must be > 0 (or null for no limit)")
        if not isinstance(self.known_models, dict) or not all(
            isinstance(models, list) and all(isinstance(m, str) for m in models)
            for models in self.known_models.values()
        ):
            raise ValueError("known_models must map a provider to a list of model names")
        unknown = set(self.cache_ttl_s) - set(DEFAULT_CACHE_TTL_S)
        if unknown:
            raise ValueError(f"cache_ttl_s knows only {sorted(DEFAULT_CACHE_TTL_S)}")
        # A partial mapping changes only the lifetimes it names.
        self.cache_ttl_s = {**DEFAULT_CACHE_TTL_S, **self.cache_ttl_s}
        if any(ttl <= 0 for ttl in self.cache_ttl_s.values()):
            raise ValueError("cache_ttl_s must be positive seconds")
        if any(minimum < 0 for minimum in self.cache_min_tokens.values()):
            raise ValueError("cache_min_tokens must be >= 0")
        if any(limit < 0 for limit in self.openai_enqueued_token_limit.values()):
            raise ValueError("openai_enqueued_token_limit values must be >= 0")
        if not 0.0 <= self.flex_429_rate <= 1.0:
            raise ValueError("flex_429_rate must be within [0, 1]")

    def merged(self, changes: dict[str, Any]) -> EmulatorConfig:
        """Return a copy with ``changes`` applied; unknown or invalid fields raise ValueError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown emulator fields: {sorted(unknown)}")
        current = {name: getattr(self, name) for name in known}
        current["http_errors"] = [dataclasses.asdict(f) for f in self.http_errors]
        current["error_kinds"] = list(self.error_kinds)
        current["known_models"] = {p: list(m) for p, m in self.known_models.items()}
        current["cache_ttl_s"] = dict(self.cache_ttl_s)
        current["cache_min_tokens"] = dict(self.cache_min_tokens)
        current["openai_flex_models"] = list(self.openai_flex_models)
        current["openai_enqueued_token_limit"] = dict(self.openai_enqueued_token_limit)
        try:
            return EmulatorConfig(**{**current, **changes})
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
