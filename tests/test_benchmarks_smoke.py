"""``make bench`` at a tiny size: every benchmark script runs and prints its tables with numbers.

The scripts run at BENCH_SCALE=0.01 (in-flight rows at 300), side by side to stay within
about a minute and a half. Timings are never asserted: a MISS is a finding, not a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "benchmarks").glob("bench_*.py"))
# Goal tables (measured, baseline, ratio, target, PASS/MISS) each script prints.
GOALS = {
    "bench_pipeline.py": ["end-to-end throughput, 1 worker", "two workers vs one"],
    "bench_inflight.py": ["requests in flight, 1 worker", "recovery after kill -9"],
    "bench_emission.py": ["-result batch emission"],
}
# Scripts whose tables have no target; their heading and a row of figures must show.
INFO = {
    "bench_results_memory.py": ("== results of one", r"streamed \(adapter\)\s+\d+"),
    "bench_assembly.py": ("== batch assembly", r"lane arrival path .*\d"),
}
TABLE = re.compile(r"^== TABLE: (.+) \(BENCH_SCALE=[0-9.]+\)$")


def goal_rows(output: str) -> dict[str, list[list[str]]]:
    """Title → rows (cells) of every goal table in ``output``."""
    tables: dict[str, list[list[str]]] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        match = TABLE.match(line)
        if not match:
            continue
        rows = tables.setdefault(match.group(1), [])
        for row in lines[i + 3 :]:  # past the heading and the rule
            if " | " not in row:
                break
            rows.append([cell.strip() for cell in row.split(" | ")])
    return tables


def test_make_bench_runs_every_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "for f in benchmarks/bench_*.py" in makefile
    assert {p.name for p in SCRIPTS} == set(GOALS) | set(INFO)


def test_every_benchmark_prints_its_tables() -> None:
    env = {**os.environ, "BENCH_SCALE": "0.01", "BENCH_INFLIGHT": "300"}
    env = {k: v for k, v in env.items() if not k.startswith("BATCHBRIDGE_")}
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        runs = {}
        for script in SCRIPTS:
            out = open(Path(tmp) / f"{script.stem}.out", "w+")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(
                [sys.executable, str(script)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            runs[script.name] = (proc, out)
        outputs = {}
        try:
            for name, (proc, out) in runs.items():
                code = proc.wait(timeout=240)
                out.seek(0)
                outputs[name] = out.read()
                assert code == 0, f"{name} could not run (exit {code}):\n{outputs[name][-4000:]}"
        finally:
            for proc, out in runs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                out.close()

    for name, titles in GOALS.items():
        tables = goal_rows(outputs[name])
        for title in titles:
            found = [rows for shown, rows in tables.items() if title in shown]
            assert found, f"{name} printed no table {title!r}:\n{outputs[name][-3000:]}"
            rows = found[0]
            assert rows, f"{name}: table {title!r} has no rows"
            for cells in rows:
                measure, measured, baseline, _ratio, target, result = cells[:6]
                assert result.split()[0] in ("PASS", "MISS", "info"), cells
                assert re.search(r"\d", measured) and re.search(r"\d", baseline), cells
            assert any(cells[5].split()[0] in ("PASS", "MISS") for cells in rows), rows
    for name, (heading, row) in INFO.items():
        assert heading in outputs[name], outputs[name][-3000:]
        assert re.search(row, outputs[name]), outputs[name][-3000:]
