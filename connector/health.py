"""The worker's operational HTTP endpoints and its recovery watchdog.

On ``BATCHBRIDGE_METRICS_PORT``, served from the worker's own event loop (so a stuck loop
fails the liveness probe):

- ``GET /metrics``  Prometheus metrics;
- ``GET /healthz``  liveness: 200 while the event loop answers and no agent has died;
- ``GET /readyz``   readiness: 200 once the worker has joined its group and recovered its
  tables, 503 while it rebalances or recovers.

The watchdog turns a recovery that makes no progress for ``RECOVERY_STALL_S`` into a
logged explanation and a non-zero exit, so a supervisor restarts the worker instead of
letting it sit in recovery forever (a silent outage).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

# Exit status of a worker the watchdog stopped: its supervisor should start it again.
STALLED_EXIT_CODE = 75
WATCH_INTERVAL_S = 2.0


class Health:
    """Readiness and liveness of one Faust worker, read from the app's own state."""

    def __init__(self, app: Any, stall_s: float, exit: Callable[[int], Any] = os._exit) -> None:
        self.app = app
        self.stall_s = stall_s
        self._exit = exit
        self._progress: tuple[int, int] | None = None
        self._since = time.monotonic()

    def ready(self) -> tuple[bool, str]:
        """Ready to process: joined, assigned and recovered."""
        if not getattr(self.app, "rebalancing_count", 0):
            return False, "not yet joined the consumer group"
        if self.app.rebalancing:
            return False, "rebalancing or recovering tables"
        return True, "ready"

    def alive(self) -> tuple[bool, str]:
        """Alive: every agent task is still running."""
        for agent in self.app.agents.values():
            for actor in getattr(agent, "_actors", ()):
                task = getattr(actor, "actor_task", None)
                if task is not None and task.done():
                    return False, f"agent {agent.name} died"
        return True, "alive"

    def _recovery_position(self) -> tuple[int, int]:
        recovery = self.app.tables.recovery
        offsets = [*recovery.active_offsets.values(), *recovery.standby_offsets.values()]
        return self.app.rebalancing_count, sum(o for o in offsets if o is not None)

    def check_recovery(self, now: float | None = None) -> bool:
        """False (after logging why) if recovery made no progress for ``stall_s`` seconds."""
        now = time.monotonic() if now is None else now
        if not self.app.rebalancing:
            self._progress, self._since = None, now
            return True
        position = self._recovery_position()
        if position != self._progress:
            self._progress, self._since = position, now
            return True
        if now - self._since < self.stall_s:
            return True
        recovery = self.app.tables.recovery
        log.error(
            "recovery made no progress for %.0fs (rebalance #%d); remaining per changelog partition %s, "
            "highwaters %s, offsets %s: exiting so the supervisor restarts this worker",
            now - self._since,
            self.app.rebalancing_count,
            dict(recovery.active_remaining()),
            dict(recovery.active_highwaters),
            dict(recovery.active_offsets),
        )
        return False

    async def watch(self) -> None:
        """Run the watchdog until the worker stops."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                stalled = not self.check_recovery()
            except Exception:  # noqa: BLE001 - the watchdog must never be what stops the worker
                log.exception("recovery watchdog: could not read the recovery state")
                continue
            if stalled:
                logging.shutdown()
                self._exit(STALLED_EXIT_CODE)


def routes(health: Health) -> web.Application:
    """The aiohttp application of the three endpoints."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def probe(check: Callable[[], tuple[bool, str]]) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            ok, reason = check()
            return web.Response(status=200 if ok else 503, text=reason + "\n")

        return handler

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", probe(health.alive))
    app.router.add_get("/readyz", probe(health.ready))
    return app


async def serve(health: Health, host: str, port: int) -> None:
    """Serve the endpoints until cancelled."""
    runner = web.AppRunner(routes(health), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics and health on http://%s:%d (/metrics, /healthz, /readyz)", host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
