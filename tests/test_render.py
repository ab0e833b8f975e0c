"""The rich views print what the pure modules computed (read back from a recording console)."""

from __future__ import annotations

from rich.console import Console

from connector import render, summary
from connector.deadletters import DeadLetter, count, plan_replay
from connector.demo import summarise
from tests.fixtures.records import sample


def text_of(renderable: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def result(request_id: str, lane: str = "batch", cost: float = 0.3, **extra: object) -> dict:
    return sample("InferenceResult") | {
        "request_id": request_id,
        "lane": lane,
        "cost_usd": cost,
        "realtime_cost_usd": 1.0,
        "service_tier": None,
        "cache_savings_usd": None,
        **extra,
    }


def test_status_lists_batches_ages_and_counts() -> None:
    event = sample("BatchEvent") | {"batch_id": "b-7", "state": "SUBMITTED", "opened_at": 1_000}
    text = text_of(render.status_table([event], {"SUBMITTED": 1}, show_all=False, now_ms=61_000))
    assert "In-flight batches" in text
    assert "b-7" in text and "60 s" in text
    assert "SUBMITTED: 1" in text
    assert "no batches" in text_of(render.status_table([], {}, show_all=True, now_ms=0))


def test_report_shows_totals_dead_letters_and_the_savings_breakdown() -> None:
    report = summary.cost_report(
        [result("a", cache_savings_usd=0.2), result("b", "realtime", 0.5, service_tier="flex")]
    )
    text = text_of(render.report_view(report, {"expired": 2}))
    assert "Cost report" in text and "dead letters: 2 (expired: 2)" in text
    assert "$0.8000" in text and "$2.0000" in text and "(60.0%)" in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") >= 3}
    assert "$0.5000" in lines["batch discount"] and "25.0%" in lines["batch discount"]
    assert "$0.2000" in lines["prompt cache"] and "10.0%" in lines["prompt cache"]
    assert "$0.5000" in lines["Flex tier"]
    assert "$1.2000" in lines["total"] and "60.0%" in lines["total"]
    assert "other" not in lines


def test_report_without_results_has_no_breakdown() -> None:
    text = text_of(render.report_view(summary.cost_report([]), {}))
    assert "dead letters: 0" in text and "Savings breakdown" not in text


def test_demo_summary_renders_the_pure_summary() -> None:
    failure = sample("InferenceFailure") | {
        "request_id": "c",
        "error_class": "invalid_input",
        "truncated": None,
    }
    out = summarise(
        3,
        {"a": ("result", result("a", cache_savings_usd=0.2)), "c": ("deadletter", failure)},
        [],
        0,
    )
    out |= {"elapsed_s": 4.2, "worker_logs": ["/tmp/w.log"], "complete": False}
    text = text_of(render.demo_summary(out))
    assert "Demo summary" in text and "By model" in text
    assert "invalid_input: 1" in text and "4.2 s" in text
    assert "batch discount $0.5000, prompt cache $0.2000, Flex $0.0000" in text
    assert "worker log: /tmp/w.log" in text


def dead(offset: int, request_id: str | None, **fields: object) -> DeadLetter:
    record = sample("InferenceFailure") | {
        "request_id": request_id,
        "failed_at": 1_800_000_000_000,
        "truncated": None,
    }
    if request_id is None:
        record["request"] = None
    return DeadLetter("dlq", 0, offset, record | fields)


def test_deadletter_counts_and_list() -> None:
    tally = count([dead(0, "a"), dead(1, None, error_class="decode_error")], {"dlq:0:0"}, keep=5)
    counts = text_of(render.deadletter_counts(tally))
    assert "2 dead letter(s), 1 replayable" in counts
    listed = text_of(render.deadletter_list(tally.newest()))
    assert "dlq:0:1" in listed and "no original request" in listed
    assert "2027-01-15T08:00:00Z" in listed
    assert "no dead letters match" in text_of(render.deadletter_counts(count([])))


def test_replay_view_says_what_was_sent_and_what_was_not() -> None:
    letters = [dead(0, "a"), dead(1, "b"), dead(2, None), dead(3, "c"), dead(4, "c")]
    plan = plan_replay(letters, replayed={"dlq:0:1"})
    dry = text_of(render.replay_view(plan, sent=False, topic="deferred", show=1))
    assert "Would replay to deferred (dry run)" in dry and "… and 1 more" in dry
    assert "would replay 2 of 5 selected dead letter(s) to deferred" in dry
    assert "already replayed: 1 (skipped; --force sends them again)" in dry
    assert "refused: 1 (no original request: 1)" in dry
    assert "superseded by a later dead letter of the same request: 1" in dry
    sent = text_of(render.replay_view(plan, sent=True, topic="deferred", show=0))
    assert "replayed 2 of 5" in sent and "Replayed to" not in sent
