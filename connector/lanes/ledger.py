"""The deferred lane's durable records: what the ``pending`` and ``batches`` tables hold.

Both tables are changelog-backed Faust tables whose values are JSON objects. This module is
the only place that knows their layout: typed records with readable names, one
``to_json``/``from_json`` pair each, and :class:`Ledger`, a typed view of the two tables.
Records written by earlier versions (short keys such as ``rid``, ``p``, ``req``) are
migrated when read.

``pending``  request_id → :class:`PendingEntry`, one per request: QUEUED → BATCHED → DONE.
``batches``  batch_id → :class:`BatchRecord`: INTENT → SUBMITTED → ENDED → EMITTED (or
             FAILED / EXPIRED / CANCELLED before EMITTED).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from connector.costs.profile import RequestProfile
from connector.model import BatchKey
from connector.providers.base import BatchHandle, BatchState

Source = tuple[str, int, int]  # topic, partition, offset of the input record

# Metadata key ``batchbridge replay`` sets: "<dead-letter topic>:<partition>:<offset>".
REPLAY_OF_KEY = "batchbridge.replay_of"


class EntryState(StrEnum):
    """Where one request stands in the deferred lane."""

    QUEUED = "queued"  # waiting for its batch to close
    BATCHED = "batched"  # member of a batch in INTENT or later
    DONE = "done"  # its outcome was delivered (result, retry, dead letter or escalation)


class BatchPhase(StrEnum):
    """The state of one connector batch."""

    INTENT = "INTENT"  # closed and durable; the provider may or may not have it yet
    SUBMITTED = "SUBMITTED"  # the provider accepted it; polling
    ENDED = "ENDED"  # the provider finished it; results readable
    FAILED = "FAILED"  # refused or failed as a whole; no results
    EXPIRED = "EXPIRED"  # hit the provider's window; partial results
    CANCELLED = "CANCELLED"  # cancelled (stuck); partial results
    EMITTED = "EMITTED"  # every member has its outcome

    @property
    def has_ended(self) -> bool:
        """The provider is done with the batch: what is left is emitting its outcomes."""
        return self in _ENDED_PHASES

    @classmethod
    def after_provider(cls, state: BatchState) -> BatchPhase:
        """The phase a batch enters when the provider reports the final ``state``."""
        return _PHASE_OF_FINAL_STATE[state]


_ENDED_PHASES = frozenset(
    {BatchPhase.ENDED, BatchPhase.FAILED, BatchPhase.EXPIRED, BatchPhase.CANCELLED}
)
_PHASE_OF_FINAL_STATE = {
    BatchState.ENDED: BatchPhase.ENDED,
    BatchState.FAILED: BatchPhase.FAILED,
    BatchState.EXPIRED: BatchPhase.EXPIRED,
    BatchState.CANCELLED: BatchPhase.CANCELLED,
}

# Short keys of the first changelog format → today's names.
_ENTRY_ALIASES = {
    "rid": "request_id",
    "key": "batch_key",
    "req": "request",
    "src": "source",
    "p": "partition",
    "at": "changed_at",
    "batch": "batch_id",
    "cid": "custom_id",
    "how": "outcome",
}
_BATCH_ALIASES = {
    "id": "batch_id",
    "key": "batch_key",
    "p": "partition",
    "state": "phase",
    "reason": "close_reason",
}


def _migrated(raw: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    return {aliases.get(k, k): v for k, v in raw.items()}


@dataclass(slots=True)
class PendingEntry:
    """One request in the deferred lane; the ``pending`` table holds one per request id."""

    request_id: str
    attempt: int
    batch_key: BatchKey
    size: int  # serialised body bytes
    deadline: int | None = None  # epoch ms
    source: Source | None = None
    request: dict[str, Any] | None = None  # the decoded request; dropped once DONE
    partition: int = -1  # the work partition that owns it
    state: EntryState = EntryState.QUEUED
    changed_at: int = 0  # arrival while QUEUED/BATCHED, completion once DONE
    batch_id: str | None = None
    custom_id: str | None = None
    outcome: str | None = None  # how it ended: result, retried, deadletter, escalated
    replay_of: str | None = None  # the dead letter this request replays (``batchbridge replay``)
    profile: RequestProfile | None = None  # what the cost rules know of it; dropped once DONE

    @classmethod
    def of_request(
        cls, request: dict[str, Any], source: Source | None, shards_per_key: int = 1
    ) -> PendingEntry:
        """The entry intake builds for a valid request."""
        return cls(
            request_id=request["request_id"],
            attempt=int(request.get("attempt") or 1),
            batch_key=BatchKey.of(request, shards_per_key),
            size=len(request["body"].encode("utf-8", "surrogatepass")),
            deadline=request.get("deadline"),
            source=source,
            request=request,
            replay_of=(request.get("metadata") or {}).get(REPLAY_OF_KEY),
        )

    def repeats(self, other: PendingEntry) -> bool:
        """Whether this arrival is a replay of ``other`` (an attempt it already has), not new work."""
        return other.attempt >= self.attempt and other.replay_of == self.replay_of

    def queued(self, partition: int, now: int) -> PendingEntry:
        """This entry as admitted to ``partition`` at ``now``."""
        return self._copy(partition, EntryState.QUEUED, now, self.batch_id, self.custom_id)

    def batched(self, batch_id: str, custom_id: str) -> PendingEntry:
        """This entry as a member of ``batch_id`` under ``custom_id``."""
        return self._copy(self.partition, EntryState.BATCHED, self.changed_at, batch_id, custom_id)

    def _copy(
        self,
        partition: int,
        state: EntryState,
        changed_at: int,
        batch_id: str | None,
        custom_id: str | None,
    ) -> PendingEntry:
        # Spelled out: dataclasses.replace inspects the fields on every call, and this runs
        # twice per request (5 % of a worker's CPU).
        return PendingEntry(
            self.request_id,
            self.attempt,
            self.batch_key,
            self.size,
            self.deadline,
            self.source,
            self.request,
            partition,
            state,
            changed_at,
            batch_id,
            custom_id,
            self.outcome,
            self.replay_of,
            self.profile,
        )

    def done(self, outcome: str, now: int) -> PendingEntry:
        """The small marker that remains once the request has its outcome."""
        return PendingEntry(
            request_id=self.request_id,
            attempt=self.attempt,
            batch_key=self.batch_key,
            size=0,
            partition=self.partition,
            state=EntryState.DONE,
            changed_at=now,
            # Kept so reconciliation knows what an earlier submit of its batch carried.
            batch_id=self.batch_id,
            custom_id=self.custom_id,
            outcome=outcome,
            replay_of=self.replay_of,
        )

    def to_json(self) -> dict[str, Any]:
        """The table value."""
        value: dict[str, Any] = {
            "request_id": self.request_id,
            "attempt": self.attempt,
            "batch_key": str(self.batch_key),
            "partition": self.partition,
            "state": self.state.value,
            "changed_at": self.changed_at,
        }
        if self.replay_of is not None:
            value["replay_of"] = self.replay_of
        if self.state is EntryState.DONE:
            value["outcome"] = self.outcome
            if self.batch_id is not None:
                value.update(batch_id=self.batch_id, custom_id=self.custom_id)
            return value
        value.update(size=self.size, deadline=self.deadline, request=self.request)
        if self.profile is not None:
            value["profile"] = self.profile.to_json()
        value["source"] = list(self.source) if self.source else None
        if self.state is EntryState.BATCHED:
            value.update(batch_id=self.batch_id, custom_id=self.custom_id)
        return value

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PendingEntry:
        """A table value (either changelog format) as an entry."""
        v = _migrated(raw, _ENTRY_ALIASES) if "rid" in raw else raw
        source = v.get("source")
        return cls(
            request_id=v["request_id"],
            attempt=int(v.get("attempt") or 1),
            batch_key=BatchKey.parse(v["batch_key"]),
            size=int(v.get("size") or 0),
            deadline=v.get("deadline"),
            source=(source[0], int(source[1]), int(source[2])) if source else None,
            request=v.get("request"),
            partition=int(v.get("partition", -1)),
            state=EntryState(v.get("state", EntryState.QUEUED)),
            changed_at=int(v.get("changed_at") or 0),
            batch_id=v.get("batch_id"),
            custom_id=v.get("custom_id"),
            outcome=v.get("outcome"),
            replay_of=v.get("replay_of"),
            profile=RequestProfile.from_json(v["profile"]) if v.get("profile") else None,
        )


def handle_to_json(handle: BatchHandle) -> dict[str, Any]:
    """A provider batch handle as stored in a batch record."""
    return {
        "provider": handle.provider,
        "batch_id": handle.batch_id,
        "tag": handle.tag,
        "created_at": handle.created_at,
        "extra": dict(handle.extra),
    }


def handle_from_json(raw: dict[str, Any]) -> BatchHandle:
    """A stored handle back as the provider's type."""
    return BatchHandle(
        raw["provider"],
        raw["batch_id"],
        raw["tag"],
        raw.get("created_at"),
        dict(raw.get("extra") or {}),
    )


