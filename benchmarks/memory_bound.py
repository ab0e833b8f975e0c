"""Invariant 4 — memory is bounded by configuration, not by backlog size.

A backlog of deferred requests (~2 KB bodies) is produced before one worker starts; the
emulator takes an hour per batch, so every batch the worker submits stays in flight and the
worker can only admit requests up to ``max_pending_requests``. The worker's RSS (VmRSS) is
sampled for a fixed time per scenario, all in the same run on the same broker:

- bounded: max_pending_requests = 500 with backlogs of 2,000 and 10,000 — the peaks should
  match;
- baseline, unbounded: max_pending_requests = 1,000,000 with the 10,000 backlog — shows what
  the backlog costs when nothing holds it back.

"admitted" is the worker's ``batchbridge_requests_total`` at the end of the window.
Not part of ``make bench`` (about two minutes; ``bench_inflight.py`` measures RSS per
request in flight), nor of the tests:

    .venv/bin/python benchmarks/memory_bound.py [--seconds 30] [--body-bytes 2048]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.request
from dataclasses import dataclass

from _harness import MB, log_summary, pipeline, proc_status, stack, stop_workers

from connector.broker import EmbeddedBroker, free_port

BOUND = 500
UNBOUNDED = 1_000_000
WORKER = {
    "batching__max_requests": "100",
    "batching__max_wait_s": "1",
    "batching__min_batch": "1",
    "batching__max_linger_s": "2",
    "batching__expected_turnaround_s": "0",
}


@dataclass
class Row:
    scenario: str
    backlog: int
    max_pending: int
    peak_rss: int
    final_rss: int
    admitted: int | None
    warnings: list[str]


def scrape(port: int) -> dict[str, float]:
    """``name{labels}`` → value from the worker's Prometheus endpoint; empty if it is down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        match = re.match(r"^(batchbridge_\w+(?:\{[^}]*\})?) (\S+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def run(
    scenario: str,
    broker: EmbeddedBroker,
    url: str,
    scratch,
    backlog: int,
    max_pending: int,
    seconds: float,
    body: int,
) -> Row:
    pipe = pipeline(broker, url, scratch)
    text = "x" * body
    pipe.produce([pipe.request(f"mem-{i}", text=f"{i} {text}") for i in range(backlog)])
    port = free_port()
    worker = pipe.start_worker(
        **WORKER, max_pending_requests=str(max_pending), metrics_port=str(port)
    )
    peak = final = 0
    metrics: dict[str, float] = {}
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and worker.poll() is None:
            final = proc_status(worker.pid, "VmRSS")
            peak = max(peak, final)
            time.sleep(0.25)
        peak = max(peak, proc_status(worker.pid, "VmHWM"))
        metrics = scrape(port)
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with code {worker.returncode}:\n{pipe.logs()}")
    finally:
        stop_workers(pipe)
    admitted = metrics.get('batchbridge_requests_total{lane="deferred"}')
    return Row(
        scenario,
        backlog,
        max_pending,
        peak,
        final,
        int(admitted) if admitted is not None else None,
        log_summary(pipe, limit=4),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="RSS sampling time per scenario"
    )
    parser.add_argument(
        "--body-bytes", type=int, default=2048, help="approximate request body size"
    )
    parser.add_argument("--small", type=int, default=2_000, help="the smaller backlog")
    parser.add_argument("--large", type=int, default=10_000, help="the larger backlog")
    args = parser.parse_args()
    scenarios = [
        ("bounded", args.small, BOUND),
        ("bounded", args.large, BOUND),
        ("baseline: unbounded", args.large, UNBOUNDED),
    ]
    rows: list[Row] = []
    started = time.monotonic()
    with stack(processing_seconds=3600.0) as (broker, url, scratch):
        for scenario, backlog, max_pending in scenarios:
            rows.append(
                run(
                    scenario,
                    broker,
                    url,
                    scratch,
                    backlog,
                    max_pending,
                    args.seconds,
                    args.body_bytes,
                )
            )

    print(
        f"worker RSS over {args.seconds:.0f} s per scenario, ~{args.body_bytes} B bodies, batches of 100 held in flight"
    )
    print(
        f"{'scenario':<22} {'backlog':>8} {'max_pending':>12} {'peak RSS MB':>12} {'final RSS MB':>13} {'admitted':>9}"
    )
    for r in rows:
        admitted = "?" if r.admitted is None else str(r.admitted)
        print(
            f"{r.scenario:<22} {r.backlog:>8} {r.max_pending:>12} {r.peak_rss / MB:>12.1f}"
            f" {r.final_rss / MB:>13.1f} {admitted:>9}"
        )
    small, large, unbounded = rows
    print(
        f"bounded: 10k vs 2k backlog {(large.peak_rss - small.peak_rss) / MB:+.1f} MB; "
        f"unbounded vs bounded on 10k {(unbounded.peak_rss - large.peak_rss) / MB:+.1f} MB"
    )
    for r in rows:
        if r.admitted is not None and r.admitted > r.max_pending:
            print(
                f"{r.scenario}, backlog {r.backlog}: admitted {r.admitted} = "
                f"{r.admitted / r.max_pending:.1f}× max_pending_requests — the bound did not hold"
            )
    for r in rows:
        if r.warnings:
            print(f"worker log warnings/errors ({r.scenario}, backlog {r.backlog}):")
            for line in r.warnings:
                print(line)
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
