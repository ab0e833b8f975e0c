"""End-to-end throughput of the deferred lane, and two workers against one.

Two goal tables, every baseline measured in the same run on the same broker:

- **end-to-end throughput, 1 worker**: N requests (30,000 × BENCH_SCALE) through one worker
  (batches of up to 1000, closed after 1 s, spread over 6 batch keys) to one outcome each on
  the results / dead-letter topics, against a bare Faust agent (aiokafka transport, no
  tables) consuming and Avro-decoding the same N requests. Target ≥ 1,500 req/s and ≥ 0.2×
  the bare agent. The broker alone (confluent-kafka produce → consume + decode) is printed
  as a note.
- **two workers vs one**: a second worker joins the same group; once both own a work
  partition, another N requests over the same 6 batch keys go through both. Target ≥ 1.6×
  the one-worker rate measured just before.

Every scenario is timed from the first produce to the last record / outcome, after a warm-up
through the whole path. Also prints the worker's peak RSS, how its batches spent their time
and a summary of its log warnings.

    BENCH_SCALE=0.1 .venv/bin/python benchmarks/bench_pipeline.py [--requests N]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from _harness import (
    MB,
    ROOT,
    Goal,
    broker_pid,
    cpu_seconds,
    goal_table,
    log_summary,
    pipeline,
    proc_status,
    scaled,
    stack,
    stop_workers,
)
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connector import schemas
from connector.client import RequestProducer, ResultWatcher
from connector.serde import build_codec
from connector.testing.pipeline import Pipeline, wait_until

SHARDS = 6  # batch keys: one model in 6 shards, 3 on each of the 2 work partitions
WORKER = {
    "batching__max_requests": "1000",
    "batching__max_wait_s": "1",
    "batching__min_batch": "1",
    "batching__max_linger_s": "2",
    "batching__expected_turnaround_s": "0",
    "batching__shards_per_key": str(SHARDS),
    "log_level": "INFO",
}
TARGET_RATE = 1500.0
TARGET_VS_BARE = 0.2
TARGET_SCALING = 1.6


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
        self.used = {
            name: cpu_seconds(pid) - self._at.get(name, 0.0) for name, pid in self.pids.items()
        }
        return self.used


def requests_for(pipe: Pipeline, count: int, prefix: str) -> list[dict[str, Any]]:
    return [pipe.request(f"{prefix}-{i}", text=f"question {i}: " + "x" * 200) for i in range(count)]


def one_per_shard(pipe: Pipeline, prefix: str) -> list[dict[str, Any]]:
    """A request for every batch key (shard), for warming up every work partition."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < SHARDS:
        rid = f"{prefix}-{i}"
        found.setdefault(zlib.crc32(rid.encode()) % SHARDS, rid)
        i += 1
    return [pipe.request(rid) for rid in found.values()]


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


