"""Errors raised by the provider adapters.

Every SDK exception that escapes an adapter call (other than ``complete``, which turns
per-request failures into outcomes) is re-raised as one of these, ``from`` the original.
"""

from __future__ import annotations

from connector.errors import BatchBridgeError


class ProviderError(BatchBridgeError):
    """A provider call failed; ``status`` and ``code`` are the provider's own, when known."""

    retry_after: float | None = None  # seconds; only ProviderUnavailable carries a hint

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status
        self.code = code
        self.message = message


class ProviderUnavailable(ProviderError):
    """Rate limited, overloaded, unreachable or failing server-side: try again later.

    ``retry_after`` is the provider's hint in seconds, when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, code=code)
        self.retry_after = retry_after


class QuotaExceeded(ProviderUnavailable):
    """The provider refused to create a batch for a quota (enqueued tokens, spend limit).

    Not the requests' fault, and it clears as in-flight batches end or the account is
    topped up: wait ``retry_after`` or the configured quota backoff, then go through
    ``find()`` as for any ``ProviderUnavailable`` before creating again.
    """


class ReconcilePending(ProviderUnavailable):
    """``find`` cannot tell yet whether the batch exists: a candidate has not ended.

    Anthropic batches carry no tag; a candidate is proven to be the batch only by its
    results, which are readable once it has ended. Call ``find`` again on the schedule a
    batch in flight is polled on (it carries no ``retry_after``); never submit while this
    is raised.
    """


class BatchRejected(ProviderError):
    """The provider refused the batch or the request as invalid; resubmitting cannot help."""


class BatchNotFound(ProviderError):
    """The provider does not know the batch (or its result file)."""


class ProviderAuthError(ProviderError):
    """The credentials were refused; an operator has to fix the settings."""


# Statuses that say "not now" rather than "no": a request timeout, a conflict, "too early",
# a rate limit, Anthropic's overload. A create answered with one may still have made a batch
# (a 408 or 409 can come from a proxy after the provider acted); only other 4xx prove not.
_TRY_LATER = frozenset({408, 409, 425, 429, 529})


def error_for_status(
    provider: str,
    message: str,
    *,
    status: int | None,
    code: str | None = None,
    retry_after: float | None = None,
    creating: bool = False,
    quota: bool = False,
) -> ProviderError:
    """The project error for a failed provider call; ``status`` None means no response.

    ``creating`` marks a call that creates something billable (a batch, or the upload that
    feeds it): there a 404 is the provider refusing the request (Gemini's unknown model),
    not a lost batch, and only a definite refusal may become ``BatchRejected``. ``quota``
    is the adapter's verdict that the provider's code names a quota (its codes are its own).
    """
    if quota:
        return QuotaExceeded(
            message, provider=provider, status=status, code=code, retry_after=retry_after
        )
    if status is None or status in _TRY_LATER or status >= 500:
        return ProviderUnavailable(
            message, provider=provider, status=status, code=code, retry_after=retry_after
        )
    if status in (401, 403):
        return ProviderAuthError(message, provider=provider, status=status, code=code)
    if status == 404 and not creating:
        return BatchNotFound(message, provider=provider, status=status, code=code)
    return BatchRejected(message, provider=provider, status=status, code=code)
