"""The fault table: one row per fault, summed over its runs. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from connector.testing.accounting import Account

COLUMNS = (
    "fault",
    "runs",
    "requests",
    "lost",
    "duplicate provider submissions",
    "duplicate outcome events",
    "verdict",
)


@dataclass
class FaultRow:
    """One fault's runs added up; ``problems`` are failures the counts do not show."""

    fault: str
    runs: int = 0
    requests: int = 0
    lost: int = 0
    duplicate_submissions: int = 0
    duplicate_outcome_events: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, account: Account, problems: Iterable[str] = ()) -> None:
        self.runs += 1
        self.requests += account.requests
        self.lost += len(account.lost)
        self.duplicate_submissions += len(account.duplicate_submissions)
        self.duplicate_outcome_events += account.duplicate_outcome_events
        self.problems += list(problems)

    def add_error(self, message: str) -> None:
        """A run that ended before it could be accounted for."""
        self.runs += 1
        self.problems.append(message)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicate_submissions or self.problems)

    def cells(self) -> tuple[str, ...]:
        verdict = "ok" if self.ok else "FAIL"
        if self.problems:
            verdict += f" ({len(self.problems)} problem{'s' if len(self.problems) > 1 else ''})"
        return (
            self.fault,
            str(self.runs),
            str(self.requests),
            str(self.lost),
            str(self.duplicate_submissions),
            str(self.duplicate_outcome_events),
            verdict,
        )


class FaultTable:
    """Rows in the order their faults were first recorded."""

    def __init__(self) -> None:
        self.rows: dict[str, FaultRow] = {}

    def row(self, fault: str) -> FaultRow:
        if fault not in self.rows:
            self.rows[fault] = FaultRow(fault)
        return self.rows[fault]

    def render(self) -> str:
        return render_table(self.rows.values())

    def why(self, per_row: int = 2) -> list[str]:
        """One line per failing row's first problems, to read under the table."""
        lines = []
        for row in self.rows.values():
            if row.ok:
                continue
            counts = f"{row.lost} lost, {row.duplicate_submissions} needless provider batches"
            reasons = [p.splitlines()[0][:200] for p in row.problems[:per_row]]
            lines.append(f"FAIL {row.fault}: " + "; ".join([counts, *reasons]))
        return lines


def render_table(rows: Iterable[FaultRow]) -> str:
    """A plain-text table: numbers right-aligned, a totals line under the rows."""
    rows = list(rows)
    body = [row.cells() for row in rows]
    failing = sum(not row.ok for row in rows)
    totals = (
        f"{len(rows)} faults",
        str(sum(r.runs for r in rows)),
        str(sum(r.requests for r in rows)),
        str(sum(r.lost for r in rows)),
        str(sum(r.duplicate_submissions for r in rows)),
        str(sum(r.duplicate_outcome_events for r in rows)),
        f"{failing} failing" if failing else "all ok",
    )
    widths = [max(len(cells[i]) for cells in (COLUMNS, *body, totals)) for i in range(len(COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.ljust(width) if i in (0, len(COLUMNS) - 1) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(COLUMNS), rule, *(line(cells) for cells in body), rule, line(totals)])
