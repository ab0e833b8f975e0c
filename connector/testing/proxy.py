"""A TCP proxy between workers and their broker that a test can cut and heal.

The broker must advertise the proxy's address (``EmbeddedBroker(advertised_port=…)``), or
clients connect to the broker directly after bootstrap and never notice a cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Literal

from connector.broker import free_port

Mode = Literal["reset", "blackhole"]
_CHUNK = 64 * 1024


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port`` on its own thread.

    A cut in ``reset`` mode closes every open connection and every new one at once (what a
    restarted broker or a dropped link looks like); in ``blackhole`` mode connections stay
    open but nothing passes either way until the cut heals (a network partition).
    """

    def __init__(
        self, target_host: str, target_port: int, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port or free_port(host)
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()
        self._mode: Mode | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def cut(self, mode: Mode = "reset") -> None:
        """Start an outage; it lasts until :meth:`heal`."""
        self._call(self._cut(mode))

    def heal(self) -> None:
        self._call(self._heal())

    @contextlib.contextmanager
    def outage(self, mode: Mode = "reset") -> Iterator[None]:
        """Cut for as long as the block runs."""
        self.cut(mode)
        try:
            yield
        finally:
            self.heal()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ on the proxy's loop
    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)

    async def _cut(self, mode: Mode) -> None:
        self._mode = mode
        self._open.clear()
        if mode == "reset":
            for client, upstream in list(self._pairs):
                _abort(client)
                _abort(upstream)
            self._pairs.clear()

    async def _heal(self) -> None:
        self._mode = None
        self._open.set()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for client, upstream in list(self._pairs):
            _abort(client)
            _abort(upstream)
        self._pairs.clear()
        self._open.set()  # releases pumps held by a blackhole, which then see closed sockets

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._mode == "reset":
            _abort(writer)
            return
        await self._open.wait()  # a blackhole holds new connections too
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            _abort(writer)
            _abort(up_writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(_CHUNK):
                await self._open.wait()
                if writer.is_closing():
                    return
                writer.write(data)
                await writer.drain()
        _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once (RST), without waiting for buffered data."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
