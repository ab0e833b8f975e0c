"""Every adapter against the emulator, through the real SDKs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from connector.emulator import Emulator
from connector.providers.base import (
    BatchHandle,
    BatchItem,
    BatchState,
    BatchStatus,
    Outcome,
    OutcomeKind,
    Provider,
)
from connector.providers.exceptions import ProviderUnavailable, ReconcilePending
from connector.providers.ids import assign_custom_ids

from .conftest import make_provider

MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
    "groq": "llama-3.1-8b-instant",
    "azure": "gpt-4o-mini-batch",  # an Azure deployment name
}
ENDPOINTS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "generateContent",
    "groq": "/v1/chat/completions",
    "azure": "/v1/chat/completions",
}
SUBMIT_ROUTES = {
    "openai": r"^/v1/batches$",
    "anthropic": r"/v1/messages/batches$",
    "gemini": r":batchGenerateContent$",
    "groq": r"^/compat/groq/v1/batches$",
    "azure": r"^/openai/batches$",
}
POLL_ROUTES = {
    "openai": r"^/v1/batches/[^/]+$",
    "anthropic": r"/v1/messages/batches/[^/]+$",
    "gemini": r"/batches/[^/:]+$",
    "groq": r"^/compat/groq/v1/batches/[^/]+$",
    "azure": r"^/openai/batches/[^/]+$",
}


def body(provider: str, text: str) -> dict[str, Any]:
    if provider == "gemini":
        return {
            "contents": [{"role": "user", "parts": [{"text": text}]}],
            "generationConfig": {"maxOutputTokens": 16},
        }
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 16}


def items(provider: Provider, custom_ids: list[str], text: str = "hello") -> list[BatchItem]:
    name = provider.name
    return [
        BatchItem(cid, MODELS[name], ENDPOINTS[name], body(name, f"{text} {i}"))
        for i, cid in enumerate(custom_ids)
    ]


async def wait_final(provider: Provider, handle: BatchHandle) -> BatchStatus:
    """Poll until the batch is final, for at most 10 s (returns the last status either way)."""
    for _ in range(200):
        status = await provider.poll(handle)
        if status.state.is_final:
            break
        await asyncio.sleep(0.05)
    return status


async def collect(provider: Provider, handle: BatchHandle) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    async for outcome in provider.results(handle):
        assert outcome.custom_id not in outcomes, "one outcome per request"
        outcomes[outcome.custom_id] = outcome
    return outcomes


async def test_submit_poll_and_read_every_result(provider: Provider, emulator: Emulator) -> None:
    ids = [f"req-{i}" for i in range(25)]
    handle = await provider.submit("tag-happy", items(provider, ids))
    assert handle.provider == provider.name and handle.batch_id and handle.tag == "tag-happy"

    status = await wait_final(provider, handle)
    assert status.state is BatchState.ENDED
    assert status.total == 25

    outcomes = await collect(provider, handle)
    assert set(outcomes) == set(ids)
    for outcome in outcomes.values():
        assert outcome.kind is OutcomeKind.SUCCEEDED
        assert outcome.body
        assert outcome.usage.input_tokens > 0 and outcome.usage.output_tokens > 0
    assert emulator.stats()["batches_created"][provider.name] == 1
    assert provider.malformed_lines == 0


async def test_long_and_non_ascii_request_ids_round_trip(
    provider: Provider, emulator: Emulator
) -> None:
    request_ids = ["x" * 200, "ünïcödé-ид-標識", "a b/c", "plain_id", "x" * 200 + "2"]
    mapping = assign_custom_ids(request_ids + [next(iter(assign_custom_ids(["x" * 200])))])
    handle = await provider.submit("tag-ids", items(provider, list(mapping)))
    await wait_final(provider, handle)
    outcomes = await collect(provider, handle)
    assert sorted(mapping[cid] for cid in outcomes) == sorted(mapping.values())


async def test_cancel(provider: Provider, emulator: Emulator) -> None:
    emulator.set_faults(processing_seconds=3)
    handle = await provider.submit("tag-cancel", items(provider, [f"c{i}" for i in range(5)]))
    await provider.cancel(handle)
    status = await wait_final(provider, handle)
    assert status.state is BatchState.CANCELLED
    outcomes = await collect(provider, handle)
    assert all(o.kind is not OutcomeKind.SUCCEEDED for o in outcomes.values())
    await provider.cancel(handle)  # idempotent once final


async def test_all_requests_fail(provider: Provider, emulator: Emulator) -> None:
    emulator.set_faults(error_rate=1.0, error_kinds=["invalid_request"])
    ids = [f"f{i}" for i in range(6)]
    handle = await provider.submit("tag-fail", items(provider, ids))
    status = await wait_final(provider, handle)
    assert status.state is BatchState.ENDED  # "completed" with nothing but errors
    outcomes = await collect(provider, handle)
    assert set(outcomes) == set(ids)
    for outcome in outcomes.values():
        assert outcome.kind is OutcomeKind.PERMANENT
        assert outcome.error_code and outcome.error_message


async def test_per_request_markers_mix_outcomes(provider: Provider, emulator: Emulator) -> None:
    batch = items(provider, ["ok", "limited", "bad"])
    batch[1] = BatchItem(
        "limited",
        batch[1].model,
        batch[1].endpoint,
        body(provider.name, "EMULATOR_FAIL:rate_limit"),
    )
    batch[2] = BatchItem(
        "bad", batch[2].model, batch[2].endpoint, body(provider.name, "EMULATOR_FAIL:policy")
    )
    handle = await provider.submit("tag-mixed", batch)
    await wait_final(provider, handle)
    outcomes = await collect(provider, handle)
    assert outcomes["ok"].kind is OutcomeKind.SUCCEEDED
    assert outcomes["limited"].kind is OutcomeKind.RETRYABLE
    assert outcomes["bad"].kind is OutcomeKind.PERMANENT


async def test_expired_batch_keeps_partial_results(provider: Provider, emulator: Emulator) -> None:
    emulator.set_faults(batch_outcome="expired")
    ids = [f"e{i}" for i in range(10)]
    handle = await provider.submit("tag-expired", items(provider, ids))
    status = await wait_final(provider, handle)
    assert status.state is BatchState.EXPIRED
    outcomes = await collect(provider, handle)
    kinds = [o.kind for o in outcomes.values()]
    assert OutcomeKind.PERMANENT not in kinds  # the unfinished part is worth retrying
    assert set(outcomes) <= set(ids)
    if provider.name != "gemini":  # an expired Gemini job has no results at all
        assert OutcomeKind.SUCCEEDED in kinds


async def test_stuck_batch_stays_running_and_cancels(
    provider: Provider, emulator: Emulator
) -> None:
    emulator.set_faults(batch_outcome="stuck")
    handle = await provider.submit("tag-stuck", items(provider, ["s0", "s1"]))
    await asyncio.sleep(3 * 0.3)
    status = await provider.poll(handle)
    assert not status.state.is_final
    await provider.cancel(handle)
    assert (await wait_final(provider, handle)).state is BatchState.CANCELLED


async def test_persistent_http_error_becomes_provider_unavailable(
    provider: Provider, emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> None:
    name = provider.name if provider.name != "gemini" else "gemini-inline"
    handle = await provider.submit("tag-503", items(provider, ["u0"]))
    no_retry = make_provider(name, emulator_url[1], max_retries=0)
    emulator.set_faults(
        http_errors=[
            {
                "path_regex": POLL_ROUTES[provider.name],
                "method": "GET",
                "status": 429,
                "count": 1,
                "retry_after": 7,
            }
        ]
    )
    with pytest.raises(ProviderUnavailable) as raised:
        await no_retry.poll(handle)
    assert raised.value.status == 429
    assert raised.value.retry_after == 7
    assert isinstance(raised.value.__cause__, Exception)
    await no_retry.aclose()


# Inline Gemini results are part of the job resource, not lines of a file.
@pytest.mark.parametrize("adapter", ["openai", "anthropic", "gemini-file"])
async def test_malformed_line_is_counted_not_fatal(
    adapter: str, emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> None:
    provider = make_provider(adapter, emulator_url[1])
    emulator.set_faults(malformed_lines=1)
    ids = [f"m{i}" for i in range(8)]
    handle = await provider.submit("tag-malformed", items(provider, ids))
    await wait_final(provider, handle)
    outcomes = await collect(provider, handle)
    assert set(outcomes) == set(ids)
    assert all(o.kind is OutcomeKind.SUCCEEDED for o in outcomes.values())
    assert provider.malformed_lines == 1
    await provider.aclose()


async def find_settled(provider: Provider, tag: str, **bounds: Any) -> BatchHandle | None:
    """``find``, asked again while it is pending, for at most 10 s (then its error stands)."""
    for _ in range(200):
        try:
            return await provider.find(tag, **bounds)
        except ReconcilePending:
            await asyncio.sleep(0.05)
    return await provider.find(tag, **bounds)


async def test_find_after_submit(provider: Provider, emulator: Emulator) -> None:
    started = time.time()
    await provider.submit("tag-other", items(provider, ["o0", "o1", "o2"]))
    handle = await provider.submit("tag-find", items(provider, ["f0", "f1"]))
    found = await find_settled(
        provider,
        "tag-find",
        created_after=started,
        expected_count=2,
        custom_ids=frozenset({"f0", "f1"}),
    )
    assert found is not None and found.batch_id == handle.batch_id
    missing = await provider.find(
        "tag-missing",
        created_after=time.time() + 3600,
        expected_count=2,
        custom_ids=frozenset({"m0", "m1"}),
    )
    assert missing is None


@pytest.mark.parametrize("adapter", ["openai", "anthropic", "gemini-inline", "groq", "azure"])
async def test_complete_success_retryable_permanent(
    adapter: str, emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> None:
    provider = make_provider(adapter, emulator_url[1], max_retries=0)
    name = provider.name
    ok = await provider.complete(BatchItem("ok", MODELS[name], ENDPOINTS[name], body(name, "hi")))
    assert ok.kind is OutcomeKind.SUCCEEDED and ok.body and ok.usage.output_tokens > 0

    limited = await provider.complete(
        BatchItem("rl", MODELS[name], ENDPOINTS[name], body(name, "EMULATOR_FAIL:rate_limit"))
    )
    assert limited.kind is OutcomeKind.RETRYABLE and limited.error_code

    bad = await provider.complete(
        BatchItem("bad", MODELS[name], ENDPOINTS[name], body(name, "EMULATOR_FAIL:invalid_request"))
    )
    assert bad.kind is OutcomeKind.PERMANENT and bad.error_code and bad.error_message
    assert emulator.stats()["sync_calls"][name] == 3
    await provider.aclose()


@pytest.mark.parametrize("adapter", ["openai", "anthropic", "gemini-inline", "groq", "azure"])
async def test_complete_connection_failure_is_retryable(adapter: str) -> None:
    dead = make_provider(adapter, "http://127.0.0.1:9", max_retries=0)
    name = dead.name
    outcome = await dead.complete(BatchItem("x", MODELS[name], ENDPOINTS[name], body(name, "hi")))
    assert outcome.kind is OutcomeKind.RETRYABLE
    await dead.aclose()


async def test_openai_token_limit_fails_the_batch(
    emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> None:
    provider = make_provider("openai", emulator_url[1])
    emulator.set_faults(openai_token_limit=True)
    handle = await provider.submit("tag-quota", items(provider, ["q0", "q1"]))
    status = await wait_final(provider, handle)
    assert status.state is BatchState.FAILED
    assert status.error_code == "token_limit_exceeded"
    assert status.error_message
    assert status.quota_exceeded
    assert await collect(provider, handle) == {}
    await provider.aclose()


@pytest.mark.parametrize("adapter", ["openai", "gemini-inline"])
async def test_a_batch_failed_for_another_reason_is_not_quota(
    adapter: str, emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> None:
    provider = make_provider(adapter, emulator_url[1])
    emulator.set_faults(batch_outcome="failed")
    handle = await provider.submit("tag-failed", items(provider, ["f0"]))
    status = await wait_final(provider, handle)
    assert status.state is BatchState.FAILED
    assert not status.quota_exceeded
    await provider.aclose()


CLIENT_SIDE_REFUSALS = [
    ("openai", {"max_tokens": 5}, "KeyError"),  # chat completions without messages
    ("anthropic", {"messages": [{"role": "user", "content": "hi"}]}, "KeyError"),  # no max_tokens
    ("gemini-inline", {"contents": 5}, "ValidationError"),
]


@pytest.mark.parametrize(("adapter", "request_body", "error_class"), CLIENT_SIDE_REFUSALS)
async def test_complete_turns_a_body_the_sdk_refuses_into_a_permanent_outcome(
    adapter: str,
    request_body: dict[str, Any],
    error_class: str,
    emulator: Emulator,
    emulator_url: tuple[Emulator, str],
) -> None:
    provider = make_provider(adapter, emulator_url[1], max_retries=0)
    name = provider.name
    outcome = await provider.complete(BatchItem("x", MODELS[name], ENDPOINTS[name], request_body))
    assert outcome.kind is OutcomeKind.PERMANENT
    assert outcome.error_code == error_class and outcome.error_message
    assert emulator.stats()["sync_calls"].get(name, 0) == 0  # refused before anything was sent
    await provider.aclose()


async def test_gemini_body_the_sdk_cannot_model_goes_by_file_not_by_exception(
    emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> None:
    provider = make_provider("gemini-inline", emulator_url[1])
    batch = items(provider, ["good"]) + [
        BatchItem("bad", MODELS["gemini"], ENDPOINTS["gemini"], {"contents": 5})
    ]
    handle = await provider.submit("tag-odd-body", batch)
    assert emulator.stats()["files_uploaded"] == 1  # the provider answers for the odd body
    await wait_final(provider, handle)
    assert set(await collect(provider, handle)) == {"good", "bad"}
    await provider.aclose()
