"""Which project error a provider's HTTP answer becomes."""

from __future__ import annotations

import pytest

from connector.providers.exceptions import (
    BatchNotFound,
    BatchRejected,
    ProviderAuthError,
    ProviderError,
    ProviderUnavailable,
    error_for_status,
)


@pytest.mark.parametrize(
    ("status", "creating", "expected"),
    [
        (None, False, ProviderUnavailable),
        (None, True, ProviderUnavailable),
        *[
            (s, c, ProviderUnavailable)
            for s in (408, 409, 425, 429, 500, 503, 529)
            for c in (False, True)
        ],
        (400, True, BatchRejected),
        (413, True, BatchRejected),
        (422, True, BatchRejected),
        (401, True, ProviderAuthError),
        (403, False, ProviderAuthError),
        # A 404 on create is the provider refusing it (Gemini: unknown model); elsewhere the
        # batch or file is gone.
        (404, True, BatchRejected),
        (404, False, BatchNotFound),
    ],
)
def test_error_for_status(
    status: int | None, creating: bool, expected: type[ProviderError]
) -> None:
    error = error_for_status(
        "p", "msg", status=status, code="c", retry_after=1.0, creating=creating
    )
    assert type(error) is expected
    assert (error.provider, error.status, error.code, error.message) == ("p", status, "c", "msg")
