"""Hostile input on both input topics: one outcome each, and the worker carries on.

Every case goes through one shared pipeline, then sentinel requests that must be answered
too. A case that freezes a work partition takes every later request of that partition
with it, so in the full matrix each case that failed in the shared run is run again
alone (with its own sentinels): the table shows that isolated verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from connector.emulator import EmulatorConfig
from connector.providers.ids import custom_id_for
from tests.faults.conftest import full_matrix
from tests.faults.hostile import CASES, Case, Lane, same_id_twice, topic_limits
from tests.faults.runs import FaultRun, Verdict

pytestmark = [pytest.mark.integration, pytest.mark.fault]

SENTINELS = "hostile: sentinels produced after them (the worker carries on)"
# Small batches that close at once: hostile cases need no batching to be hostile.
QUICK = {
    "batching__max_wait_s": "1",
    "batching__max_linger_s": "2",
    "batching__min_batch": "1",
    "realtime_timeout_s": "30",
}
ISOLATED_AT_ONCE = 2


def row_of(case: Case) -> str:
    return f"hostile: {case.name}"


def prefix(case: Case, lane: str) -> str:
    return f"{lane[0]}{CASES.index(case)}-"


def produce_cases(run: FaultRun, cases: list[Case]) -> dict[str, list[str]]:
    """Every case on every lane it applies to; the expected names of each case's row."""
    settings = run.pipe.settings
    limits = topic_limits(settings)
    rows: dict[str, list[str]] = {}
    for name, topic in (
        ("deferred", settings.topics.deferred),
        ("realtime", settings.topics.realtime),
    ):
        lane = Lane(name, topic, run.pipe, limits)
        records, built = [], []
        for case in cases:
            if name in case.lanes:
                one = case.build(lane, prefix(case, name))
                built.append((case, one, len(records)))
                records += one.records
        sources = run.pipe.send(topic, records)
        for case, one, start in built:
            expected = f"{case.name} [{name}]"
            ids = sources[start : start + len(one.records)] + (
                [one.request_id] if one.request_id else []
            )
            run.expect(expected, ids, one.spec)
            rows.setdefault(row_of(case), []).append(expected)
    return rows


def produce_sentinels(run: FaultRun) -> list[str]:
    mix = {"openai": 2, "anthropic": 1, "gemini": 1}
    deferred = run.workload("sentinel-deferred", mix)
    realtime = run.workload("sentinel-realtime", mix)
    run.pipe.produce(deferred)
    run.pipe.produce(realtime, lane="realtime")
    return [r["request_id"] for r in deferred + realtime]


def check_replay(run: FaultRun, verdicts: dict[str, Verdict]) -> None:
    """A repeated request id is a replay: the provider saw the first body, and only it."""
    case = next(c for c in CASES if c.build is same_id_twice)
    if row_of(case) not in verdicts:
        return
    key = custom_id_for(f"{prefix(case, 'deferred')}twice")
    bodies = [
        r.serialised
        for b in run.emulator.store.batches.values()
        for r in b.requests
        if r.key == key
    ]
    if len(bodies) != 1 or "FIRST body" not in bodies[0]:
        verdicts[row_of(case)].problems.append(
            f"the provider got these bodies for the repeated id: {bodies}"
        )


def isolated(open_run: Callable[..., FaultRun], case: Case) -> tuple[Verdict, str]:
    """The case alone in a fresh pipeline, followed by sentinels."""
    run = open_run(None, emulator=EmulatorConfig(processing_seconds=0.5), **QUICK)
    run.excerpt_lines = 8
    run.start_worker()
    rows = produce_cases(run, [case])
    rows[SENTINELS] = produce_sentinels(run)
    verdicts = run.judge(rows, timeout=60)
    check_replay(run, verdicts)
    verdict = verdicts[row_of(case)]
    if not verdicts[SENTINELS].ok:
        verdict.problems.append(
            f"the worker stopped answering after it: {verdicts[SENTINELS].account.summary()}"
        )
    verdict.problems = [f"(run alone) {p}" for p in verdict.problems]
    run.close()  # its worker must not outlive it: isolated runs follow one another
    return verdict, run.evidence


@pytest.mark.timeout(1800)
def test_hostile_inputs_end_as_one_outcome_each_and_the_worker_carries_on(fault_run):
    run = fault_run(None, emulator=EmulatorConfig(processing_seconds=0.5), **QUICK)
    run.start_worker()
    rows = produce_cases(run, CASES)
    rows[SENTINELS] = produce_sentinels(run)
    verdicts = run.judge(rows, timeout=240)
    check_replay(run, verdicts)
    run.close()
    evidence = [run.evidence]
    failing = [case for case in CASES if not verdicts[row_of(case)].ok]
    if full_matrix() and failing:
        pool = ThreadPoolExecutor(ISOLATED_AT_ONCE)
        try:
            for case, (verdict, text) in zip(
                failing, pool.map(lambda c: isolated(fault_run, c), failing), strict=True
            ):
                verdicts[row_of(case)] = verdict
                evidence.append(f"--- {case.name}, run alone:\n{text}")
        finally:
            pool.shutdown(cancel_futures=True)
    run.record(verdicts)
    assert all(v.ok for v in verdicts.values()), "\n".join(
        [*(v.describe() for v in verdicts.values() if not v.ok), *evidence]
    )
