"""Cost, latency and batch-state arithmetic, and the demo workload's shape."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector import summary
from connector.demo import summarise
from connector.errors import ValidationError
from connector.model import validate_request
from connector.workload import DEMO_ENDPOINTS, build_workload
from tests.fixtures.records import sample


def result(
    request_id: str, provider="openai", model="gpt-4o-mini", cost=0.5, realtime=1.0, latency_ms=2000
):
    record = sample("InferenceResult")
    record.update(
        request_id=request_id,
        provider=provider,
        model=model,
        cost_usd=cost,
        realtime_cost_usd=realtime,
    )
    record.update(service_tier=None, cache_savings_usd=None)  # records of before the fields existed
    record["emitted_at"] = record["created_at"] + latency_ms
    return record


def event(batch_id: str, state: str, at: int, count: int = 10):
    record = sample("BatchEvent")
    record.update(batch_id=batch_id, state=state, event_at=at, request_count=count)
    return record


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert summary.percentile(values, 50) == 50
    assert summary.percentile(values, 95) == 95
    assert summary.percentile([3.0], 95) == 3.0
    assert summary.percentile([], 50) is None


def test_cost_rows_group_by_provider_and_model_and_total():
    rows = summary.cost_rows(
        [
            result("a"),
            result("b"),
            result("c", provider="gemini", model="gemini-2.5-flash", cost=1, realtime=2),
        ]
    )
    assert [(r.provider, r.model, r.requests) for r in rows] == [
        ("gemini", "gemini-2.5-flash", 1),
        ("openai", "gpt-4o-mini", 2),
    ]
    total = summary.total_row(rows)
    assert total.cost_usd == 2.0 and total.realtime_cost_usd == 4.0
    assert total.saving_pct == 50.0
    assert rows[1].input_tokens == 2 * sample("InferenceResult")["usage"]["input_tokens"]


def test_saving_is_undefined_without_realtime_cost():
    assert summary.saving_pct(0.0, 0.0) is None


def test_latest_batch_state_and_in_flight():
    events = [
        event("b1", "INTENT", 1),
        event("b1", "SUBMITTED", 2),
        event("b2", "SUBMITTED", 1),
        event("b2", "EMITTED", 5),
        event("b3", "INTENT", 3),
    ]
    latest = summary.latest_batches(events)
    assert {k: v["state"] for k, v in latest.items()} == {
        "b1": "SUBMITTED",
        "b2": "EMITTED",
        "b3": "INTENT",
    }
    assert [e["batch_id"] for e in summary.in_flight(latest)] == ["b1", "b3"]
    assert summary.state_counts(latest) == {"EMITTED": 1, "INTENT": 1, "SUBMITTED": 1}


def test_batch_fill_counts_submitted_batches_once():
    fill = summary.batch_fill(
        [
            event("b1", "SUBMITTED", 1, 30),
            event("b1", "SUBMITTED", 2, 30),
            event("b2", "SUBMITTED", 1, 10),
            event("b3", "INTENT", 1, 99),
        ]
    )
    assert (fill.batches, fill.requests, fill.average) == (2, 40, 20.0)


def test_demo_summary_counts_outcomes():
    failure = sample("InferenceFailure") | {"request_id": "c", "error_class": "invalid_input"}
    outcomes = {
        "a": ("result", result("a", latency_ms=1000)),
        "b": ("result", result("b", latency_ms=3000)),
        "c": ("deadletter", failure),
    }
    out = summarise(4, outcomes, [event("b1", "SUBMITTED", 1, 2)], duplicates=1)
    assert (
        out["requests"] == 4
        and out["results"] == 2
        and out["deadletters"] == 1
        and out["missing"] == 1
    )
    assert out["deadletters_by_class"] == {"invalid_input": 1}
    assert out["batches"] == 1 and out["duplicates"] == 1
    assert (out["p50_s"], out["p95_s"]) == (1.0, 3.0)
    assert out["cost_usd"] == 1.0 and out["realtime_cost_usd"] == 2.0 and out["saving_pct"] == 50.0


@pytest.mark.parametrize("n", [1, 50, 500, 1200])
def test_workload_shape(n):
    items = build_workload(n, "t", 1_000_000)
    assert len(items) == n
    assert len({item.request["request_id"] for item in items}) == n
    kinds = Counter(item.kind for item in items)
    invalid = kinds["invalid_endpoint"] + kinds["invalid_body"]
    if n >= 500:
        assert kinds["realtime"] == n // 20 and kinds["deadline"] == n // 20
        assert invalid == n // 100
        assert {item.request["provider"] for item in items} == {
            "openai",
            "anthropic",
            "gemini",
            "groq",
        }
        assert any(item.request["endpoint"] == "/v1/embeddings" for item in items)
    for item in items:
        if item.kind.startswith("invalid"):
            with pytest.raises(ValidationError):
                validate_request(item.request, endpoints=DEMO_ENDPOINTS)
        else:
            validate_request(item.request, endpoints=DEMO_ENDPOINTS)
        assert (item.lane == "realtime") == (item.kind == "realtime")
        assert (item.request["deadline"] is not None) == (item.kind == "deadline")


# --------------------------------------------------------------------------- de-duplication


def test_first_outcome_per_request_id_wins_across_both_topics():
    failure = sample("InferenceFailure") | {"request_id": "a", "error_class": "expired"}
    undecodable = sample("InferenceFailure") | {"request_id": None, "error_class": "decode_error"}
    stream = [
        ("result", result("a", cost=1.0)),
        ("deadletter", failure),
        ("result", result("a", cost=9.0)),
        ("deadletter", undecodable),
        ("deadletter", undecodable),
        ("result", result("b")),
    ]
    out = summary.first_outcomes(stream)
    assert [(r["request_id"], r["cost_usd"]) for r in out.results] == [("a", 1.0), ("b", 0.5)]
    assert out.failures_by_class == {"decode_error": 2}  # no request_id: never a duplicate
    assert out.duplicates == 2
    assert out.deadletters == 2


def test_first_outcomes_of_nothing():
    out = summary.first_outcomes([])
    assert (out.results, out.failures_by_class, out.duplicates, out.deadletters) == ([], {}, 0, 0)


@given(
    st.lists(
        st.tuples(st.sampled_from(["result", "deadletter"]), st.sampled_from("abcde")), max_size=40
    )
)
def test_first_outcomes_counts_every_record_once(stream):
    records = [
        (
            kind,
            result(rid) if kind == "result" else sample("InferenceFailure") | {"request_id": rid},
        )
        for kind, rid in stream
    ]
    out = summary.first_outcomes(records)
    assert len(out.results) + out.deadletters + out.duplicates == len(stream)
    assert len(out.results) + out.deadletters == len({rid for _, rid in stream})


# --------------------------------------------------------------------------- savings breakdown


def priced(lane="batch", cost=0.5, realtime=1.0, **extra):
    return result("x", cost=cost, realtime=realtime) | {"lane": lane} | extra


@pytest.mark.parametrize(
    ("record", "tier"),
    [
        (priced("batch"), "batch"),
        (priced("realtime"), "standard"),
        (priced("realtime", service_tier="flex"), "flex"),
        (priced("batch", service_tier=None), "batch"),
        (priced("realtime", service_tier="standard"), "standard"),
    ],
)
def test_service_tier_defaults_from_the_lane(record, tier):
    assert summary.service_tier(record) == tier


def test_batch_saving_without_cache_is_all_batch_discount():
    parts = summary.savings_of(priced("batch", cost=0.5, realtime=1.0))
    assert parts == summary.SavingsBreakdown(batch_discount_usd=0.5)


def test_cache_savings_come_out_of_the_tier_discount():
    parts = summary.savings_of(priced("batch", cost=0.3, realtime=1.0, cache_savings_usd=0.2))
    assert parts.cache_usd == 0.2
    assert parts.batch_discount_usd == pytest.approx(0.5)
    assert parts.flex_usd == parts.other_usd == 0


def test_flex_saving_is_attributed_to_flex():
    parts = summary.savings_of(
        priced("realtime", cost=0.45, realtime=1.0, service_tier="flex", cache_savings_usd=0.05)
    )
    assert (parts.flex_usd, parts.cache_usd, parts.batch_discount_usd) == (
        pytest.approx(0.5),
        0.05,
        0,
    )


def test_standard_tier_saves_only_its_cache():
    parts = summary.savings_of(priced("realtime", cost=0.9, realtime=1.0, cache_savings_usd=0.1))
    assert parts.cache_usd == 0.1
    assert parts.other_usd == pytest.approx(0.0)
    assert parts.batch_discount_usd == parts.flex_usd == 0


def test_records_before_the_cache_fields_read_as_no_cache():
    record = priced("batch", cost=0.5, realtime=1.0)
    record.pop("cache_savings_usd", None)
    record.pop("service_tier", None)
    assert summary.savings_of(record) == summary.SavingsBreakdown(batch_discount_usd=0.5)


money_st = st.floats(min_value=0, max_value=100, allow_nan=False)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["batch", "realtime"]),
            st.sampled_from([None, "batch", "standard", "flex", "priority"]),
            money_st,
            money_st,
            st.one_of(st.none(), money_st),
        ),
        max_size=30,
    )
)
def test_breakdown_parts_add_up_to_the_saving_per_model_and_in_total(records):
    results = [
        result(f"r{i}", provider=lane, cost=cost, realtime=realtime)
        | {"lane": lane, "service_tier": tier, "cache_savings_usd": cache}
        for i, (lane, tier, cost, realtime, cache) in enumerate(records)
    ]
    report = summary.cost_report(results)
    for row in [*report.rows, report.total]:
        assert row.savings.total_usd == pytest.approx(row.saving_usd, abs=1e-9)
    assert report.total.savings.cache_usd == pytest.approx(
        sum(r[4] or 0 for r in records), abs=1e-9
    )
    assert report.total.requests == len(records)


def test_cost_report_json_carries_the_breakdown():
    report = summary.cost_report(
        [
            priced("batch", cost=0.3, realtime=1.0, cache_savings_usd=0.2),
            priced("realtime", cost=0.5, realtime=1.0, service_tier="flex"),
        ]
    )
    out = report.as_dict()
    assert out["cost_usd"] == 0.8 and out["realtime_cost_usd"] == 2.0 and out["saving_pct"] == 60.0
    assert out["savings"] == {
        "batch_discount_usd": 0.5,
        "cache_usd": 0.2,
        "flex_usd": 0.5,
        "other_usd": 0.0,
    }
    assert out["by_model"][0]["savings"] == out["savings"]


def test_demo_summary_shows_the_breakdown():
    outcomes = {"a": ("result", priced("batch", cost=0.3, realtime=1.0, cache_savings_usd=0.2))}
    out = summarise(1, outcomes, [], duplicates=0)
    assert out["savings"] == {
        "batch_discount_usd": 0.5,
        "cache_usd": 0.2,
        "flex_usd": 0.0,
        "other_usd": 0.0,
    }
    assert out["saving_usd"] == 0.7


def test_shown_batches_in_flight_or_all_oldest_first():
    events = [
        event("b2", "SUBMITTED", 2) | {"opened_at": 5},
        event("b1", "EMITTED", 3) | {"opened_at": 1},
        event("b3", "INTENT", 1) | {"opened_at": 3},
    ]
    latest = summary.latest_batches(events)
    assert [e["batch_id"] for e in summary.shown_batches(latest, show_all=False)] == ["b3", "b2"]
    assert [e["batch_id"] for e in summary.shown_batches(latest, show_all=True)] == [
        "b1",
        "b3",
        "b2",
    ]
