"""Primer batches: warm a shared prefix's cache with one request before the rest go. Pure.

A batch that starts cold gets few cache hits: the provider runs its requests in parallel,
so most of them start before the first one has written the prefix to the cache. With
``COST__CACHE_PRIMER`` on, a closing batch sends the first request of each shared prefix
that is worth it in a small primer batch; the other requests of those prefixes are
submitted once the primer batch has ended and the cache is warm, the rest at once.

**The cost rule.** A prefix is primed when the cache reads it buys are worth at least
``COST__PRIMER_MIN_SAVING_USD``: ``(n - 1) x s``, where ``n`` requests of the closing batch
share it and ``s`` is what one read of its tokens saves at the batch price (the price
table's cache-read price against its input price). The primer request itself costs what it
would have cost in the main batch; the price of priming is one more batch turnaround for
the rest, so a prefix is not primed when a request of its group has a deadline within two
expected turnarounds, nor when a batch carrying it was opened in the last
:data:`WARM_S` seconds (its cache is warm, or being warmed).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from typing import Protocol

from connector.costs.profile import RequestProfile

#: A prefix a batch of this worker carried this recently needs no primer.
WARM_S = 300.0


class Member(Protocol):
    """A queued request as the primer plan reads it."""

    @property
    def request_id(self) -> str: ...

    @property
    def deadline_ms(self) -> int | None: ...

    @property
    def profile(self) -> RequestProfile | None: ...


def worth_priming(members: int, saving_per_read_usd: float, min_saving_usd: float) -> bool:
    """The cost rule: ``members`` share a prefix whose cache read saves ``saving_per_read_usd``."""
    return members >= 2 and (members - 1) * saving_per_read_usd >= min_saving_usd


def plan_primer(
    members: Sequence[Member],
    *,
    worth: Callable[[RequestProfile, int], bool],
    warm: Container[str],
    latest_start_ms: int,
) -> tuple[list[str], list[str], list[str]]:
    """Split a closing batch into its primer, the requests that wait for it, and the rest
    (whose prefixes are not primed), each in the closing order.

    ``worth(profile, n)`` applies the cost rule to a prefix ``n`` members share; ``warm``
    holds the prefixes that need no primer; a group with a deadline before
    ``latest_start_ms`` cannot wait for one.
    """
    groups: dict[str, list[Member]] = {}
    for member in members:
        if member.profile is not None and member.profile.prefix is not None:
            groups.setdefault(member.profile.prefix, []).append(member)
    primed: set[str] = set()
    for prefix, group in groups.items():
        profile = group[0].profile
        assert profile is not None
        urgent = any(m.deadline_ms is not None and m.deadline_ms < latest_start_ms for m in group)
        if prefix not in warm and not urgent and worth(profile, len(group)):
            primed.add(prefix)
    first = {groups[prefix][0].request_id for prefix in primed}
    primer, waiting, rest = [], [], []
    for m in members:
        shared = m.profile.prefix if m.profile is not None else None
        if m.request_id in first:
            primer.append(m.request_id)
        elif shared in primed:
            waiting.append(m.request_id)
        else:
            rest.append(m.request_id)
    return primer, waiting, rest
