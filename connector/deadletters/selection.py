"""Which dead letters an operator means, how they count, and what replaying them would send.

Pure: the records come in as :class:`DeadLetter` values (read by
:mod:`connector.deadletters.store`), the clock is passed in.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Metadata key of a replayed request: the dead letter it came from, "<topic>:<partition>:<offset>".
REPLAY_OF = "batchbridge.replay_of"

UNDECODABLE = "(undecodable)"  # the class shown for a dead letter that does not decode

# Why a dead letter cannot be replayed.
NOT_DECODABLE = "dead letter not decodable"
NO_REQUEST = "no original request"
BODY_TRUNCATED = "request body truncated"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic and where it sits, which is its replay identity."""

    topic: str
    partition: int
    offset: int
    record: dict[str, Any] | None  # None: the dead letter itself did not decode
    timestamp_ms: int | None = None  # the Kafka record's timestamp

    @property
    def replay_of(self) -> str:
        """``<topic>:<partition>:<offset>``: tags the replayed request and keys its marker."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def request_id(self) -> str | None:
        return self.record.get("request_id") if self.record else None

    @property
    def error_class(self) -> str:
        return str(self.record["error_class"]) if self.record else UNDECODABLE

    @property
    def provider(self) -> str | None:
        return self.record.get("provider") if self.record else None

    @property
    def model(self) -> str | None:
        return self.record.get("model") if self.record else None

    @property
    def failed_at(self) -> int | None:
        """When the connector gave up on the request; the record's timestamp if unknown."""
        if self.record and self.record.get("failed_at") is not None:
            return int(self.record["failed_at"])
        return self.timestamp_ms


def summary_of(dead_letter: DeadLetter) -> dict[str, Any]:
    """The fields an operator looks at first, JSON-able (the request body is left out)."""
    record = dead_letter.record or {}
    return {
        "replay_of": dead_letter.replay_of,
        "request_id": dead_letter.request_id,
        "error_class": dead_letter.error_class,
        "provider": dead_letter.provider,
        "model": dead_letter.model,
        "failed_at": dead_letter.failed_at,
        "attempts": record.get("attempts"),
        "error_code": record.get("error_code"),
        "error_message": record.get("error_message"),
        "replayable": refusal(dead_letter) is None,
    }


def refusal(dead_letter: DeadLetter) -> str | None:
    """Why this dead letter cannot be replayed, or None when its original request is whole."""
    record = dead_letter.record
    if record is None:
        return NOT_DECODABLE
    if record.get("request") is None:
        return NO_REQUEST  # a decode error keeps only the raw bytes
    if "request.body" in (record.get("truncated") or ()):
        return BODY_TRUNCATED  # the field is newer than some records: absent means whole
    return None


def replay_request(dead_letter: DeadLetter) -> dict[str, Any]:
    """The original request again: attempt 1, tagged with the dead letter it came from."""
    if dead_letter.record is None or dead_letter.record.get("request") is None:
        raise ValueError(f"{dead_letter.replay_of} has no original request")
    request = dict(dead_letter.record["request"])
    metadata = dict(request.get("metadata") or {})
    metadata[REPLAY_OF] = dead_letter.replay_of
    return request | {"attempt": 1, "metadata": metadata}


def parse_time(text: str, now_ms: int) -> int:
    """Epoch ms from ``2h`` / ``30m`` / ``7d`` (that long ago), ISO 8601, or epoch ms.

    ISO times without a zone are UTC. Raises ValueError for anything else.
    """
    value = text.strip()
    duration = _DURATION.match(value)
    if duration:
        return now_ms - int(float(duration.group(1)) * _UNIT_MS[duration.group(2)])
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use e.g. 2h, 30m, 7d, 2026-01-31T12:00 or epoch ms"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Selection:
    """Filters over dead letters; an empty filter lets everything through."""

    classes: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    request_ids: frozenset[str] = frozenset()
    since_ms: int | None = None  # failed at or after
    until_ms: int | None = None  # failed before

    @property
    def everything(self) -> bool:
        return self == Selection()

    def matches(self, dead_letter: DeadLetter) -> bool:
        """Every given filter holds (values within one filter are alternatives)."""
        if self.classes and dead_letter.error_class not in self.classes:
            return False
        if self.providers and dead_letter.provider not in self.providers:
            return False
        if self.models and dead_letter.model not in self.models:
            return False
        if self.request_ids and dead_letter.request_id not in self.request_ids:
            return False
        return self._in_time(dead_letter.failed_at)

    def _in_time(self, failed_at: int | None) -> bool:
        if self.since_ms is None and self.until_ms is None:
            return True
        if failed_at is None:
            return False
        after_start = self.since_ms is None or failed_at >= self.since_ms
        return after_start and (self.until_ms is None or failed_at < self.until_ms)


