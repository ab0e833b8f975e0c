"""Provider-safe custom ids for caller request ids.

A caller's ``request_id`` is any string of up to 256 characters; every provider wants a
``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$``, unique within its batch. An id that
already fits is used as it is; any other id becomes ``h-`` + the unpadded base32 of its
SHA-256 (54 characters). Plain ids never start with ``h-`` (such ids are digested too), so
the two forms cannot collide, even when a caller's id spells another id's digest. A clash
can then only come from the same request id appearing twice in one batch; the repeat gets
the digest of the id with a counter appended, checked against everything assigned so far.
The mapping is kept by the caller, so reversing it is a lookup, never a decode.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable

CUSTOM_ID_PATTERN = r"[a-zA-Z0-9_-]{1,64}"
CUSTOM_ID_MAX_LEN = 64
DIGEST_PREFIX = "h-"

_CUSTOM_ID_RE = re.compile(CUSTOM_ID_PATTERN)


def is_valid_custom_id(value: str) -> bool:
    """Whether every provider accepts ``value`` as a custom id as it is."""
    return _CUSTOM_ID_RE.fullmatch(value) is not None


def _digest(value: str) -> str:
    # surrogatepass: a lone surrogate is a legal Python str and must still map somewhere.
    raw = hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
    return DIGEST_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def custom_id_for(request_id: str) -> str:
    """The custom id a request id gets when nothing else in its batch competes for it."""
    if is_valid_custom_id(request_id) and not request_id.startswith(DIGEST_PREFIX):
        return request_id
    return _digest(request_id)


def assign_custom_ids(request_ids: Iterable[str]) -> dict[str, str]:
    """Map each request id to a distinct custom id.

    Returns:
        ``{custom_id: request_id}`` with one entry per input, in input order, so
        ``list(result)[i]`` is the custom id of ``request_ids[i]`` even for repeated ids.
    """
    assigned: dict[str, str] = {}
    for request_id in request_ids:
        custom_id = custom_id_for(request_id)
        attempt = 0
        while custom_id in assigned:
            attempt += 1
            custom_id = _digest(f"{request_id}\x00{attempt}")
        assigned[custom_id] = request_id
    return assigned
