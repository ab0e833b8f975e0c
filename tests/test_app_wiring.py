"""How the worker's Faust app is put together, checked without a broker."""

from __future__ import annotations

import asyncio

import faust

from connector.app import work_topic
from connector.config import Settings


def _queue_bound(work_buffer: int) -> tuple[int, int]:
    settings = Settings(work_buffer=work_buffer, stream_buffer=500)
    app = faust.App("wiring-test", broker="kafka://127.0.0.1:1", stream_buffer_maxsize=500)

    async def bounds() -> tuple[int, int]:
        topic = work_topic(app, settings)
        agent_side = topic.clone(is_iterator=True)  # what an agent's stream reads from
        return topic.queue.maxsize, agent_side.queue.maxsize

    return asyncio.run(bounds())


def test_the_work_agents_queue_holds_work_buffer_events_not_stream_buffer():
    # faust's app.topic() drops ``maxsize``; without it the queue took STREAM_BUFFER decoded
    # work events of up to STREAM_BUFFER requests each (the peak-memory burst).
    assert _queue_bound(8) == (8, 8)
    assert _queue_bound(3) == (3, 3)
