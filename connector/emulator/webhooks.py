"""OpenAI batch webhooks, signed the Standard Webhooks way ``client.webhooks.unwrap`` checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from .state import Final

EVENT_TYPES = {
    Final.COMPLETED: "batch.completed",
    Final.FAILED: "batch.failed",
    Final.EXPIRED: "batch.expired",
    Final.CANCELLED: "batch.cancelled",
}


def event_body(event_id: str, final: Final, batch_id: str, created_at: int) -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": EVENT_TYPES[final],
            "created_at": created_at,
            "data": {"id": batch_id},
        }
    )


def signature(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256("id.timestamp.body")>``; a ``whsec_`` secret is base64 key material."""
    key = (
        base64.b64decode(secret.removeprefix("whsec_"))
        if secret.startswith("whsec_")
        else secret.encode()
    )
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secret: str | None, webhook_id: str, timestamp: int, body: str) -> dict[str, str]:
    out = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
    }
    if secret:
        out["webhook-signature"] = signature(secret, webhook_id, timestamp, body)
    return out
