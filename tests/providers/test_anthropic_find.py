"""Anthropic reconciliation adopts a batch only when its results prove it is the one."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.emulator import Emulator
from connector.providers.anthropic_batch import AnthropicBatchProvider, lists_exactly
from connector.providers.exceptions import ReconcilePending

from .conftest import make_provider
from .test_contract import find_settled, items, wait_final


async def lines_of(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


def result(custom_id: str) -> str:
    return f'{{"custom_id": "{custom_id}", "result": {{"type": "succeeded"}}}}'


async def test_lists_exactly_accepts_the_same_ids_in_any_order() -> None:
    ids = frozenset({"a", "b", "c"})
    assert await lists_exactly(lines_of(result("c"), "", result("a"), result("b")), ids)


@pytest.mark.parametrize(
    "lines",
    [
        [result("a"), result("b")],  # one missing
        [result("a"), result("b"), result("c"), result("d")],  # one extra
        [result("a"), result("a"), result("b")],  # a repeat hides a missing one
        [result("a"), result("x"), result("b")],  # a foreign one
    ],
)
async def test_lists_exactly_refuses_anything_else(lines: list[str]) -> None:
    assert not await lists_exactly(lines_of(*lines), frozenset({"a", "b", "c"}))


async def test_lists_exactly_stops_reading_at_the_first_foreign_id() -> None:
    async def lines() -> AsyncIterator[str]:
        yield result("a")
        yield result("foreign")
        raise AssertionError("read past the first foreign id")

    assert not await lists_exactly(lines(), frozenset({"a", "b"}))


async def test_an_unreadable_line_does_not_disprove_the_rest() -> None:
    ids = frozenset({"a", "b", "c"})
    assert await lists_exactly(lines_of(result("a"), "{not json", result("c")), ids)
    assert not await lists_exactly(lines_of(result("a"), "{not json"), ids)


@given(
    st.frozensets(st.text("abcdefgh_-", min_size=1, max_size=6), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
    st.text("ABCDEFGH", min_size=1, max_size=6),
)
async def test_lists_exactly_property(
    ids: frozenset[str], rnd: random.Random, foreign: str
) -> None:
    order = sorted(ids)
    rnd.shuffle(order)
    assert await lists_exactly(lines_of(*map(result, order)), ids)
    assert not await lists_exactly(lines_of(*map(result, order[1:])), ids)
    with_foreign = order + [foreign]
    rnd.shuffle(with_foreign)
    assert not await lists_exactly(lines_of(*map(result, with_foreign)), ids)


@pytest.fixture
async def anthropic(
    emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> AsyncIterator[AnthropicBatchProvider]:
    provider = make_provider("anthropic", emulator_url[1])
    assert isinstance(provider, AnthropicBatchProvider)
    yield provider
    await provider.aclose()


OURS = frozenset({"ours-0", "ours-1"})


async def test_a_same_size_foreign_batch_is_never_adopted(
    anthropic: AnthropicBatchProvider, emulator: Emulator
) -> None:
    started = time.time()
    foreign = await anthropic.submit("tag-foreign", items(anthropic, ["x0", "x1"]))
    await wait_final(anthropic, foreign)
    found = await anthropic.find("tag-ours", created_after=started, custom_ids=OURS)
    assert found is None  # ended, same size, not ours: resubmitting is right


async def test_ours_is_adopted_among_same_size_batches(
    anthropic: AnthropicBatchProvider, emulator: Emulator
) -> None:
    started = time.time()
    older = await anthropic.submit("tag-older", items(anthropic, ["y0", "y1"]))
    ours = await anthropic.submit("tag-ours", items(anthropic, sorted(OURS)))
    newer = await anthropic.submit("tag-newer", items(anthropic, ["z0", "z1"]))
    for handle in (older, ours, newer):
        await wait_final(anthropic, handle)
    found = await anthropic.find("tag-ours", created_after=started, custom_ids=OURS)
    assert found is not None and found.batch_id == ours.batch_id
    assert found.extra["count"] == 2


async def test_a_running_candidate_makes_find_wait_rather_than_guess(
    anthropic: AnthropicBatchProvider, emulator: Emulator
) -> None:
    started = time.time()
    emulator.set_faults(processing_seconds=30)
    running = await anthropic.submit("tag-running", items(anthropic, ["r0", "r1"]))
    with pytest.raises(ReconcilePending) as raised:
        await anthropic.find("tag-ours", created_after=started, custom_ids=OURS)
    assert raised.value.retry_after is None  # asked again on the lane's poll schedule
    assert running.batch_id in str(raised.value)
    await anthropic.cancel(running)
    await wait_final(anthropic, running)  # ended (cancelled): its results now decide
    assert await anthropic.find("tag-ours", created_after=started, custom_ids=OURS) is None


async def test_a_running_newer_candidate_defers_even_a_verified_older_one(
    anthropic: AnthropicBatchProvider, emulator: Emulator
) -> None:
    started = time.time()
    ours = await anthropic.submit("tag-ours", items(anthropic, sorted(OURS)))
    await wait_final(anthropic, ours)
    emulator.set_faults(processing_seconds=0.5)
    # The same requests again (a repeat of the create that was lost): newer, still running.
    again = await anthropic.submit("tag-ours", items(anthropic, sorted(OURS)))
    with pytest.raises(ReconcilePending):
        await anthropic.find("tag-ours", created_after=started, custom_ids=OURS)
    found = await find_settled(anthropic, "tag-ours", created_after=started, custom_ids=OURS)
    assert found is not None and found.batch_id == again.batch_id  # the newest that holds them


async def test_nothing_to_verify_finds_nothing(
    anthropic: AnthropicBatchProvider, emulator: Emulator
) -> None:
    started = time.time()
    handle = await anthropic.submit("tag-ours", items(anthropic, sorted(OURS)))
    await wait_final(anthropic, handle)
    assert await anthropic.find("tag-ours", created_after=started, expected_count=2) is None
    assert await anthropic.find("tag-ours", custom_ids=OURS) is None
