"""What a run lost or did twice: pure functions over what the topics and the emulator hold.

The connector promises one outcome (a result or a dead letter) per request, never a second
provider batch for one connector batch, and never the same request attempt in two billed
provider batches. A run is judged on three numbers:

- **lost**: expected requests with no outcome at all;
- **duplicate outcome events**: outcomes beyond the first for one request (allowed by the
  at-least-once design, but counted);
- **duplicate provider submissions**: provider batches that should not exist — a second
  provider batch under one connector batch tag, a batch holding a request attempt that an
  earlier batch already holds, or a batch whose results the connector never reads (never
  tracked, or given up while the provider ran it). A batch failed as a whole processed nothing, so its
  requests may go again (the quota path resubmits them under a new tag).

A retried request legitimately reappears with ``attempt + 1`` in a later batch. Custom ids
do not carry the attempt, so a submission is given the attempt that was the latest one
produced to the deferred topic when its provider batch was created: a retry is produced
only after the batch before it ended, and submitted only after it was produced.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from connector.providers.ids import assign_custom_ids

# Provider batch states in which the provider processed nothing (emulator state names).
FAILED_BATCH_STATES = frozenset({"failed", "JOB_STATE_FAILED", "BATCH_STATE_FAILED"})
# How many same-id repeats within one batch get their own custom id (see providers.ids).
_CUSTOM_ID_VARIANTS = 4


def source_key(topic: str, partition: int, offset: int) -> str:
    """How an input record is named when its outcome carries no request id."""
    return f"{topic}[{partition}]@{offset}"


@dataclass(frozen=True, slots=True)
class Expected:
    """One request the run must answer, known by its request id and/or its input records."""

    name: str
    ids: frozenset[str]

    @classmethod
    def request(cls, request_id: str) -> Expected:
        return cls(request_id, frozenset({request_id}))


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """One record read from the results or dead-letter topic."""

    kind: str  # "result" | "deadletter"
    request_id: str | None
    source: str | None = None  # source_key() of the input record, dead letters only
    error_class: str | None = None
    error_message: str | None = None
    lane: str | None = None
    attempt: int | None = None

    def ids(self) -> list[str]:
        """The names this event answers to, most specific first."""
        return [i for i in (self.source, self.request_id) if i]


@dataclass(frozen=True, slots=True)
class ProviderBatch:
    """One batch as the provider (emulator) holds it."""

    provider: str
    batch_id: str
    tag: str | None
    state: str
    created_ms: int
    custom_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One request record on the deferred topic: who, which attempt, when produced."""

    request_id: str
    attempt: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class DuplicateSubmission:
    """A provider batch that should not exist, and why.

    ``of`` is the earlier provider batch it repeats, if any; ``requests`` are the request
    attempts (``request_id#attempt``) it repeats, or all it holds if its results go unread.
    """

    provider_batch: str
    reason: str
    of: str | None = None
    requests: tuple[str, ...] = ()

    def __str__(self) -> str:
        shown = ", ".join(repr(r) for r in self.requests[:3])
        more = f" (+{len(self.requests) - 3} more)" if len(self.requests) > 3 else ""
        requests = f"; requests {shown}{more}" if self.requests else ""
        return f"{self.provider_batch}: {self.reason}{requests}"

    def request_ids(self) -> set[str]:
        return {r.rsplit("#", 1)[0] for r in self.requests}


