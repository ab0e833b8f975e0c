"""What the lane's direct table access keeps in memory per record."""

from __future__ import annotations

import gc
import tracemalloc

import orjson

from connector.lanes.tables import dumps


def _held_bytes(make: object) -> int:
    """Bytes still allocated while 1,000 values made by ``make`` are held."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [make(i) for i in range(1_000)]  # type: ignore[operator]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(held) == 1_000
    return after - before


def test_dumps_is_orjson_bytes_of_their_own_size() -> None:
    value = {"request_id": "r-1", "state": "batched", "size": 31}
    assert dumps(value) == orjson.dumps(value)
    # A changelog record waits in the producer's queue until acknowledged: each one must
    # cost about its length, not orjson's 4 KB buffer (3.12 and later never shrink it).
    held = _held_bytes(lambda i: dumps({"request_id": f"r-{i}", "state": "batched"}))
    assert held < 1_000 * 200
