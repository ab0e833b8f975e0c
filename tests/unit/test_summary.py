"""Cost, latency and batch-state arithmetic, and the demo workload's shape."""

from __future__ import annotations

from collections import Counter

import pytest

from connector import summary
from connector.demo import summarise
from connector.errors import ValidationError
from connector.model import validate_request
from connector.workload import build_workload
from tests.fixtures.records import sample


def result(request_id: str, provider="openai", model="gpt-4o-mini", cost=0.5, realtime=1.0, latency_ms=2000):
    record = sample("InferenceResult")
    record.update(request_id=request_id, provider=provider, model=model, cost_usd=cost, realtime_cost_usd=realtime)
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
        [result("a"), result("b"), result("c", provider="gemini", model="gemini-2.5-flash", cost=1, realtime=2)]
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
    events = [event("b1", "INTENT", 1), event("b1", "SUBMITTED", 2), event("b2", "SUBMITTED", 1),
              event("b2", "EMITTED", 5), event("b3", "INTENT", 3)]
    latest = summary.latest_batches(events)
    assert {k: v["state"] for k, v in latest.items()} == {"b1": "SUBMITTED", "b2": "EMITTED", "b3": "INTENT"}
    assert [e["batch_id"] for e in summary.in_flight(latest)] == ["b1", "b3"]
    assert summary.state_counts(latest) == {"EMITTED": 1, "INTENT": 1, "SUBMITTED": 1}


def test_batch_fill_counts_submitted_batches_once():
    fill = summary.batch_fill([event("b1", "SUBMITTED", 1, 30), event("b1", "SUBMITTED", 2, 30),
                               event("b2", "SUBMITTED", 1, 10), event("b3", "INTENT", 1, 99)])
    assert (fill.batches, fill.requests, fill.average) == (2, 40, 20.0)


def test_demo_summary_counts_outcomes():
    failure = sample("InferenceFailure") | {"request_id": "c", "error_class": "invalid_input"}
    outcomes = {"a": ("result", result("a", latency_ms=1000)), "b": ("result", result("b", latency_ms=3000)),
                "c": ("deadletter", failure)}
    out = summarise(4, outcomes, [event("b1", "SUBMITTED", 1, 2)], duplicates=1)
    assert out["requests"] == 4 and out["results"] == 2 and out["deadletters"] == 1 and out["missing"] == 1
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
        assert {item.request["provider"] for item in items} == {"openai", "anthropic", "gemini"}
        assert any(item.request["endpoint"] == "/v1/embeddings" for item in items)
    for item in items:
        if item.kind.startswith("invalid"):
            with pytest.raises(ValidationError):
                validate_request(item.request)
        else:
            validate_request(item.request)
        assert (item.lane == "realtime") == (item.kind == "realtime")
        assert (item.request["deadline"] is not None) == (item.kind == "deadline")
