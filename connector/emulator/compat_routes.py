"""OpenAI-compatible providers (Groq, Together, …) under ``/compat/<name>/v1/...``.

Each name is a namespace of its own: its files, batches and counters are apart from
OpenAI's and from each other's, and ``stats()`` counts them under the name. The routes are
OpenAI's (an ``OpenAIRoutes`` per name), reached with the ``/compat/<name>`` prefix
stripped, so the compat API behaves exactly as the OpenAI emulation does, faults included.
Point ``AsyncOpenAI(base_url=f"{emulator}/compat/<name>/v1")`` at it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .openai_routes import OpenAIRoutes

if TYPE_CHECKING:
    from .services import Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Groq, for one, takes completion windows from 24 hours to 7 days.
COMPLETION_WINDOWS = ("24h", "48h", "72h", "2d", "3d", "4d", "5d", "6d", "7d")
NAME = "{name:[a-z][a-z0-9_-]*}"

# (method, path below the prefix, the OpenAIRoutes handler that serves it)
FILE_AND_BATCH_ROUTES = (
    ("POST", "/files", "upload_file"),
    ("GET", "/files/{id}", "get_file"),
    ("GET", "/files/{id}/content", "file_content"),
    ("POST", "/batches", "create_batch"),
    ("GET", "/batches", "list_batches"),
    ("GET", "/batches/{id}", "get_batch"),
    ("POST", "/batches/{id}/cancel", "cancel_batch"),
)
SYNC_ENDPOINTS = ("/chat/completions", "/responses", "/embeddings", "/completions")


class Namespaces:
    """One ``OpenAIRoutes`` per provider name, created on first use."""

    def __init__(
        self,
        emu: Services,
        *,
        endpoint_prefix: str = "/v1",
        completion_windows: tuple[str, ...] = ("24h",),
    ) -> None:
        self.emu = emu
        self._endpoint_prefix = endpoint_prefix
        self._completion_windows = completion_windows
        self._routes: dict[str, OpenAIRoutes] = {}

    def routes(self, name: str) -> OpenAIRoutes:
        """The OpenAI routes serving namespace ``name``."""
        if name not in self._routes:
            routes = OpenAIRoutes(
                self.emu,
                name,
                endpoint_prefix=self._endpoint_prefix,
                completion_windows=self._completion_windows,
            )
            self.emu.register_provider(routes)  # stats name its batches as OpenAI does
            self._routes[name] = routes
        return self._routes[name]

    def handler(
        self, attribute: str, *, name: str | None = None, path: str | None = None
    ) -> Handler:
        """Serve with ``OpenAIRoutes.<attribute>`` of the namespace in the path (or ``name``).

        ``path`` is the path the OpenAI handler sees (the synchronous handler answers by
        path); ``{endpoint}`` in it is filled from the matched route.
        """

        async def handle(request: web.Request) -> web.StreamResponse:
            routes = self.routes(name or request.match_info["name"])
            if path is not None:
                seen = path.format(endpoint=request.match_info.get("endpoint", ""))
                request = request.clone(rel_url=seen)
            return await getattr(routes, attribute)(request)

        return handle


class CompatRoutes:
    """Registers ``/compat/<name>/v1/...`` on the emulator's router."""

    def __init__(self, emu: Services) -> None:
        self.namespaces = Namespaces(emu, completion_windows=COMPLETION_WINDOWS)

    def add_to(self, router: web.UrlDispatcher) -> None:
        """Add the file, batch and synchronous routes for any compat name."""
        prefix = f"/compat/{NAME}/v1"
        for method, path, attribute in FILE_AND_BATCH_ROUTES:
            router.add_route(method, prefix + path, self.namespaces.handler(attribute))
        for endpoint in SYNC_ENDPOINTS:
            router.add_post(
                prefix + endpoint, self.namespaces.handler("sync_call", path="/v1" + endpoint)
            )
