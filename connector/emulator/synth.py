"""Deterministic synthetic answers and per-request fault decisions (no I/O).

Everything here is a pure function of the request text and the seed, so a test can predict
exactly which request fails and what every answer and usage count will be.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

MARKER_RE = re.compile(r"EMULATOR_FAIL:(rate_limit|server_error|overloaded|invalid_request|policy)")

EMBEDDING_DIMENSIONS = 8


def digest(*parts: object) -> int:
    """A stable 64-bit integer hash of ``parts`` (Python's ``hash`` is salted per process)."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def unit_fraction(*parts: object) -> float:
    return digest(*parts) / 2**64


def serialise(body: Any) -> str:
    """Compact JSON: the text token counts and markers are computed on."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def marker_kind(serialised: str) -> str | None:
    """The error kind named by an ``EMULATOR_FAIL:<kind>`` marker in the text, if any."""
    marker = MARKER_RE.search(serialised)
    return marker.group(1) if marker else None


def injected_error(
    key: str, serialised: str, *, seed: int, error_rate: float, error_kinds: Sequence[str]
) -> str | None:
    """The error kind this request is made to fail with, or None.

    An ``EMULATOR_FAIL:<kind>`` marker in the body always wins; otherwise a hash of the key
    decides, so the same key fails the same way on every run with the same seed.
    """
    marker = marker_kind(serialised)
    if marker:
        return marker
    if error_rate > 0 and unit_fraction(seed, "error", key) < error_rate:
        return error_kinds[digest(seed, "kind", key) % len(error_kinds)]
    return None


# The token estimate every count is based on: one token per four characters of the
# compact JSON of the request (cached prefixes are measured the same way).
CHARS_PER_TOKEN = 4


def tokens(chars: int) -> int:
    """Tokens in ``chars`` characters of request text."""
    return chars // CHARS_PER_TOKEN


@dataclass(frozen=True, slots=True)
class Completion:
    """The answer to one request: its text and token counts (cache use is reported apart)."""

    text: str
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def complete(serialised: str) -> Completion:
    """The emulator's answer to a request: short text and realistic usage."""
    h = digest("completion", serialised)
    return Completion(
        text=f"Emulated answer {h:016x}.",
        input_tokens=max(1, tokens(len(serialised))),
        output_tokens=20 + h % 181,
    )


def embedding(text: str) -> list[float]:
    """A small deterministic unit-range vector for ``text``."""
    return [
        round((digest("embedding", text, i) % 2000) / 1000 - 1, 3)
        for i in range(EMBEDDING_DIMENSIONS)
    ]


def embedding_base64(vector: Sequence[float]) -> str:
    """Little-endian float32 base64, as OpenAI returns for ``encoding_format="base64"``."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def shuffled(indices: int, seed: int, salt: str) -> list[int]:
    """A deterministic permutation of ``range(indices)``: result order never equals input order."""
    return sorted(range(indices), key=lambda i: digest(seed, salt, i))


def with_malformed(lines: Iterable[str], count: int, tag: str) -> Iterator[str]:
    """Interleave ``count`` truncated JSON lines, one after each of the first real lines."""
    emitted = 0
    for line in lines:
        yield line
        if emitted < count:
            yield _garbage(tag, emitted)
            emitted += 1
    for k in range(emitted, count):
        yield _garbage(tag, k)


def _garbage(tag: str, k: int) -> str:
    return f'{{"custom_id": "malformed-{tag}-{k}", "result": {{"type": "succ\n'
