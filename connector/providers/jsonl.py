"""Reading per-request outcomes from a provider's JSONL result stream, one line at a time.

A malformed line costs that line only: it is counted, logged and skipped, and the stream
goes on (the SDKs' own decoders stop at the first bad line).
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


def _loads(line: str | bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogate escapes, which a provider's text can hold.
        return json.loads(line)