@dataclass(frozen=True)
class CountRow:
    """Dead letters of one (class, provider, model)."""

    error_class: str
    provider: str
    model: str
    count: int
    replayable: int  # with a whole original request
    replayed: int  # already re-sent by an earlier replay


@dataclass
class Tally:
    """Dead letters counted per (class, provider, model); keeps the newest ``keep`` of them."""

    replayed: Collection[str] = frozenset()
    keep: int = 0
    _totals: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _replayable: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _done: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _newest: list[tuple[tuple[int, int, int], DeadLetter]] = field(default_factory=list)

    def add(self, dead_letter: DeadLetter) -> None:
        """Count one dead letter (and keep it if it is among the newest)."""
        key = (dead_letter.error_class, dead_letter.provider or "-", dead_letter.model or "-")
        self._totals[key] += 1
        self._replayable[key] += refusal(dead_letter) is None
        self._done[key] += dead_letter.replay_of in self.replayed
        if self.keep > 0:
            # A bounded min-heap: memory stays at `keep` records however many match.
            heapq.heappush(self._newest, (_order(dead_letter), dead_letter))
            if len(self._newest) > self.keep:
                heapq.heappop(self._newest)

    @property
    def total(self) -> int:
        return sum(self._totals.values())

    def rows(self) -> list[CountRow]:
        """Counts per (class, provider, model), largest first."""
        ordered = sorted(self._totals, key=lambda key: (-self._totals[key], key))
        return [
            CountRow(*key, self._totals[key], self._replayable[key], self._done[key])
            for key in ordered
        ]

    def newest(self) -> list[DeadLetter]:
        """The newest ``keep`` dead letters counted, newest first."""
        return [dead_letter for _, dead_letter in sorted(self._newest, reverse=True)]


def count(
    dead_letters: Iterable[DeadLetter], replayed: Collection[str] = (), *, keep: int = 0
) -> Tally:
    """Count ``dead_letters`` (see :class:`Tally`)."""
    tally = Tally(replayed, keep)
    for dead_letter in dead_letters:
        tally.add(dead_letter)
    return tally


@dataclass
class ReplayPlan:
    """What ``replay`` would send, and why it leaves the rest alone."""

    send: list[tuple[DeadLetter, dict[str, Any]]] = field(default_factory=list)
    already: list[DeadLetter] = field(default_factory=list)  # replayed by an earlier run
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)
    superseded: list[DeadLetter] = field(default_factory=list)  # a later one of its request wins

    @property
    def selected(self) -> int:
        """How many dead letters the selection matched, in all four outcomes."""
        return len(self.send) + len(self.already) + len(self.refused) + len(self.superseded)

    def refused_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(reason for _, reason in self.refused).items()))

    def as_dict(self, *, sent: bool) -> dict[str, Any]:
        """The plan as JSON; ``sent`` says whether its requests were produced (not a dry run)."""
        return {
            "dry_run": not sent,
            "selected": self.selected,
            "replayed": len(self.send) if sent else 0,
            "to_replay": len(self.send),
            "already_replayed": len(self.already),
            "refused": self.refused_by_reason(),
            "superseded": len(self.superseded),
            "replays": [
                {"replay_of": dead_letter.replay_of, "request_id": request["request_id"]}
                for dead_letter, request in self.send
            ],
        }


def plan_replay(
    selected: Iterable[DeadLetter], replayed: Collection[str], *, force: bool = False
) -> ReplayPlan:
    """Decide, per selected dead letter, whether replaying sends its request again.

    Only the latest dead letter of a request_id counts (an older one was a duplicate, or
    its request failed again since); one already replayed is skipped unless ``force``.
    """
    plan = ReplayPlan()
    latest: dict[str, DeadLetter] = {}
    for dead_letter in selected:
        request_id = dead_letter.request_id
        if request_id is None:
            plan.refused.append((dead_letter, refusal(dead_letter) or NO_REQUEST))
            continue
        current = latest.get(request_id)
        if current is None:
            latest[request_id] = dead_letter
        elif _order(dead_letter) >= _order(current):
            latest[request_id] = dead_letter
            plan.superseded.append(current)
        else:
            plan.superseded.append(dead_letter)
    for dead_letter in latest.values():
        reason = refusal(dead_letter)
        if reason is not None:
            plan.refused.append((dead_letter, reason))
        elif dead_letter.replay_of in replayed and not force:
            plan.already.append(dead_letter)
        else:
            plan.send.append((dead_letter, replay_request(dead_letter)))
    return plan


def _order(dead_letter: DeadLetter) -> tuple[int, int, int]:
    return (dead_letter.failed_at or 0, dead_letter.partition, dead_letter.offset)
