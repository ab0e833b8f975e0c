"""Every rich table the command line prints: topics, batch status, cost report, demo summary.

Rendering only: each function takes data the pure modules computed (:mod:`connector.summary`,
:mod:`connector.topics.planning`) and returns something a rich ``Console`` prints.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table

from connector.topics.planning import Plan, TopicRow, plan_rows

_PLAN_STYLES = {"create": "green", "created": "green", "in sync": "dim"}


def plan_table(plan: Plan) -> Table:
    """``topics apply``: one line per declared topic, with what was (or would be) done."""
    table = Table(title="Topics: applied" if plan.applied else "Topics: plan")
    table.add_column("Topic", style="bold")
    table.add_column("Action")
    table.add_column("Detail")
    for topic, action, detail in plan_rows(plan):
        style = _PLAN_STYLES.get(action, "yellow" if action.startswith("drift") else None)
        table.add_row(topic, action, detail, style=style)
    notes = []
    if plan.no_changes:
        notes.append("no changes")
    if plan.undeclared:
        notes.append(f"{len(plan.undeclared)} undeclared topic(s) left untouched")
    if notes:
        table.caption = "; ".join(notes)
    return table


def topics_table(rows: Iterable[TopicRow]) -> Table:
    """``topics list``: the topics on the broker with partitions, replication and configs."""
    table = Table(title="Topics")
    for column in ("Topic", "Role", "Partitions", "RF", "Configs"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.name,
            row.role or ("declared" if row.declared else "-"),
            str(row.partitions),
            "?" if row.replication_factor is None else str(row.replication_factor),
            ", ".join(f"{k}={v}" for k, v in sorted(row.configs.items())),
        )
    return table