@dataclass
class Account:
    """The verdict on one run."""

    requests: int
    lost: list[str] = field(default_factory=list)
    duplicate_outcomes: dict[str, int] = field(default_factory=dict)  # name → extra events
    duplicate_submissions: list[DuplicateSubmission] = field(default_factory=list)
    unexpected: list[OutcomeEvent] = field(default_factory=list)  # outcomes nobody asked for
    outcomes: dict[str, list[OutcomeEvent]] = field(default_factory=dict)

    def subset(self, names: Iterable[str], request_ids: Iterable[str]) -> Account:
        """The part of this verdict that concerns ``names`` (whose requests are ``request_ids``)."""
        names, request_ids = set(names), set(request_ids)
        return Account(
            requests=len(names),
            lost=[n for n in self.lost if n in names],
            duplicate_outcomes={n: k for n, k in self.duplicate_outcomes.items() if n in names},
            duplicate_submissions=[
                d for d in self.duplicate_submissions if d.request_ids() & request_ids
            ],
            outcomes={n: e for n, e in self.outcomes.items() if n in names},
        )

    @property
    def duplicate_outcome_events(self) -> int:
        return sum(self.duplicate_outcomes.values())

    @property
    def clean(self) -> bool:
        """No loss and no duplicate submission: what every row of the matrix must show."""
        return not self.lost and not self.duplicate_submissions

    def summary(self, limit: int = 10) -> str:
        """The evidence behind a failed verdict, short enough for an assertion message."""
        lines = [
            f"{self.requests} requests: {len(self.lost)} lost, "
            f"{len(self.duplicate_submissions)} duplicate provider submissions, "
            f"{self.duplicate_outcome_events} duplicate outcome events"
        ]
        if self.lost:
            lines.append(f"lost: {_shorten(self.lost, limit)}")
        lines += [f"needless provider batch {d}" for d in self.duplicate_submissions[:limit]]
        if self.duplicate_outcomes:
            lines.append(
                f"answered more than once: {_shorten(sorted(self.duplicate_outcomes), limit)}"
            )
        if self.unexpected:
            lines.append(
                f"{len(self.unexpected)} outcomes for no expected request, e.g. {self.unexpected[0]}"
            )
        return "\n".join(lines)


def _shorten(items: list[str], limit: int) -> str:
    shown = ", ".join(repr(i)[:80] for i in items[:limit])
    return shown + (f" … (+{len(items) - limit})" if len(items) > limit else "")


def match_outcomes(
    expected: Iterable[Expected], events: Iterable[OutcomeEvent]
) -> tuple[dict[str, list[OutcomeEvent]], list[OutcomeEvent]]:
    """Each expected request's outcome events, and the events that answer none of them.

    An event belongs to the request named by its input record if it carries one, else to
    the request named by its request id.
    """
    owner: dict[str, str] = {}
    matched: dict[str, list[OutcomeEvent]] = {}
    for item in expected:
        matched[item.name] = []
        for name in item.ids:
            owner.setdefault(name, item.name)
    unexpected = []
    for event in events:
        names = [owner[i] for i in event.ids() if i in owner]
        if names:
            matched[names[0]].append(event)
        else:
            unexpected.append(event)
    return matched, unexpected


def lost(matched: Mapping[str, list[OutcomeEvent]]) -> list[str]:
    """Expected requests without any outcome."""
    return sorted(name for name, events in matched.items() if not events)


def duplicate_outcomes(matched: Mapping[str, list[OutcomeEvent]]) -> dict[str, int]:
    """Expected requests answered more than once → how many events too many."""
    return {name: len(events) - 1 for name, events in matched.items() if len(events) > 1}


def normal_batch_id(provider_batch_id: str) -> str:
    """A provider batch id without Gemini's ``batches/`` resource prefix."""
    return provider_batch_id.removeprefix("batches/")


def custom_id_owners(request_ids: Iterable[str]) -> dict[str, str]:
    """custom id → request id, for every custom id the connector may give these requests."""
    owners: dict[str, str] = {}
    for request_id in set(request_ids):
        for custom_id in assign_custom_ids([request_id] * _CUSTOM_ID_VARIANTS):
            owners[custom_id] = request_id
    return owners


def attempt_at(timeline: list[tuple[int, int]], at_ms: int) -> int:
    """The attempt current at ``at_ms``: the highest one produced by then (1 if none yet)."""
    index = bisect.bisect_right(timeline, (at_ms, float("inf")))
    return max((attempt for _, attempt in timeline[:index]), default=1)


