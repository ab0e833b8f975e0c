"""The lane's table records: round trips, migration of the first changelog format, phases."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from connector.lanes.ledger import (
    BatchPhase,
    BatchRecord,
    EntryState,
    Ledger,
    PendingEntry,
    WorkEvent,
)
from connector.model import BatchKey
from connector.providers.base import BatchHandle, BatchState

KEY = BatchKey("openai", "gpt-4o-mini", "/v1/chat/completions")


def request(rid: str = "r-1", body: str = '{"messages": []}', **kw):
    return {
        "request_id": rid,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "endpoint": "/v1/chat/completions",
        "body": body,
        "metadata": {},
        "deadline": None,
        "reply_topic": None,
        "attempt": 1,
        "created_at": 1,
        **kw,
    }


def test_entry_of_request_takes_what_the_lane_needs():
    e = PendingEntry.of_request(request(attempt=2, deadline=99), ("in", 3, 17), shards_per_key=1)
    assert (e.request_id, e.attempt, e.batch_key, e.deadline, e.source) == (
        "r-1",
        2,
        KEY,
        99,
        ("in", 3, 17),
    )
    assert e.size == len('{"messages": []}') and e.state is EntryState.QUEUED


def test_entry_size_counts_utf8_bytes_and_tolerates_lone_surrogates():
    assert PendingEntry.of_request(request(body='"é"'), None).size == 4
    assert PendingEntry.of_request(request(body='"\ud800"'), None).size == 5


@given(
    rid=st.text(min_size=1, max_size=20),
    attempt=st.integers(1, 9),
    deadline=st.none() | st.integers(0, 2**50),
    state=st.sampled_from(list(EntryState)),
)
def test_entries_survive_the_table_round_trip(rid, attempt, deadline, state):
    e = PendingEntry.of_request(
        request(rid, attempt=attempt, deadline=deadline), ("t", 0, 5)
    ).queued(2, 1000)
    if state is EntryState.BATCHED:
        e = e.batched("bb-1", "cid-1")
    elif state is EntryState.DONE:
        e = e.done("result", 2000)
    again = PendingEntry.from_json(json.loads(json.dumps(e.to_json())))
    assert again == e


def test_done_marker_drops_the_request_body():
    e = PendingEntry.of_request(request(), ("t", 0, 5)).queued(1, 10).done("deadletter", 20)
    value = e.to_json()
    assert "request" not in value and value["outcome"] == "deadletter" and value["changed_at"] == 20


def test_first_format_entries_are_migrated_on_read():
    old = {
        "rid": "r-1",
        "attempt": 1,
        "key": str(KEY),
        "req": request(),
        "size": 16,
        "deadline": None,
        "src": ["in", 0, 4],
        "p": 1,
        "state": "batched",
        "at": 55,
        "batch": "bb-9",
        "cid": "r-1",
    }
    e = PendingEntry.from_json(old)
    assert (e.partition, e.state, e.changed_at, e.batch_id, e.custom_id, e.source) == (
        1,
        EntryState.BATCHED,
        55,
        "bb-9",
        "r-1",
        ("in", 0, 4),
    )
    done = PendingEntry.from_json(
        {
            "rid": "r-2",
            "attempt": 1,
            "key": str(KEY),
            "p": 0,
            "state": "done",
            "how": "result",
            "at": 7,
        }
    )
    assert (done.state, done.outcome, done.changed_at) == (EntryState.DONE, "result", 7)


def test_batch_records_round_trip_with_handles_and_keep_unknown_fields():
    b = BatchRecord(
        "bb-1",
        KEY,
        0,
        BatchPhase.SUBMITTED,
        3,
        300,
        "count",
        1,
        2,
        handle=BatchHandle("openai", "batch_1", "bb-1", 5.0, {"input_file_id": "f"}),
    )
    value = json.loads(json.dumps(b.to_json()))
    assert value["provider"] == "openai" and value["model"] == "gpt-4o-mini"
    assert BatchRecord.from_json(value) == b
    value["future_field"] = 42
    assert BatchRecord.from_json(value).to_json()["future_field"] == 42


def test_first_format_batches_are_migrated_on_read():
    old = {
        "id": "bb-1",
        "key": str(KEY),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "endpoint": "/v1/chat/completions",
        "p": 1,
        "state": "ENDED",
        "count": 2,
        "bytes": 20,
        "reason": "max_wait",
        "opened_at": 1,
        "closed_at": 2,
        "handle": {"provider": "openai", "batch_id": "batch_1", "tag": "bb-1"},
        "tag": "bb-1-q1",
        "quota_retries": 1,
    }
    b = BatchRecord.from_json(old)
    assert (b.batch_id, b.partition, b.phase, b.close_reason, b.current_tag) == (
        "bb-1",
        1,
        BatchPhase.ENDED,
        "max_wait",
        "bb-1-q1",
    )
    assert b.handle == BatchHandle("openai", "batch_1", "bb-1")
    assert not b.extra


def test_phases_after_the_provider_and_which_have_ended():
    assert BatchPhase.after_provider(BatchState.EXPIRED) is BatchPhase.EXPIRED
    assert {p for p in BatchPhase if p.has_ended} == {
        BatchPhase.ENDED,
        BatchPhase.FAILED,
        BatchPhase.EXPIRED,
        BatchPhase.CANCELLED,
    }


def test_work_events_round_trip_and_read_the_first_format():
    e = PendingEntry.of_request(request(), ("t", 0, 1))
    f = PendingEntry.of_request(request("r-2"), ("t", 0, 2))
    assert WorkEvent.from_json(json.loads(json.dumps(WorkEvent((e, f)).to_json()))).entries == (
        e,
        f,
    )
    assert WorkEvent.from_json(WorkEvent().to_json()).is_tick
    follow_up = WorkEvent.from_json(json.loads(json.dumps(WorkEvent(follow_up=True).to_json())))
    assert follow_up.is_tick and follow_up.follow_up
    assert not WorkEvent.from_json({"t": "tick"}).follow_up
    assert WorkEvent.from_json({"t": "req", "entry": e.to_json()}).entries == (e,)


def test_ledger_is_a_typed_view_of_two_mappings():
    pending, batches = {}, {}
    ledger = Ledger(pending, batches)
    e = PendingEntry.of_request(request(), None).queued(0, 1)
    ledger.put_entry(e)
    assert ledger.entry("r-1") == e and list(ledger.entries()) == [e]
    ledger.drop_entry("r-1")
    assert ledger.entry("r-1") is None and not pending


def test_state_changes_copy_every_field_as_dataclasses_replace_would():
    from dataclasses import fields, replace

    entry = PendingEntry.of_request(request(), ("in", 1, 2))
    entry.profile, entry.outcome, entry.replay_of = None, "x", "dl:0:1"
    assert entry.queued(3, 99) == replace(
        entry, partition=3, state=EntryState.QUEUED, changed_at=99
    )
    assert entry.batched("bb-1", "c-1") == replace(
        entry, state=EntryState.BATCHED, batch_id="bb-1", custom_id="c-1"
    )
    assert len(fields(PendingEntry)) == 15  # a new field must be copied in PendingEntry._copy
