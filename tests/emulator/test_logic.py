"""Pure logic of the emulator: lifecycle timeline, fault decisions, synthetic answers, config."""

from __future__ import annotations

import json

import pytest

from connector.emulator import EmulatorConfig, HttpFault, synth
from connector.emulator.state import (
    BatchRecord,
    Final,
    Phase,
    RequestRecord,
    Result,
    count_results,
    progress,
)
from connector.emulator.webhooks import signature


def make_batch(
    n: int = 10, *, outcome: str | None = None, p: float = 10.0, errors: list | None = None
) -> BatchRecord:
    requests = [RequestRecord(f"r{i}", f'{{"i":{i}}}', {"i": i}) for i in range(n)]
    return BatchRecord(
        "openai",
        "b1",
        created_at=1000.0,
        processing_seconds=p,
        requests=requests,
        outcome=outcome,
        validation_errors=errors or [],
    )


def test_timeline_moves_through_every_phase_to_completed() -> None:
    batch = make_batch()
    assert progress(batch, 1001.0).phase is Phase.QUEUED
    running = progress(batch, 1005.0)
    assert running.phase is Phase.RUNNING and 0 < running.done < batch.total
    assert progress(batch, 1009.0).phase is Phase.FINALIZING
    final = progress(batch, 1010.0)
    assert final.final is Final.COMPLETED and final.done == batch.total and final.ended_at == 1010.0


def test_expired_batch_finishes_only_the_first_half() -> None:
    batch = make_batch(10, outcome="expired")
    prog = progress(batch, 1010.0)
    assert prog.final is Final.EXPIRED
    counts = count_results(batch, prog)
    assert counts[Result.SUCCEEDED] == 5 and counts[Result.EXPIRED] == 5


def test_stuck_batch_runs_forever_until_cancelled() -> None:
    batch = make_batch(outcome="stuck")
    assert progress(batch, 1_000_000.0).phase is Phase.RUNNING
    batch.cancel_requested_at = 1_000_000.0
    assert progress(batch, 1_000_001.0).phase is Phase.CANCELLING
    prog = progress(batch, 1_000_003.0)
    assert prog.final is Final.CANCELLED
    assert count_results(batch, prog)[Result.CANCELLED] == 0  # everything had run by then


def test_cancel_mid_run_keeps_finished_part_and_cancels_the_rest() -> None:
    batch = make_batch(10)
    batch.cancel_requested_at = 1005.0  # halfway through the running window
    prog = progress(batch, 1008.0)
    assert prog.final is Final.CANCELLED and prog.cancelling_at == 1005.0
    counts = count_results(batch, prog)
    assert counts[Result.SUCCEEDED] == 5 and counts[Result.CANCELLED] == 5


def test_cancelled_outcome_cancels_halfway_on_its_own() -> None:
    batch = make_batch(10, outcome="cancelled")
    prog = progress(batch, 1010.0)
    assert prog.final is Final.CANCELLED
    counts = count_results(batch, prog)
    assert counts[Result.SUCCEEDED] == 5 and counts[Result.CANCELLED] == 5


def test_validation_errors_fail_the_batch_when_validation_ends() -> None:
    batch = make_batch(errors=[{"code": "token_limit_exceeded"}])
    assert progress(batch, 1001.0).phase is Phase.QUEUED
    assert progress(batch, 1002.0).final is Final.FAILED


def test_marker_names_the_error_kind_whatever_the_rate() -> None:
    text = '{"content":"please EMULATOR_FAIL:policy now"}'
    assert (
        synth.injected_error("k", text, seed=1, error_rate=0.0, error_kinds=["server_error"])
        == "policy"
    )


def test_error_rate_is_deterministic_and_close_to_the_fraction() -> None:
    keys = [f"req-{i}" for i in range(2000)]
    first = [
        synth.injected_error(
            k, "{}", seed=7, error_rate=0.25, error_kinds=["rate_limit", "overloaded"]
        )
        for k in keys
    ]
    again = [
        synth.injected_error(
            k, "{}", seed=7, error_rate=0.25, error_kinds=["rate_limit", "overloaded"]
        )
        for k in keys
    ]
    other_seed = [
        synth.injected_error(k, "{}", seed=8, error_rate=0.25, error_kinds=["rate_limit"])
        for k in keys
    ]
    assert first == again
    assert first != other_seed
    failed = [kind for kind in first if kind]
    assert 400 < len(failed) < 600
    assert set(failed) == {"rate_limit", "overloaded"}


def test_completion_usage_is_deterministic_and_realistic() -> None:
    text = json.dumps({"messages": [{"role": "user", "content": "x" * 400}]})
    a, b = synth.complete(text), synth.complete(text)
    assert a == b
    assert a.input_tokens == len(text) // 4
    assert 20 <= a.output_tokens <= 200


def test_malformed_lines_are_interleaved_and_unparseable() -> None:
    lines = list(synth.with_malformed(['{"a": 1}\n', '{"a": 2}\n'], 3, "t"))
    assert len(lines) == 5
    bad = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    assert len(bad) == 3


def test_shuffled_is_a_permutation_that_differs_from_input_order() -> None:
    order = synth.shuffled(50, 0, "b")
    assert sorted(order) == list(range(50)) and order != list(range(50))


def test_config_merge_validates_and_keeps_other_fields() -> None:
    cfg = EmulatorConfig(processing_seconds=0.5)
    merged = cfg.merged(
        {
            "error_rate": 0.5,
            "http_errors": [{"path_regex": "^/v1/batches$", "status": 500, "count": 2}],
        }
    )
    assert merged.processing_seconds == 0.5 and merged.error_rate == 0.5
    assert merged.http_errors == [HttpFault(path_regex="^/v1/batches$", status=500, count=2)]
    with pytest.raises(ValueError):
        cfg.merged({"no_such_field": 1})
    with pytest.raises(ValueError):
        cfg.merged({"error_kinds": ["bogus"]})
    with pytest.raises(ValueError):
        cfg.merged({"http_errors": [{"path_regex": "x", "status": 418}]})


@pytest.mark.parametrize(
    "changes",
    [
        {"http_errors": [{"path_regex": "x", "delay_s": -1}]},
        {"http_errors": [{"path_regex": "(", "status": None}]},
        {"cut_downloads": -1},
        {"download_bytes_per_s": 0},
    ],
)
def test_config_rejects_bad_transport_faults(changes: dict) -> None:
    with pytest.raises(ValueError):
        EmulatorConfig().merged(changes)


def test_transport_faults_are_accepted_in_their_documented_forms() -> None:
    cfg = EmulatorConfig().merged(
        {
            "http_errors": [
                {"path_regex": "a", "status": 404},
                {"path_regex": "b", "status": None, "delay_s": 1.5},
                {"path_regex": "c", "drop_response": True},
            ],
            "cut_downloads": 2,
            "download_bytes_per_s": 4096,
        }
    )
    assert [f.status for f in cfg.http_errors] == [404, None, None]
    assert cfg.merged({}).to_dict() == cfg.to_dict()


def test_webhook_signature_matches_the_standard_webhooks_reference() -> None:
    import standardwebhooks  # a runtime dependency: never skipped

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"type":"batch.completed"}'
    expected = standardwebhooks.Webhook(secret).sign("msg_1", _dt(1_700_000_000), body)
    assert signature(secret, "msg_1", 1_700_000_000, body) == expected


def _dt(ts: int):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)
