"""One run of the fault matrix: a pipeline, what it must answer, and the verdict."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.client import RequestProducer
from connector.emulator import Emulator
from connector.lanes.ledger import BatchRecord
from connector.testing.accounting import Account, Expected, OutcomeEvent
from connector.testing.pipeline import (
    OutcomeReader,
    Pipeline,
    committed_offsets,
    read_all,
    wait_until,
)
from connector.testing.report import FaultTable

PROVIDERS = ("openai", "anthropic", "gemini")
# A mixed workload: several batches per provider at the pipeline's max_requests of 20.
MIX = {"openai": 24, "anthropic": 10, "gemini": 8}


@dataclass
class Verdict:
    """One row's share of a run: its accounting and what the counts do not show."""

    fault: str
    account: Account
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.account.clean and not self.problems

    def describe(self) -> str:
        return "\n  ".join([f"{self.fault}: {self.account.summary()}", *self.problems])


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(repr(n[:60]) for n in names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


class Stream(threading.Thread):
    """Requests produced one at a time while the test does something else."""

    def __init__(
        self, pipe: Pipeline, requests: list[dict[str, Any]], interval_s: float, lane: str
    ) -> None:
        super().__init__(name="request-stream", daemon=True)
        self.pipe, self.requests, self.interval_s, self.lane = pipe, requests, interval_s, lane
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with RequestProducer(self.pipe.settings) as producer:
                for request in self.requests:
                    producer.send(request, lane=self.lane)  # type: ignore[arg-type]
                    producer.flush()
                    self.sent += 1
                    time.sleep(self.interval_s)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout: float = 120) -> None:
        self.join(timeout)
        assert not self.is_alive(), (
            f"still producing after {timeout}s ({self.sent}/{len(self.requests)} sent)"
        )
        assert self.error is None, f"producing failed after {self.sent} requests: {self.error!r}"


@dataclass(frozen=True)
class OutcomeSpec:
    """What one request must end as: a result, a dead letter of one of ``classes``, or
    either ("any"); ``once``: a second outcome is wrong too, not just at-least-once."""

    kind: str
    classes: frozenset[str] = frozenset()
    once: bool = False

    def problem(self, events: list[OutcomeEvent]) -> str | None:
        if not events:
            return None  # counted as lost
        first = events[0]
        if self.once and len(events) > 1:
            return f"answered {len(events)} times: {[(e.kind, e.error_class) for e in events]}"
        if self.kind != "any" and first.kind != self.kind:
            message = (first.error_message or "")[:160]
            return f"ended as {first.kind} ({first.error_class}: {message}), expected {self.kind}"
        if first.kind == "deadletter":
            if not first.error_class or (self.classes and first.error_class not in self.classes):
                return f"dead letter of class {first.error_class!r}, expected one of {sorted(self.classes)}"
            if not first.error_message:
                return f"dead letter of class {first.error_class!r} without an error message"
        return None


RESULT = OutcomeSpec("result")


def dead_letter(*classes: str) -> OutcomeSpec:
    return OutcomeSpec("deadletter", frozenset(classes))


