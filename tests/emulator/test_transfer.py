"""Pure parts of sending bodies: re-cutting chunks into pieces, and pacing."""

from __future__ import annotations

import pytest
from emulator_helpers import FakeTime
from hypothesis import given
from hypothesis import strategies as st

from connector.emulator.transfer import STREAM_CHUNK_BYTES, Pacer, pieces


@given(st.lists(st.binary(max_size=50), max_size=20), st.integers(min_value=1, max_value=40))
def test_pieces_keep_every_byte_in_order_in_pieces_of_the_given_size(
    chunks: list[bytes], size: int
) -> None:
    out = list(pieces(chunks, size))
    assert b"".join(out) == b"".join(chunks)
    assert all(len(piece) == size for piece in out[:-1])
    assert all(0 < len(piece) <= size for piece in out)


async def test_a_pacer_waits_until_each_byte_is_due() -> None:
    clock = FakeTime()
    pacer = Pacer(1000, clock.monotonic, clock.sleep)
    assert pacer.piece_bytes == 100
    await pacer.wait(100)
    clock.now += 0.05  # the sender was slow: only the rest of the time is waited
    await pacer.wait(200)
    clock.now += 1.0  # late: no wait at all
    await pacer.wait(300)
    assert clock.slept == pytest.approx([0.1, 0.05])


@pytest.mark.parametrize(
    ("rate", "piece"), [(None, STREAM_CHUNK_BYTES), (5, 1), (10**9, STREAM_CHUNK_BYTES)]
)
async def test_piece_size_follows_the_rate_within_bounds(rate: int | None, piece: int) -> None:
    clock = FakeTime()
    pacer = Pacer(rate, clock.monotonic, clock.sleep)
    assert pacer.piece_bytes == piece
    await pacer.wait(10**6)
    assert clock.slept == ([] if rate is None else pytest.approx([10**6 / rate]))
