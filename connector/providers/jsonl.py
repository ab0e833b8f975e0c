"""Reading per-request outcomes from a provider's JSONL result stream, one line at a time.

A malformed line costs that line only: it is counted, logged and skipped, and the stream
goes on (the SDKs' own decoders stop at the first bad line).

:func:`lines_of` cuts a response's raw byte chunks into lines itself: httpx's line
iterator decodes every chunk to text and hands out each line through three nested async
generators, which cost a large result file more than parsing its JSON. It also splits on
``\n`` only, so a raw U+2028 inside a JSON string no longer cuts a line in two.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import orjson

from connector.providers.base import Outcome

log = logging.getLogger(__name__)


async def outcomes_from_lines(
    lines: AsyncIterable[str | bytes],
    parse: Callable[[Any], Outcome],
    *,
    source: str,
    on_malformed: Callable[[], None],
) -> AsyncIterator[Outcome]:
    """``parse`` each JSON line of ``lines``; blank lines are skipped silently."""
    line_no = 0
    async for line in lines:
        line_no += 1
        if not line.strip():
            continue
        try:
            outcome = parse(_loads(line))
        except (ValueError, KeyError, TypeError, AttributeError):
            on_malformed()
            log.warning("skipped malformed line %d (%d chars) in %s", line_no, len(line), source)
            continue
        yield outcome


async def lines_of(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The lines of a byte stream (``\n`` or ``\r\n``-terminated, the last one maybe not)."""
    rest = b""
    async for chunk in chunks:
        if b"\n" not in chunk:
            rest += chunk
            continue
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line
    if rest:
        yield rest


def _loads(line: str | bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogate escapes, which a provider's text can hold, and
        # bytes that are not UTF-8 (read as text, they become U+FFFD as httpx made them).
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        return json.loads(line)
