"""Daily USD budgets, per tenant and overall: reserved at submit, settled from actual usage.

A budget is a ceiling on one UTC day's spend in the batch lane. The tenant of a request is
the value of its metadata key ``COST__TENANT_METADATA_KEY``; a request without one spends
only the overall budget.

- **Reserve.** When a batch closes, each request in it reserves its estimate (its input
  and its output limit at the batch price; see :func:`connector.costs.profile.reserve_usd`)
  from every budget it spends, in the closing order. A request that does not fit waits in
  the queue (``COST__OVER_BUDGET=hold``) until the budget has room again (reservations
  settle, or the day changes), or is dead-lettered as ``budget_exceeded`` (``deadletter``);
  once one request of a budget does not fit, the later ones of that budget do not go
  either, so requests never overtake each other within a budget. A request whose estimate
  alone exceeds a whole daily budget is dead-lettered in either mode: it could never go.
- **Spend.** Each result adds its actual cost to the day its batch reserved on.
- **Release.** Once its batch is done, the batch's reservation is released.

State lives in a changelog-backed table (``budgets``): one entry per (day, budget, work
partition), written only while that partition's event is processed, so it recovers with
the partition. A worker counts the entries of the partitions it holds; with several
workers, each enforces the budget on the spend of its own partitions (see the README).
:class:`BudgetBook` is the pure arithmetic; :class:`Budgets` keeps it in the table.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OVERALL = "*"
_TENANT = "tenant:"
#: Entries of days before yesterday are purged: no batch reserves on them any more.
KEEP_DAYS = 2


def day_of(ms: int) -> str:
    """The UTC day of an epoch-milliseconds time, as ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def tenant_scope(tenant: str) -> str:
    """The budget name of one tenant."""
    return _TENANT + tenant


@dataclass(frozen=True, slots=True)
class Limits:
    """The daily budgets in USD; None is no budget."""

    overall: float | None = None
    tenant_default: float | None = None
    tenants: Mapping[str, float] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        """Whether any budget is set."""
        return self.overall is not None or self.tenant_default is not None or bool(self.tenants)

    def scopes(self, tenant: str | None) -> list[str]:
        """The budgets a request of ``tenant`` spends."""
        scopes = [OVERALL]
        if tenant is not None and (self.tenant_default is not None or self.tenants):
            scopes.append(tenant_scope(tenant))
        return scopes

    def of(self, scope: str) -> float | None:
        """The daily limit of a budget (None: unlimited, only counted)."""
        if scope == OVERALL:
            return self.overall
        return self.tenants.get(scope.removeprefix(_TENANT), self.tenant_default)


@dataclass
class Spend:
    """One budget on one day: reserved by batches not yet done, and spent."""

    reserved: float = 0.0
    spent: float = 0.0

    @property
    def used(self) -> float:
        return self.reserved + self.spent


@dataclass(frozen=True, slots=True)
class Claim:
    """A request asking for budget: who spends, and how much it reserves."""

    request_id: str
    tenant: str | None
    reserve_usd: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """A closing batch's requests by budget: they go, wait (over budget), or can never go."""

    admitted: list[str]
    over: list[str]
    never: list[str]


@dataclass
class BudgetBook:
    """Every budget's spend per day (the sum over the partitions a worker holds)."""

    days: dict[tuple[str, str], Spend] = field(default_factory=dict)

    def spend_of(self, day: str, scope: str) -> Spend:
        return self.days.get((day, scope), Spend())

    def add(self, day: str, scope: str, *, reserved: float = 0.0, spent: float = 0.0) -> None:
        """Change one budget's day; a reservation never drops below zero."""
        entry = self.days.setdefault((day, scope), Spend())
        entry.reserved = max(0.0, entry.reserved + reserved)
        entry.spent += spent

    def admit(self, claims: Sequence[Claim], day: str, limits: Limits) -> Verdict:
        """Which claims fit their budgets on ``day``, in order (see the module docstring)."""
        pending: dict[str, float] = {}
        blocked: set[str] = set()
        verdict = Verdict([], [], [])
        for claim in claims:
            scopes = [s for s in limits.scopes(claim.tenant) if limits.of(s) is not None]
            limit = {s: limits.of(s) or 0.0 for s in scopes}
            if any(claim.reserve_usd > limit[s] for s in scopes):
                verdict.never.append(claim.request_id)
                continue
            used = {s: self.spend_of(day, s).used + pending.get(s, 0.0) for s in scopes}
            full = {s for s in scopes if used[s] + claim.reserve_usd > limit[s]}
            if full or blocked.intersection(scopes):
                blocked.update(full)
                verdict.over.append(claim.request_id)
                continue
            for s in scopes:
                pending[s] = pending.get(s, 0.0) + claim.reserve_usd
            verdict.admitted.append(claim.request_id)
        return verdict


