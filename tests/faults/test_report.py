"""The fault table's rendering."""

from __future__ import annotations

from connector.testing.accounting import Account, DuplicateSubmission
from connector.testing.report import COLUMNS, FaultTable, render_table


def test_rows_add_up_their_runs_and_render_under_the_six_columns():
    table = FaultTable()
    table.row("kill -9: intake").add(Account(requests=40))
    table.row("kill -9: intake").add(Account(requests=40, duplicate_outcomes={"r1": 2}))
    table.row("create response lost").add(
        Account(
            requests=12,
            lost=["a", "b"],
            duplicate_submissions=[DuplicateSubmission("b2", "tag")],
        )
    )
    lines = table.render().splitlines()
    assert lines[0].split("  ")[0] == "fault"
    assert all(column in lines[0] for column in COLUMNS)
    intake = next(line for line in lines if line.startswith("kill -9: intake"))
    assert intake.split()[-6:] == ["2", "80", "0", "0", "2", "ok"]
    lost = next(line for line in lines if line.startswith("create response lost"))
    assert lost.split()[-6:] == ["1", "12", "2", "1", "0", "FAIL"]
    assert lines[-1].split()[-7:] == ["3", "92", "2", "1", "2", "1", "failing"]


def test_problems_the_counts_do_not_show_fail_the_row():
    table = FaultTable()
    table.row("hostile: tombstone").add(
        Account(requests=1), problems=["dead letter without an error class"]
    )
    table.row("broker cut").add_error("worker never became ready")
    rendered = table.render()
    assert "FAIL (1 problem)" in rendered
    assert rendered.count("FAIL") == 2
    assert not table.rows["broker cut"].ok
    assert table.why() == [
        "FAIL hostile: tombstone: 0 lost, 0 needless provider batches; dead letter without an error class",
        "FAIL broker cut: 0 lost, 0 needless provider batches; worker never became ready",
    ]


def test_columns_line_up_whatever_the_width_of_a_fault_name():
    rows = FaultTable()
    rows.row("x").add(Account(requests=1))
    rows.row("a much longer fault name than the header").add(Account(requests=123456))
    lines = render_table(rows.rows.values()).splitlines()
    width = len("a much longer fault name than the header")
    for line in lines:
        assert line[width : width + 2] == "  " or line.startswith("-")
    runs_end = lines[0].index("runs") + len("runs")
    assert [line[:runs_end].split()[-1] for line in lines[2:4]] == ["1", "1"]
    assert lines[3][runs_end : runs_end + 1] == " "
    assert "all ok" in lines[-1]
