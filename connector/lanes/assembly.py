"""When queued requests become a batch. Pure: the caller passes the clock and the limits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from connector.config import BatchingSettings
from connector.costs.profile import RequestProfile

COUNT = "count"
BYTES = "bytes"
MAX_WAIT = "max_wait"
MAX_LINGER = "max_linger"
DEADLINE = "deadline"
MAX_PENDING = "max_pending"


@dataclass(frozen=True, slots=True)
class Queued:
    request_id: str
    arrived_ms: int
    size: int  # serialised body bytes
    deadline_ms: int | None = None
    profile: RequestProfile | None = None  # what the cost rules know of it (connector.costs)


@dataclass(frozen=True, slots=True)
class Close:
    request_ids: tuple[str, ...]
    reason: str
    size: int


def plan_closes(
    queue: Sequence[Queued],
    *,
    now_ms: int,
    cfg: BatchingSettings,
    limit_requests: int,
    limit_bytes: int,
    force: str | None = None,
) -> list[Close]:
    """Batches to close now from ``queue`` (arrival order), oldest first.

    Full batches close at once (count, bytes — the smaller of the configured and the
    provider's limit). What is left closes when its oldest request waited ``max_wait`` and
    it holds at least ``min_batch`` requests, when its oldest waited ``max_linger``
    whatever its size, or when a request's deadline leaves no more time than the expected
    batch turnaround. With ``force`` (a reason), what is left closes now regardless.
    """
    cap_requests = max(1, min(cfg.max_requests, limit_requests))
    cap_bytes = max(1, min(cfg.max_bytes, limit_bytes))
    closes: list[Close] = []
    start = 0
    while start < len(queue):
        end, size = start, 0
        while (
            end < len(queue)
            and end - start < cap_requests
            and (end == start or size + queue[end].size <= cap_bytes)
        ):
            size += queue[end].size
            end += 1
        full_by_count = end - start == cap_requests
        full_by_bytes = end < len(queue) and not full_by_count
        if not (full_by_count or full_by_bytes):
            break
        ids = tuple(q.request_id for q in queue[start:end])
        closes.append(Close(ids, COUNT if full_by_count else BYTES, size))
        start = end
    rest = queue[start:]
    if rest:
        reason = _time_reason(rest, now_ms, cfg) or force
        if reason:
            closes.append(
                Close(tuple(q.request_id for q in rest), reason, sum(q.size for q in rest))
            )
    return closes


def group_by_prefix(queue: Sequence[Queued]) -> list[Queued]:
    """``queue`` (arrival order) with the requests that share a prompt prefix side by side.

    Groups follow the arrival of their oldest request and keep arrival order inside; a
    request without a shared prefix is a group of its own. So the oldest request stays
    first, batches cut from the result hold whole runs of a prefix (one cache write each,
    then reads), and no request is overtaken by a later one of its own group.
    """
    groups: dict[tuple[int, str], list[Queued]] = {}
    for q in queue:
        prefix = q.profile.prefix if q.profile is not None else None
        key = (0, prefix) if prefix is not None else (1, q.request_id)
        groups.setdefault(key, []).append(q)
    return [q for group in groups.values() for q in group]


def _time_reason(rest: Sequence[Queued], now_ms: int, cfg: BatchingSettings) -> str | None:
    waited_s = (now_ms - min(q.arrived_ms for q in rest)) / 1000
    deadlines = [q.deadline_ms for q in rest if q.deadline_ms is not None]
    if deadlines and min(deadlines) - cfg.expected_turnaround_s * 1000 <= now_ms:
        return DEADLINE
    if len(rest) >= cfg.min_batch and waited_s >= cfg.max_wait_s:
        return MAX_WAIT
    if waited_s >= cfg.max_linger_s:
        return MAX_LINGER
    return None


def must_escalate(deadline_ms: int | None, now_ms: int, cfg: BatchingSettings) -> bool:
    """A request whose deadline is this close is sent to the realtime lane instead."""
    return deadline_ms is not None and now_ms >= deadline_ms - cfg.deadline_margin_s * 1000
