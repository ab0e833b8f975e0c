"""Requests in flight on one worker, and its recovery after kill -9 with them in flight.

The emulator takes ~11 days per batch, so every batch the worker submits stays in flight.
For two sizes on the same broker in the same run, a fresh worker (batches of up to 10,000,
small bodies of ~30 B) admits and submits every request, then:

1. its peak RSS (VmHWM) is read once all of them are in flight;
2. it is killed with SIGKILL and a new worker started on the same data dir: "ready" is the
   time from the start to its ``Ready`` line (group joined, tables recovered);
3. the emulator's clock is moved past the batches' end, and every request must then reach
   exactly one outcome (missing and duplicate outcomes are counted).

Sizes: the target is 1,000,000 × BENCH_SCALE in flight (``BENCH_INFLIGHT`` or
``--in-flight`` set it directly); the baseline is 10,000 (a third of the target below
30,000). Below 1,000,000 the table extrapolates linearly from the two sizes (RSS per
request, recovery seconds per request) and says so.

    BENCH_INFLIGHT=30000 .venv/bin/python benchmarks/bench_inflight.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _harness import (
    MB,
    Goal,
    clock_skew,
    goal_table,
    log_summary,
    pipeline,
    proc_status,
    scaled,
    stack,
    stop_workers,
    wait_for_line,
)

from connector.client import ResultWatcher
from connector.testing.pipeline import READY_LINE, Pipeline

TARGET_IN_FLIGHT = 1_000_000
TARGET_RSS = 500 * MB
TARGET_READY_S = 60.0
PROCESSING_S = 1_000_000.0  # ~11.6 days: no batch ends until the clock is moved
WORKER = {
    "batching__max_requests": "10000",
    "batching__max_wait_s": "1",
    "batching__min_batch": "1",
    "batching__max_linger_s": "2",
    "batching__expected_turnaround_s": "0",
    "max_pending_requests": "2000000",
    "poll_max_s": "5",
}


@dataclass
class Run:
    size: int
    admitted_s: float
    in_flight: int
    peak_rss: int
    rss: int
    first_ready_s: float | None
    ready_s: float | None
    recovered_peak_rss: int
    store_bytes: int
    outcomes: int
    duplicates: int
    warnings: list[str]

    @property
    def missing(self) -> int:
        return self.size - self.outcomes


def submitted(pipe: Pipeline) -> int:
    """Requests in batches the worker has submitted (from the batches topic)."""
    counts: dict[str, int] = {}
    for event in pipe.batch_events():
        if event["state"] == "SUBMITTED":
            counts[event["batch_id"]] = event["request_count"]
    return sum(counts.values())


def disk_usage(path: Path) -> int:
    """Bytes of the files under ``path`` (RocksDB may remove some while we count)."""
    total = 0
    for f in path.rglob("*"):
        with contextlib.suppress(OSError):
            total += f.stat().st_size if f.is_file() else 0
    return total


def run(broker, url: str, scratch, skew, size: int, timeout: float) -> Run:  # noqa: ANN001
    pipe = pipeline(broker, url, scratch)
    try:
        started = time.monotonic()
        worker = pipe.start_worker(**WORKER)
        first_ready = wait_for_line(pipe.log_path(0), READY_LINE, 120)
        ids = [f"f-{i}" for i in range(size)]
        produced_at = time.monotonic()
        pipe.produce([pipe.request(rid, text=f"q {i}") for i, rid in enumerate(ids)])
        in_flight = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and worker.poll() is None:
            in_flight = submitted(pipe)
            if in_flight >= size:
                break
            time.sleep(0.5)
        admitted_s = time.monotonic() - produced_at
        time.sleep(2.0)  # let whatever follows a submit (table writes, polls) settle
        peak = proc_status(worker.pid, "VmHWM")
        settled = proc_status(worker.pid, "VmRSS")
        store = disk_usage(pipe.tmp / "data")
        if worker.poll() is not None:
            raise RuntimeError(
                f"worker exited with code {worker.returncode}:\n{pipe.log_excerpt()}"
            )
        pipe.kill(worker, signal.SIGKILL)
        second = pipe.start_worker(**WORKER)
        ready = wait_for_line(pipe.log_path(1), READY_LINE, max(120.0, timeout))
        time.sleep(2.0)  # the first tick rebuilds the partition indexes from the tables
        recovered_peak = proc_status(second.pid, "VmHWM")
        with ResultWatcher(pipe.settings) as watcher:
            skew.value += 10 * PROCESSING_S  # every batch in flight ends now
            outcomes = watcher.wait_for(ids, timeout)
            watcher.poll(1.0)
            duplicates = watcher.stats.duplicates
        print(
            f"  {size:,} in flight: start → ready {first_ready or float('nan'):.1f} s, produce → all submitted "
            f"{admitted_s:.1f} s, peak RSS {peak / MB:.0f} MB, ready after kill -9 {ready or float('nan'):.1f} s, "
            f"{len(outcomes):,} outcomes, {duplicates} duplicates ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
        return Run(
            size,
            admitted_s,
            in_flight,
            peak,
            settled,
            first_ready,
            ready,
            recovered_peak,
            store,
            len(outcomes),
            duplicates,
            log_summary(pipe, 4),
        )
    finally:
        stop_workers(pipe)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = int(os.environ.get("BENCH_INFLIGHT") or scaled(TARGET_IN_FLIGHT, minimum=300))
    parser.add_argument(
        "--in-flight",
        type=int,
        default=default,
        help="target size (default 1,000,000 × BENCH_SCALE)",
    )
    parser.add_argument("--baseline", type=int, default=None, help="baseline size (default 10,000)")
    args = parser.parse_args()
    n = args.in_flight
    b = args.baseline or (10_000 if n >= 30_000 else max(100, n // 3))
    timeout = 120.0 + n / 100
    skew = clock_skew()
    with stack(PROCESSING_S, skew) as (broker, url, scratch):
        base = run(broker, url, scratch, skew, b, timeout)
        target = run(broker, url, scratch, skew, n, timeout)

    extrapolated = n < TARGET_IN_FLIGHT
    per_request = (target.peak_rss - base.peak_rss) / (n - b) if n > b else 0.0
    rss_1m = (
        base.peak_rss + per_request * (TARGET_IN_FLIGHT - b) if extrapolated else target.peak_rss
    )
    complete = target.in_flight >= n and base.in_flight >= b
    how = f"extrapolated from {b:,} and {n:,}" if extrapolated else "measured"
    small = f"~30 B bodies; measured at {n:,} and {b:,} in flight"
    goal_table(
        "requests in flight, 1 worker (emulator batches never finish)",
        [
            *(
                [
                    Goal(
                        f"peak RSS, {n:,} in flight",
                        f"{target.peak_rss / MB:,.0f} MB",
                        f"{base.peak_rss / MB:,.0f} MB at {b:,}",
                        target.peak_rss / base.peak_rss if base.peak_rss else None,
                        "—",
                        None,
                        ""
                        if complete
                        else f"only {target.in_flight:,} of {n:,} reached the provider",
                        info=True,
                    )
                ]
                if extrapolated
                else []
            ),
            Goal(
                f"peak RSS, {TARGET_IN_FLIGHT:,} in flight ({how})",
                f"{rss_1m / MB:,.0f} MB",
                f"{base.peak_rss / MB:,.0f} MB at {b:,}",
                rss_1m / base.peak_rss if base.peak_rss else None,
                f"≤ {TARGET_RSS // MB} MB",
                complete and rss_1m <= TARGET_RSS,
            ),
        ],
        [
            f"{per_request:,.0f} B of RSS per request in flight (peak RSS difference / request difference)",
            f"RSS (VmRSS) 2 s after the last submit: {target.rss / MB:,.0f} MB at {n:,}, {base.rss / MB:,.0f} MB at {b:,}",
            f"produce → all submitted: {target.admitted_s:.0f} s for {n:,} ({n / target.admitted_s:,.0f} req/s), "
            f"{base.admitted_s:.0f} s for {b:,}",
            f"worker's data dir (RocksDB) with all in flight: {target.store_bytes / MB:,.0f} MB at {n:,}, "
            f"{base.store_bytes / MB:,.0f} MB at {b:,}",
            f"peak RSS of the worker started after kill -9, 2 s after ready (index rebuilt): "
            f"{target.recovered_peak_rss / MB:,.0f} MB at {n:,}, {base.recovered_peak_rss / MB:,.0f} MB at {b:,}",
            small,
        ],
    )
    ready_n, ready_b = target.ready_s, base.ready_s
    ready_1m = None
    if ready_n is not None and ready_b is not None:
        per = (ready_n - ready_b) / (n - b) if n > b else 0.0
        ready_1m = ready_b + max(per, 0.0) * (TARGET_IN_FLIGHT - b) if extrapolated else ready_n
    fmt = lambda s: "never" if s is None else f"{s:.1f} s"  # noqa: E731
    goal_table(
        "recovery after kill -9 with requests in flight",
        [
            *(
                [
                    Goal(
                        f"worker ready after kill -9, {n:,} in flight",
                        fmt(ready_n),
                        f"{fmt(ready_b)} at {b:,}",
                        ready_n / ready_b if ready_n and ready_b else None,
                        "—",
                        None,
                        info=True,
                    )
                ]
                if extrapolated
                else []
            ),
            Goal(
                f"worker ready after kill -9, {TARGET_IN_FLIGHT:,} in flight ({how})",
                fmt(ready_1m),
                f"{fmt(ready_b)} at {b:,}",
                ready_1m / ready_b if ready_1m and ready_b else None,
                f"≤ {TARGET_READY_S:.0f} s",
                ready_1m is not None and ready_1m <= TARGET_READY_S,
            ),
            Goal(
                f"then every request ends once, {n:,}",
                f"{target.missing:,} missing, {target.duplicates:,} duplicates",
                f"{base.missing:,} missing, {base.duplicates:,} duplicates at {b:,}",
                None,
                "0 missing, 0 duplicates",
                target.missing == 0 and target.duplicates == 0,
            ),
        ],
        [
            f"first start → ready (no state): {fmt(target.first_ready_s)} at {n:,}, {fmt(base.first_ready_s)} at {b:,}",
            "ready = the worker's Ready log line (group joined, tables recovered); "
            "then the emulator's clock moves past the batches' end",
            small,
        ],
    )
    for r in (base, target):
        if r.warnings:
            print(f"worker log warnings/errors ({r.size:,} in flight):")
            for line in r.warnings:
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
