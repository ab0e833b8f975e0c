"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

_A = TypeVar("_A")
_B = TypeVar("_B")


def then(source: asyncio.Future[_A], step: Callable[[_A], _B]) -> asyncio.Future[_B]:
    """A future of ``step`` of ``source``'s result, run on the event loop once it is there.

    Cancelling it does not cancel ``source`` (a thread's read cannot be stopped); ``source``'s
    error is always retrieved, so a result cancelled because nobody will await it logs
    nothing when ``source`` fails later.
    """
    result: asyncio.Future[_B] = source.get_loop().create_future()

    def done(finished: asyncio.Future[_A]) -> None:
        error = None if finished.cancelled() else finished.exception()
        if result.done():
            return
        if finished.cancelled():
            result.cancel()
        elif error is not None:
            result.set_exception(error)
        else:
            try:
                result.set_result(step(finished.result()))
            except Exception as exc:  # noqa: BLE001 - the awaiting side gets it
                result.set_exception(exc)

    source.add_done_callback(done)
    return result