def reservation(claims: Iterable[Claim], limits: Limits) -> dict[str, float]:
    """What a batch of these claims reserves, per budget."""
    amounts: dict[str, float] = {}
    for claim in claims:
        for scope in limits.scopes(claim.tenant):
            amounts[scope] = amounts.get(scope, 0.0) + claim.reserve_usd
    return amounts


def _key(day: str, scope: str, partition: int) -> str:
    return f"{day}|{scope}|{partition}"


def _parse(key: str) -> tuple[str, str, int]:
    day, rest = key.split("|", 1)
    scope, partition = rest.rsplit("|", 1)
    return day, scope, int(partition)


class Budgets:
    """The budget book kept in a table: ``"<day>|<budget>|<partition>"`` → reserved, spent.

    The book is derived from the table on first use and after :meth:`reset` (rebalance).
    """

    def __init__(self, table: MutableMapping[str, Any], limits: Limits) -> None:
        self.table = table
        self.limits = limits
        self._book: BudgetBook | None = None

    @property
    def enabled(self) -> bool:
        return self.limits.enabled

    def reset(self) -> None:
        """Forget the derived book (partitions moved); it is read again from the table."""
        self._book = None

    def book(self) -> BudgetBook:
        """The spend of every budget and day in the partitions this worker holds."""
        if self._book is None:
            book = BudgetBook()
            for key, value in list(self.table.items()):
                if value:
                    day, scope, _ = _parse(key)
                    book.add(day, scope, reserved=value["reserved"], spent=value["spent"])
            self._book = book
        return self._book

    def _add(
        self, partition: int, day: str, scope: str, *, reserved: float = 0.0, spent: float = 0.0
    ) -> None:
        book = self.book()  # read from the table before this change is in it
        key = _key(day, scope, partition)
        old = self.table.get(key) or {"reserved": 0.0, "spent": 0.0}
        new = {"reserved": max(0.0, old["reserved"] + reserved), "spent": old["spent"] + spent}
        self.table[key] = new
        book.add(day, scope, reserved=new["reserved"] - old["reserved"], spent=spent)

    def reserve(self, partition: int, day: str, amounts: Mapping[str, float]) -> None:
        """Reserve a batch's ``amounts`` (per budget) on ``day``; purges old days first."""
        self.purge(partition, day)
        for scope, usd in amounts.items():
            self._add(partition, day, scope, reserved=usd)

    def release(self, partition: int, day: str, amounts: Mapping[str, float]) -> None:
        """Give back what a batch reserved, once it is done."""
        for scope, usd in amounts.items():
            self._add(partition, day, scope, reserved=-usd)

    def spend(self, partition: int, day: str, tenant: str | None, usd: float) -> None:
        """Count one result's actual cost on the day its batch reserved on."""
        for scope in self.limits.scopes(tenant):
            self._add(partition, day, scope, spent=usd)

    def purge(self, partition: int, today: str) -> None:
        """Drop this partition's entries of days before yesterday."""
        cutoff = day_of(_day_ms(today) - (KEEP_DAYS - 1) * 86_400_000)
        for key in [k for k in list(self.table.keys()) if k < cutoff]:
            day, scope, owner = _parse(key)
            if owner == partition:
                del self.table[key]
                self.book().days.pop((day, scope), None)


def _day_ms(day: str) -> int:
    return calendar.timegm(time.strptime(day, "%Y-%m-%d")) * 1000