@dataclass(slots=True)
class BatchRecord:
    """One connector batch; the ``batches`` table holds one per batch id."""

    batch_id: str
    batch_key: BatchKey
    partition: int
    phase: BatchPhase
    count: int
    bytes: int
    close_reason: str
    opened_at: int  # arrival of its oldest request
    closed_at: int
    intent_at: int | None = None  # when the current tag went to INTENT (quota resubmits)
    tag: str | None = None  # the provider-side tag; the batch id unless resubmitted
    handle: BatchHandle | None = None
    quota_retries: int = 0
    attempted_at: int | None = None  # the last submit attempt of the current tag began
    failures: int = 0  # consecutive steps that failed with an unexpected error
    last_error: str | None = None
    submitted_at: int | None = None
    ended_at: int | None = None
    emitted_at: int | None = None
    provider_state: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    refused: bool = False  # the provider refused to create it (FAILED without a provider batch)
    succeeded: int | None = None
    failed: int | None = None
    primer: bool = False  # warms the prompt cache for the batches that wait for it
    waits_for: list[str] | None = None  # primer batches to end before this one is submitted
    budget: dict[str, Any] | None = None  # {"day", "reserved": {budget: usd}} held until EMITTED
    extra: dict[str, Any] = field(default_factory=dict)  # fields of newer versions, kept as read

    @property
    def provider(self) -> str:
        """The provider name of the batch key."""
        return self.batch_key.provider

    @property
    def current_tag(self) -> str:
        """The tag the provider batch carries (or will)."""
        return self.tag or self.batch_id

    def to_json(self) -> dict[str, Any]:
        """The table value."""
        value: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name != "extra":
                value[f.name] = getattr(self, f.name)
        value["batch_key"] = str(self.batch_key)
        value["phase"] = self.phase.value
        value["handle"] = handle_to_json(self.handle) if self.handle else None
        # Read by dashboards and by earlier versions' status tools.
        value.update(
            provider=self.provider, model=self.batch_key.model, endpoint=self.batch_key.endpoint
        )
        return value

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BatchRecord:
        """A table value (either changelog format) as a record."""
        v = _migrated(raw, _BATCH_ALIASES)
        known = {f.name for f in fields(cls)} - {"extra"}
        args = {k: v[k] for k in known if k in v}
        args["batch_key"] = BatchKey.parse(v["batch_key"])
        args["phase"] = BatchPhase(v["phase"])
        args["handle"] = handle_from_json(v["handle"]) if v.get("handle") else None
        extra = {
            k: x
            for k, x in v.items()
            if k not in known and k not in ("provider", "model", "endpoint")
        }
        return cls(**args, extra=extra)


