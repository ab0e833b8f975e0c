"""Every route module of the emulator, registered in one list.

A new provider's routes (say, Azure OpenAI under its own base path) live in a module of
their own that implements ``services.RouteModule`` (``ProviderRoutes`` to show its batches
in ``/_emulator/stats``) and are registered with one more line in ``route_modules``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .anthropic_routes import AnthropicRoutes
from .azure_routes import AzureRoutes
from .compat_routes import CompatRoutes
from .gemini_routes import GeminiRoutes, is_gemini
from .openai_routes import OpenAIRoutes
from .services import RouteModule, Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_modules(services: Services) -> list[RouteModule]:
    """The route modules in registration order."""
    openai = OpenAIRoutes(services)
    gemini = GeminiRoutes(services)
    return [
        openai,
        AnthropicRoutes(services),
        gemini,
        CompatRoutes(services),
        AzureRoutes(services),
        SharedV1Routes(openai, gemini),
    ]


class SharedV1Routes:
    """GET paths that OpenAI and Gemini's ``v1`` API both use, told apart by the caller.

    google-genai always sends ``x-goog-api-key`` or ``x-goog-api-client``; openai never does.
    """

    def __init__(self, openai: OpenAIRoutes, gemini: GeminiRoutes) -> None:
        self.openai = openai
        self.gemini = gemini

    def add_to(self, router: web.UrlDispatcher) -> None:
        openai, gemini = self.openai, self.gemini
        router.add_get("/v1/batches", _either(openai.list_batches, gemini.list_batches))
        router.add_get("/v1/batches/{id:[^/:]+}", _either(openai.get_batch, gemini.get_batch))
        router.add_get("/v1/files/{id:[^/:]+}", _either(openai.get_file, gemini.get_file))


def _either(openai_handler: Handler, gemini_handler: Handler) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await (gemini_handler if is_gemini(request) else openai_handler)(request)

    return handler
