"""The fault matrix's plumbing: which rows run, one pipeline per run, the table at the end.

``make test`` runs the fast subset; ``make faults`` (``FAULTS_MATRIX=full``) runs every
row with ``FAULTS_SEEDS`` seeds (default 3) per seeded row. Worker logs of a failed run
(of every run with ``FAULTS_KEEP_LOGS=1``) are kept under ``.batchbridge/fault-logs/<test>/``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.emulator import EmulatorConfig, EmulatorThread
from connector.testing.pipeline import Pipeline
from connector.testing.report import FaultTable
from tests.faults.runs import FaultRun

TABLE = pytest.StashKey[FaultTable]()
_FAILED = pytest.StashKey[bool]()
KEPT_LOGS = Path(".batchbridge/fault-logs")


def full_matrix() -> bool:
    return os.environ.get("FAULTS_MATRIX", "fast") == "full"


def seeds() -> list[int]:
    """The seeds of a seeded row: one in the fast subset, ``FAULTS_SEEDS`` in the full matrix."""
    return list(range(int(os.environ.get("FAULTS_SEEDS", "3")))) if full_matrix() else [0]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TABLE] = FaultTable()
    config.addinivalue_line(
        "markers", "full_matrix: a fault row only `make faults` runs (deselected in `make test`)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if full_matrix():
        return
    slow = [item for item in items if item.get_closest_marker("full_matrix")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("full_matrix")]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    table = config.stash.get(TABLE, None)
    if table is None or not table.rows:
        return
    mode = (
        f"full matrix, {len(seeds())} seeds"
        if full_matrix()
        else "fast subset (make faults runs all)"
    )
    terminalreporter.section(f"fault matrix — {mode}")
    terminalreporter.write_line(table.render())
    for line in table.why():
        terminalreporter.write_line(line)


@pytest.fixture
def fault_table(request: pytest.FixtureRequest) -> FaultTable:
    return request.config.stash[TABLE]


@pytest.fixture
def fault_run(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    fault_table: FaultTable,
) -> Iterator[Callable[..., FaultRun]]:
    """Opens one run: a fresh emulator, fresh topics, the row it counts towards.

    Call it as ``fault_run(fault, emulator=EmulatorConfig(...), **worker_settings)`` (fault
    None: the run's requests count towards rows named at ``finish_rows``); the run's
    workers are stopped and, if the test failed, their logs kept.
    """
    opened: list[tuple[FaultRun, EmulatorThread]] = []
    lock = threading.Lock()  # runs may be opened from several threads

    def open_run(
        fault: str | None,
        emulator: EmulatorConfig | None = None,
        bootstrap: str | None = None,
        **env: str,
    ) -> FaultRun:
        with lock:
            number = len(opened)
            opened.append(None)  # type: ignore[arg-type] - reserves the number
        # Each run of a test gets its own topics, app id and log directory.
        uid, tmp = f"{unique_name}-{number}", tmp_path / f"run-{number}"
        tmp.mkdir()
        thread = EmulatorThread(emulator or EmulatorConfig(processing_seconds=1.0))
        url = thread.start()
        pipe = Pipeline(
            bootstrap or kafka_bootstrap, uid, tmp, thread, url, worker_env={**BASE_ENV, **env}
        )
        kept = KEPT_LOGS / _slug(request.node.nodeid) / f"run-{number}"
        run = FaultRun(pipe, thread.emulator, fault_table, fault, kept)
        opened[number] = (run, thread)
        return run

    yield open_run
    for run, thread in filter(None, opened):
        run.close()
        thread.stop()
        if not run.finished:
            row = run.row or fault_table.row(request.node.name)
            row.add_error(f"{request.node.name} ended before its accounting")
        if request.node.stash.get(_FAILED, False) or os.environ.get("FAULTS_KEEP_LOGS"):
            run.keep_logs()


def _slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]


# Production defaults where the integration pipeline turns them off: SDK retries included,
# since several faults (lost create responses) only bite through them.
BASE_ENV = {
    "openai__max_retries": "2",
    "anthropic__max_retries": "2",
    "gemini__max_retries": "2",
}
