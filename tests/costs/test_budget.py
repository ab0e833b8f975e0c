"""Daily budgets: who may spend, and the book kept in a table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.costs.budget import (
    OVERALL,
    BudgetBook,
    Budgets,
    Claim,
    Limits,
    day_of,
    reservation,
    tenant_scope,
)

TENANTS = ["acme", "globex", "initech"]
claims = st.lists(
    st.builds(
        Claim,
        st.uuids().map(str),
        st.sampled_from([None, *TENANTS]),
        st.floats(min_value=0, max_value=5, allow_nan=False),
    ),
    max_size=25,
    unique_by=lambda c: c.request_id,
)
limits = st.builds(
    Limits,
    st.none() | st.floats(min_value=0, max_value=30),
    st.none() | st.floats(min_value=0, max_value=10),
    st.dictionaries(st.sampled_from(TENANTS), st.floats(min_value=0, max_value=10), max_size=2),
)


def test_days_are_utc() -> None:
    assert day_of(0) == "1970-01-01"
    assert day_of(86_400_000 - 1) == "1970-01-01" and day_of(86_400_000) == "1970-01-02"


def test_tenant_budgets_default_and_override() -> None:
    lim = Limits(overall=100.0, tenant_default=5.0, tenants={"acme": 50.0})
    assert lim.scopes(None) == [OVERALL] and lim.scopes("acme") == [OVERALL, tenant_scope("acme")]
    assert lim.of(tenant_scope("acme")) == 50.0 and lim.of(tenant_scope("other")) == 5.0
    assert Limits(overall=1.0).scopes("acme") == [OVERALL]  # no tenant budgets: not tracked
    assert not Limits().enabled and Limits(tenants={"a": 1.0}).enabled


@given(claims, limits, st.floats(min_value=0, max_value=20))
def test_what_is_admitted_fits_and_nobody_overtakes_within_a_budget(
    cs: list[Claim], lim: Limits, spent: float
) -> None:
    book = BudgetBook()
    book.add("d", OVERALL, spent=spent)
    verdict = book.admit(cs, "d", lim)
    assert sorted(verdict.admitted + verdict.over + verdict.never) == sorted(
        c.request_id for c in cs
    )
    admitted = [c for c in cs if c.request_id in verdict.admitted]
    for scope, total in reservation(admitted, lim).items():
        limit = lim.of(scope)
        if limit is not None:
            already = spent if scope == OVERALL else 0.0
            assert already + total <= limit + 1e-9
    for claim in cs:
        if claim.request_id in verdict.never:
            assert any(
                claim.reserve_usd > (lim.of(s) or 0)
                for s in lim.scopes(claim.tenant)
                if lim.of(s) is not None
            )
    # Once a budget is too full for a claim, no later claim spending that budget goes.
    for scope in {s for c in cs for s in lim.scopes(c.tenant) if lim.of(s) is not None}:
        limit = lim.of(scope)
        assert limit is not None
        used = spent if scope == OVERALL else 0.0
        stopped = False
        for claim in (c for c in cs if scope in lim.scopes(c.tenant)):
            if claim.request_id in verdict.admitted:
                assert not stopped
                used += claim.reserve_usd
            elif claim.request_id in verdict.over and used + claim.reserve_usd > limit:
                stopped = True


def test_an_unlimited_budget_admits_everything() -> None:
    cs = [Claim(f"r{i}", "acme", 1e6) for i in range(5)]
    assert BudgetBook().admit(cs, "d", Limits()).admitted == [c.request_id for c in cs]


ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "release", "spend"]),
        st.integers(min_value=0, max_value=3),
        st.sampled_from(["2026-11-27", "2026-11-28"]),
        st.sampled_from([None, *TENANTS]),
        st.floats(min_value=0, max_value=3),
    ),
    max_size=30,
)


@given(ops)
def test_the_book_read_back_from_the_table_is_the_book_kept_in_memory(operations: list) -> None:
    """What a restarted worker derives from the table equals what the running one counted."""
    lim = Limits(overall=100.0, tenant_default=10.0)
    table: dict = {}
    budgets = Budgets(table, lim)
    for op, partition, day, tenant, usd in operations:
        amounts = {s: usd for s in lim.scopes(tenant)}
        if op == "reserve":
            budgets.reserve(partition, day, amounts)
        elif op == "release":
            budgets.release(partition, day, amounts)
        else:
            budgets.spend(partition, day, tenant, usd)
    live = budgets.book()
    recovered = Budgets(table, lim).book()
    assert set(live.days) >= {k for k, v in recovered.days.items() if v.used}
    for key, spend in recovered.days.items():
        assert live.spend_of(*key).reserved == pytest.approx(spend.reserved, abs=1e-9)
        assert live.spend_of(*key).spent == pytest.approx(spend.spent, abs=1e-9)
    assert all(v["reserved"] >= 0 for v in table.values())


def test_reserve_spend_release_settle_to_the_actual_cost() -> None:
    lim = Limits(overall=10.0, tenant_default=2.0)
    budgets = Budgets({}, lim)
    batch = reservation(
        [Claim("a", "acme", 0.8), Claim("b", "acme", 0.8), Claim("c", None, 1.0)], lim
    )
    assert batch == {OVERALL: 2.6, tenant_scope("acme"): 1.6}
    budgets.reserve(0, "2026-11-28", batch)
    assert budgets.book().spend_of("2026-11-28", tenant_scope("acme")).used == 1.6
    # acme has 0.4 left: one more 0.8 request must wait.
    verdict = budgets.book().admit(
        [Claim("d", "acme", 0.8), Claim("e", None, 0.8)], "2026-11-28", lim
    )
    assert verdict.over == ["d"] and verdict.admitted == ["e"]
    budgets.spend(0, "2026-11-28", "acme", 0.1)
    budgets.spend(0, "2026-11-28", "acme", 0.1)
    budgets.spend(0, "2026-11-28", None, 0.2)
    budgets.release(0, "2026-11-28", batch)
    acme = budgets.book().spend_of("2026-11-28", tenant_scope("acme"))
    assert (acme.reserved, round(acme.spent, 9)) == (0.0, 0.2)
    assert round(budgets.book().spend_of("2026-11-28", OVERALL).spent, 9) == 0.4
    assert budgets.book().admit([Claim("d", "acme", 0.8)], "2026-11-28", lim).admitted == ["d"]


def test_old_days_are_purged_per_partition_when_a_partition_reserves() -> None:
    table: dict = {}
    budgets = Budgets(table, Limits(overall=10.0))
    for day in ("2026-11-25", "2026-11-27", "2026-11-28"):
        for partition in (0, 1):
            budgets.spend(partition, day, None, 1.0)
    budgets.reserve(0, "2026-11-28", {OVERALL: 1.0})
    assert sorted(table) == [
        "2026-11-25|*|1",
        "2026-11-27|*|0",
        "2026-11-27|*|1",
        "2026-11-28|*|0",
        "2026-11-28|*|1",
    ]
    assert budgets.book().spend_of("2026-11-28", OVERALL).used == 3.0


def test_tenant_names_may_hold_the_key_separator() -> None:
    table: dict = {}
    budgets = Budgets(table, Limits(tenant_default=5.0))
    budgets.spend(3, "2026-11-28", "a|b", 1.5)
    assert (
        Budgets(table, budgets.limits).book().spend_of("2026-11-28", tenant_scope("a|b")).spent
        == 1.5
    )
