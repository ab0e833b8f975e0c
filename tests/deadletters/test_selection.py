"""Dead-letter selection, counting and the replay plan: pure, no broker."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.deadletters import (
    REPLAY_OF,
    DeadLetter,
    Selection,
    count,
    parse_time,
    plan_replay,
    refusal,
    replay_request,
    summary_of,
)
from connector.deadletters.selection import (
    BODY_TRUNCATED,
    NO_REQUEST,
    NOT_DECODABLE,
    UNDECODABLE,
)
from tests.fixtures.records import sample

NOW = 1_800_000_000_000
TOPIC = "inference.deadletter"


def failure(request_id: str | None = "r-1", **fields: object) -> dict:
    record = copy.deepcopy(sample("InferenceFailure")) | {"truncated": None}
    if request_id is None:
        record.update(
            request_id=None, request=None, raw_value=b"\x00garbage", provider=None, model=None
        )
    else:
        record["request_id"] = request_id
        record["request"]["request_id"] = request_id
    record.update(fields)
    return record


def dead(
    offset: int, record: dict | None, partition: int = 0, timestamp: int | None = None
) -> DeadLetter:
    return DeadLetter(TOPIC, partition, offset, record, timestamp)


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - 2 * 3_600_000),
        ("30m", NOW - 30 * 60_000),
        ("7d", NOW - 7 * 86_400_000),
        ("1w", NOW - 604_800_000),
        ("90s", NOW - 90_000),
        ("1.5h", NOW - 5_400_000),
        ("1767000000000", 1_767_000_000_000),
        ("2026-01-31T12:00", int(datetime(2026, 1, 31, 12, tzinfo=UTC).timestamp() * 1000)),
        ("2026-01-31T12:00:00Z", int(datetime(2026, 1, 31, 12, tzinfo=UTC).timestamp() * 1000)),
        (
            "2026-01-31T14:00:00+02:00",
            int(datetime(2026, 1, 31, 12, tzinfo=UTC).timestamp() * 1000),
        ),
        ("2026-01-31", int(datetime(2026, 1, 31, tzinfo=UTC).timestamp() * 1000)),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2x", "-3h", "", "31/01/2026"])
def test_parse_time_rejects_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_time(text, NOW)


# --------------------------------------------------------------------------- one dead letter


def test_replay_identity_and_fields() -> None:
    letter = dead(41, failure("a", failed_at=NOW), partition=2)
    assert letter.replay_of == f"{TOPIC}:2:41"
    assert (letter.request_id, letter.error_class, letter.failed_at) == (
        "a",
        "provider_rejected",
        NOW,
    )
    assert (letter.provider, letter.model) == ("openai", "gpt-4o-mini")


def test_an_undecodable_dead_letter_has_only_its_coordinates_and_timestamp() -> None:
    letter = dead(3, None, timestamp=NOW)
    assert (letter.request_id, letter.provider, letter.model) == (None, None, None)
    assert letter.error_class == UNDECODABLE
    assert letter.failed_at == NOW


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (None, NOT_DECODABLE),
        (failure(None, error_class="decode_error"), NO_REQUEST),
        (failure("a", request=None), NO_REQUEST),
        (failure("a", truncated=["request.body"]), BODY_TRUNCATED),
        (failure("a", truncated=["error_message", "request.body"]), BODY_TRUNCATED),
        (failure("a", truncated=["error_message"]), None),
        (failure("a", truncated=None), None),
        (
            {k: v for k, v in failure("a").items() if k != "truncated"},
            None,
        ),  # written before the field existed
    ],
)
def test_refusal(record: dict | None, reason: str | None) -> None:
    assert refusal(dead(0, record)) == reason


def test_replayed_request_is_the_original_at_attempt_one_tagged_with_its_dead_letter() -> None:
    record = failure("a")
    record["request"]["attempt"] = 3
    original = copy.deepcopy(record)
    letter = dead(9, record, partition=1)

    request = replay_request(letter)

    assert request["attempt"] == 1
    assert request["metadata"] == {"tenant": "acme", REPLAY_OF: f"{TOPIC}:1:9"}
    unchanged = {k: v for k, v in original["request"].items() if k not in ("attempt", "metadata")}
    assert {k: request[k] for k in unchanged} == unchanged
    assert record == original  # the dead letter is not modified


def test_a_replay_of_a_replay_points_at_the_newer_dead_letter() -> None:
    record = failure("a")
    record["request"]["metadata"] = {REPLAY_OF: f"{TOPIC}:0:1"}
    assert replay_request(dead(7, record))["metadata"][REPLAY_OF] == f"{TOPIC}:0:7"


def test_no_request_cannot_be_replayed() -> None:
    with pytest.raises(ValueError, match="no original request"):
        replay_request(dead(0, failure(None)))


def test_summary_leaves_the_body_out() -> None:
    out = summary_of(dead(5, failure("a", failed_at=NOW)))
    assert out["replay_of"] == f"{TOPIC}:0:5"
    assert out["replayable"] is True
    assert "request" not in out and "body" not in str(out)


# --------------------------------------------------------------------------- selection


def test_empty_selection_is_everything() -> None:
    assert Selection().everything
    assert not Selection(classes=frozenset({"expired"})).everything
    assert Selection().matches(dead(0, None))


@pytest.mark.parametrize(
    ("selection", "matches"),
    [
        (Selection(classes=frozenset({"provider_rejected"})), True),
        (Selection(classes=frozenset({"expired", "cancelled"})), False),
        (Selection(providers=frozenset({"openai"})), True),
        (Selection(providers=frozenset({"gemini"})), False),
        (Selection(models=frozenset({"gpt-4o-mini"})), True),
        (Selection(models=frozenset({"gpt-4o"})), False),
        (Selection(request_ids=frozenset({"a", "b"})), True),
        (Selection(request_ids=frozenset({"b"})), False),
        (Selection(since_ms=NOW), True),  # since is inclusive
        (Selection(since_ms=NOW + 1), False),
        (Selection(until_ms=NOW + 1), True),
        (Selection(until_ms=NOW), False),  # until is exclusive
        (
            Selection(
                since_ms=NOW - 10, until_ms=NOW + 10, classes=frozenset({"provider_rejected"})
            ),
            True,
        ),
    ],
)
def test_each_filter(selection: Selection, matches: bool) -> None:
    assert selection.matches(dead(0, failure("a", failed_at=NOW))) is matches


def test_undecodable_dead_letters_match_by_their_class_and_timestamp_only() -> None:
    letter = dead(0, None, timestamp=NOW)
    assert Selection(classes=frozenset({UNDECODABLE})).matches(letter)
    assert Selection(since_ms=NOW - 1).matches(letter)
    assert not Selection(providers=frozenset({"openai"})).matches(letter)
    assert not Selection(since_ms=0).matches(dead(1, None, timestamp=None))


# --------------------------------------------------------------------------- counting


def test_counts_by_class_provider_model_with_replayable_and_replayed() -> None:
    letters = [
        dead(0, failure("a", error_class="expired")),
        dead(1, failure("b", error_class="expired")),
        dead(2, failure("c", error_class="expired", truncated=["request.body"])),
        dead(3, failure(None, error_class="decode_error")),
        dead(4, None),
        dead(5, failure("d", error_class="expired", provider="gemini", model="gemini-2.5-flash")),
    ]
    tally = count(letters, replayed={f"{TOPIC}:0:1"})
    rows = [
        (r.error_class, r.provider, r.model, r.count, r.replayable, r.replayed)
        for r in tally.rows()
    ]
    assert rows == [
        ("expired", "openai", "gpt-4o-mini", 3, 2, 1),
        (UNDECODABLE, "-", "-", 1, 0, 0),
        ("decode_error", "-", "-", 1, 0, 0),
        ("expired", "gemini", "gemini-2.5-flash", 1, 1, 0),
    ]
    assert tally.total == 6
    assert tally.newest() == []  # nothing kept unless asked


def test_tally_keeps_only_the_newest() -> None:
    letters = [dead(i, failure(f"r{i}", failed_at=NOW + (i * 7) % 10)) for i in range(10)]
    newest = count(letters, keep=3).newest()
    assert [letter.failed_at for letter in newest] == [NOW + 9, NOW + 8, NOW + 7]


# --------------------------------------------------------------------------- replay plan


def test_plan_sends_the_replayable_and_says_why_not_the_rest() -> None:
    letters = [
        dead(0, failure("a")),
        dead(1, failure("b")),
        dead(2, failure("c", truncated=["request.body"])),
        dead(3, failure(None, error_class="decode_error")),
        dead(4, None),
    ]
    plan = plan_replay(letters, replayed={f"{TOPIC}:0:1"})
    assert [(letter.offset, request["request_id"]) for letter, request in plan.send] == [(0, "a")]
    assert [letter.offset for letter in plan.already] == [1]
    assert plan.refused_by_reason() == {BODY_TRUNCATED: 1, NOT_DECODABLE: 1, NO_REQUEST: 1}
    assert plan.selected == 5

    forced = plan_replay(letters, replayed={f"{TOPIC}:0:1"}, force=True)
    assert sorted(request["request_id"] for _, request in forced.send) == ["a", "b"]
    assert forced.already == []


def test_only_the_latest_dead_letter_of_a_request_is_replayed() -> None:
    older = dead(0, failure("a", failed_at=NOW))
    newer = dead(5, failure("a", failed_at=NOW + 1))
    for order in ([older, newer], [newer, older]):
        plan = plan_replay(order, replayed=set())
        assert [letter for letter, _ in plan.send] == [newer]
        assert plan.superseded == [older]
    replayed_already = plan_replay([older, newer], replayed={newer.replay_of})
    assert (replayed_already.send, replayed_already.already) == ([], [newer])


def test_plan_as_json() -> None:
    plan = plan_replay([dead(0, failure("a")), dead(1, None)], replayed=set())
    assert plan.as_dict(sent=False) == {
        "dry_run": True,
        "selected": 2,
        "replayed": 0,
        "to_replay": 1,
        "already_replayed": 0,
        "refused": {NOT_DECODABLE: 1},
        "superseded": 0,
        "replays": [{"replay_of": f"{TOPIC}:0:0", "request_id": "a"}],
    }
    assert plan.as_dict(sent=True)["replayed"] == 1


letter_st = st.builds(
    lambda offset, rid, kind, at: dead(
        offset,
        None
        if kind == "undecodable"
        else failure(None)
        if kind == "no_request"
        else failure(
            rid, failed_at=at, truncated=["request.body"] if kind == "truncated" else None
        ),
    ),
    st.integers(0, 10_000),
    st.sampled_from("abcdef"),
    st.sampled_from(["whole", "whole", "truncated", "no_request", "undecodable"]),
    st.integers(NOW, NOW + 5),
)


@given(
    st.lists(letter_st, max_size=30, unique_by=lambda letter: letter.offset),
    st.sets(st.integers(0, 10_000)),
    st.booleans(),
)
def test_replay_plan_invariants(
    letters: list[DeadLetter], replayed_offsets: set[int], force: bool
) -> None:
    replayed = {f"{TOPIC}:0:{offset}" for offset in replayed_offsets}
    plan = plan_replay(letters, replayed, force=force)

    buckets = [
        [letter for letter, _ in plan.send],
        plan.already,
        [letter for letter, _ in plan.refused],
        plan.superseded,
    ]
    placed = [letter.offset for bucket in buckets for letter in bucket]
    assert sorted(placed) == sorted(letter.offset for letter in letters)  # each exactly once
    sent_ids = [request["request_id"] for _, request in plan.send]
    assert len(sent_ids) == len(set(sent_ids))  # never two replays of one request
    for letter, request in plan.send:
        assert refusal(letter) is None
        assert force or letter.replay_of not in replayed
        assert request["attempt"] == 1 and request["metadata"][REPLAY_OF] == letter.replay_of
    assert all(letter.replay_of in replayed for letter in plan.already)
