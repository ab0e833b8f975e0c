"""Batch creation is sent once, and its errors say whether a batch may exist (issue 7).

The emulator's own fault injection answers before any handler runs. The faults here need
more: an answer the real APIs send that the emulator has no knob for (a Gemini 404 on an
unknown model, quota refusals), or a create that succeeds but whose response is lost. A
middleware on a private emulator scripts those.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from connector.emulator import Emulator, EmulatorConfig
from connector.providers.base import BatchState, Provider
from connector.providers.exceptions import BatchRejected, ProviderUnavailable, QuotaExceeded

from .conftest import make_provider
from .test_contract import SUBMIT_ROUTES, find_settled, items, wait_final

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Scripted:
    """The next ``count`` requests matching ``path_regex`` get ``status`` + ``body``, or
    (``status`` None) are handled normally and then lose their response."""

    path_regex: str
    status: int | None = None
    body: dict[str, Any] | None = None
    count: int = 1
    seen: int = 0


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Emulator, str, list[Scripted]]]:
    script: list[Scripted] = []

    @web.middleware
    async def play(request: web.Request, handler: Handler) -> web.StreamResponse:
        for entry in script:
            if request.method == "POST" and re.search(entry.path_regex, request.path):
                entry.seen += 1
                if entry.count <= 0:
                    continue
                entry.count -= 1
                if entry.status is not None:
                    return web.json_response(entry.body, status=entry.status)
                response = await handler(request)
                assert request.transport is not None
                request.transport.close()  # the batch exists; its creator never hears of it
                return response
        return await handler(request)

    emulator = Emulator(EmulatorConfig(processing_seconds=0.2))
    emulator.app.middlewares.append(play)
    async with emulator.serve() as url:
        yield emulator, url, script


ADAPTERS = ["openai", "anthropic", "gemini-inline", "gemini-file", "groq", "azure"]


def _name(adapter: str) -> str:
    return adapter.split("-")[0]


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_failed_create_is_sent_once(
    adapter: str, status: int, emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> None:
    provider = make_provider(adapter, emulator_url[1], max_retries=2)  # SDK retries on
    route = SUBMIT_ROUTES[provider.name]
    emulator.set_faults(
        http_errors=[
            {"path_regex": route, "method": "POST", "status": status, "count": 2, "retry_after": 0}
        ]
    )
    with pytest.raises(ProviderUnavailable) as raised:
        await provider.submit("tag-once", items(provider, ["r0"]))
    assert raised.value.status == status
    assert emulator.config.http_errors[0].count == 1, "the SDK sent the create again"
    assert emulator.stats()["batches_created"].get(provider.name, 0) == 0
    await provider.aclose()


@pytest.mark.parametrize("adapter", ["openai", "gemini-file"])
async def test_uploads_keep_the_sdk_retries(
    adapter: str, emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> None:
    provider = make_provider(adapter, emulator_url[1], max_retries=2)
    upload = r"^/v1/files$" if adapter == "openai" else r"^/upload/"
    emulator.set_faults(
        http_errors=[
            {"path_regex": upload, "method": "POST", "status": 500, "count": 1, "retry_after": 0}
        ]
    )
    handle = await provider.submit("tag-upload", items(provider, ["u0", "u1"]))
    assert (await wait_final(provider, handle)).state is BatchState.ENDED
    assert emulator.config.http_errors[0].count == 0  # the failed upload was retried
    assert emulator.stats()["batches_created"][provider.name] == 1
    await provider.aclose()


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_a_lost_create_response_is_unavailable_and_not_resent(
    adapter: str, scripted: tuple[Emulator, str, list[Scripted]]
) -> None:
    emulator, url, script = scripted
    provider = make_provider(adapter, url, max_retries=2)
    script.append(Scripted(SUBMIT_ROUTES[provider.name]))
    started = time.time()
    with pytest.raises(ProviderUnavailable) as raised:
        await provider.submit("tag-lost", items(provider, ["l0", "l1"]))
    assert raised.value.status is None
    assert script[0].seen == 1
    assert emulator.stats()["batches_created"][provider.name] == 1
    # What the lane does next: look before submitting again, and find the batch.
    found = await find_settled(
        provider, "tag-lost", created_after=started, custom_ids=frozenset({"l0", "l1"})
    )
    created = emulator.stats()["batches"][0]["id"]
    assert found is not None and found.batch_id == created
    await provider.aclose()


async def _submit_refused(
    provider: Provider, script: list[Scripted], status: int, body: Any
) -> BatchRejected:
    script.append(Scripted(SUBMIT_ROUTES[provider.name], status, body))
    with pytest.raises(BatchRejected) as raised:
        await provider.submit("tag-refused", items(provider, ["x0"]))
    assert script[0].seen == 1
    return raised.value


@pytest.mark.parametrize(
    ("adapter", "status", "body", "code", "message"),
    [
        (
            "openai",
            400,
            {"error": {"message": "bad file", "type": "invalid_request_error", "code": None}},
            "invalid_request_error",
            "bad file",
        ),
        (
            "anthropic",
            413,
            {"type": "error", "error": {"type": "request_too_large", "message": "too big"}},
            "request_too_large",
            "too big",
        ),
        (
            "gemini-inline",
            404,
            {"error": {"code": 404, "message": "models/nope is not found", "status": "NOT_FOUND"}},
            "NOT_FOUND",
            "models/nope is not found",
        ),
        (
            "gemini-file",
            400,
            {"error": {"code": 400, "message": "bad request", "status": "INVALID_ARGUMENT"}},
            "INVALID_ARGUMENT",
            "bad request",
        ),
    ],
)
async def test_a_definite_refusal_is_rejected_with_the_providers_words(
    adapter: str,
    status: int,
    body: dict[str, Any],
    code: str,
    message: str,
    scripted: tuple[Emulator, str, list[Scripted]],
) -> None:
    emulator, url, script = scripted
    provider = make_provider(adapter, url)
    rejected = await _submit_refused(provider, script, status, body)
    assert (rejected.status, rejected.code, rejected.message) == (status, code, message)
    assert emulator.stats()["batches_created"].get(_name(adapter), 0) == 0
    await provider.aclose()


QUOTA_REFUSALS = [
    (
        "openai",
        429,
        {
            "error": {
                "message": "out of credit",
                "type": "insufficient_quota",
                "code": "insufficient_quota",
            }
        },
    ),
    (
        "openai",
        429,
        {
            "error": {
                "message": "enqueued",
                "type": "invalid_request_error",
                "code": "token_limit_exceeded",
            }
        },
    ),
    (
        "anthropic",
        429,
        {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "monthly limit",
                "details": {"error_code": "enforced_spend_limit_reached"},
            },
        },
    ),
    ("anthropic", 402, {"type": "error", "error": {"type": "billing_error", "message": "unpaid"}}),
    (
        "gemini-inline",
        429,
        {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}},
    ),
    (
        "gemini-file",
        429,
        {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}},
    ),
]
RATE_LIMITS = [
    (
        "openai",
        429,
        {"error": {"message": "slow", "type": "requests", "code": "rate_limit_exceeded"}},
    ),
    ("anthropic", 429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
]


@pytest.mark.parametrize(("adapter", "status", "body"), QUOTA_REFUSALS)
async def test_a_quota_refusal_on_create_is_quota_exceeded(
    adapter: str, status: int, body: dict[str, Any], scripted: tuple[Emulator, str, list[Scripted]]
) -> None:
    emulator, url, script = scripted
    provider = make_provider(adapter, url)
    script.append(Scripted(SUBMIT_ROUTES[provider.name], status, body))
    with pytest.raises(QuotaExceeded) as raised:
        await provider.submit("tag-quota", items(provider, ["q0"]))
    assert raised.value.status == status and raised.value.code
    assert script[0].seen == 1
    await provider.aclose()


@pytest.mark.parametrize(("adapter", "status", "body"), RATE_LIMITS)
async def test_a_rate_limit_on_create_is_not_a_quota(
    adapter: str, status: int, body: dict[str, Any], scripted: tuple[Emulator, str, list[Scripted]]
) -> None:
    emulator, url, script = scripted
    provider = make_provider(adapter, url)
    script.append(Scripted(SUBMIT_ROUTES[provider.name], status, body))
    with pytest.raises(ProviderUnavailable) as raised:
        await provider.submit("tag-slow", items(provider, ["s0"]))
    assert not isinstance(raised.value, QuotaExceeded)
    await provider.aclose()
