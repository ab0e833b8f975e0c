"""``then``: a step on a future's result, without losing errors or cancellations."""

from __future__ import annotations

import asyncio
import gc

import pytest

from connector.aio import then


async def test_the_step_runs_on_the_result():
    source = asyncio.get_running_loop().create_future()
    doubled = then(source, lambda n: n * 2)
    source.set_result(21)
    assert await doubled == 42


async def test_an_error_of_the_source_or_the_step_reaches_the_awaiting_side():
    loop = asyncio.get_running_loop()
    failed, source = loop.create_future(), loop.create_future()
    first, second = then(failed, lambda n: n), then(source, lambda n: 1 // n)
    failed.set_exception(OSError("read failed"))
    source.set_result(0)
    with pytest.raises(OSError):
        await first
    with pytest.raises(ZeroDivisionError):
        await second


async def test_a_cancelled_source_cancels_the_result():
    source = asyncio.get_running_loop().create_future()
    result = then(source, lambda n: n)
    source.cancel()
    with pytest.raises(asyncio.CancelledError):
        await result


async def test_an_abandoned_result_leaves_the_source_alone_and_logs_nothing(caplog):
    source = asyncio.get_running_loop().create_future()
    result = then(source, lambda n: n)
    result.cancel()  # the step that wanted it failed
    assert not source.cancelled()
    source.set_exception(OSError("read failed"))  # finishes later, with an error
    await asyncio.sleep(0)
    del source, result
    gc.collect()
    assert "never retrieved" not in caplog.text
