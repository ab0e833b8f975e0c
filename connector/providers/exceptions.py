"""Errors raised by the provider adapters.

Every SDK exception that escapes an adapter call (other than ``complete``, which turns
per-request failures into outcomes) is re-raised as one of these, ``from`` the original.
"""

from __future__ import annotations

from connector.errors import BatchBridgeError


class ProviderError(BatchBridgeError):
    """A provider call failed; ``status`` and ``code`` are the provider's own, when known."""

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


class BatchRejected(ProviderError):
    """The provider refused the batch or the request as invalid; resubmitting cannot help."""


class BatchNotFound(ProviderError):
    """The provider does not know the batch (or its result file)."""


class ProviderAuthError(ProviderError):
    """The credentials were refused; an operator has to fix the settings."""


def error_for_status(
    provider: str,
    message: str,
    *,
    status: int | None,
    code: str | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The project error for a failed provider call; ``status`` None means no response."""
    if status is None or status in (408, 425, 429, 529) or status >= 500:
        return ProviderUnavailable(
            message, provider=provider, status=status, code=code, retry_after=retry_after
        )
    if status in (401, 403):
        return ProviderAuthError(message, provider=provider, status=status, code=code)
    if status == 404:
        return BatchNotFound(message, provider=provider, status=status, code=code)
    return BatchRejected(message, provider=provider, status=status, code=code)
