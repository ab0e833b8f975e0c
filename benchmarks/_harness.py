"""What the end-to-end benchmarks share: the embedded broker, the emulator in a child
process, worker processes through ``connector.testing.pipeline.Pipeline``, /proc readings and
a summary of the worker logs. Not a benchmark itself (``make bench`` runs ``bench_*.py``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connector.broker import EmbeddedBroker  # noqa: E402
from connector.emulator import EmulatorConfig, EmulatorThread  # noqa: E402
from connector.testing.pipeline import Pipeline  # noqa: E402

MB = 1024 * 1024


#: ``BENCH_SCALE`` multiplies every benchmark's sizes (1 = the sizes of the scale issue).
SCALE = float(os.environ.get("BENCH_SCALE", "1") or 1)


def scaled(size: int, minimum: int = 1) -> int:
    """``size`` (given at BENCH_SCALE=1) times BENCH_SCALE, at least ``minimum``."""
    return max(minimum, round(size * SCALE))


def serve_emulator(
    processing_seconds: float, urls: multiprocessing.Queue, stop: Event, skew: Any = None
) -> None:
    thread = EmulatorThread(EmulatorConfig(processing_seconds=processing_seconds))
    if skew is not None:
        # The emulator's clock runs ``skew.value`` seconds ahead: raising it ends batches.
        thread.emulator.clock = lambda: time.time() + skew.value
    with thread as url:
        urls.put(url)
        stop.wait()


def proc_status(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM …) in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sigterm_as_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def clock_skew() -> Any:
    """A shared value to pass to :func:`stack`: seconds the emulator's clock runs ahead."""
    return multiprocessing.get_context("spawn").Value("d", 0.0)


@contextlib.contextmanager
def stack(
    processing_seconds: float, skew: Any = None
) -> Iterator[tuple[EmbeddedBroker, str, Path]]:
    """Broker + emulator (own process, so it neither shares the GIL nor counts as worker
    memory) + a scratch directory; yields (broker, emulator url, scratch dir) and stops
    everything on the way out, also on an exception or SIGTERM. With ``skew`` (from
    :func:`clock_skew`) the caller can move the emulator's clock forward."""
    signal.signal(signal.SIGTERM, _sigterm_as_exit)
    context = multiprocessing.get_context("spawn")
    urls: multiprocessing.Queue = context.Queue()
    stop = context.Event()
    server = context.Process(
        target=serve_emulator, args=(processing_seconds, urls, stop, skew), daemon=True
    )
    with contextlib.ExitStack() as cleanup:
        scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bb-bench-")))
        broker = cleanup.enter_context(EmbeddedBroker(log_path=scratch / "broker.log"))
        server.start()

        def stop_server() -> None:
            stop.set()
            server.join(timeout=10)
            if server.is_alive():
                server.kill()
                server.join(timeout=10)

        cleanup.callback(stop_server)
        yield broker, urls.get(timeout=30), scratch


def broker_pid(broker: EmbeddedBroker) -> int | None:
    proc = broker._proc  # the broker exposes no pid; only read here, for CPU accounting
    return proc.pid if proc is not None else None


def pipeline(broker: EmbeddedBroker, url: str, scratch: Path) -> Pipeline:
    """Fresh topics and app id on the shared broker. The emulator lives in another process,
    so the pipeline gets no handle on it (benchmarks never inject faults)."""
    uid = uuid.uuid4().hex[:10]
    tmp = scratch / uid
    tmp.mkdir()
    return Pipeline(broker.bootstrap_servers, uid, tmp, SimpleNamespace(emulator=None), url)  # type: ignore[arg-type]


def stop_workers(pipe: Pipeline, timeout: float = 20.0) -> None:
    """SIGTERM each worker, SIGKILL what has not exited within ``timeout``."""
    for proc in pipe.workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in pipe.workers:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


_LEVEL = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b\s+(\S+):\s*(.*)")
_NOISE = re.compile(r"\b(bb-[0-9a-f]{24}|[0-9a-f]{10,}|\d+)\b")


def log_summary(pipe: Pipeline, limit: int = 8) -> list[str]:
    """Warning/error lines of every worker log, grouped by message shape, most frequent first."""
    counts: Counter[str] = Counter()
    tracebacks = 0
    for path in sorted(pipe.tmp.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("Traceback"):
                tracebacks += 1
            match = _LEVEL.search(line)
            if match:
                level, logger, message = match.groups()
                counts[f"{level} {logger}: {_NOISE.sub('N', message)[:110]}"] += 1
    lines = [f"{n:>6} × {shape}" for shape, n in counts.most_common(limit)]
    if tracebacks:
        lines.append(f"{tracebacks:>6} × traceback")
    return lines


# ---------------------------------------------------------------------------- goal tables
@dataclass
class Goal:
    """One row of a goal table: a measured value against its same-run baseline and target.

    ``passed`` is None when the row could not be judged (then it prints MISS: a goal that
    was not shown to hold is not met). ``info`` rows carry a figure the goal rows are
    derived from and print "info" instead of PASS/MISS."""

    measure: str
    measured: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool | None
    note: str = ""
    info: bool = False


def goal_table(title: str, rows: list[Goal], notes: Sequence[str] = ()) -> None:
    """Print one goal table in the shape ``make bench`` and the smoke test rely on."""
    print()
    print(f"== TABLE: {title} (BENCH_SCALE={SCALE:g})")
    head = ("measure", "measured", "baseline (same run)", "ratio", "target", "result")
    cells = [
        (
            r.measure,
            r.measured,
            r.baseline,
            "n/a" if r.ratio is None else f"{r.ratio:.2f}×",
            r.target,
            "info" if r.info else "PASS" if r.passed else "MISS",
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row, cell in zip(rows, cells, strict=True):
        line = " | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True))
        print(line + (f"  ({row.note})" if row.note else ""))
    for note in notes:
        print(f"  note: {note}")
    sys.stdout.flush()


def wait_for_line(path: Path, text: str, timeout: float) -> float | None:
    """Seconds until ``text`` appears in the file at ``path``; None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if path.exists() and text in path.read_text(errors="replace"):
            return time.monotonic() - started
        time.sleep(0.1)
    return None
