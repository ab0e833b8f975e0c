"""OpenAI batch webhooks: a signed ``batch.*`` event makes the worker poll that batch now.

Webhooks only shorten the wait; polling stays the source of truth, so a lost or forged
event can never lose or finish a batch. Signatures are verified with the official SDK
(``client.webhooks.unwrap``, Standard Webhooks); ``webhook-id`` repeats on redelivery and
is de-duplicated.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping

from aiohttp import web

log = logging.getLogger(__name__)

BATCH_EVENTS = frozenset({"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"})


class WebhookReceiver:
    def __init__(
        self, secret: str, on_batch_event: Callable[[str], bool], remember: int = 10_000
    ) -> None:
        from openai import OpenAI

        # Only the webhook helpers of this client are used; it never calls the API.
        self._client = OpenAI(api_key="webhook-verification-only", webhook_secret=secret)
        self._on_batch_event = on_batch_event
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        """Verify and dispatch one delivery; returns the HTTP status and a short reason."""
        try:
            event = self._client.webhooks.unwrap(body, dict(headers))
        except Exception as exc:  # InvalidWebhookSignatureError, bad JSON, unknown event shape
            log.warning("webhook rejected: %s", exc)
            return 400, f"rejected: {exc}"
        webhook_id = headers.get("webhook-id") or event.id
        if webhook_id in self._seen:
            return 200, "duplicate"
        self._seen[webhook_id] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        if event.type not in BATCH_EVENTS:
            return 200, "ignored"
        known = self._on_batch_event(event.data.id)  # type: ignore[union-attr]  # every batch.* event has data.id
        return 200, "polling" if known else "unknown batch"

    def app(self, path: str = "/webhooks/openai") -> web.Application:
        async def route(request: web.Request) -> web.Response:
            status, reason = self.handle(await request.read(), request.headers)
            return web.Response(status=status, text=reason)

        application = web.Application()
        application.router.add_post(path, route)
        return application


async def serve(receiver: WebhookReceiver, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("webhooks: listening on http://%s:%d/webhooks/openai", host, port)
    return runner
