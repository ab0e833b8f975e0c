"""The packed member map of a batch: dict semantics, and what it costs per member."""

from __future__ import annotations

import gc
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from connector.lanes.index import Members
from connector.providers.ids import assign_custom_ids

ids = st.text(st.characters(exclude_categories=()), min_size=1, max_size=40)  # surrogates too


@given(st.lists(st.tuples(st.sampled_from(["set", "del"]), ids, ids), max_size=60))
def test_members_behave_like_a_dict(ops: list[tuple[str, str, str]]) -> None:
    members, model = Members(), {}
    for op, cid, rid in ops:
        if op == "set":
            members[cid] = rid
            model[cid] = rid
        else:
            assert members.pop(cid, None) == model.pop(cid, None)
        assert len(members) == len(model)
        assert members.get(cid) == model.get(cid)
        assert (cid in members) == (cid in model)
    assert dict(members) == model
    assert dict(members.pairs()) == model
    assert sorted(members) == sorted(model)


few_ids = st.sampled_from(["a", "b", "c", "d", "e"])  # ids repeat: replaced and re-added members


@given(
    st.lists(
        st.tuples(st.sampled_from(["set", "del", "get", "hold", "release"]), few_ids, ids),
        max_size=80,
    )
)
def test_members_behave_like_a_dict_when_ids_repeat(ops: list[tuple[str, str, str]]) -> None:
    # Lookups first try the member found last and the next one added: a replaced or
    # removed member there must never be taken for the live one.
    members, model = Members(), {}
    for op, cid, rid in ops:
        if op == "set":
            members[cid] = rid
            model[cid] = rid
        elif op == "del":
            assert members.pop(cid, None) == model.pop(cid, None)
        elif op == "hold":
            members.hold_lookups()
        elif op == "release":
            members.release_lookups()
        for other in ("a", "b", "c", "d", "e"):
            assert members.get(other) == model.get(other)
        assert len(members) == len(model)
    assert dict(members.pairs()) == model


def test_members_found_in_any_order() -> None:
    rids = [f"req-{i:05d}" for i in range(2_000)]
    members = Members(assign_custom_ids(rids))
    in_order = list(members)
    shuffled = in_order[1::2] + in_order[-2::-2]  # odd ones, then the even ones backwards
    for cid in shuffled[:1000]:
        assert members.pop(cid) == cid
    for cid in in_order:
        assert members.get(cid) == (None if cid in shuffled[:1000] else cid)
    assert len(members) == 1000
    members.hold_lookups()
    for cid in shuffled[1000:1500]:
        assert members.pop(cid) == cid
    for cid in in_order:
        assert members.get(cid) == (None if cid in shuffled[:1500] else cid)
    assert len(members) == 500


def test_members_keep_the_order_they_were_added_in() -> None:
    rids = [f"r-{i}" for i in range(50)] + ["a:b", "\udcff lone surrogate", "ü"]
    members = Members(assign_custom_ids(rids))
    assert [rid for _, rid in members.pairs()] == rids
    assert members[next(iter(members))] == "r-0"
    del members["r-7"]
    assert "r-7" not in members and len(members) == len(rids) - 1
    assert members.get("r-7") is None and members.pop("r-7", "gone") == "gone"


def test_a_member_costs_its_ids_bytes_not_python_objects() -> None:
    # 1,000,000 requests in flight must fit a few hundred MB: the index may keep no object
    # per member (a dict of str cost ~150 B each and pinned pymalloc arenas).
    rids = [f"req-{i:08d}" for i in range(20_000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        members = Members()
        for cid, rid in assign_custom_ids(rids).items():
            members[cid] = rid
        assert len(members) == len(rids) and members["req-00000042"] == "req-00000042"
        per_member = (tracemalloc.get_traced_memory()[0] - before) / len(rids)
    finally:
        tracemalloc.stop()
    assert per_member < 12 + 16 + 4  # the id's 12 bytes, ends, flags, order; growth slack
