"""Two workers started, killed (SIGKILL) and stopped (SIGTERM) at random while requests
stream in; at the end one or two workers run to completion."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

from connector.emulator import EmulatorConfig
from tests.faults.conftest import seeds
from tests.faults.runs import FaultRun

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.full_matrix]

# A stopped worker that has not exited after this long is hung, not shutting down.
STOP_GRACE_S = 60


def churn(run: FaultRun, rng: random.Random, stream_alive: object) -> list[subprocess.Popen[bytes]]:
    """Start and stop workers at random until the stream ends; the workers sent SIGTERM."""
    live = [run.start_worker(ready=False)]
    stopped: list[subprocess.Popen[bytes]] = []
    began = time.monotonic()
    while stream_alive():  # type: ignore[operator]
        time.sleep(rng.uniform(2, 7))
        live = [p for p in live if p.poll() is None]
        at = f"{time.monotonic() - began:5.1f}s"
        if len(live) < 2 and (not live or rng.random() < 0.5):
            live.append(run.start_worker(ready=False))
            run.notes.append(f"{at} start worker-{len(run.pipe.workers) - 1}")
            continue
        victim = live.pop(rng.randrange(len(live)))
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        victim.send_signal(sig)
        run.notes.append(f"{at} {sig.name} worker-{run.pipe.workers.index(victim)}")
        if sig == signal.SIGTERM:
            stopped.append(victim)
    for _ in range(rng.choice([1, 2]) - len([p for p in live if p.poll() is None])):
        run.start_worker(ready=False)
        run.notes.append(f"end: start worker-{len(run.pipe.workers) - 1}")
    return stopped


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", seeds())
def test_two_worker_rebalance_churn_loses_nothing_and_submits_nothing_twice(fault_run, seed):
    run = fault_run(
        "two-worker rebalance churn", emulator=EmulatorConfig(processing_seconds=2.0, seed=seed)
    )
    requests = run.workload("churn", {"openai": 60, "anthropic": 30, "gemini": 30})
    stream = run.stream(requests, interval_s=0.25)
    stopped = churn(run, random.Random(f"churn/{seed}"), stream.is_alive)
    stream.finish()
    for proc in stopped:
        if not run.pipe.kill(proc, signal.SIGTERM, grace_s=STOP_GRACE_S):
            run.problems.append(
                f"worker-{run.pipe.workers.index(proc)} was still running {STOP_GRACE_S}s after SIGTERM"
            )
    run.finish(timeout=300)