def bare_agent(pipe: Pipeline, count: int, timeout: float, meter: CpuMeter) -> Row:
    """The same ``count`` requests into a bare Faust agent that only decodes them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHBRIDGE_")}
    env.update(pipe.env)
    log = open(pipe.tmp / "bare-agent.log", "wb")  # noqa: SIM115 - owned by the process
    progress = pipe.tmp / "bare-agent.count"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "_bare_agent.py"),
            f"bare-{pipe.uid}",
            str(pipe.tmp / "bare"),
            str(progress),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    meter.pids["bare agent"] = proc.pid
    decoded = 0
    last = 0.0

    def reached(count: int) -> bool:
        nonlocal decoded, last
        try:
            now = int(progress.read_bytes() or 0)
        except (FileNotFoundError, ValueError):
            return False
        if now != decoded:
            decoded, last = now, time.perf_counter()
        return decoded >= count or proc.poll() is not None

    try:
        pipe.produce([pipe.request("bare-warmup")])
        if not wait_until(lambda: reached(1), timeout, 0.05) or decoded < 1:
            raise RuntimeError(
                f"the bare agent decoded nothing:\n{(pipe.tmp / 'bare-agent.log').read_text()[-3000:]}"
            )
        requests = requests_for(pipe, count, "bare")
        meter.start()
        started = time.perf_counter()
        pipe.produce(requests)
        wait_until(lambda: reached(count + 1), timeout, 0.01)
        meter.stop()
    finally:
        proc.kill()  # nothing of it is kept: no need for Faust's graceful shutdown
        proc.wait(10)
    received = decoded - 1
    note = "" if received >= count else f"only {received} decoded"
    return Row("bare Faust agent (produce → decoded)", received, last - started, note, meter.used)


def assigned(pipe: Pipeline, index: int) -> list[int] | None:
    """The work partitions worker ``index`` last logged as assigned to it."""
    path = pipe.log_path(index)
    if not path.exists():
        return None
    found = re.findall(r"assigned work partitions \[([0-9, ]*)\]", path.read_text(errors="replace"))
    if not found:
        return None
    return [int(p) for p in found[-1].replace(",", " ").split()]


def through_workers(
    pipe: Pipeline, watcher: ResultWatcher, count: int, prefix: str, timeout: float, meter: CpuMeter
) -> tuple[Row, str]:
    """Warm every batch key up, then ``count`` requests to one outcome each."""
    warm = one_per_shard(pipe, f"{prefix}-warm")
    warm_started = time.perf_counter()
    pipe.produce(warm)
    if len(watcher.wait_for([r["request_id"] for r in warm], timeout)) < len(warm):
        raise RuntimeError(f"the workers did not answer the warm-up requests:\n{pipe.logs()}")
    warm_s = time.perf_counter() - warm_started
    requests = requests_for(pipe, count, prefix)
    ids = [r["request_id"] for r in requests]
    meter.start()
    started = time.perf_counter()
    pipe.produce(requests)
    produced = time.perf_counter() - started
    outcomes = watcher.wait_for(ids, timeout)
    elapsed = time.perf_counter() - started
    meter.stop()
    kinds = [kind for kind, _ in outcomes.values()]
    workers = sum(1 for w in pipe.workers if w.poll() is None)
    note = (
        f"{workers} worker(s): warm-up {warm_s:.1f} s; produce + flush {produced:.1f} s; "
        f"{kinds.count('result')} results, {kinds.count('deadletter')} dead letters"
    )
    missing = "" if len(outcomes) == count else f"only {len(outcomes)} outcomes in {timeout:.0f} s"
    return Row(
        f"connector, {workers} worker(s) (produce → outcome)",
        len(outcomes),
        elapsed,
        missing,
        dict(meter.used),
    ), note


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
    return len(seen), "mean " + ", ".join(parts)


def ratio(a: float, b: float) -> float | None:
    return a / b if a > 0 and b > 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=scaled(30_000, minimum=100),
        help="default 30,000 × BENCH_SCALE",
    )
    parser.add_argument("--processing-seconds", type=float, default=0.5, help="emulator batch time")
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up on a scenario after this"
    )
    args = parser.parse_args()
    n = args.requests
    timeout = args.timeout or 120.0 + n / 50

    marks = [("start", time.monotonic())]
    with stack(args.processing_seconds) as (broker, url, scratch):
        marks.append(("broker + emulator up", time.monotonic()))
        pids = {"broker": broker_pid(broker), "bench": os.getpid()}
        broker_only = broker_round_trip(pipeline(broker, url, scratch), n, timeout, CpuMeter(pids))
        marks.append(("broker only", time.monotonic()))
        bare = bare_agent(pipeline(broker, url, scratch), n, timeout, CpuMeter(dict(pids)))
        marks.append(("bare agent", time.monotonic()))
        pipe = pipeline(broker, url, scratch)
        first = pipe.start_worker(**WORKER)
        meter = CpuMeter({**pids, "worker 0": first.pid})
        try:
            with ResultWatcher(pipe.settings) as watcher:
                one, one_note = through_workers(pipe, watcher, n, "one", timeout, meter)
                peak_rss = proc_status(first.pid, "VmHWM")
                marks.append(("1 worker: start, warm-up, run", time.monotonic()))
                # Its own data dir: the worker drops its state-dir lock after start-up
                # (connector.app._faust_app keeps no reference to it), so a second worker
                # sharing the dir would claim the first one's slot and crash on RocksDB's lock.
                second = pipe.start_worker(**WORKER, data_dir=str(pipe.tmp / "data-1"))
                meter.pids["worker 1"] = second.pid
                balanced = wait_until(
                    lambda: (
                        assigned(pipe, 0) is not None
                        and assigned(pipe, 1) is not None
                        and len(assigned(pipe, 0) or []) == 1
                        and len(assigned(pipe, 1) or []) == 1
                    ),
                    timeout,
                )
                if not balanced:
                    raise RuntimeError(
                        f"the second worker never got a work partition:\n{pipe.log_excerpt()}"
                    )
                marks.append(("2nd worker: start, rebalance", time.monotonic()))
                two, two_note = through_workers(pipe, watcher, n, "two", timeout, meter)
                watcher.poll(1.0)
                duplicates = watcher.stats.duplicates
                marks.append(("2 workers: warm-up, run", time.monotonic()))
        finally:
            stop_workers(pipe, timeout=5.0)
        batches, phases = batch_phases(pipe)
        warnings = log_summary(pipe)
        marks.append(("stop, read batch events", time.monotonic()))
    marks.append(("broker + emulator down", time.monotonic()))

    print(
        f"{n} requests (~250 B bodies), emulator batch time {args.processing_seconds} s, "
        f"2 work partitions, {SHARDS} batch keys (one model in {SHARDS} shards)"
    )
    print(
        f"{'scenario':<46} {'requests':>8} {'seconds':>8} {'req/s':>8}  CPU seconds in the window"
    )
    for r in (broker_only, bare, one, two):
        cpu = ", ".join(f"{name} {used:.1f}" for name, used in r.cpu.items())
        print(f"{r.scenario:<46} {r.requests:>8} {r.seconds:>8.2f} {r.rate:>8.0f}  {cpu}  {r.note}")

    complete_one = one.requests == n
    vs_bare = ratio(one.rate, bare.rate) if bare.requests >= n else None
    goal_table(
        f"end-to-end throughput, 1 worker, {n:,} requests",
        [
            Goal(
                f"connector, 1 worker, {n:,} requests",
                f"{one.rate:,.0f} req/s",
                f"{bare.rate:,.0f} req/s (bare Faust agent)",
                vs_bare,
                f"≥ {TARGET_RATE:,.0f} req/s and ≥ {TARGET_VS_BARE}× bare agent",
                complete_one
                and vs_bare is not None
                and one.rate >= TARGET_RATE
                and vs_bare >= TARGET_VS_BARE,
                one.note or bare.note,
            )
        ],
        [
            f"broker alone (confluent-kafka produce → consume + decode): {broker_only.rate:,.0f} req/s",
            f"worker peak RSS (VmHWM) after the 1-worker run: {peak_rss / MB:.0f} MB",
            one_note,
            *(
                []
                if n >= 30_000
                else [f"measured at {n:,} requests, not the issue's 30,000 (BENCH_SCALE)"]
            ),
        ],
    )
    scaling = ratio(two.rate, one.rate)
    goal_table(
        f"two workers vs one, {n:,} requests over {SHARDS} batch keys",
        [
            Goal(
                f"2 workers, {n:,} requests",
                f"{two.rate:,.0f} req/s",
                f"{one.rate:,.0f} req/s (1 worker)",
                scaling,
                f"≥ {TARGET_SCALING}×",
                complete_one
                and two.requests == n
                and scaling is not None
                and scaling >= TARGET_SCALING,
                two.note,
            )
        ],
        [
            two_note,
            "2 cores for broker, emulator, bench and both workers: two workers compete for the same CPUs",
            f"duplicates seen over both runs: {duplicates}",
            *(
                []
                if n >= 30_000
                else [f"measured at {n:,} requests, not the issue's 30,000 (BENCH_SCALE)"]
            ),
        ],
    )
    print(f"batches: {batches}; {phases}")
    print(
        "wall time: "
        + ", ".join(f"{name} {at - marks[i][1]:.1f} s" for i, (name, at) in enumerate(marks[1:]))
    )
    print("worker log warnings/errors:" if warnings else "worker log warnings/errors: none")
    for line in warnings:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
