"""The connector's Faust transport: what it refuses to commit."""

from __future__ import annotations

from types import SimpleNamespace

from connector.transport import Consumer


def test_the_consumer_never_acknowledges_a_message_no_stream_processed():
    skipped = SimpleNamespace(tracked=False, acked=False)
    assert Consumer.ack(SimpleNamespace(), skipped) is False and not skipped.acked
