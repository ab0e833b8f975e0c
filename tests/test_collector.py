"""Fewer young-generation collections inside an emission step, restored after it."""

from __future__ import annotations

import gc

import pytest

from connector import collector
from connector.collector import fewer_collections


@pytest.fixture(autouse=True)
def default_thresholds():
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_inside_the_young_generation_waits_for_the_threshold_and_after_it_is_as_before():
    with fewer_collections(50_000):
        assert gc.get_threshold() == (50_000, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_fewer_collections_happen_inside():
    def collections_while_allocating() -> int:
        before = gc.get_stats()[0]["collections"]
        held = [[i] for i in range(20_000)]  # containers that stay alive, like a step's outcomes
        assert len(held) == 20_000
        return gc.get_stats()[0]["collections"] - before

    outside = collections_while_allocating()
    with fewer_collections(100_000):
        inside = collections_while_allocating()
    assert outside >= 20 and inside <= 1


def test_overlapping_uses_restore_only_when_the_last_one_leaves():
    first, second = fewer_collections(50_000), fewer_collections(50_000)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # coroutines need not leave in the order they entered
    assert gc.get_threshold()[0] == 50_000
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)
    assert collector._depth == 0


def test_an_exception_inside_restores_the_thresholds():
    with pytest.raises(RuntimeError), fewer_collections(50_000):
        raise RuntimeError("a failed step")
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("threshold0", [0, 200_000])
def test_collection_that_is_off_or_already_rarer_is_left_alone(threshold0):
    gc.set_threshold(threshold0, 10, 10)
    with fewer_collections(50_000):
        assert gc.get_threshold() == (threshold0, 10, 10)
    assert gc.get_threshold() == (threshold0, 10, 10)
