"""Every fault the provider emulator injects, one row each, against a mixed workload.

Transient faults must end with every request answered; faults that shape a whole batch
(failed, expired, cancelled, stuck, quota) hit the first round of batches only, so the
retried requests must then succeed — once each, in exactly one live provider batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connector.emulator import EmulatorConfig, HttpFault
from tests.faults.conftest import full_matrix
from tests.faults.runs import FaultRun, dead_letter

pytestmark = [pytest.mark.integration, pytest.mark.fault]

# Each provider's route for one step of a batch's life (Gemini's inline results come with
# its retrieve; it downloads a result file only for batches above 20 MB).
ROUTES: dict[str, list[tuple[str, str]]] = {
    "create": [
        ("POST", r"^/v1/batches$"),
        ("POST", r"^/v1/messages/batches$"),
        ("POST", r":batchGenerateContent$"),
    ],
    "retrieve": [
        ("GET", r"^/v1/batches/batch_[^/]+$"),
        ("GET", r"^/v1/messages/batches/msgbatch_[^/]+$"),
        ("GET", r"^/v1beta/batches/[^/:]+$"),
    ],
    "results download": [
        ("GET", r"^/v1/files/[^/]+/content$"),
        ("GET", r"^/v1/messages/batches/[^/]+/results$"),
        ("GET", r":download$"),
    ],
}
# More failures in a row than the SDKs retry (2), so the connector's own retry is needed.
IN_A_ROW = 4


def faults_on(route: str, count: int = IN_A_ROW, **fault: Any) -> list[HttpFault]:
    """One fault per provider on ``route``, so every provider meets it."""
    return [
        HttpFault(regex, method=method, count=count, **fault) for method, regex in ROUTES[route]
    ]


def first_round_only(run: FaultRun, expected: int, **clear: Any) -> None:
    """Lift a batch-shaping fault once the first round of batches holds every request."""
    submitted = lambda: sum(run.emulator.stats()["requests_submitted"].values()) >= expected  # noqa: E731
    run.wait_for(submitted, f"{expected} requests submitted")
    run.emulator.set_faults(**clear)


def http_fault_row(status: int, route: str) -> tuple[str, Callable[[FaultRun], None]]:
    def scenario(run: FaultRun) -> None:
        retry_after = {"retry_after": 1.0} if status == 429 else {}
        run.emulator.set_faults(http_errors=faults_on(route, status=status, **retry_after))
        run.start_worker()
        run.pipe.produce(run.workload("http"))

    return f"HTTP {status} on {route}", scenario


def batch_outcome_row(outcome: str) -> tuple[str, Callable[[FaultRun], None]]:
    def scenario(run: FaultRun) -> None:
        run.emulator.set_faults(batch_outcome=outcome)
        # A batch of the first round can fail and be retried before the last one is
        # submitted and the fault is lifted: attempts to spare, so every request still
        # gets its result once the provider behaves.
        run.start_worker(batch_timeout_s="4", batching__max_attempts="5")
        requests = run.workload(outcome)
        run.pipe.produce(requests)
        first_round_only(run, len(requests), batch_outcome=None)

    name = (
        "batch stuck (cancelled after BATCH_TIMEOUT_S)"
        if outcome == "stuck"
        else f"batch {outcome}"
    )
    return name, scenario


def token_limit(run: FaultRun) -> None:
    run.emulator.set_faults(openai_token_limit=True)
    run.start_worker(batching__quota_backoff_s="1")
    requests = run.workload("quota")
    run.pipe.produce(requests)
    first_round_only(run, len(requests), openai_token_limit=False)


def malformed_lines(run: FaultRun) -> None:
    run.emulator.set_faults(malformed_lines=3)
    run.start_worker()
    run.pipe.produce(run.workload("malformed"))


def per_request_errors(run: FaultRun) -> None:
    run.start_worker()
    requests = run.workload("fine")
    for kind, spec in [
        ("rate_limit", dead_letter("retries_exhausted")),
        ("server_error", dead_letter("retries_exhausted")),
        ("overloaded", dead_letter("retries_exhausted")),
        ("invalid_request", dead_letter("provider_rejected")),
        ("policy", dead_letter("provider_rejected")),
    ]:
        requests += run.workload(
            kind, {"openai": 2, "anthropic": 2, "gemini": 2}, spec, text=f"EMULATOR_FAIL:{kind}"
        )
    run.pipe.produce(requests)


def create_response_lost(run: FaultRun) -> None:
    # The batch is created, then the connection closes without an answer.
    run.emulator.set_faults(http_errors=faults_on("create", count=1, drop_response=True))
    run.start_worker()
    run.pipe.produce(run.workload("lost-create"))


def download_cut(run: FaultRun) -> None:
    run.emulator.set_faults(cut_downloads=3)
    run.start_worker()
    run.pipe.produce(run.workload("cut"))


def transient_404(run: FaultRun) -> None:
    run.emulator.set_faults(http_errors=faults_on("retrieve", count=2, status=404))
    run.start_worker()
    run.pipe.produce(run.workload("gone"))


ROWS: dict[str, Callable[[FaultRun], None]] = dict(
    [http_fault_row(status, route) for route in ROUTES for status in (429, 500, 503)]
    + [batch_outcome_row(outcome) for outcome in ("failed", "expired", "cancelled", "stuck")]
    + [
        ("token_limit_exceeded (quota)", token_limit),
        ("malformed output lines", malformed_lines),
        ("per-request errors: all 5 kinds", per_request_errors),
        ("create response lost", create_response_lost),
        ("download cut mid-stream", download_cut),
        ("transient 404 on retrieve", transient_404),
    ]
)
FAST = ["create response lost", "download cut mid-stream"]


@pytest.mark.timeout(400)
@pytest.mark.parametrize("fault", list(ROWS) if full_matrix() else FAST)
def test_provider_fault_loses_nothing_and_submits_nothing_twice(fault_run, fault):
    run = fault_run(fault, emulator=EmulatorConfig(processing_seconds=1.0))
    ROWS[fault](run)
    run.finish(timeout=150)
