"""Every rich view the command line prints: topics, status, report, demo, dead letters, replay.

Rendering only: each function takes data the pure modules computed (:mod:`connector.summary`,
:mod:`connector.topics.planning`) and returns something a rich ``Console`` prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connector.deadletters.selection import DeadLetter, ReplayPlan, Tally, refusal
from connector.summary import CostReport, CostRow, SavingsBreakdown
from connector.topics.planning import Plan, TopicRow, plan_rows

_PLAN_STYLES = {"create": "green", "created": "green", "in sync": "dim"}
_STATUS_COLUMNS = (
    "batch",
    "provider",
    "model",
    "endpoint",
    "state",
    "requests",
    "provider batch",
    "age",
)
_TOKEN_COLUMNS = ("input tok", "output tok", "cost")


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


def money(value: float) -> str:
    """USD with four decimals: demo-sized costs are fractions of a cent."""
    return f"${value:,.4f}"


def status_table(
    shown: Iterable[Mapping[str, Any]], counts: Mapping[str, int], *, show_all: bool, now_ms: float
) -> Table:
    """``status``: one line per batch (its latest event), counts by state in the caption."""
    table = Table(title="Batches" if show_all else "In-flight batches")
    for column in _STATUS_COLUMNS:
        table.add_column(column)
    for event in shown:
        table.add_row(
            event["batch_id"],
            event["provider"],
            event["model"],
            event["endpoint"],
            event["state"],
            str(event["request_count"]),
            event.get("provider_batch_id") or "-",
            f"{(now_ms - event['opened_at']) / 1000:.0f} s",
        )
    table.caption = ", ".join(f"{state}: {n}" for state, n in counts.items()) or "no batches"
    return table


def _cost_columns(table: Table, requests_label: str, realtime_label: str) -> None:
    for column in ("provider", "model", requests_label, *_TOKEN_COLUMNS, realtime_label, "saving"):
        table.add_column(column, justify="left" if column in ("provider", "model") else "right")


def _cost_cells(row: CostRow) -> tuple[str, ...]:
    return (
        row.provider,
        row.model,
        str(row.requests),
        f"{row.input_tokens:,}",
        f"{row.output_tokens:,}",
        money(row.cost_usd),
        money(row.realtime_cost_usd),
    )


def savings_table(savings: SavingsBreakdown, realtime_cost_usd: float) -> Table:
    """Where the saving came from: batch discount, prompt cache, Flex (and anything else)."""
    table = Table(title="Savings breakdown")
    for column in ("part", "saving", "of realtime cost"):
        table.add_column(column, justify="left" if column == "part" else "right")
    parts = [
        ("batch discount", savings.batch_discount_usd),
        ("prompt cache", savings.cache_usd),
        ("Flex tier", savings.flex_usd),
    ]
    if abs(savings.other_usd) >= 0.00005:  # shown only when it survives the rounding
        parts.append(("other", savings.other_usd))
    for label, value in [*parts, ("total", savings.total_usd)]:
        share = round(100.0 * value / realtime_cost_usd, 2) if realtime_cost_usd > 0 else None
        table.add_row(
            label,
            money(value),
            "-" if share is None else f"{share}%",
            style="bold" if label == "total" else None,
        )
    return table


def report_view(report: CostReport, failures_by_class: Mapping[str, int]) -> Group:
    """``report``: cost per provider and model with a total, then the savings breakdown."""
    table = Table(title="Cost report")
    _cost_columns(table, "requests", "realtime-equivalent")
    for row in [*report.rows, report.total] if report.rows else []:
        saving = "-" if row.saving_pct is None else f"{money(row.saving_usd)} ({row.saving_pct}%)"
        table.add_row(*_cost_cells(row), saving, style="bold" if row is report.total else None)
    failures = sum(failures_by_class.values())
    by_class = ", ".join(f"{k}: {v}" for k, v in sorted(failures_by_class.items()))
    table.caption = f"dead letters: {failures}" + (f" ({by_class})" if by_class else "")
    if not report.rows:
        return Group(table)
    return Group(table, savings_table(report.total.savings, report.total.realtime_cost_usd))


def _demo_overview(result: Mapping[str, Any]) -> Table:
    overview = Table(title="Demo summary", show_header=False)
    overview.add_column("", style="bold")
    overview.add_column("")
    by_class = ", ".join(f"{k}: {v}" for k, v in result["deadletters_by_class"].items()) or "-"
    fill = result["batch_avg_fill"]
    savings = result["savings"]
    rows = [
        ("requests", str(result["requests"])),
        ("results", f"{result['results']} ({result['realtime_results']} realtime)"),
        ("dead letters", f"{result['deadletters']} ({by_class})"),
        ("missing", str(result["missing"])),
        ("duplicates dropped", str(result["duplicates"])),
        ("batches", f"{result['batches']} (average fill {fill if fill is not None else '-'})"),
        ("time to result p50 / p95", f"{result['p50_s']} s / {result['p95_s']} s"),
        ("cost at batch prices", money(result["cost_usd"])),
        ("same work at realtime prices", money(result["realtime_cost_usd"])),
        ("saving", "-" if result["saving_pct"] is None else f"{result['saving_pct']}%"),
        (
            "saving from",
            f"batch discount {money(savings['batch_discount_usd'])}, "
            f"prompt cache {money(savings['cache_usd'])}, Flex {money(savings['flex_usd'])}",
        ),
        ("elapsed", f"{result['elapsed_s']} s"),
    ]
    for label, value in rows:
        overview.add_row(label, value)
    return overview


def _workload_table(workloads: Mapping[str, Mapping[str, Any]]) -> Table:
    table = Table(title="By workload: saving against realtime prices without caching")
    columns = (
        "workload",
        "results",
        "cost",
        "realtime cost",
        "saving",
        "batch discount",
        "prompt cache",
        "Flex tier",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "workload" else "right")
    for name, report in workloads.items():
        savings = report["savings"]
        table.add_row(
            name,
            str(report["results"]),
            money(report["cost_usd"]),
            money(report["realtime_cost_usd"]),
            "-" if report["saving_pct"] is None else f"{report['saving_pct']}%",
            money(savings["batch_discount_usd"]),
            money(savings["cache_usd"]),
            money(savings["flex_usd"]),
        )
    return table


def demo_summary(result: Mapping[str, Any]) -> Group:
    """``demo``: the overview, the per-model costs, and where the worker logs are."""
    models = Table(title="By model")
    _cost_columns(models, "results", "realtime cost")
    for row in result["by_model"]:
        models.add_row(
            row["provider"],
            row["model"],
            str(row["requests"]),
            f"{row['input_tokens']:,}",
            f"{row['output_tokens']:,}",
            money(row["cost_usd"]),
            money(row["realtime_cost_usd"]),
            "-" if row["saving_pct"] is None else f"{row['saving_pct']}%",
        )
    parts: list[Any] = [_demo_overview(result), models]
    if result.get("workloads"):
        parts.append(_workload_table(result["workloads"]))
    return Group(*parts, f"worker log: {', '.join(result['worker_logs'])}")


def progress(console: Console, label: str) -> Progress:
    """A bar with done/total and elapsed time, for the demo's outcomes and ``replay``."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def when(ms: int | None) -> str:
    """Epoch milliseconds as a UTC time an operator can paste back into ``--since``."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def deadletter_counts(tally: Tally) -> Table:
    """``deadletters``: counts per class, provider and model."""
    table = Table(title="Dead letters")
    for column in ("class", "provider", "model", "count", "replayable", "replayed"):
        table.add_column(
            column, justify="right" if column in ("count", "replayable", "replayed") else "left"
        )
    rows = tally.rows()
    for row in rows:
        table.add_row(
            row.error_class,
            row.provider,
            row.model,
            str(row.count),
            str(row.replayable),
            str(row.replayed),
        )
    replayable = sum(row.replayable for row in rows)
    table.caption = (
        f"{tally.total} dead letter(s), {replayable} replayable"
        if rows
        else "no dead letters match"
    )
    return table


def deadletter_list(
    dead_letters: Iterable[DeadLetter], title: str = "Newest dead letters"
) -> Table:
    """One line per dead letter: where it is, whose request, why it failed, replayable or not."""
    table = Table(title=title)
    for column in (
        "dead letter",
        "request",
        "class",
        "provider / model",
        "failed at",
        "error",
        "replay",
    ):
        table.add_column(column, overflow="fold" if column == "error" else "ellipsis")
    for dead_letter in dead_letters:
        record = dead_letter.record or {}
        message = str(record.get("error_message") or "")
        table.add_row(
            dead_letter.replay_of,
            dead_letter.request_id or "-",
            dead_letter.error_class,
            f"{dead_letter.provider or '-'} / {dead_letter.model or '-'}",
            when(dead_letter.failed_at),
            message if len(message) <= 80 else message[:79] + "…",
            refusal(dead_letter) or "yes",
        )
    return table


def replay_view(plan: ReplayPlan, *, sent: bool, topic: str, show: int) -> Group:
    """``replay``: the dead letters sent (or that would be), then what was left out and why."""
    parts: list[Any] = []
    if plan.send and show > 0:
        title = f"Replayed to {topic}" if sent else f"Would replay to {topic} (dry run)"
        table = deadletter_list([dead_letter for dead_letter, _ in plan.send[:show]], title)
        if len(plan.send) > show:
            table.caption = f"… and {len(plan.send) - show} more"
        parts.append(table)
    verb = "replayed" if sent else "would replay"
    lines = [f"{verb} {len(plan.send)} of {plan.selected} selected dead letter(s) to {topic}"]
    if plan.already:
        lines.append(f"already replayed: {len(plan.already)} (skipped; --force sends them again)")
    if plan.refused:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in plan.refused_by_reason().items())
        lines.append(f"refused: {len(plan.refused)} ({reasons})")
    if plan.superseded:
        lines.append(
            f"superseded by a later dead letter of the same request: {len(plan.superseded)}"
        )
    return Group(*parts, *lines)
