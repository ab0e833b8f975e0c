"""Split requests into batches that every provider limit and the caller's caps accept.

Pure: no I/O. Requests are grouped by endpoint (a provider batch serves one endpoint)
and, where the provider demands it, by model; each group is packed greedily in order.
Provider limits are hard: a request too large for any batch is rejected, never dropped.
The caller's caps decide when a batch is full; a single request above the caller's byte
cap (but within the provider's) still goes, alone in its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from connector.providers.base import ProviderLimits
from connector.providers.limits import ENVELOPE_BYTES


class SplitRequest(Protocol):
    """What the splitter needs to know of a request."""

    @property
    def model(self) -> str:
        """The model the request is for."""
        ...

    @property
    def endpoint(self) -> str:
        """The provider endpoint the request is for."""
        ...

    @property
    def size_bytes(self) -> int:
        """Serialised size of the request body."""
        ...


R = TypeVar("R", bound=SplitRequest)


@dataclass(frozen=True, slots=True)
class Rejection(Generic[R]):
    """A request no batch of this provider can hold, and why."""

    request: R
    reason: str


@dataclass(frozen=True, slots=True)
class SplitResult(Generic[R]):
    """Every request, either in exactly one batch or rejected."""

    batches: list[list[R]] = field(default_factory=list)
    rejected: list[Rejection[R]] = field(default_factory=list)


def request_bytes(request: SplitRequest) -> int:
    """Bytes a request takes in a batch input, envelope included."""
    return request.size_bytes + ENVELOPE_BYTES


def split_batches(
    requests: Sequence[R],
    limits: ProviderLimits,
    *,
    max_requests: int | None = None,
    max_bytes: int | None = None,
) -> SplitResult[R]:
    """Assign every request to exactly one batch or to ``rejected``.

    Arguments:
        requests: in arrival order; order is kept within each batch.
        limits: the provider's limits.
        max_requests: the caller's cap per batch, applied on top of the provider's.
        max_bytes: the caller's cap per batch, applied on top of the provider's.
    """
    request_cap = min(limits.max_requests, max_requests or limits.max_requests)
    byte_cap = min(limits.max_bytes, max_bytes or limits.max_bytes)
    result: SplitResult[R] = SplitResult()
    groups: dict[tuple[str, str], list[R]] = {}
    for request in requests:
        size = request_bytes(request)
        if size > limits.max_bytes:
            result.rejected.append(
                Rejection(
                    request,
                    f"request takes {size} bytes in a batch; the provider accepts at most "
                    f"{limits.max_bytes} bytes per batch",
                )
            )
            continue
        model = request.model if limits.one_model_per_batch else ""
        groups.setdefault((request.endpoint, model), []).append(request)

    for group in groups.values():
        batch: list[R] = []
        batch_bytes = 0
        for request in group:
            size = request_bytes(request)
            if batch and (len(batch) >= request_cap or batch_bytes + size > byte_cap):
                result.batches.append(batch)
                batch, batch_bytes = [], 0
            batch.append(request)
            batch_bytes += size
        if batch:
            result.batches.append(batch)
    return result
