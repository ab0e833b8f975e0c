"""The plan: declarations diffed against what a broker reported. Pure: no broker, no clock.

:func:`plan` sorts the declared topics into topics to create, drift, and topics in sync;
:func:`plan_rows` turns a plan into ``(topic, action, detail)`` lines for any renderer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from connector.errors import TopicError
from connector.topics.spec import TopicSpec, policy_set

# The configs `describe` shows for topics no YAML file declares.
STANDARD_CONFIGS = ("cleanup.policy", "retention.ms", "max.message.bytes")


@dataclass(frozen=True)
class ExistingTopic:
    """A topic as the broker reports it. ``configs`` holds only what was described."""

    name: str
    partitions: int
    replication_factor: int | None = None
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drift:
    """One way an existing topic differs from its declaration."""

    topic: str
    kind: Literal["partitions", "replication_factor", "config"]
    declared: int | str
    actual: int | str | None
    key: str | None = None  # the config name, for kind == "config"

    @property
    def can_increase(self) -> bool:
        """Partitions below the declared count: the one drift ``apply`` can fix."""
        return (
            self.kind == "partitions"
            and isinstance(self.actual, int)
            and isinstance(self.declared, int)
            and self.actual < self.declared
        )

    def describe(self) -> str:
        """One line for an operator: what was declared and what the broker has."""
        if self.kind == "config":
            actual = "not set" if self.actual is None else repr(self.actual)
            return f"{self.key}: declared {self.declared!r}, actual {actual}"
        label = "partitions" if self.kind == "partitions" else "replication factor"
        text = f"{label}: declared {self.declared}, actual {self.actual}"
        if self.kind == "partitions" and not self.can_increase:
            text += " (partitions are never removed)"
        return text


@dataclass(frozen=True)
class Plan:
    """What applying the declarations would do, and after ``apply``, what it did."""

    create: tuple[TopicSpec, ...] = ()
    drift: tuple[Drift, ...] = ()
    in_sync: tuple[str, ...] = ()
    undeclared: tuple[str, ...] = ()  # existing topics no file declares: left alone
    applied: bool = False
    created: tuple[str, ...] = ()
    increased: tuple[str, ...] = ()

    @property
    def no_changes(self) -> bool:
        return not self.create and not self.drift

    @property
    def partition_increases(self) -> tuple[Drift, ...]:
        return tuple(d for d in self.drift if d.can_increase)

    def drift_for(self, topic: str) -> tuple[Drift, ...]:
        return tuple(d for d in self.drift if d.topic == topic)


@dataclass(frozen=True)
class TopicRow:
    """One existing topic for ``topics list``."""

    name: str
    partitions: int
    replication_factor: int | None
    configs: Mapping[str, str]
    role: str | None = None
    declared: bool = False


def is_internal(name: str) -> bool:
    """The broker's own topics (``__consumer_offsets`` …): never planned, never listed."""
    return name.startswith("__")


def _same_config(key: str, declared: str, actual: str | None) -> bool:
    if actual is None:
        return False
    if key == "cleanup.policy":
        return policy_set(declared) == policy_set(actual)
    return declared.strip() == actual.strip()


def topic_drift(spec: TopicSpec, existing: ExistingTopic) -> list[Drift]:
    """Every difference between one declaration and the topic the broker has."""
    drift: list[Drift] = []
    if existing.partitions != spec.partitions:
        drift.append(Drift(spec.name, "partitions", spec.partitions, existing.partitions))
    if (
        existing.replication_factor is not None
        and existing.replication_factor != spec.replication_factor
    ):
        drift.append(
            Drift(
                spec.name,
                "replication_factor",
                spec.replication_factor,
                existing.replication_factor,
            )
        )
    for key, declared in sorted(spec.configs.items()):
        actual = existing.configs.get(key)
        if not _same_config(key, declared, actual):
            drift.append(Drift(spec.name, "config", declared, actual, key=key))
    return drift


def plan(
    specs: Iterable[TopicSpec],
    existing: Mapping[str, ExistingTopic] | Iterable[ExistingTopic],
) -> Plan:
    """Diff declarations against the broker's topics."""
    specs = list(specs)
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TopicError(f"topics declared more than once: {', '.join(duplicates)}")
    current = dict(existing) if isinstance(existing, Mapping) else {t.name: t for t in existing}
    create: list[TopicSpec] = []
    drift: list[Drift] = []
    in_sync: list[str] = []
    for spec in sorted(specs, key=lambda s: s.name):
        found = current.get(spec.name)
        if found is None:
            create.append(spec)
            continue
        differences = topic_drift(spec, found)
        if differences:
            drift.extend(differences)
        else:
            in_sync.append(spec.name)
    declared = set(names)
    undeclared = sorted(name for name in current if name not in declared and not is_internal(name))
    return Plan(tuple(create), tuple(drift), tuple(in_sync), tuple(undeclared))


def plan_rows(plan: Plan) -> list[tuple[str, str, str]]:
    """``(topic, action, detail)`` per line, declared topics only, sorted by topic."""
    rows: list[tuple[str, str, str]] = []
    for spec in plan.create:
        if not plan.applied:
            label = "create"
        else:
            # Not created by this call: a concurrent creator won the race.
            label = "created" if spec.name in plan.created else "existed"
        detail = f"{spec.partitions} partitions, rf {spec.replication_factor}"
        if spec.configs:
            detail += ", " + ", ".join(f"{k}={v}" for k, v in sorted(spec.configs.items()))
        rows.append((spec.name, label, detail))
    for drift in plan.drift:
        if drift.can_increase:
            label = "increased" if drift.topic in plan.increased else "drift (increasable)"
        else:
            label = "drift"
        rows.append((drift.topic, label, drift.describe()))
    rows.extend((name, "in sync", "") for name in plan.in_sync)
    return sorted(rows, key=lambda row: row[0])
