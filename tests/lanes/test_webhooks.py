import base64
import json
import time

from connector.emulator.webhooks import headers as signed_headers
from connector.lanes.webhooks import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def delivery(event_type="batch.completed", batch_id="batch_1", webhook_id="wh_1", secret=SECRET):
    body = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": event_type,
            "created_at": int(time.time()),
            "data": {"id": batch_id},
        }
    )
    return body.encode(), signed_headers(secret, webhook_id, int(time.time()), body)


def receiver():
    poked = []

    def on_event(batch_id):
        poked.append(batch_id)
        return batch_id == "batch_1"

    return WebhookReceiver(SECRET, on_event), poked


def test_signed_batch_event_triggers_a_poll_once_per_webhook_id():
    r, poked = receiver()
    body, headers = delivery()
    assert r.handle(body, headers) == (200, "polling")
    assert r.handle(body, headers) == (200, "duplicate")  # redelivery
    assert poked == ["batch_1"]


def test_forged_or_unsigned_deliveries_are_rejected():
    r, poked = receiver()
    body, headers = delivery(
        secret="whsec_" + base64.b64encode(b"another secret entirely!!").decode()
    )
    assert r.handle(body, headers)[0] == 400
    body, headers = delivery()
    headers.pop("webhook-signature")
    assert r.handle(body, headers)[0] == 400
    body, headers = delivery()
    assert r.handle(body + b" ", headers)[0] == 400  # body changed after signing
    assert poked == []


def test_unknown_batches_and_other_events_are_acknowledged_without_effect():
    r, poked = receiver()
    assert r.handle(*delivery(batch_id="batch_other", webhook_id="wh_2")) == (200, "unknown batch")
    assert r.handle(*delivery(event_type="response.completed", webhook_id="wh_3")) == (
        200,
        "ignored",
    )
    assert poked == ["batch_other"]
