"""The provider layer: one interface (``base``), three Batch API adapters, pure helpers.

``ids`` maps request ids to custom ids, ``split`` cuts requests into valid batches,
``outcomes`` normalises per-request results, ``registry`` builds adapters from settings.
"""

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

__all__ = [
    "BatchHandle",
    "BatchItem",
    "BatchState",
    "BatchStatus",
    "Outcome",
    "OutcomeKind",
    "Provider",
    "ProviderLimits",
    "Usage",
]
