"""Pure batch-assembly speed, no Kafka: ``plan_closes`` and ``assign_custom_ids``.

- ``plan_closes`` over one queue of 50,000 ``Queued`` refs closing by count (1000), against
  a baseline that builds the same batches with list slicing only;
- the deferred lane's arrival path: an O(1) fullness check per arriving request and
  ``plan_closes`` only when its batch key's queue is full (``on_request`` →
  ``_close_due(full_only=True)``), against the same check with slicing, and against
  re-planning the whole queue on every arrival (what the lane did before);
- ``assign_custom_ids`` for 50,000 request ids of which half need a digest (too long or
  with characters providers refuse), against a plain dict copy.

Each figure is the best of ``--repeat`` runs. Not part of the tests:

    BENCH_SCALE=0.1 .venv/bin/python benchmarks/bench_assembly.py [--items 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import scaled  # noqa: E402

from connector.config import BatchingSettings  # noqa: E402
from connector.lanes.assembly import Queued, plan_closes  # noqa: E402
from connector.providers.ids import assign_custom_ids, custom_id_for  # noqa: E402

CAP = 1000
CFG = BatchingSettings(max_requests=CAP)
LIMIT_REQUESTS = 50_000  # OpenAI's per-batch limit
LIMIT_BYTES = 200 * 1024 * 1024
NOW = 1_700_000_000_000


@dataclass
class Row:
    operation: str
    items: int
    calls: int
    seconds: float
    check: str

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


def best(repeat: int, func: Callable[[], object]) -> tuple[float, object]:
    """Fastest of ``repeat`` runs (GC off while timing) and the last result."""
    times = []
    result: object = None
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            result = func()
            times.append(time.perf_counter() - started)
        finally:
            gc.enable()
    return min(times), result


def queue_of(count: int) -> list[Queued]:
    return [Queued(f"req-{i}", NOW, 2048) for i in range(count)]


def plan_once(queue: list[Queued]) -> list[tuple[str, ...]]:
    closes = plan_closes(
        queue, now_ms=NOW, cfg=CFG, limit_requests=LIMIT_REQUESTS, limit_bytes=LIMIT_BYTES
    )
    return [close.request_ids for close in closes]


def slice_once(queue: list[Queued]) -> list[tuple[str, ...]]:
    full = len(queue) - len(queue) % CAP
    return [tuple(q.request_id for q in queue[i : i + CAP]) for i in range(0, full, CAP)]


def per_arrival(
    refs: list[Queued],
    plan: Callable[[list[Queued]], list[tuple[str, ...]]],
    *,
    check_first: bool = True,
) -> int:
    """Index each arrival; plan its key's queue (when full, or always); drop what closed."""
    queue: dict[str, Queued] = {}
    batches = 0
    for ref in refs:
        queue[ref.request_id] = ref
        if check_first and len(queue) < CAP:
            continue
        for ids in plan(list(queue.values())):
            for rid in ids:
                del queue[rid]
            batches += 1
    return batches


def request_ids(count: int) -> list[str]:
    """Half plain (used as they are), half needing a digest: alternately too long and ':'-ful."""
    ids = []
    for i in range(count):
        if i % 2 == 0:
            ids.append(f"req-{i}")
        elif i % 4 == 1:
            ids.append(f"tenant-{i}/" + "x" * 80)
        else:
            ids.append(f"orders:{i}:line-1")
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--items",
        type=int,
        default=scaled(50_000, minimum=2_000),
        help="default 50,000 × BENCH_SCALE",
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.items
    queue = queue_of(n)
    ids = request_ids(n)
    rows: list[Row] = []

    seconds, planned = best(args.repeat, lambda: plan_once(queue))
    rows.append(
        Row("plan_closes, one call over the queue", n, 1, seconds, f"{len(planned)} batches")
    )
    expected = planned
    seconds, sliced = best(args.repeat, lambda: slice_once(queue))
    same = "same batches" if sliced == expected else "DIFFERENT batches"
    rows.append(Row("  baseline: list slicing", n, 1, seconds, f"{len(sliced)} batches, {same}"))

    seconds, batches = best(args.repeat, lambda: per_arrival(queue, plan_once))
    rows.append(
        Row("lane arrival path (check, plan when full)", n, n, seconds, f"{batches} batches")
    )
    seconds, batches = best(args.repeat, lambda: per_arrival(queue, slice_once))
    rows.append(Row("  baseline: check, slice when full", n, n, seconds, f"{batches} batches"))
    seconds, batches = best(args.repeat, lambda: per_arrival(queue, plan_once, check_first=False))
    rows.append(Row("  before: re-plan on every arrival", n, n, seconds, f"{batches} batches"))

    seconds, assigned = best(args.repeat, lambda: assign_custom_ids(ids))
    digested = sum(1 for cid, rid in assigned.items() if cid != rid)
    rows.append(Row("assign_custom_ids", n, 1, seconds, f"{digested} digested"))
    seconds, copied = best(args.repeat, lambda: {rid: rid for rid in ids})
    rows.append(Row("  baseline: plain dict copy", n, 1, seconds, f"{len(copied)} ids"))
    seconds, _ = best(args.repeat, lambda: [custom_id_for(rid) for rid in ids])
    rows.append(Row("  custom_id_for alone (no clash check)", n, n, seconds, ""))

    print(f"\n== batch assembly and the arrival path, {n:,} requests (no target)")
    print(
        f"best of {args.repeat}; closing by count {CAP}; ops/s = items (requests or ids) per second"
    )
    print(f"{'operation':<44} {'items':>7} {'calls':>7} {'ms':>9} {'ops/s':>12}  check")
    for r in rows:
        print(
            f"{r.operation:<44} {r.items:>7} {r.calls:>7} {r.seconds * 1000:>9.1f} {r.per_second:>12,.0f}  {r.check}"
        )
    plan, slicing = rows[0], rows[1]
    lane, lane_base = rows[2], rows[3]
    ids_row, ids_base = rows[5], rows[6]
    print(
        f"overhead vs baseline: plan_closes {plan.seconds / slicing.seconds:.1f}×, "
        f"per arrival {lane.seconds / lane_base.seconds:.1f}×, "
        f"assign_custom_ids {ids_row.seconds / ids_base.seconds:.1f}×"
    )
    print(
        f"per arrival: {lane.seconds / n * 1e6:.2f} µs per request (re-planning every arrival: "
        f"{rows[4].seconds / n * 1e6:.0f} µs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
