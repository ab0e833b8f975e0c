"""Azure OpenAI under ``/openai/...``, as ``openai.AsyncAzureOpenAI`` calls it.

With ``azure_endpoint=<emulator>`` the SDK sends ``/openai/files``, ``/openai/batches``,
``/openai/responses`` and, for the deployment-based endpoints,
``/openai/deployments/<deployment>/chat/completions`` (``embeddings``, ``completions``),
each with an ``api-version`` query parameter and an ``api-key`` header; both are required
here, as on Azure. Batch endpoints are spelled without ``/v1`` (``/chat/completions``) and a
line's ``body.model`` is the deployment name. Batches live in the namespace ``azure``, or
in ``<name>`` with ``azure_endpoint=<emulator>/azure/<name>``. The routes are OpenAI's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .compat_routes import FILE_AND_BATCH_ROUTES, NAME, Handler, Namespaces

if TYPE_CHECKING:
    from .services import Services

NAMESPACE = "azure"
DEPLOYMENT_ENDPOINTS = "{endpoint:chat/completions|embeddings|completions}"


def _azure_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _checked(handler: Handler) -> Handler:
    """Refuse what Azure refuses before any route logic: no api-version, no key."""

    async def check(request: web.Request) -> web.StreamResponse:
        if not request.query.get("api-version"):
            return _azure_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if not (request.headers.get("api-key") or request.headers.get("Authorization")):
            return _azure_error(
                401,
                "401",
                "Access denied due to missing subscription key. Make sure to include an "
                "api-key header when making requests.",
            )
        return await handler(request)

    return check


class AzureRoutes:
    """Registers the Azure OpenAI routes on the emulator's router."""

    def __init__(self, emu: Services) -> None:
        self.namespaces = Namespaces(emu, endpoint_prefix="")

    def add_to(self, router: web.UrlDispatcher) -> None:
        """Add the routes at ``/openai`` (namespace ``azure``) and ``/azure/<name>/openai``."""
        for prefix, name in (("/openai", NAMESPACE), (f"/azure/{NAME}/openai", None)):
            ns = self.namespaces
            for method, path, attribute in FILE_AND_BATCH_ROUTES:
                router.add_route(method, prefix + path, _checked(ns.handler(attribute, name=name)))
            router.add_post(
                f"{prefix}/responses",
                _checked(ns.handler("sync_call", name=name, path="/v1/responses")),
            )
            router.add_post(
                f"{prefix}/deployments/{{deployment}}/{DEPLOYMENT_ENDPOINTS}",
                _checked(ns.handler("sync_call", name=name, path="/v1/{endpoint}")),
            )
