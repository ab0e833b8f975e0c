"""The whole connector: real broker, worker processes, the emulator and the real SDKs."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from connector.client import make_request
from connector.testing.pipeline import wait_until

pytestmark = pytest.mark.integration


def test_every_request_ends_as_exactly_one_result_or_dead_letter(pipeline):
    pipeline.start_worker()
    pipeline.wait_ready()  # the deadline cases below count from now
    p = pipeline
    deferred = [
        p.request(f"oa-{i}", "openai", f"ticket {i}") for i in range(25)
    ]  # one count close + the rest
    deferred += [p.request(f"an-{i}", "anthropic", f"doc {i}") for i in range(8)]  # max_wait
    deferred += [
        p.request(f"ge-{i}", "gemini", f"note {i}") for i in range(3)
    ]  # below min_batch: linger
    deferred += [
        p.request(
            "emb-deadline",
            "openai",
            "embed me",
            endpoint="/v1/embeddings",
            deadline_ms=int(time.time() * 1000) + 28_000,
        )
    ]  # closes early for its deadline
    deferred += [
        p.request("escalate-me", "anthropic", "urgent", deadline_ms=int(time.time() * 1000) + 1_500)
    ]
    deferred += [
        p.request("bad-forever", "openai", "EMULATOR_FAIL:invalid_request please"),
        p.request("flaky-forever", "anthropic", "EMULATOR_FAIL:rate_limit please"),
        p.request("ünïcödé/" + "x" * 200, "gemini", "a long non-ASCII id"),
    ]
    deferred += [
        make_request("wrong-endpoint", "openai", "gpt-4o-mini", "/v1/images", "{}", validate=False)
    ]
    realtime = [
        p.request(f"rt-{i}", ["openai", "anthropic", "gemini"][i % 3], f"now {i}") for i in range(6)
    ]
    p.produce(deferred)
    p.produce(realtime, lane="realtime")
    p.produce_raw([b"\x00not avro at all", b""])

    ids = [r["request_id"] for r in deferred + realtime]
    outcomes, stats = p.wait(ids, timeout=120)
    assert stats.duplicates == 0

    kinds = {rid: kind for rid, (kind, _) in outcomes.items()}
    records = {rid: record for rid, (_, record) in outcomes.items()}
    assert records["bad-forever"]["error_class"] == "provider_rejected"
    assert records["flaky-forever"]["error_class"] == "retries_exhausted"
    assert records["flaky-forever"]["attempts"] == 2
    assert records["wrong-endpoint"]["error_class"] == "invalid_input"
    assert records["wrong-endpoint"]["source_topic"] == p.settings.topics.deferred
    assert records["escalate-me"]["lane"] == "realtime"
    for rid in ids:
        if rid not in {"bad-forever", "flaky-forever", "wrong-endpoint"}:
            assert kinds[rid] == "result", (rid, records[rid])
    assert {records[f"rt-{i}"]["lane"] for i in range(6)} == {"realtime"}
    assert records["oa-0"]["lane"] == "batch"
    assert records["oa-0"]["cost_usd"] == pytest.approx(records["oa-0"]["realtime_cost_usd"] / 2)
    assert records["ünïcödé/" + "x" * 200]["lane"] == "batch"

    # Poison input is dead-lettered with its bytes and the worker carried on.
    assert stats.unkeyed == 2

    events = p.batch_events()
    reasons = {e["close_reason"] for e in events if e["state"] == "SUBMITTED"}
    assert {"count", "max_wait", "max_linger", "deadline"} <= reasons
    submitted = {e["batch_id"] for e in events if e["state"] == "SUBMITTED"}
    emitted = {e["batch_id"] for e in events if e["state"] == "EMITTED"}
    assert submitted == emitted
    emulator = p.emulator.stats()
    assert sum(emulator["batches_created"].values()) == len(submitted)
    tags = Counter(b["tag"] for b in emulator["batches"] if b["tag"])
    assert all(n == 1 for n in tags.values())


def test_kill_9_mid_flight_resumes_from_the_tables_with_no_second_provider_batch(pipeline):
    p = pipeline
    p.emulator.set_faults(processing_seconds=8.0)
    first = p.start_worker()
    requests = [p.request(f"k-oa-{i}", "openai", f"t{i}") for i in range(30)]
    requests += [p.request(f"k-an-{i}", "anthropic", f"t{i}") for i in range(10)]
    requests += [p.request(f"k-ge-{i}", "gemini", f"t{i}") for i in range(6)]
    p.produce(requests)
    # Wait until every request sits in a provider batch, then kill the worker hard.
    assert wait_until(
        lambda: sum(p.emulator.stats()["requests_submitted"].values()) == len(requests), 60
    ), p.logs()
    created_before = sum(p.emulator.stats()["batches_created"].values())
    p.kill(first)
    p.produce([p.request("k-after", "openai", "arrives while no worker runs")])
    p.start_worker()
    outcomes, _ = p.wait([r["request_id"] for r in requests] + ["k-after"], timeout=120)
    assert all(kind == "result" for kind, _ in outcomes.values())
    stats = p.emulator.stats()
    assert (
        sum(stats["batches_created"].values()) == created_before + 1
    )  # only k-after's batch is new
    tags = Counter(b["tag"] for b in stats["batches"])
    assert all(n == 1 for n in tags.values()), tags


def test_openai_webhook_triggers_the_poll_instead_of_waiting_for_backoff(pipeline):
    import base64

    from connector.broker import free_port

    p = pipeline
    secret = "whsec_" + base64.b64encode(b"batchbridge-test-webhook-secret!").decode()
    port = free_port()
    p.emulator.set_faults(
        webhook_url=f"http://127.0.0.1:{port}/webhooks/openai", webhook_secret=secret
    )
    # With polls 10 minutes apart, only the webhook can bring these results in time.
    p.start_worker(
        webhook_port=str(port), webhook_secret=secret, poll_initial_s="600", poll_max_s="600"
    )
    requests = [p.request(f"wh-{i}", "openai", f"t{i}") for i in range(6)]
    p.produce(requests)
    outcomes, _ = p.wait([r["request_id"] for r in requests], timeout=60)
    assert {kind for kind, _ in outcomes.values()} == {"result"}


def test_a_second_worker_takes_over_the_partitions_and_batches_of_one_that_dies(pipeline):
    p = pipeline
    p.emulator.set_faults(processing_seconds=6.0)
    workers = [p.start_worker(), p.start_worker()]
    requests = [
        p.request(f"f-{prov}-{i}", prov, f"t{i}")
        for prov in ("openai", "anthropic", "gemini")
        for i in range(8)
    ]
    p.produce(requests)
    assert wait_until(
        lambda: sum(p.emulator.stats()["requests_submitted"].values()) == len(requests), 90
    ), p.logs()
    created = sum(p.emulator.stats()["batches_created"].values())
    # Kill a worker that owns in-flight batches (which one depends on how the keys hash).
    owners = [
        i for i in range(2) if "INTENT → SUBMITTED" in (p.tmp / f"worker-{i}.log").read_text()
    ]
    assert owners, p.logs()
    p.kill(workers[owners[0]])
    outcomes, stats = p.wait([r["request_id"] for r in requests], timeout=120)
    assert {kind for kind, _ in outcomes.values()} == {"result"}
    assert sum(p.emulator.stats()["batches_created"].values()) == created


def test_back_pressure_holds_the_bound_across_partitions_without_deadlock(pipeline):
    """The bound is reached by batches on other partitions than the arriving requests'.

    Twelve models hash over four work partitions; the worker holds at most 15 live
    requests, while 120 arrive at once and each batch takes 3 s at the provider. Intake must
    pause its input (never hold an event), the ticks must keep driving every partition, and
    every request must still end once.
    """
    p = pipeline
    p.emulator.set_faults(processing_seconds=3.0, known_models={})
    p.start_worker(
        partitions="4",
        max_pending_requests="15",
        stream_buffer="10",
        batching__min_batch="1",
        batching__max_wait_s="0.5",
    )
    requests = [p.request(f"bp-{i}", "openai", f"t{i}") for i in range(120)]
    for i, request in enumerate(requests):
        request["model"] = f"bp-model-{i % 12}"
    p.produce(requests)
    outcomes, stats = p.wait([r["request_id"] for r in requests], timeout=240)
    assert {kind for kind, _ in outcomes.values()} == {"result"}, p.logs()
    log = (p.tmp / "worker-0.log").read_text()
    assert "worker full: paused" in log and "room again: resumed" in log, p.logs()
    assert "Timed out waiting" not in log
    # Requests in provider batches at any moment: the bound plus what was buffered when
    # intake paused (STREAM_BUFFER per input partition), never the whole backlog.
    changes = sorted(
        (e["event_at"], e["request_count"] if e["state"] == "SUBMITTED" else -e["request_count"])
        for e in p.batch_events()
        if e["state"] in ("SUBMITTED", "EMITTED")
    )
    in_flight, peak = 0, 0
    for _, change in changes:
        in_flight += change
        peak = max(peak, in_flight)
    assert 0 < peak <= 15 + 10 * 6, peak
