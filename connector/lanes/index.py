"""What a worker derives in memory from the tables for each work partition it owns.

The tables are the truth; these indexes only make the hot paths cheap (which requests of a
batch key are queued, which request a custom id stands for, which deadlines are near).
They are rebuilt from the tables after every rebalance and never written back.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field

from connector.lanes.assembly import Queued
from connector.lanes.ledger import BatchPhase, BatchRecord, EntryState, Ledger, PendingEntry
from connector.model import BatchKey

log = logging.getLogger(__name__)

_GONE = 1  # Members flags: the member left
_OWN_RID = 2  # its request id differs from its custom id (stored in the request id buffer)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _text(raw: bytes | bytearray) -> str:
    return raw.decode("utf-8", "surrogatepass")


class Members(MutableMapping[str, str]):
    """One batch's custom id → request id map, packed: no Python object per member.

    A batch keeps its members for as long as the provider takes (up to a day), 10,000 or
    more of them. A ``dict`` of ``str`` costs ~150 B per member, and its strings, decoded
    among the garbage of each request's admission, stay scattered over pymalloc's arenas
    and keep them from being released: together ~1 KB of RSS per request in flight. Here
    the custom ids (UTF-8) follow each other in one ``bytearray``, request ids that differ
    from their custom id in another, ends and flags in arrays: ~10 B plus the ids' bytes.

    Members are added when the batch opens (or the index is rebuilt), then only removed.
    Lookups bisect a permutation sorted by custom id, built on the first lookup after an
    add. Iteration follows the order of adding. Setting a custom id again replaces it.

    A provider returns results in about the order the members were added, and emission
    looks each one up twice (its entry, then its removal): a lookup first tries the
    member it found last and the one added after it, and bisects only when neither is it.
    A worker that rebuilt the index from the table added them in the table's order, not
    the provider's: for the length of an emission, :meth:`hold_lookups` keeps a dict of
    custom id → position (~100 B a member, of that one batch).
    """

    __slots__ = (
        "_cids",
        "_cid_ends",
        "_rids",
        "_rid_ends",
        "_flags",
        "_order",
        "_live",
        "_hint",
        "_lookup",
    )

    def __init__(self, pairs: dict[str, str] | None = None) -> None:
        self._cids = bytearray()
        self._cid_ends = array("I")
        self._rids = bytearray()
        self._rid_ends = array("I")
        self._flags = bytearray()
        self._order: array[int] | None = array("I")  # None: stale since the last add
        self._live = 0
        self._hint = 0  # the position found last
        self._lookup: dict[str, int] | None = None  # see hold_lookups
        for cid, rid in (pairs or {}).items():
            self[cid] = rid

    def _cid(self, pos: int) -> bytes:
        start = self._cid_ends[pos - 1] if pos else 0
        return bytes(self._cids[start : self._cid_ends[pos]])

    def _rid(self, pos: int) -> str:
        if not self._flags[pos] & _OWN_RID:
            return _text(self._cid(pos))
        start = self._rid_ends[pos - 1] if pos else 0
        return _text(self._rids[start : self._rid_ends[pos]])

    def _sorted(self) -> array[int]:
        if self._order is None:
            order = sorted(range(len(self._flags)), key=self._cid)
            for before, after in zip(order, order[1:], strict=False):
                # The same custom id twice: the later one replaced the earlier.
                if not self._flags[before] & _GONE and self._cid(before) == self._cid(after):
                    self._flags[min(before, after)] |= _GONE
                    self._live -= 1
            self._order = array("I", order)
        return self._order

    def _find(self, cid: str) -> int:
        """The position of a member that has not left, or -1."""
        order = self._sorted()  # also marks replaced duplicates gone: one live position per id
        flags = self._flags
        if self._lookup is not None:
            pos = self._lookup.get(cid, -1)
            return pos if pos >= 0 and not flags[pos] & _GONE else -1
        key = _utf8(cid)
        for pos in (self._hint, self._hint + 1):
            if pos < len(flags) and not flags[pos] & _GONE and self._cid(pos) == key:
                self._hint = pos
                return pos
        i = bisect_left(order, key, key=self._cid)
        while i < len(order) and self._cid(order[i]) == key:
            if not flags[order[i]] & _GONE:
                self._hint = order[i]
                return order[i]
            i += 1
        return -1

    def hold_lookups(self) -> None:
        """Until :meth:`release_lookups`, find members through a dict (many lookups ahead)."""
        if self._lookup is None:
            self._lookup = {_text(self._cid(pos)): pos for pos, _ in self._members()}

    def release_lookups(self) -> None:
        self._lookup = None

    def __setitem__(self, cid: str, rid: str) -> None:
        self._lookup = None  # positions of added members are not in it
        self._cids += _utf8(cid)
        self._cid_ends.append(len(self._cids))
        flags = 0
        if rid != cid:
            self._rids += _utf8(rid)
            flags = _OWN_RID
        self._rid_ends.append(len(self._rids))
        self._flags.append(flags)
        self._order = None
        self._live += 1

    def __getitem__(self, cid: str) -> str:
        pos = self._find(cid)
        if pos < 0:
            raise KeyError(cid)
        return self._rid(pos)

    def get(self, cid: str, default: str | None = None) -> str | None:  # type: ignore[override]
        pos = self._find(cid)  # one lookup, no KeyError for a custom id that is not a member
        return default if pos < 0 else self._rid(pos)

    def __delitem__(self, cid: str) -> None:
        self.pop(cid)

    def pop(self, cid: str, *default: str | None) -> str | None:  # type: ignore[override]
        """Remove a member and return its request id (one lookup, not two)."""
        pos = self._find(cid)
        if pos < 0:
            if default:
                return default[0]
            raise KeyError(cid)
        rid = self._rid(pos)
        self._flags[pos] |= _GONE
        self._live -= 1
        return rid

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, str) and self._find(cid) >= 0

    def __iter__(self) -> Iterator[str]:
        for pos, _ in self._members():
            yield _text(self._cid(pos))

    def __len__(self) -> int:
        self._sorted()
        return self._live

    def _members(self) -> Iterator[tuple[int, int]]:
        self._sorted()
        for pos, flags in enumerate(self._flags):
            if not flags & _GONE:
                yield pos, flags

    def pairs(self) -> Iterator[tuple[str, str]]:
        """(custom id, request id) of every member, in the order they were added."""
        for pos, _ in self._members():
            yield _text(self._cid(pos)), self._rid(pos)

    def __repr__(self) -> str:
        return f"Members({dict(self.pairs())!r})"


@dataclass
class PartitionIndex:
    """The in-memory view of one work partition: queues, batch members, deadlines, purge order."""

    queued: dict[BatchKey, dict[str, Queued]] = field(default_factory=dict)  # arrival order per key
    queued_bytes: dict[BatchKey, int] = field(default_factory=dict)
    members: dict[str, Members] = field(default_factory=dict)  # batch id → custom id → request id
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
        if batch.batch_id not in self.members:
            self.members[batch.batch_id] = Members()

    def add_member(self, entry: PendingEntry) -> None:
        """Record a BATCHED entry under its batch."""
        assert entry.batch_id is not None and entry.custom_id is not None
        members = self.members.get(entry.batch_id)
        if members is None:
            members = self.members[entry.batch_id] = Members()
        members[entry.custom_id] = entry.request_id
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
            members = self.members.get(entry.batch_id)
            if members is not None and members.pop(entry.custom_id, None) is not None:
                self.left.setdefault(entry.batch_id, {})[entry.custom_id] = now

    def submitted_ids(self, batch: BatchRecord) -> frozenset[str]:
        """The custom ids the last submit attempt of ``batch`` carried (members then, live or gone since)."""
        since = batch.attempted_at or 0
        gone = {cid for cid, at in self.left.get(batch.batch_id, {}).items() if at >= since}
        return frozenset(self.members.get(batch.batch_id, ())) | gone

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
