"""``batchbridge demo``: the whole connector on one machine, with no network and no cost.

Starts the embedded broker and the provider emulator, applies the topics, runs the worker
as a subprocess, sends the sample workload (:mod:`connector.workload`), waits for one
outcome per request and summarises requests, dead letters, batches, latency and cost.
Everything it started is stopped on the way out: normal end, timeout, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from connector import render, schemas, summary
from connector.broker import EmbeddedBroker, stop_process_group
from connector.client import RequestProducer, ResultWatcher, now_ms, read_topics
from connector.config import Settings
from connector.errors import BatchBridgeError
from connector.workload import demo_workload

Say = Callable[[str], None]

#: Batching tuned so a demo of a few hundred requests ends in well under two minutes.
DEMO_WORKER_ENV = {
    "BATCHBRIDGE_BATCHING__MAX_WAIT_S": "3",
    "BATCHBRIDGE_BATCHING__MAX_LINGER_S": "6",
    "BATCHBRIDGE_BATCHING__MIN_BATCH": "20",
    "BATCHBRIDGE_BATCHING__MAX_REQUESTS": "200",
    "BATCHBRIDGE_BATCHING__EXPECTED_TURNAROUND_S": "5",
    "BATCHBRIDGE_POLL_INITIAL_S": "0.5",
    "BATCHBRIDGE_POLL_MAX_S": "2",
    # Each process has its own mock:// registry, so the demo always speaks schemaless Avro.
    "BATCHBRIDGE_SERDE": "avro",
    "PYTHONUNBUFFERED": "1",
}


class DemoError(BatchBridgeError):
    """The demo could not run to the end (a component failed, or it timed out)."""


@dataclass
class DemoOptions:
    """What the demo sends and how the emulator behaves (``batchbridge demo`` options)."""

    requests: int = 500
    workers: int = 1
    timeout_s: float = 180.0
    processing_seconds: float = 2.0
    error_rate: float = 0.02
    error_kinds: list[str] = field(default_factory=lambda: ["rate_limit", "invalid_request"])
    seed: int = 7
    flex_429_rate: float = 0.1  # Flex calls the emulator answers 429 Resource Unavailable


@dataclass
class Stack:
    """What the demo started, stopped in reverse order exactly once."""

    broker: EmbeddedBroker | None = None
    emulator: Any = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _stopped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for proc in self.workers:
            stop_process_group(proc, 15.0)
        if self.emulator is not None:
            with contextlib.suppress(Exception):
                self.emulator.stop()
        if self.broker is not None:
            self.broker.stop()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the ``finally`` blocks stop what was started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def worker_env(bootstrap_servers: str, emulator_url: str, data_dir: Path) -> dict[str, str]:
    """The environment of a demo worker: this broker, this emulator, fast batching."""
    env = dict(os.environ)
    env.update(DEMO_WORKER_ENV)
    env.update(
        {
            "BATCHBRIDGE_KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
            "BATCHBRIDGE_OPENAI__BASE_URL": f"{emulator_url}/v1",
            "BATCHBRIDGE_ANTHROPIC__BASE_URL": emulator_url,
            "BATCHBRIDGE_GEMINI__BASE_URL": emulator_url,
            "BATCHBRIDGE_DATA_DIR": str(data_dir),
            # A named provider: the emulator serves an OpenAI-compatible vendor under /compat.
            "BATCHBRIDGE_PROVIDERS": json.dumps(
                {
                    "groq": {
                        "kind": "openai_compatible",
                        "base_url": f"{emulator_url}/compat/groq/v1",
                        "max_retries": 0,
                    }
                }
            ),
        }
    )
    return env


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "connector", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped by us, not by the tty
        )


def _emulator_stats(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=3) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def summarise(
    requests: int,
    outcomes: dict[str, tuple[str, dict[str, Any]]],
    batch_events: list[dict[str, Any]],
    duplicates: int,
) -> dict[str, Any]:
    """The demo's summary as one JSON-able dict (pure)."""
    results = [record for kind, record in outcomes.values() if kind == "result"]
    failures = [record for kind, record in outcomes.values() if kind == "deadletter"]
    latencies = summary.time_to_result_s(results)
    fill = summary.batch_fill(batch_events)
    p50 = summary.percentile(latencies, 50)
    p95 = summary.percentile(latencies, 95)
    return {
        "requests": requests,
        "results": len(results),
        "deadletters": len(failures),
        "deadletters_by_class": dict(sorted(Counter(f["error_class"] for f in failures).items())),
        "missing": requests - len(outcomes),
        "duplicates": duplicates,
        "realtime_results": sum(1 for r in results if r["lane"] == "realtime"),
        "batches": fill.batches,
        "batch_avg_fill": fill.average,
        "p50_s": None if p50 is None else round(p50, 2),
        "p95_s": None if p95 is None else round(p95, 2),
        **summary.cost_report(results).as_dict(),
        "workloads": workload_reports(results),
    }


