"""The emulator server: its state, admin routes, HTTP fault injection and webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
from aiohttp import web

from . import synth, transfer, validation, webhooks
from .caching import PromptCaching
from .config import EmulatorConfig, HttpFault
from .faults import fault_body
from .gemini_routes import is_gemini
from .openai_quota import enqueued
from .routes import Handler, route_modules
from .services import ProviderRoutes
from .state import (
    BatchRecord,
    CacheUse,
    RequestRecord,
    Store,
    new_id,
    processed_at,
    processed_count,
    progress,
)

log = logging.getLogger(__name__)

# Large enough for the biggest input any provider accepts (Anthropic: 256 MB per batch).
MAX_BODY_BYTES = 1024 * 1024 * 1024
WEBHOOK_POLL_SECONDS = 0.05
WEBHOOK_ATTEMPTS = 3


def provider_of(request: web.Request) -> str:
    """Whose error shapes an injected fault on ``request`` takes."""
    path = request.path
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith(("/v1beta/", "/upload/")) or is_gemini(request):
        return "gemini"
    return "openai"


class Emulator:
    """Holds the emulator's state and its aiohttp application (``emu.app``).

    Arguments:
        config: Start-up settings; ``reset()`` returns to them.
        clock: Wall clock in seconds, replaceable in tests.

    ``monotonic`` and ``sleep`` time injected delays and paced downloads; tests may replace
    them to observe the waits without waiting.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._initial = config or EmulatorConfig()
        self.config = self._initial.merged({})
        self.clock = clock
        self.monotonic: Callable[[], float] = time.monotonic
        self.sleep: transfer.Sleep = asyncio.sleep
        self.store = Store()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._providers: dict[str, ProviderRoutes] = {}
        self.app = self._build_app()

    # --- public API -------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def knows_model(self, provider: str, model: str) -> bool:
        """Whether ``provider`` serves ``model`` under the current ``known_models``."""
        return validation.is_known(self.config.known_models, provider, model)

    def caching(self) -> PromptCaching:
        """The prompt-cache decisions under the current settings."""
        self.store.prompt_cache.prune(self.now())
        return PromptCaching(self.store.prompt_cache, self.config)

    def register_provider(self, routes: ProviderRoutes) -> None:
        """Let ``/_emulator/stats`` name the batches of ``routes.provider`` as they do."""
        self._providers[routes.provider] = routes

    def set_faults(self, **fields: Any) -> EmulatorConfig:
        """Merge ``fields`` into the running config (ValueError on unknown or bad values)."""
        self.config = self.config.merged(fields)
        return self.config

    def reset(self) -> None:
        """Forget every batch, file and counter, and return to the start-up config."""
        self.store = Store()
        self.config = self._initial.merged({})

    def stats(self) -> dict[str, Any]:
        """What ``GET /_emulator/stats`` answers: counters and every batch received."""
        store = self.store
        return {
            "batches_created": dict(store.batches_created),
            "requests_submitted": dict(store.requests_submitted),
            "sync_calls": dict(store.sync_calls),
            "files_uploaded": store.files_uploaded,
            "flex_calls": dict(store.flex_calls),
            "openai_enqueued_tokens": enqueued(store.batches_of("openai"), self.now()),
            "batches": [self._batch_stats(b) for b in store.batches.values()],
        }

    def _batch_stats(self, batch: BatchRecord) -> dict[str, Any]:
        prog = progress(batch, self.now())
        routes = self._providers.get(batch.provider)
        # A provider whose routes do not name their batches gets the emulator's own names.
        state = routes.state_name(prog) if routes else (prog.final or prog.phase).value
        return {
            "provider": batch.provider,
            "id": routes.batch_name(batch) if routes else batch.id,
            "tag": batch.tag,
            "state": state,
            "total": batch.total,
        }

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Run the server on the current loop; yields its base URL, e.g. ``http://127.0.0.1:PORT``."""
        runner = web.AppRunner(self.app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_port = runner.addresses[0][1]
            url_host = f"[{host}]" if ":" in host else host
            yield f"http://{url_host}:{bound_port}"
        finally:
            await runner.cleanup()

    # --- services for the route modules -----------------------------------------------------

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
        """Record a batch, fixing now which requests fail, from the config at submission.

        ``cache`` settles each request's prompt-cache use now, in processing order, at the
        time the request will run: later requests read what earlier ones wrote.
        """
        cfg = self.config
        for request in requests:
            if request.error is None:
                request.error = synth.injected_error(
                    request.key,
                    request.serialised,
                    seed=cfg.seed,
                    error_rate=cfg.error_rate,
                    error_kinds=cfg.error_kinds,
                )
        batch = BatchRecord(
            provider=provider,
            id=batch_id,
            created_at=self.now(),
            processing_seconds=cfg.processing_seconds,
            requests=requests,
            outcome=outcome,
            tag=tag,
            seed=cfg.seed,
            malformed_lines=cfg.malformed_lines,
            validation_errors=validation_errors or [],
            extra=extra or {},
        )
        if cache is not None:
            for index in range(processed_count(batch)):
                request = batch.requests[index]
                if request.error is None:
                    request.cache = cache(request, processed_at(batch, index))
        self.store.add_batch(batch)
        return batch

    async def stream(
        self,
        request: web.Request,
        chunks: Iterable[bytes],
        content_type: str,
        *,
        result: bool = False,
    ) -> web.StreamResponse:
        """Send ``chunks`` as they are produced, coalesced into writes of about 64 KiB.

        A ``result`` download is paced by ``download_bytes_per_s`` and is cut short while
        ``cut_downloads`` lasts.
        """
        cfg = self.config
        cut = result and cfg.cut_downloads > 0
        if cut:
            cfg.cut_downloads -= 1
        rate = cfg.download_bytes_per_s if result else None
        pacer = transfer.Pacer(rate, self.monotonic, self.sleep)
        return await transfer.send(request, chunks, content_type, pacer, cut=cut)

    # --- app wiring -------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._http_faults], client_max_size=MAX_BODY_BYTES)
        router = app.router
        router.add_get("/_emulator/stats", self._stats_route)
        router.add_get("/_emulator/faults", self._get_faults_route)
        router.add_post("/_emulator/faults", self._set_faults_route)
        router.add_post("/_emulator/reset", self._reset_route)

        for module in route_modules(self):
            module.add_to(router)
            if isinstance(module, ProviderRoutes):
                self.register_provider(module)
        app.cleanup_ctx.append(self._webhook_ctx)
        return app

    @web.middleware
    async def _http_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self._take_fault(request)
        if fault is None:
            return await handler(request)
        if fault.delay_s > 0:
            if request.content_type != "multipart/form-data":
                # Read the body first: a client that gives up during the delay must not
                # stop the request from taking effect, as on a real server.
                await request.read()
            await self.sleep(fault.delay_s)
        if fault.drop_response:
            response = await handler(request)
            transfer.close_connection(request)
            return response
        if fault.status is None:
            return await handler(request)
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = format(fault.retry_after, "g")
        body = fault_body(provider_of(request), fault.status, request.path)
        return web.json_response(body, status=fault.status, headers=headers)

    def _take_fault(self, request: web.Request) -> HttpFault | None:
        """The first configured fault matching ``request``, one use of it spent."""
        if request.path.startswith("/_emulator/"):
            return None
        for fault in self.config.http_errors:
            if fault.matches(request.method, request.path):
                fault.count -= 1
                return fault
        return None

    async def _stats_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _get_faults_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.config.to_dict())

    async def _set_faults_route(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            self.set_faults(**changes)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.config.to_dict())

    async def _reset_route(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    # --- webhooks ---------------------------------------------------------------------------

    async def _webhook_ctx(self, app: web.Application) -> AsyncIterator[None]:
        # Batches change state lazily when polled; webhooks exist so that nobody has to poll,
        # hence this one background task.
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(self._webhook_loop(session))
            yield
            task.cancel()
            for pending in [task, *self._deliveries]:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending

    async def _webhook_loop(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(WEBHOOK_POLL_SECONDS)
            url = self.config.webhook_url
            if not url:
                continue
            now = self.now()
            for batch in self.store.batches_of("openai"):
                if batch.webhook_sent:
                    continue
                prog = progress(batch, now)
                if prog.final is None:
                    continue
                batch.webhook_sent = True
                body = webhooks.event_body(
                    new_id("evt_"), prog.final, batch.id, int(prog.ended_at or now)
                )
                task = asyncio.create_task(
                    self._deliver(session, url, self.config.webhook_secret, body)
                )
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    async def _deliver(
        self, session: aiohttp.ClientSession, url: str, secret: str | None, body: str
    ) -> None:
        """POST one event; a redelivery keeps its ``webhook-id`` so receivers can de-duplicate."""
        webhook_id = new_id("wh_")
        for attempt in range(WEBHOOK_ATTEMPTS):
            headers = webhooks.headers(secret, webhook_id, int(time.time()), body)
            try:
                async with session.post(url, data=body.encode(), headers=headers) as response:
                    if response.status < 300:
                        return
                    log.warning("webhook to %s answered %s", url, response.status)
            except aiohttp.ClientError as exc:
                log.warning("webhook to %s failed: %s", url, exc)
            await asyncio.sleep(0.1 * 2**attempt)
