"""End-to-end throughput of the deferred lane: one worker, the embedded broker, the emulator.

Two scenarios on the same broker in the same run:

- baseline, broker only: produce N encoded requests to a fresh deferred topic and consume
  (and decode) N records from it, no connector in between;
- connector: the same N requests through one worker (batches of up to 1000, closed after
  1 s) to one outcome each on the results / dead-letter topics.

Both are timed from the first produce to the last record / outcome, so the difference is
what the connector costs on top of the broker. The worker is warmed up (one request through
the whole lane) before the clock starts. Prints the worker's peak RSS, how its batches spent
their time and a summary of its log warnings. Not part of the tests:

    .venv/bin/python benchmarks/bench_pipeline.py [--requests 3000] [--processing-seconds 0.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from _harness import (
    MB,
    broker_pid,
    cpu_seconds,
    log_summary,
    pipeline,
    proc_status,
    stack,
    stop_workers,
)
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connector import schemas
from connector.client import RequestProducer, ResultWatcher
from connector.serde import build_codec
from connector.testing.pipeline import Pipeline

WORKER = {
    "batching__max_requests": "1000",
    "batching__max_wait_s": "1",
    "batching__min_batch": "1",
    "batching__max_linger_s": "2",
    "batching__expected_turnaround_s": "0",
    "log_level": "INFO",
}


@dataclass
class Row:
    scenario: str
    requests: int
    seconds: float
    note: str = ""
    cpu: dict[str, float] = field(default_factory=dict)  # process → CPU seconds in the window

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


class CpuMeter:
    """CPU seconds each named process spends between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._at = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        self.used = {name: cpu_seconds(pid) - self._at[name] for name, pid in self.pids.items()}
        return self.used


def requests_for(pipe: Pipeline, count: int, prefix: str) -> list[dict[str, Any]]:
    return [pipe.request(f"{prefix}-{i}", text=f"question {i}: " + "x" * 200) for i in range(count)]


def broker_round_trip(pipe: Pipeline, count: int, timeout: float, meter: CpuMeter) -> Row:
    """Produce ``count`` requests, consume and decode them from the same topic."""
    topic = pipe.settings.topics.deferred
    codec = build_codec(pipe.settings)
    conf = pipe.settings.kafka.confluent_config()
    conf.update(
        {
            "group.id": f"bench-{pipe.uid}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer = Consumer(conf)
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    requests = requests_for(pipe, count, "base")
    received = 0
    last = 0.0
    done = threading.Event()

    def consume() -> None:
        nonlocal received, last
        deadline = time.monotonic() + timeout
        while received < count and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    codec.decode(schemas.REQUEST, msg.value(), topic)
                    received += 1
                    last = time.perf_counter()
        done.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        meter.start()
        started = time.perf_counter()
        with RequestProducer(pipe.settings, codec) as producer:
            for request in requests:
                producer.send(request)
            producer.flush()
        done.wait(timeout)
        meter.stop()
    finally:
        done.wait(5)
        consumer.close()
    note = "" if received == count else f"only {received} consumed"
    return Row("broker only (produce → consume)", received, last - started, note, meter.used)


def batch_phases(pipe: Pipeline) -> tuple[int, str]:
    """Batches seen on the batches topic and the mean time of each phase."""
    seen: dict[str, dict[str, Any]] = {}
    for event in pipe.batch_events():
        seen.setdefault(
            event["batch_id"], {"opened": event["opened_at"], "count": event["request_count"]}
        )[event["state"]] = event["event_at"]
    phases = {
        "first request → submitted": ("opened", "SUBMITTED"),
        "submitted → ended": ("SUBMITTED", "ENDED"),
        "ended → emitted": ("ENDED", "EMITTED"),
    }
    parts = []
    for label, (start, end) in phases.items():
        spans = [(b[end] - b[start]) / 1000 for b in seen.values() if start in b and end in b]
        if spans:
            parts.append(f"{label} {statistics.mean(spans):.1f} s (max {max(spans):.1f})")
    sizes = sorted(b["count"] for b in seen.values())
    return len(seen), f"sizes {sizes}; mean " + ", ".join(parts)


def connector_run(
    pipe: Pipeline, count: int, timeout: float, meter: CpuMeter
) -> tuple[Row, int, list[str]]:
    """The same ``count`` requests through one worker; returns the row, its peak RSS, notes."""
    worker = pipe.start_worker(**WORKER)
    meter.pids["worker"] = worker.pid
    notes: list[str] = []
    try:
        warm_started = time.perf_counter()
        pipe.produce([pipe.request("warmup-0")])
        with ResultWatcher(pipe.settings) as watcher:
            if not watcher.wait_for(["warmup-0"], timeout):
                raise RuntimeError(f"the worker did not answer a warm-up request:\n{pipe.logs()}")
            notes.append(
                f"worker start + warm-up request: {time.perf_counter() - warm_started:.1f} s"
            )
            requests = requests_for(pipe, count, "req")
            ids = [r["request_id"] for r in requests]
            meter.start()
            started = time.perf_counter()
            pipe.produce(requests)
            produced = time.perf_counter() - started
            outcomes = watcher.wait_for(ids, timeout)
            elapsed = time.perf_counter() - started
            meter.stop()
            watcher.poll(1.0)
            kinds = [kind for kind, _ in outcomes.values()]
            notes.append(
                f"produce + flush: {produced:.1f} s; outcomes: {kinds.count('result')} results, "
                f"{kinds.count('deadletter')} dead letters, {watcher.stats.duplicates} duplicates"
            )
        peak = proc_status(worker.pid, "VmHWM")
        if worker.poll() is not None:
            notes.append(f"worker exited with code {worker.returncode}")
    finally:
        stop_workers(pipe)
    note = "" if len(outcomes) == count else f"only {len(outcomes)} outcomes in {timeout:.0f} s"
    row = Row("connector, 1 worker (produce → outcome)", len(outcomes), elapsed, note, meter.used)
    return row, peak, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--processing-seconds", type=float, default=0.5, help="emulator batch time")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up on a scenario after this"
    )
    args = parser.parse_args()

    with stack(args.processing_seconds) as (broker, url, scratch):
        pids = {"broker": broker_pid(broker), "bench": os.getpid()}
        baseline = broker_round_trip(
            pipeline(broker, url, scratch), args.requests, args.timeout, CpuMeter(pids)
        )
        pipe = pipeline(broker, url, scratch)
        row, peak_rss, notes = connector_run(pipe, args.requests, args.timeout, CpuMeter(pids))
        batches, phases = batch_phases(pipe)
        warnings = log_summary(pipe)

    rows = [baseline, row]
    print(
        f"{args.requests} requests, emulator batch time {args.processing_seconds} s, 2 work partitions"
    )
    print(
        f"{'scenario':<42} {'requests':>8} {'seconds':>8} {'req/s':>8}  CPU seconds in the window"
    )
    for r in rows:
        cpu = ", ".join(f"{name} {used:.1f}" for name, used in r.cpu.items())
        print(f"{r.scenario:<42} {r.requests:>8} {r.seconds:>8.2f} {r.rate:>8.0f}  {cpu}  {r.note}")
    if baseline.rate and row.rate:
        print(f"connector / broker-only throughput: {row.rate / baseline.rate:.1%}")
    print(f"worker peak RSS (VmHWM): {peak_rss / MB:.1f} MB")
    for note in notes:
        print(note)
    print(f"batches: {batches}; {phases}")
    print("worker log warnings/errors:" if warnings else "worker log warnings/errors: none")
    for line in warnings:
        print(line)
    return 0 if all(r.requests == args.requests for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
