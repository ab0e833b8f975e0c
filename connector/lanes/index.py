"""What a worker derives in memory from the tables for each work partition it owns.

The tables are the truth; these indexes only make the hot paths cheap (which requests of a
batch key are queued, which request a custom id stands for, which deadlines are near).
They are rebuilt from the tables after every rebalance and never written back.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from connector.lanes.assembly import Queued
from connector.lanes.ledger import BatchPhase, BatchRecord, EntryState, Ledger, PendingEntry
from connector.model import BatchKey

log = logging.getLogger(__name__)


@dataclass
class PartitionIndex:
    """The in-memory view of one work partition: queues, batch members, deadlines, purge order."""

    queued: dict[BatchKey, dict[str, Queued]] = field(default_factory=dict)  # arrival order per key
    queued_bytes: dict[BatchKey, int] = field(default_factory=dict)
    members: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # batch id → custom id → request id
    batches: dict[str, BatchRecord] = field(default_factory=dict)  # every batch not yet EMITTED
    deadlines: dict[str, int] = field(
        default_factory=dict
    )  # request id → deadline, live requests only
    # batch id → custom id → when that member left (escalated, …) before its batch was emitted
    left: dict[str, dict[str, int]] = field(default_factory=dict)
    done: deque[tuple[int, str]] = field(
        default_factory=deque
    )  # (done at, request id), oldest first
    emitted: deque[tuple[int, str]] = field(
        default_factory=deque
    )  # (emitted at, batch id), oldest first

    def live(self) -> int:
        """Requests of this partition that are queued or in a batch not yet emitted."""
        return sum(map(len, self.queued.values())) + sum(map(len, self.members.values()))

    def in_flight(self) -> int:
        """Requests of this partition inside batches not yet emitted."""
        return sum(map(len, self.members.values()))

    def add_queued(self, entry: PendingEntry) -> None:
        """Append a QUEUED entry to its batch key's queue."""
        ref = Queued(entry.request_id, entry.changed_at, entry.size, entry.deadline, entry.profile)
        self.queued.setdefault(entry.batch_key, {})[entry.request_id] = ref
        self.queued_bytes[entry.batch_key] = self.queued_bytes.get(entry.batch_key, 0) + ref.size
        if ref.deadline_ms is not None:
            self.deadlines[ref.request_id] = ref.deadline_ms

    def take_queued(self, key: BatchKey, request_id: str) -> Queued:
        """Remove a request from its queue as it joins a batch."""
        queue = self.queued[key]
        ref = queue.pop(request_id)
        self.queued_bytes[key] -= ref.size
        if not queue:
            self.drop_queue(key)
        return ref

    def add_batch(self, batch: BatchRecord) -> None:
        """Track a batch that is not yet EMITTED."""
        self.batches[batch.batch_id] = batch
        self.members.setdefault(batch.batch_id, {})

    def add_member(self, entry: PendingEntry) -> None:
        """Record a BATCHED entry under its batch."""
        assert entry.batch_id is not None and entry.custom_id is not None
        # Most custom ids are the request id itself: keep one string, not two (memory per
        # request in flight is the lane's largest cost at a million requests).
        cid = entry.request_id if entry.custom_id == entry.request_id else entry.custom_id
        self.members.setdefault(entry.batch_id, {})[cid] = entry.request_id
        if entry.deadline is not None:
            self.deadlines[entry.request_id] = entry.deadline

    def forget(self, entry: PendingEntry, now: int) -> None:
        """Drop a live entry from every index (it is about to be marked done at ``now``)."""
        self.deadlines.pop(entry.request_id, None)
        if entry.state is EntryState.QUEUED:
            queue = self.queued.get(entry.batch_key, {})
            ref = queue.pop(entry.request_id, None)
            if ref is not None:
                self.queued_bytes[entry.batch_key] -= ref.size
            if not queue:
                self.drop_queue(entry.batch_key)
        elif (
            entry.state is EntryState.BATCHED
            and entry.batch_id is not None
            and entry.custom_id is not None
        ):
            members = self.members.get(entry.batch_id, {})
            if members.pop(entry.custom_id, None) is not None:
                self.left.setdefault(entry.batch_id, {})[entry.custom_id] = now

    def submitted_ids(self, batch: BatchRecord) -> frozenset[str]:
        """The custom ids the last submit attempt of ``batch`` carried (members then, live or gone since)."""
        since = batch.attempted_at or 0
        gone = {cid for cid, at in self.left.get(batch.batch_id, {}).items() if at >= since}
        return frozenset(self.members.get(batch.batch_id, {})) | gone

    def drop_queue(self, key: BatchKey) -> None:
        """Forget an empty queue."""
        self.queued.pop(key, None)
        self.queued_bytes.pop(key, None)

    def retire(self, batch: BatchRecord, now: int) -> None:
        """A batch reached EMITTED: keep only its place in the purge order."""
        self.batches.pop(batch.batch_id, None)
        self.members.pop(batch.batch_id, None)
        self.left.pop(batch.batch_id, None)
        self.emitted.append((now, batch.batch_id))

    @classmethod
    def rebuild(cls, partition: int, ledger: Ledger) -> PartitionIndex:
        """Derive the index of ``partition`` from the tables."""
        index = cls()
        emitted = []
        for batch in ledger.all_batches():
            if batch.partition != partition:
                continue
            if batch.phase is BatchPhase.EMITTED:
                emitted.append((batch.emitted_at or 0, batch.batch_id))
            else:
                index.add_batch(batch)
        done = []
        for entry in ledger.entries():
            if entry.partition != partition:
                continue
            if entry.state is EntryState.QUEUED:
                index.add_queued(entry)
            elif entry.state is EntryState.BATCHED and entry.batch_id in index.batches:
                index.add_member(entry)
            else:
                done.append((entry.changed_at, entry.request_id))
                if entry.batch_id in index.batches and entry.custom_id is not None:
                    index.left.setdefault(entry.batch_id, {})[entry.custom_id] = entry.changed_at
        index.done.extend(sorted(done))
        index.emitted.extend(sorted(emitted))
        for queue in index.queued.values():
            ordered = sorted(queue.values(), key=lambda q: q.arrived_ms)
            queue.clear()
            queue.update((q.request_id, q) for q in ordered)
        log.info(
            "partition %d: %d queued, %d batches in flight",
            partition,
            sum(map(len, index.queued.values())),
            len(index.batches),
        )
        return index

    def purge(self, ledger: Ledger, horizon: int) -> None:
        """Drop done markers and emitted batches older than ``horizon`` from the tables."""
        while self.done and self.done[0][0] < horizon:
            _, request_id = self.done.popleft()
            entry = ledger.entry(request_id)
            if entry and entry.state is EntryState.DONE and entry.changed_at < horizon:
                ledger.drop_entry(request_id)
        while self.emitted and self.emitted[0][0] < horizon:
            _, batch_id = self.emitted.popleft()
            if ledger.batch(batch_id):
                ledger.drop_batch(batch_id)
