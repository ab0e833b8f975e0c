"""kill -9 of the only worker in each phase of a request's life, then a fresh worker.

Each phase is reached for real before the kill (the test waits for its evidence in the
worker's tables or at the emulator); the seed moves the moment of the kill within it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from connector.emulator import EmulatorConfig, HttpFault
from tests.faults.conftest import full_matrix, seeds
from tests.faults.runs import FaultRun

pytestmark = [pytest.mark.integration, pytest.mark.fault]

# The create route of each provider's batch API.
CREATE_ROUTES = r"^/v1/batches$|^/v1/messages/batches$|:batchGenerateContent$"
# Batching that never closes on its own while the first worker runs.
NEVER_CLOSE = {
    "batching__max_wait_s": "600",
    "batching__max_linger_s": "600",
    "batching__min_batch": "1000",
    "batching__max_requests": "1000",
}


def kill_in_intake(run: FaultRun, rng: random.Random) -> None:
    first = run.start_worker()
    requests = run.workload("in")
    stream = run.stream(requests, interval_s=0.05)
    at = rng.randrange(5, len(requests) - 5)
    run.wait_for(lambda: stream.sent >= at, f"{at} requests produced")
    run.kill(first)
    assert stream.is_alive(), "the kill came after the stream ended: not during intake"
    stream.finish()
    run.start_worker(ready=False)


def kill_with_open_batch(run: FaultRun, rng: random.Random) -> None:
    first = run.start_worker(**NEVER_CLOSE)
    requests = run.workload("open", {"openai": 12, "anthropic": 6, "gemini": 4})
    run.pipe.produce(requests)
    rids = {r["request_id"] for r in requests}

    def all_queued() -> bool:
        pending = run.pipe.table("pending")
        return all((pending.get(rid) or {}).get("state") == "queued" for rid in rids)

    run.wait_for(all_queued, "every request queued in the pending table")
    time.sleep(rng.uniform(0, 1))
    assert not run.emulator.stats()["batches"], (
        "a batch was submitted: the kill is not in the open-batch phase"
    )
    run.kill(first)
    run.start_worker(ready=False)


def kill_during_create(run: FaultRun, rng: random.Random) -> None:
    # Every create hangs 4 s, then takes effect even though its caller is gone.
    hang = HttpFault(CREATE_ROUTES, status=None, method="POST", count=1000, delay_s=4.0)
    run.emulator.set_faults(http_errors=[hang])
    first = run.start_worker()
    run.pipe.produce(run.workload("intent"))
    run.wait_for(lambda: "INTENT" in run.batch_states(), "a batch in INTENT")
    time.sleep(rng.uniform(0.2, 2.0))
    run.kill(first)
    run.emulator.set_faults(http_errors=[])
    run.start_worker(ready=False)


def kill_while_polling(run: FaultRun, rng: random.Random) -> None:
    run.emulator.set_faults(processing_seconds=8.0)
    first = run.start_worker()
    requests = run.workload("poll")
    run.pipe.produce(requests)
    submitted = lambda: sum(run.emulator.stats()["requests_submitted"].values()) >= len(requests)  # noqa: E731
    run.wait_for(submitted, "every request submitted")
    time.sleep(rng.uniform(0, 3))
    assert "SUBMITTED" in run.batch_states(), "no batch is being polled at the kill"
    run.kill(first)
    run.start_worker(ready=False)


def kill_during_emission(run: FaultRun, rng: random.Random) -> None:
    # Result downloads trickle at 1.5 kB/s, so emitting a batch takes seconds.
    run.emulator.set_faults(download_bytes_per_s=1500)
    first = run.start_worker()
    requests = run.workload("emit", {"openai": 20, "anthropic": 20})
    run.pipe.produce(requests)
    names = [r["request_id"] for r in requests]
    some = rng.randrange(1, 8)
    run.wait_for(lambda: run.outcomes_of(names) >= some, f"{some} results emitted")
    run.kill(first)
    emitted = run.outcomes_of(names)
    assert emitted < len(names), "every result was out before the kill: not during emission"
    run.emulator.set_faults(download_bytes_per_s=None)
    run.start_worker(ready=False)


PHASES: dict[str, Callable[[FaultRun, random.Random], None]] = {
    "intake": kill_in_intake,
    "open batch": kill_with_open_batch,
    "INTENT before submit": kill_during_create,
    "SUBMITTED while polling": kill_while_polling,
    "emission": kill_during_emission,
}


# make test runs one phase (the one whose reconciliation guards against a second batch).
FAST = [("INTENT before submit", 0)]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("phase", "seed"), [(p, s) for p in PHASES for s in seeds()] if full_matrix() else FAST
)
def test_kill_9_in_each_phase_loses_nothing_and_submits_nothing_twice(fault_run, phase, seed):
    run = fault_run(f"kill -9: {phase}", emulator=EmulatorConfig(processing_seconds=1.0, seed=seed))
    PHASES[phase](run, random.Random(f"{phase}/{seed}"))
    run.finish(timeout=150)