class FaultRun:
    """A pipeline run that counts towards one row of the fault table (or several).

    Register what must be answered (``workload``, ``expect``), disturb the run, then
    ``finish``: it waits for every outcome, accounts for the run, adds it to the row and
    fails with the evidence when anything was lost, submitted twice, or ended wrongly.
    """

    def __init__(
        self,
        pipe: Pipeline,
        emulator: Emulator,
        table: FaultTable,
        fault: str | None,
        kept_logs: Path,
    ) -> None:
        self.pipe = pipe
        self.emulator = emulator
        self.table = table
        self.row = table.row(fault) if fault else None
        self.kept_logs = kept_logs
        self.expected: dict[str, Expected] = {}
        self.specs: dict[str, OutcomeSpec] = {}
        self.finished = False
        self.evidence = ""
        self.excerpt_lines = 40  # notable log lines per worker in the evidence
        self.notes: list[str] = []  # what the test did, for the evidence
        self.problems: list[str] = []  # failures of the run's own row that no outcome shows
        self._reader: OutcomeReader | None = None

    # ------------------------------------------------------------------ what must be answered
    def expect(self, name: str, ids: Iterable[str] = (), spec: OutcomeSpec | None = None) -> None:
        """``name`` must get an outcome; ``ids`` are the request id / input records it answers to."""
        self.expected[name] = Expected(name, frozenset(ids) or frozenset({name}))
        if spec is not None:
            self.specs[name] = spec

    def workload(
        self,
        prefix: str,
        mix: dict[str, int] | None = None,
        spec: OutcomeSpec | None = RESULT,
        text: str = "",
    ) -> list[dict[str, Any]]:
        """Requests ``prefix-provider-i`` for each provider, all expected to end as ``spec``."""
        requests = []
        for provider, count in (mix or MIX).items():
            for i in range(count):
                rid = f"{prefix}-{provider}-{i}"
                requests.append(self.pipe.request(rid, provider, f"{prefix} {i} {text}".strip()))
                self.expect(rid, spec=spec)
        return requests

    # ------------------------------------------------------------------ driving
    def start_worker(self, ready: bool = True, **env: str) -> subprocess.Popen[bytes]:
        proc = self.pipe.start_worker(**env)
        if ready:
            self.wait_for(
                lambda: self.pipe.is_ready(len(self.pipe.workers) - 1),
                "the worker to be ready",
                120,
            )
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        self.pipe.kill(proc, sig)

    def stream(
        self, requests: list[dict[str, Any]], interval_s: float, lane: str = "deferred"
    ) -> Stream:
        """Produce ``requests`` one by one, ``interval_s`` apart, on a thread."""
        stream = Stream(self.pipe, requests, interval_s, lane)
        stream.start()
        return stream

    def batch_states(self) -> list[str]:
        """The state of every batch in the worker's ``batches`` table (from its changelog)."""
        return [
            BatchRecord.from_json(b).phase.value
            for b in self.pipe.table("batches").values()
            if isinstance(b, dict)
        ]

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = 90) -> None:
        """Wait for a phase of the run; fail with the logs if it never comes."""
        assert wait_until(predicate, timeout, interval=0.3), (
            f"never saw {what} within {timeout}s\n{self.pipe.log_excerpt()}"
        )

    @property
    def reader(self) -> OutcomeReader:
        if self._reader is None:
            self._reader = self.pipe.outcome_reader()
        return self._reader

    def outcomes_of(self, names: Iterable[str]) -> int:
        """How many of ``names`` have an outcome so far."""
        self.reader.poll(0.2)
        answered = {i for e in self.reader.events for i in e.ids()}
        return sum(bool(self.expected[n].ids & answered) for n in names)

    # ------------------------------------------------------------------ verdict
    def finish(self, timeout: float = 120) -> Account:
        """Wait for every outcome, account for the run, add it to the row, assert it is clean."""
        assert self.row is not None, "a run without a row of its own finishes with finish_rows()"
        return self.finish_rows({self.row.fault: list(self.expected)}, timeout)[
            self.row.fault
        ].account

    def finish_rows(self, rows: dict[str, list[str]], timeout: float = 120) -> dict[str, Verdict]:
        """Like :meth:`finish` for a run whose expected requests count towards several rows."""
        verdicts = self.judge(rows, timeout)
        self.record(verdicts)
        assert all(v.ok for v in verdicts.values()), self.evidence
        return verdicts

    def judge(self, rows: dict[str, list[str]], timeout: float = 120) -> dict[str, Verdict]:
        """Wait for every outcome and judge each row (fault → its expected names); records nothing."""
        expected = list(self.expected.values())
        self.reader.wait_for(expected, timeout)
        account = self.pipe.account(expected, self.reader)
        verdicts = {}
        for fault, names in rows.items():
            part = account.subset(names, {i for n in names for i in self.expected[n].ids})
            verdicts[fault] = Verdict(fault, part, self._problems(part))
        if self.row is not None and self.row.fault in verdicts:
            verdicts[self.row.fault].problems += self.problems
        self.finished = True
        self.evidence = "\n".join(
            [
                *(v.describe() for v in verdicts.values() if not v.ok),
                *(f"note: {n}" for n in self.notes),
                *(f"outcome for no expected request: {e}" for e in account.unexpected[:5]),
                *(f"undecodable outcome: {u}" for u in self.reader.undecodable[:5]),
                *self._trace_lost(account.lost),
                f"worker logs are kept in {self.kept_logs}/ when the test fails",
                self.pipe.log_excerpt(self.excerpt_lines),
            ]
        )
        return verdicts

    def _trace_lost(self, names: list[str], limit: int = 5) -> list[str]:
        """Where a lost request got to: input record, work events, pending entry, commits."""
        if not names:
            return []
        try:
            return self._trace(names[:limit])
        except Exception as exc:  # noqa: BLE001 - evidence only; the verdict stands
            return [f"trace of lost requests failed: {exc!r}"]

    def _trace(self, names: list[str]) -> list[str]:
        settings = self.pipe.settings
        ids = {rid: name for name in names for rid in self.expected[name].ids}
        found: dict[str, list[str]] = {rid: [] for rid in ids}
        for msg in read_all(settings, settings.topics.deferred):
            for rid in ids:
                if rid.encode() in (msg.value() or b""):
                    found[rid].append(f"input {msg.partition()}@{msg.offset()}")
        for msg in read_all(settings, f"{settings.app_id}-work"):
            for rid in ids:
                if rid.encode() in (msg.value() or b""):
                    found[rid].append(f"work {msg.partition()}@{msg.offset()}")
        pending = self.pipe.table("pending")
        for rid in ids:
            entry = pending.get(rid) or {}
            found[rid].append(
                f"pending: {entry.get('state')} p{entry.get('partition')} {entry.get('outcome')}"
                if entry
                else "pending: none"
            )
        lines = [f"trace {ids[rid]}: {', '.join(where)}" for rid, where in found.items()]
        return [*lines, f"committed offsets: {committed_offsets(settings)}"]

    def record(self, verdicts: dict[str, Verdict]) -> None:
        """Add verdicts to their rows of the fault table."""
        for verdict in verdicts.values():
            self.table.row(verdict.fault).add(verdict.account, verdict.problems)

    def _problems(self, account: Account) -> list[str]:
        """What the counts do not show: wrong outcome kinds or classes, contradictions."""
        by_problem: dict[str, list[str]] = {}
        for name, events in account.outcomes.items():
            spec = self.specs.get(name)
            problem = spec.problem(events) if spec else None
            if len({e.kind for e in events}) > 1:
                problem = f"contradictory outcomes {[(e.kind, e.error_class) for e in events]}"
            if problem:
                by_problem.setdefault(problem, []).append(name)
        return [
            f"{len(names)}× {problem} — {_names(names)}" for problem, names in by_problem.items()
        ]

    def keep_logs(self) -> None:
        self.pipe.keep_logs(self.kept_logs)
        if self.evidence:
            (self.kept_logs / "evidence.txt").write_text(self.evidence)

    def close(self) -> None:
        self.pipe.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
