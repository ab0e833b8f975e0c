"""The fault matrix's judge: lost requests, duplicate outcomes, needless provider batches."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.providers.ids import assign_custom_ids, custom_id_for
from connector.testing.accounting import (
    AttemptRecord,
    Expected,
    OutcomeEvent,
    ProviderBatch,
    account,
    attempt_at,
    custom_id_owners,
    duplicate_outcomes,
    duplicate_submissions,
    lost,
    match_outcomes,
    source_key,
)


def result(rid: str) -> OutcomeEvent:
    return OutcomeEvent("result", rid, lane="batch", attempt=1)


def dead(
    rid: str | None, source: str | None = None, error_class: str = "invalid_input"
) -> OutcomeEvent:
    return OutcomeEvent("deadletter", rid, source=source, error_class=error_class)


def batch(
    batch_id: str, at: int, *rids: str, tag: str | None = None, state: str = "completed"
) -> ProviderBatch:
    return ProviderBatch("openai", batch_id, tag, state, at, tuple(custom_id_for(r) for r in rids))


def produced(*items: tuple[str, int, int]) -> list[AttemptRecord]:
    return [AttemptRecord(rid, attempt, at) for rid, attempt, at in items]


# ------------------------------------------------------------------ outcomes


def test_an_event_belongs_to_its_input_record_before_its_request_id():
    raw = source_key("in", 2, 7)
    expected = [Expected("bytes", frozenset({raw})), Expected.request("r1")]
    events = [dead(None, raw), dead("r1", raw), result("r1")]
    matched, unexpected = match_outcomes(expected, events)
    assert matched == {"bytes": [events[0], events[1]], "r1": [events[2]]}
    assert unexpected == []


def test_outcomes_for_requests_nobody_sent_are_reported_apart():
    matched, unexpected = match_outcomes([Expected.request("r1")], [result("r1"), result("ghost")])
    assert matched == {"r1": [result("r1")]}
    assert unexpected == [result("ghost")]


def test_lost_and_duplicate_outcomes_are_counted_per_request():
    matched = {"a": [], "b": [result("b")], "c": [result("c"), result("c"), dead("c")]}
    assert lost(matched) == ["a"]
    assert duplicate_outcomes(matched) == {"c": 2}


def test_one_request_known_by_two_input_records_needs_one_outcome():
    # The same request id produced twice: both records answer to one expected request.
    first, second = source_key("in", 0, 1), source_key("in", 3, 9)
    expected = [Expected("twice", frozenset({"dup", first, second}))]
    verdict = account(expected, [result("dup")], [], [])
    assert verdict.lost == [] and verdict.duplicate_outcome_events == 0
    verdict = account(expected, [result("dup"), dead("dup", second)], [], [])
    assert verdict.duplicate_outcomes == {"twice": 1}


def test_a_subset_of_a_verdict_keeps_only_its_requests_and_their_needless_batches():
    expected = [Expected.request("a"), Expected.request("b"), Expected.request("c")]
    batches = [batch("b1", 1_000, "a", "b", tag="t"), batch("b2", 2_000, "b", tag="t")]
    verdict = account(
        expected,
        [result("b"), result("b"), result("c")],
        batches,
        produced(("a", 1, 0), ("b", 1, 0)),
    )
    assert verdict.lost == ["a"] and verdict.duplicate_outcomes == {"b": 1}
    only_a = verdict.subset(["a"], {"a"})
    assert (only_a.requests, only_a.lost, only_a.duplicate_outcomes) == (1, ["a"], {})
    assert only_a.duplicate_submissions == []  # b2 repeats b only
    only_b = verdict.subset(["b"], {"b"})
    assert (only_b.lost, only_b.duplicate_outcomes) == ([], {"b": 1})
    assert [d.provider_batch for d in only_b.duplicate_submissions] == ["b2"]
    assert verdict.subset(["c"], {"c"}).clean


# ------------------------------------------------------------------ attempts


def test_attempt_at_is_the_latest_attempt_produced_by_then():
    timeline = [(100, 1), (500, 2), (900, 3)]
    assert attempt_at(timeline, 50) == 1  # produced before we saw it: a first attempt
    assert attempt_at(timeline, 100) == 1
    assert attempt_at(timeline, 499) == 1
    assert attempt_at(timeline, 500) == 2
    assert attempt_at(timeline, 10_000) == 3
    # A replayed retry record does not lower the attempt.
    assert attempt_at([(100, 1), (500, 2), (600, 1)], 700) == 2


def test_custom_id_owners_covers_digested_ids_and_repeats_within_a_batch():
    rid = "ünïcödé/" + "x" * 80
    owners = custom_id_owners([rid, "plain-1"])
    assert owners[custom_id_for(rid)] == rid
    assert owners["plain-1"] == "plain-1"
    for custom_id in assign_custom_ids([rid, rid, rid]):
        assert owners[custom_id] == rid


# ------------------------------------------------------------------ submissions


def tracked(*ids: str, state: str = "EMITTED") -> dict[str, set[str]]:
    return {i: {"SUBMITTED", state} for i in ids}


def test_a_clean_run_with_a_retry_has_no_needless_batch():
    batches = [batch("b1", 1_000, "r1", "r2", tag="t1"), batch("b2", 5_000, "r2", tag="t2")]
    attempts = produced(("r1", 1, 10), ("r2", 1, 10), ("r2", 2, 4_000))
    assert duplicate_submissions(batches, attempts, tracked("b1", "b2")) == []


def test_a_second_provider_batch_under_one_tag_is_needless():
    batches = [batch("b1", 1_000, "r1", tag="t1"), batch("b2", 2_000, "r1", tag="t1")]
    [found] = duplicate_submissions(batches, produced(("r1", 1, 10)))
    assert (found.provider_batch, found.of, found.requests) == ("b2", "b1", ("r1#1",))
    assert "tag 't1' already created b1" in str(found)


def test_the_same_attempt_in_two_batches_is_needless_even_without_tags():
    # Anthropic batches carry no tag: only the requests tell.
    batches = [batch("b1", 1_000, "r1", "r2"), batch("b2", 2_000, "r3", "r2")]
    attempts = produced(("r1", 1, 10), ("r2", 1, 10), ("r3", 1, 1_500))
    [found] = duplicate_submissions(batches, attempts)
    assert (found.provider_batch, found.of, found.requests) == ("b2", "b1", ("r2#1",))


def test_a_request_twice_in_one_batch_is_needless():
    custom_ids = tuple(assign_custom_ids(["r1", "r1"]))
    twice = ProviderBatch("anthropic", "b1", None, "ended", 1_000, custom_ids)
    [found] = duplicate_submissions([twice], produced(("r1", 1, 10), ("r1", 1, 20)))
    assert (found.provider_batch, found.of, found.requests) == ("b1", "b1", ("r1#1",))


def test_resubmitting_after_a_batch_failed_as_a_whole_is_not_needless():
    # The quota path: the same attempt again, under a new tag, after the provider failed it.
    batches = [
        batch("b1", 1_000, "r1", tag="t1", state="failed"),
        batch("b2", 9_000, "r1", tag="t1-q1"),
    ]
    states = {"b1": {"SUBMITTED", "INTENT"}, **tracked("b2")}
    assert duplicate_submissions(batches, produced(("r1", 1, 10)), states) == []


def test_a_needless_batch_is_needless_even_when_it_later_fails():
    batches = [
        batch("b1", 1_000, "r1", tag="t1"),
        batch("b2", 2_000, "r1", tag="t2", state="failed"),
    ]
    found = duplicate_submissions(batches, produced(("r1", 1, 10)))
    assert [d.provider_batch for d in found] == ["b2"]


def test_a_lost_create_response_retried_blindly_counts_once():
    # The provider created b1, the answer was lost, the SDK created b2 under the same tag:
    # b1 is an orphan and b2 repeats it; one needless batch, not two.
    batches = [batch("b1", 1_000, "r1", tag="t1"), batch("b2", 1_100, "r1", tag="t1")]
    found = duplicate_submissions(batches, produced(("r1", 1, 10)), tracked("b2"))
    assert [(d.provider_batch, d.of) for d in found] == [("b2", "b1")]


def test_an_orphan_retried_with_a_fresh_attempt_is_needless():
    # No request attempt repeats, but b1 is billed and nobody reads its results.
    batches = [batch("b1", 1_000, "r1", tag="t1"), batch("b2", 5_000, "r1", tag="t2")]
    attempts = produced(("r1", 1, 10), ("r1", 2, 4_000))
    assert duplicate_submissions(batches, attempts) == []
    [found] = duplicate_submissions(batches, attempts, tracked("b2"))
    assert found.provider_batch == "b1" and "orphan" in found.reason
    # Gemini batch ids are named with their resource prefix in the connector's events.
    assert duplicate_submissions(batches, attempts, tracked("batches/b1", "b2")) == []


def test_a_batch_given_up_while_the_provider_runs_it_is_abandoned():
    # A transient 404 on poll taken for "gone": the batch runs on, its requests are re-run.
    batches = [batch("b1", 1_000, "r1", tag="t1"), batch("b2", 5_000, "r1", tag="t2")]
    attempts = produced(("r1", 1, 10), ("r1", 2, 4_000))
    states = {**tracked("b1", state="FAILED"), **tracked("b2")}
    [found] = duplicate_submissions(batches, attempts, states)
    assert found.provider_batch == "b1" and "abandoned" in found.reason
    # Failed at the provider too: nothing was billed, nothing is lost.
    batches[0] = batch("b1", 1_000, "r1", tag="t1", state="failed")
    assert duplicate_submissions(batches, attempts, states) == []


def test_failed_orphans_cost_nothing_and_are_not_counted():
    batches = [batch("b1", 1_000, "r1", tag="t1", state="JOB_STATE_FAILED")]
    assert duplicate_submissions(batches, produced(("r1", 1, 10)), {}) == []


def test_requests_that_are_not_ours_are_ignored():
    batches = [batch("b1", 1_000, "someone-else"), batch("b2", 2_000, "someone-else")]
    assert duplicate_submissions(batches, produced(("r1", 1, 10))) == []


@st.composite
def connector_runs(
    draw: st.DrawFn,
) -> tuple[list[ProviderBatch], list[AttemptRecord], dict[str, set[str]]]:
    """Runs of a connector that keeps its promise: each attempt in one live batch."""
    rids = draw(st.lists(st.text(min_size=1, max_size=70), min_size=1, max_size=8, unique=True))
    clock = 0
    batches: list[ProviderBatch] = []
    attempts = [AttemptRecord(rid, 1, 0) for rid in rids]
    waiting = {rid: 1 for rid in rids}
    while waiting:
        clock += 10
        members = draw(st.lists(st.sampled_from(sorted(waiting)), min_size=1, unique=True))
        failed = draw(st.booleans())
        batches.append(
            ProviderBatch(
                "gemini",
                f"b{len(batches)}",
                f"t{len(batches)}",
                "failed" if failed else "done",
                clock,
                tuple(assign_custom_ids(members)),
            )
        )
        if failed:
            continue  # resubmitted as they are, later
        for rid in members:
            if draw(st.booleans()) and waiting[rid] < 3:
                clock += 1
                waiting[rid] += 1
                attempts.append(AttemptRecord(rid, waiting[rid], clock))
            else:
                del waiting[rid]
    return batches, attempts, tracked(*(b.batch_id for b in batches))


@given(connector_runs(), st.data())
def test_only_a_copied_attempt_makes_a_needless_batch(run, data):
    batches, attempts, states = run
    assert duplicate_submissions(batches, attempts, states) == []
    live = [b for b in batches if b.state != "failed"]
    original = data.draw(st.sampled_from(live))
    copy = ProviderBatch(
        "gemini", "copy", "copy-tag", "done", original.created_ms, original.custom_ids[:1]
    )
    found = duplicate_submissions([*batches, copy], attempts, {**states, **tracked("copy")})
    assert [(d.provider_batch, d.of) for d in found] == [("copy", original.batch_id)]
