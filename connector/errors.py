"""One exception hierarchy for the whole connector.

Every error the connector raises derives from :class:`BatchBridgeError`; errors from
foreign libraries (SDKs, Kafka clients) are re-raised as one of these ``from`` the original.
"""

from __future__ import annotations


class BatchBridgeError(Exception):
    """Root of every error raised by kafka-batch-bridge."""


class ConfigError(BatchBridgeError):
    """Settings are missing or inconsistent."""


class BrokerError(BatchBridgeError):
    """The embedded broker could not be started or reached."""


class SchemaError(BatchBridgeError):
    """A schema file is missing or invalid."""


class DecodeError(BatchBridgeError):
    """Bytes could not be decoded into a record.

    Carries the raw bytes and the reason so the record can be dead-lettered as it came.
    """

    def __init__(self, reason: str, raw: bytes | None, *, schema: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw
        self.schema = schema


class EncodeError(BatchBridgeError):
    """A record does not fit its schema and cannot be written."""


class ValidationError(BatchBridgeError):
    """A request is well-formed on the wire but not acceptable (bad field values)."""


class TopicError(BatchBridgeError):
    """Topic definitions are invalid or could not be applied."""