def duplicate_submissions(
    batches: Iterable[ProviderBatch],
    attempts: Iterable[AttemptRecord],
    connector_states: Mapping[str, Iterable[str]] | None = None,
) -> list[DuplicateSubmission]:
    """Provider batches the connector should never have created (see the module doc).

    A batch is needless when an earlier batch carries its tag, or when it holds a request
    attempt that an earlier batch not failed as a whole already holds (or holds it twice).
    Given ``connector_states`` (provider batch id → the states the connector's batch events
    gave it), a batch not failed at the provider is also needless when the connector never
    tracked it (an orphan) or gave it up as FAILED (abandoned): billed, its results unread.
    A duplicate and the orphan it repeats count once.
    """
    states = None
    if connector_states is not None:
        states = {normal_batch_id(k): set(v) for k, v in connector_states.items()}
    timelines = _timelines(attempts)
    owners = custom_id_owners(timelines)
    tags: dict[str, str] = {}  # tag → first provider batch
    held: dict[tuple[str, int], str] = {}  # request attempt → provider batch
    repeats: list[DuplicateSubmission] = []
    unread: list[DuplicateSubmission] = []
    for batch in sorted(batches, key=lambda b: b.created_ms):
        again, first, mine = [], None, set()
        for custom_id in batch.custom_ids:
            if custom_id in owners:
                request_id = owners[custom_id]
                key = (request_id, attempt_at(timelines[request_id], batch.created_ms))
                where = held.get(key) or (batch.batch_id if key in mine else None)
                if where is not None:
                    again.append(f"{request_id}#{key[1]}")
                    first = first or where
                mine.add(key)
        if batch.tag and batch.tag in tags:
            why = f"tag {batch.tag!r} already created {tags[batch.tag]}"
            repeats.append(DuplicateSubmission(batch.batch_id, why, tags[batch.tag], tuple(again)))
        elif again:
            why = f"repeats requests of {first}"
            repeats.append(DuplicateSubmission(batch.batch_id, why, first, tuple(again)))
        if batch.tag:
            tags.setdefault(batch.tag, batch.batch_id)
        if batch.state not in FAILED_BATCH_STATES:
            held.update({key: batch.batch_id for key in mine if key not in held})
            if states is not None:
                unread += _unread(batch, mine, states.get(batch.batch_id, set()))
    repeated = {d.of for d in repeats}
    return repeats + [
        d for d in unread if d.provider_batch not in repeated or "abandoned" in d.reason
    ]


def _timelines(attempts: Iterable[AttemptRecord]) -> dict[str, list[tuple[int, int]]]:
    """request id → its (produced at, attempt) records, oldest first."""
    timelines: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for record in attempts:
        timelines[record.request_id].append((record.at_ms, record.attempt))
    for timeline in timelines.values():
        timeline.sort()
    return timelines


def _unread(
    batch: ProviderBatch, mine: set[tuple[str, int]], seen: set[str]
) -> list[DuplicateSubmission]:
    """The live ``batch`` if the connector, having given it the states ``seen``, never reads it."""
    held = tuple(f"{request_id}#{attempt}" for request_id, attempt in sorted(mine))
    if not seen:
        return [
            DuplicateSubmission(
                batch.batch_id,
                "an orphan: never tracked by the connector, billed, results unread",
                requests=held,
            )
        ]
    if "FAILED" in seen:
        why = (
            f"abandoned: the connector gave it up as FAILED while the provider has it {batch.state}"
        )
        return [DuplicateSubmission(batch.batch_id, why, requests=held)]
    return []


def account(
    expected: Iterable[Expected],
    events: Iterable[OutcomeEvent],
    batches: Iterable[ProviderBatch],
    attempts: Iterable[AttemptRecord],
    connector_states: Mapping[str, Iterable[str]] | None = None,
) -> Account:
    """The verdict on one run from everything it left behind."""
    expected = list(expected)
    matched, unexpected = match_outcomes(expected, events)
    return Account(
        requests=len(expected),
        lost=lost(matched),
        duplicate_outcomes=duplicate_outcomes(matched),
        duplicate_submissions=duplicate_submissions(batches, attempts, connector_states),
        unexpected=unexpected,
        outcomes=matched,
    )