def workload_reports(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Cost, saving and its breakdown per workload (the results' ``workload`` metadata)."""
    by_workload: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        name = (result.get("metadata") or {}).get("workload", "-")
        by_workload.setdefault(name, []).append(result)
    reports = {}
    for name, members in sorted(by_workload.items()):
        report = summary.cost_report(members).as_dict()
        del report["by_model"]
        reports[name] = {"results": len(members), **report}
    return reports


@dataclass(frozen=True)
class DemoFiles:
    """Where one demo run writes: worker and broker logs, and the workers' state."""

    base: Path
    run_id: str
    workers: int

    @property
    def worker_logs(self) -> list[Path]:
        if self.workers == 1:
            return [self.base / f"demo-{self.run_id}.log"]
        return [self.base / f"demo-{self.run_id}-w{k}.log" for k in range(self.workers)]

    @property
    def broker_log(self) -> Path:
        return self.base / f"demo-{self.run_id}-broker.log"

    @property
    def data_dir(self) -> Path:
        return self.base / f"demo-{self.run_id}"


def start_stack(
    stack: Stack, options: DemoOptions, settings: Settings, files: DemoFiles, say: Say
) -> tuple[Settings, str]:
    """Start broker, emulator and workers, apply the topics; return the settings that point
    at this broker, and the emulator's URL."""
    from connector.emulator import EmulatorConfig, EmulatorThread
    from connector.topics import apply_topics

    stack.broker = EmbeddedBroker(log_path=files.broker_log).start()
    say(f"embedded broker on {stack.broker.bootstrap_servers}")
    emulator = EmulatorThread(
        EmulatorConfig(
            processing_seconds=options.processing_seconds,
            error_rate=options.error_rate,
            error_kinds=list(options.error_kinds),
            seed=options.seed,
            flex_429_rate=options.flex_429_rate,
        )
    )
    url = emulator.start()
    stack.emulator = emulator
    say(f"provider emulator on {url}")

    kafka = settings.kafka.model_copy(update={"bootstrap_servers": stack.broker.bootstrap_servers})
    settings = settings.model_copy(update={"kafka": kafka, "serde": "avro"})
    plan = apply_topics(settings)
    say(f"topics applied ({len(plan.created)} created)")

    env = worker_env(stack.broker.bootstrap_servers, url, files.data_dir)
    for log_path in files.worker_logs:
        stack.workers.append(_start_worker(env, log_path))
    say(f"{options.workers} worker(s) started, logging to {', '.join(map(str, files.worker_logs))}")
    return settings, url


def send_workload(settings: Settings, requests: int, run_id: str, say: Say) -> list[str]:
    """Produce the sample workload; return its request ids once the broker confirmed them."""
    items = demo_workload(requests, run_id, now_ms())
    with RequestProducer(settings) as producer:
        for item in items:
            producer.send(item.request, lane=item.lane)
        producer.flush()
    del producer  # frees the client now, not after the broker has gone
    kinds = Counter(item.kind for item in items)
    say(
        f"sent {len(items)} requests ({kinds['realtime']} realtime, {kinds['deadline']} near deadline, "
        f"{kinds['invalid_endpoint'] + kinds['invalid_body']} invalid; "
        f"{kinds['policy'] + kinds['policy_flex']} under a shared support policy, "
        f"{kinds['policy_flex']} of them realtime at the Flex tier)"
    )
    return [item.request["request_id"] for item in items]


def await_outcomes(
    stack: Stack, settings: Settings, ids: list[str], timeout_s: float, console: Console, log: Path
) -> tuple[dict[str, Any], int]:
    """Wait with a progress bar until every id has an outcome or ``timeout_s`` passed.

    Returns:
        request_id → outcome for the ids answered, and how many duplicate outcomes were dropped.

    Raises:
        DemoError: every worker exited before the outcomes were in.
    """
    deadline = time.monotonic() + timeout_s
    outcomes: dict[str, Any] = {}
    with ResultWatcher(settings) as watcher, render.progress(console, "outcomes") as progress:
        task = progress.add_task("outcomes", total=len(ids))

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done)

        while len(outcomes) < len(ids) and time.monotonic() < deadline:
            outcomes = watcher.wait_for(ids, min(2.0, deadline - time.monotonic()), update)
            if len(outcomes) < len(ids) and all(p.poll() is not None for p in stack.workers):
                raise DemoError(
                    f"the worker exited with code {stack.workers[0].returncode}; "
                    f"last lines of {log}:\n{_tail(log)}"
                )
        return outcomes, watcher.stats.duplicates


def run_demo(
    options: DemoOptions,
    settings: Settings,
    console: Console,
    on_event: Say | None = None,
) -> dict[str, Any]:
    """Run the demo; return the summary (``complete`` says whether every request ended).

    Raises:
        DemoError: a component did not start, or the worker died.
        connector.errors.BrokerError: the embedded broker binary is missing.
    """
    say = on_event or (lambda text: console.print(f"[dim]•[/dim] {text}"))
    files = DemoFiles(Path(settings.data_dir), uuid.uuid4().hex[:8], options.workers)
    files.base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stack = Stack()
    atexit.register(stack.stop)
    try:
        with _sigterm_as_interrupt():
            settings, url = start_stack(stack, options, settings, files, say)
            ids = send_workload(settings, options.requests, files.run_id, say)
            outcomes, duplicates = await_outcomes(
                stack, settings, ids, options.timeout_s, console, files.worker_logs[0]
            )
            batches = {settings.topics.batches: schemas.BATCH_EVENT}
            events = [record for _, record in read_topics(settings, batches, timeout=5)]
            result = summarise(len(ids), outcomes, events, duplicates)
            stats = _emulator_stats(url)
            if stats is not None:
                result["emulator"] = stats
    finally:
        stack.stop()
        atexit.unregister(stack.stop)
    result["complete"] = result["missing"] == 0
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    result["worker_logs"] = [str(p) for p in files.worker_logs]
    return result
