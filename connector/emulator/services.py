"""What route modules may use of the emulator, so that they never import the server.

The server implements ``Services`` and registers ``RouteModule`` objects (see ``routes.py``);
imports run one way: server → routes → provider route modules → these protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from .caching import PromptCaching
from .config import EmulatorConfig
from .state import BatchRecord, CacheUse, Progress, RequestRecord, Store


class Services(Protocol):
    """The emulator as its route modules see it."""

    config: EmulatorConfig
    store: Store

    def now(self) -> float:
        """Wall-clock seconds (replaceable in tests)."""
        ...

    def knows_model(self, provider: str, model: str) -> bool:
        """Whether ``provider`` serves ``model`` under the current ``known_models``."""
        ...

    def caching(self) -> PromptCaching:
        """The prompt-cache decisions under the current settings."""
        ...

    def register_provider(self, routes: ProviderRoutes) -> None:
        """Let ``/_emulator/stats`` name the batches of ``routes.provider`` as they do."""
        ...

    def new_batch(
        self,
        provider: str,
        batch_id: str,
        requests: list[RequestRecord],
        *,
        tag: str | None,
        outcome: str | None,
        validation_errors: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        cache: Callable[[RequestRecord, float], CacheUse] | None = None,
    ) -> BatchRecord:
        """Record a batch, fixing now which requests fail and how each uses the prompt cache.

        ``cache`` decides a request's cache use at the time it will run.
        """
        ...

    async def stream(
        self,
        request: web.Request,
        chunks: Iterable[bytes],
        content_type: str,
        *,
        result: bool = False,
    ) -> web.StreamResponse:
        """Send a body as produced; ``result`` downloads obey the download faults."""
        ...


class RouteModule(Protocol):
    """A set of routes, added to the app's router once at start-up."""

    def add_to(self, router: web.UrlDispatcher) -> None:
        """Register this module's routes."""
        ...


@runtime_checkable
class ProviderRoutes(RouteModule, Protocol):
    """The routes of one provider's batches, which also name them in ``/_emulator/stats``."""

    provider: str

    def state_name(self, prog: Progress) -> str:
        """The batch state as this provider's API spells it."""
        ...

    def batch_name(self, batch: BatchRecord) -> str:
        """The batch id as this provider's API shows it."""
        ...
