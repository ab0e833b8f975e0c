"""In-memory stand-ins for the lane's edges: tables, outputs, a provider, a clock."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

from connector.providers.base import (
    BatchHandle,
    BatchItem,
    BatchState,
    BatchStatus,
    Outcome,
    OutcomeKind,
    Provider,
    ProviderLimits,
    Usage,
)
from connector.providers.exceptions import BatchRejected, ProviderUnavailable


class Clock:
    def __init__(self, start: int = 1_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


def delivered() -> asyncio.Future[None]:
    """A delivery the fake broker acknowledged at once."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class FakeOutputs:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.retries: list[dict[str, Any]] = []
        self.escalated: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def result(
        self, record: dict[str, Any], reply_topic: str | None = None
    ) -> asyncio.Future[None]:
        self.results.append(record)
        return delivered()

    async def failure(self, record: dict[str, Any]) -> asyncio.Future[None]:
        self.failures.append(record)
        return delivered()

    async def retry(self, request: dict[str, Any]) -> asyncio.Future[None]:
        self.retries.append(request)
        return delivered()

    async def escalate(self, request: dict[str, Any]) -> asyncio.Future[None]:
        self.escalated.append(request)
        return delivered()

    async def batch_event(self, record: dict[str, Any]) -> asyncio.Future[None]:
        self.events.append(record)
        return delivered()


class FakeProvider(Provider):
    """A provider whose batches end when told; outcomes chosen per custom id."""

    name = "openai"

    def __init__(self, max_requests: int = 1000) -> None:
        self.limits = ProviderLimits(max_requests, 10**9, True, 64, r"[a-zA-Z0-9_-]{1,64}")
        self.batches: dict[str, dict[str, Any]] = {}
        self.submits = 0
        self.fail_next_submits = 0
        self.lose_submit_response = False
        self.refuse_submits = False  # a 4xx on create, as for an unknown model
        self.kinds: dict[str, OutcomeKind] = {}  # by request body "text"
        self.final_state = BatchState.ENDED
        self.final_error: str | None = None  # batch-level error code of FAILED batches
        self.omit: set[str] = set()  # custom ids with no result line
        self._ids = itertools.count(1)

    async def submit(self, tag: str, items: Sequence[BatchItem]) -> BatchHandle:
        if self.fail_next_submits:
            self.fail_next_submits -= 1
            raise ProviderUnavailable("busy", provider=self.name, status=503)
        if self.refuse_submits:
            raise BatchRejected("model not found", provider=self.name, status=404, code="NOT_FOUND")
        self.submits += 1
        batch_id = f"batch_{next(self._ids)}"
        self.batches[batch_id] = {"tag": tag, "items": list(items), "state": BatchState.RUNNING}
        if self.lose_submit_response:
            self.lose_submit_response = False
            raise ProviderUnavailable(
                "connection reset after the batch was created", provider=self.name
            )
        return BatchHandle(self.name, batch_id, tag)

    def finish_all(self) -> None:
        for batch in self.batches.values():
            batch["state"] = self.final_state

    async def poll(self, handle: BatchHandle) -> BatchStatus:
        state = self.batches[handle.batch_id]["state"]
        error = self.final_error if state is BatchState.FAILED else None
        return BatchStatus(
            state,
            state.value,
            total=len(self.batches[handle.batch_id]["items"]),
            error_code=error,
            quota_exceeded=error == "token_limit_exceeded",
        )

    async def results(self, handle: BatchHandle) -> AsyncIterator[Outcome]:
        for item in reversed(self.batches[handle.batch_id]["items"]):  # order is never input order
            if item.custom_id in self.omit:
                continue
            kind = self.kinds.get(item.body.get("text"), OutcomeKind.SUCCEEDED)
            yield Outcome(
                item.custom_id,
                kind,
                body={"echo": item.body},
                usage=Usage(100, 20),
                error_code=None if kind is OutcomeKind.SUCCEEDED else "code_" + kind.value,
            )

    async def cancel(self, handle: BatchHandle) -> None:
        self.batches[handle.batch_id]["state"] = BatchState.CANCELLED

    async def find(self, tag, *, created_after=None, expected_count=None, custom_ids=None):
        for batch_id, batch in self.batches.items():
            if batch["tag"] == tag:
                return BatchHandle(self.name, batch_id, tag)
        return None

    async def complete(self, item: BatchItem) -> Outcome:
        return Outcome(item.custom_id, OutcomeKind.SUCCEEDED, body={}, usage=Usage(1, 1))
