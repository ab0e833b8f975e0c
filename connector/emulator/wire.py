"""Small wire helpers the providers' routes share (no state)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web


def iso(ts: float | None) -> str | None:
    """RFC 3339 UTC with a ``Z``, as Anthropic and Google write timestamps."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def base_url(request: web.Request) -> str:
    """The URL the client reached the emulator at, for links in answers (results_url …)."""
    return f"{request.scheme}://{request.host}"
