"""Emulator settings: processing speed, limits and the faults to inject."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

ERROR_KINDS = ("rate_limit", "server_error", "overloaded", "invalid_request", "policy")
BATCH_OUTCOMES = (None, "failed", "expired", "cancelled", "stuck")
HTTP_FAULT_STATUSES = (429, 500, 503)


@dataclass
class HttpFault:
    """The next ``count`` requests matching ``path_regex`` (and ``method``) get ``status``."""

    path_regex: str
    status: int = 429
    count: int = 1
    method: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.status not in HTTP_FAULT_STATUSES:
            raise ValueError(f"http fault status must be one of {HTTP_FAULT_STATUSES}")
        if self.count < 0:
            raise ValueError("http fault count must be >= 0")
        re.compile(self.path_regex)

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
    openai_token_limit: bool = False
    malformed_lines: int = 0
    webhook_url: str | None = None
    webhook_secret: str | None = None
    openai_max_requests: int = 50_000
    anthropic_max_requests: int = 100_000
    anthropic_max_bytes: int = 256 * 1024 * 1024
    gemini_max_inline_bytes: int = 20 * 1024 * 1024

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

    def merged(self, changes: dict[str, Any]) -> EmulatorConfig:
        """Return a copy with ``changes`` applied; unknown or invalid fields raise ValueError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown emulator fields: {sorted(unknown)}")
        current = {name: getattr(self, name) for name in known}
        current["http_errors"] = [dataclasses.asdict(f) for f in self.http_errors]
        current["error_kinds"] = list(self.error_kinds)
        try:
            return EmulatorConfig(**{**current, **changes})
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