@dataclass(frozen=True, slots=True)
class WorkEvent:
    """A record of the internal work topic: admitted requests for one partition, or a tick."""

    entries: tuple[PendingEntry, ...] = ()  # empty: a tick
    follow_up: bool = False  # a tick the work loop asked for itself (a batch has more to do)

    @property
    def is_tick(self) -> bool:
        """A tick carries no requests: it asks the partition to do its periodic work."""
        return not self.entries

    def to_json(self) -> dict[str, Any]:
        """The work topic's JSON value."""
        if not self.entries:
            return {"t": "tick", "follow_up": True} if self.follow_up else {"t": "tick"}
        return {"t": "reqs", "entries": [e.to_json() for e in self.entries]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> WorkEvent:
        """A work topic value as an event (one-request events of the first format included)."""
        kind = raw.get("t")
        if kind == "reqs":
            return cls(tuple(PendingEntry.from_json(e) for e in raw["entries"]))
        if kind == "req":
            return cls((PendingEntry.from_json(raw["entry"]),))
        return cls(follow_up=bool(raw.get("follow_up")))


class Ledger:
    """Typed access to the ``pending`` and ``batches`` tables (any mutable mapping).

    Writes go through the tables (a Faust table sends each one to its changelog). Reads may
    go to the tables' stores directly (``Table.data``): the same values, without Faust's
    per-read sensor calls, which were the worker's largest single cost.
    """

    def __init__(
        self,
        pending: MutableMapping[str, Any],
        batches: MutableMapping[str, Any],
        *,
        pending_store: Mapping[str, Any] | None = None,
        batches_store: Mapping[str, Any] | None = None,
    ) -> None:
        self.pending = pending
        self.batches = batches
        self._pending_read: Mapping[str, Any] = pending if pending_store is None else pending_store
        self._batches_read: Mapping[str, Any] = batches if batches_store is None else batches_store

    def checkpoint(self) -> None:
        """Let the tables' stores record how far their changelogs are acknowledged."""
        self._each("checkpoint")

    def reset(self) -> None:
        """A rebalance: the tables' stores are recovered again."""
        self._each("reset")

    def _each(self, method: str) -> None:
        for table in (self.pending, self.batches):
            call = getattr(table, method, None)
            if call is not None:
                call()

    def entry(self, request_id: str) -> PendingEntry | None:
        """The entry of ``request_id``, if the table has one."""
        raw = self._pending_read.get(request_id)
        return PendingEntry.from_json(raw) if raw else None

    def entries_of(self, request_ids: Sequence[str]) -> list[PendingEntry | None]:
        """The entries of ``request_ids`` in order (None where the table has none), in one read."""
        get_many = getattr(self._pending_read, "get_many", None)
        raws = (
            get_many(request_ids)
            if get_many is not None
            else [self._pending_read.get(rid) for rid in request_ids]
        )
        return [PendingEntry.from_json(raw) if raw else None for raw in raws]

    def put_entry(self, entry: PendingEntry) -> None:
        """Write (replace) the entry of its request id."""
        self.pending[entry.request_id] = entry.to_json()

    async def put_entries(self, entries: Sequence[PendingEntry]) -> None:
        """Write (replace) several entries, in one store write where the table can."""
        put_many = getattr(self.pending, "put_many", None)
        if put_many is None:
            for entry in entries:
                self.put_entry(entry)
            return
        await put_many([(entry.request_id, entry.to_json()) for entry in entries])

    def drop_entry(self, request_id: str) -> None:
        """Remove an entry (its done marker outlived the de-duplication window)."""
        del self.pending[request_id]

    def entries(self) -> Iterator[PendingEntry]:
        """Every entry in the table, read one at a time (do not write the table meanwhile).

        Never the whole table at once: a worker rebuilding its index with 1,000,000
        requests in flight would hold every decoded request (~1 KB each) together.
        """
        for raw in self._pending_read.values():
            if raw:
                yield PendingEntry.from_json(raw)

    def batch(self, batch_id: str) -> BatchRecord | None:
        """The record of ``batch_id``, if the table has one."""
        raw = self._batches_read.get(batch_id)
        return BatchRecord.from_json(raw) if raw else None

    def put_batch(self, batch: BatchRecord) -> None:
        """Write (replace) a batch record."""
        self.batches[batch.batch_id] = batch.to_json()

    def drop_batch(self, batch_id: str) -> None:
        """Remove an emitted batch's record once replays can no longer need it."""
        del self.batches[batch_id]

    def all_batches(self) -> Iterator[BatchRecord]:
        """Every batch record in the table, read one at a time (do not write the table meanwhile)."""
        for raw in self._batches_read.values():
            if raw:
                yield BatchRecord.from_json(raw)
