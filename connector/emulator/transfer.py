"""Sending response bodies: coalesced streaming, pacing, and cutting a download short."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator

from aiohttp import web

STREAM_CHUNK_BYTES = 64 * 1024
# A paced download writes about ten pieces per second, so the rate holds within 100 ms.
PACED_PIECES_PER_S = 10

Sleep = Callable[[float], Awaitable[None]]


class Pacer:
    """Holds a sender back so that ``sent`` bytes never leave before ``sent / rate`` seconds.

    Arguments:
        bytes_per_s: The rate; None paces nothing.
        clock: Monotonic seconds (replaceable in tests).
        sleep: How to wait (replaceable in tests).
    """

    def __init__(self, bytes_per_s: int | None, clock: Callable[[], float], sleep: Sleep) -> None:
        self.rate = bytes_per_s
        self.clock = clock
        self.sleep = sleep
        self.start = clock()

    @property
    def piece_bytes(self) -> int:
        """How much to write between two waits."""
        if self.rate is None:
            return STREAM_CHUNK_BYTES
        return max(1, min(STREAM_CHUNK_BYTES, self.rate // PACED_PIECES_PER_S))

    async def wait(self, sent: int) -> None:
        """Wait until ``sent`` bytes are due (no wait when unpaced or already late)."""
        if self.rate is None:
            return
        delay = self.start + sent / self.rate - self.clock()
        if delay > 0:
            await self.sleep(delay)


def pieces(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut ``chunks`` into pieces of exactly ``size`` bytes (the last may be shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


async def send(
    request: web.Request,
    chunks: Iterable[bytes],
    content_type: str,
    pacer: Pacer,
    *,
    cut: bool = False,
) -> web.StreamResponse:
    """Stream ``chunks`` as produced (chunked encoding), paced by ``pacer``.

    With ``cut`` only the first half of the body is sent and the connection is then closed
    without the terminating chunk: the client sees a truncated stream, never a clean end.
    """
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    if cut:
        body = b"".join(chunks)
        chunks = [body[: len(body) // 2]]
    sent = 0
    for piece in pieces(chunks, pacer.piece_bytes):
        await response.write(piece)
        sent += len(piece)
        await pacer.wait(sent)
    if cut:
        close_connection(request)
        return response
    await response.write_eof()
    return response


def close_connection(request: web.Request) -> None:
    """Close the client's connection after what was written so far is flushed.

    aiohttp then fails to write anything more for this request (a ConnectionError it
    handles quietly), so the client gets no further byte of the response.
    """
    if request.transport is not None:
        request.transport.close()
