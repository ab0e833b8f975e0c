"""Topic admin I/O: read what the broker has, create what is missing, describe topics.

``apply`` only ever adds: it creates missing topics and, with an explicit
``increase_partitions=True``, raises partition counts. It never deletes a topic, never
shrinks one, and never rewrites configs — config and replication drift are reported for
an operator to decide, because changing them on a live topic is not a routine step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic, ResourceType

from connector.config import Settings
from connector.errors import TopicError
from connector.topics.planning import (
    STANDARD_CONFIGS,
    Drift,
    ExistingTopic,
    Plan,
    TopicRow,
    is_internal,
    plan,
)
from connector.topics.spec import TopicSpec, default_topics_dir, load_specs, replication_override

log = logging.getLogger(__name__)


def admin_client(settings: Settings) -> AdminClient:
    """A confluent-kafka admin client for the configured cluster (security passed through)."""
    return AdminClient(settings.kafka.confluent_config())


def _error_code(exc: BaseException) -> int | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].code()
    return None


def _metadata(admin: AdminClient, timeout: float) -> dict[str, Any]:
    try:
        return admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise TopicError(f"could not list topics: {exc}") from exc


def _existing_from_metadata(name: str, meta: Any) -> ExistingTopic | None:
    if meta.error is not None:
        return None
    replicas = [len(p.replicas) for p in meta.partitions.values()]
    return ExistingTopic(
        name=name,
        partitions=len(meta.partitions),
        replication_factor=min(replicas) if replicas else None,
    )


def _describe_configs(
    admin: AdminClient, names: Iterable[str], timeout: float
) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    if not resources:
        return {}
    try:
        futures = admin.describe_configs(resources, request_timeout=timeout)
        configs: dict[str, dict[str, str]] = {}
        for resource, future in futures.items():
            entries = future.result(timeout)
            configs[resource.name] = {
                key: entry.value for key, entry in entries.items() if entry.value is not None
            }
        return configs
    except KafkaException as exc:
        raise TopicError(f"could not describe topic configs: {exc}") from exc


def fetch_existing(
    admin: AdminClient, configs_for: Iterable[str] | None = None, *, timeout: float = 30.0
) -> dict[str, ExistingTopic]:
    """Every topic on the broker; configs are described for ``configs_for`` (None: all)."""
    topics: dict[str, ExistingTopic] = {}
    for name, meta in _metadata(admin, timeout).items():
        found = _existing_from_metadata(name, meta)
        if found is not None:
            topics[name] = found
    wanted = (
        [n for n in topics if not is_internal(n)]
        if configs_for is None
        else [n for n in configs_for if n in topics]
    )
    for name, configs in _describe_configs(admin, wanted, timeout).items():
        topics[name] = replace(topics[name], configs=configs)
    return topics


def _wait_visible(admin: AdminClient, names: Iterable[str], timeout: float) -> None:
    # Creation returns before every broker's metadata shows the topic; a second apply
    # right after must not see it as missing.
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        topics = _metadata(admin, timeout)
        pending = {n for n in pending if n not in topics or not topics[n].partitions}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicError(
                f"created topics not visible after {timeout}s: {', '.join(sorted(pending))}"
            )
        time.sleep(0.1)


def _create(admin: AdminClient, new_topics: list[NewTopic], timeout: float) -> list[str]:
    """Create topics; one that already exists (a concurrent creator) is not an error."""
    if not new_topics:
        return []
    try:
        futures = admin.create_topics(
            new_topics, operation_timeout=timeout, request_timeout=timeout
        )
    except KafkaException as exc:
        raise TopicError(f"could not create topics: {exc}") from exc
    created: list[str] = []
    failures: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if _error_code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                log.info("topic %s already exists", name)
            else:
                failures.append(f"{name}: {exc.args[0] if exc.args else exc}")
    if failures:
        raise TopicError("could not create topics: " + "; ".join(sorted(failures)))
    _wait_visible(admin, created, timeout)
    return sorted(created)


def _increase(admin: AdminClient, increases: Iterable[Drift], timeout: float) -> list[str]:
    requests = [NewPartitions(d.topic, int(d.declared)) for d in increases]
    if not requests:
        return []
    failures: list[str] = []
    increased: list[str] = []
    try:
        futures = admin.create_partitions(
            requests, operation_timeout=timeout, request_timeout=timeout
        )
        for name, future in futures.items():
            try:
                future.result(timeout)
                increased.append(name)
            except KafkaException as exc:
                failures.append(f"{name}: {exc.args[0] if exc.args else exc}")
    except KafkaException as exc:
        names = ", ".join(r.topic for r in requests)
        raise TopicError(f"could not increase partitions of {names}: {exc}") from exc
    if failures:
        raise TopicError("could not increase partitions: " + "; ".join(sorted(failures)))
    return sorted(increased)


def apply(
    plan: Plan,
    admin: AdminClient,
    *,
    dry_run: bool = False,
    increase_partitions: bool = False,
    timeout: float = 30.0,
) -> Plan:
    """Carry out ``plan``: create the missing topics, and raise partition counts if asked.

    Idempotent: a topic created meanwhile by someone else counts as done. Never deletes,
    never shrinks, never alters configs.

    Returns:
        ``plan`` itself on a dry run; otherwise a copy with ``applied``, ``created``
        (topics this call created) and ``increased`` set.
    """
    if dry_run:
        return plan
    new_topics = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=spec.replication_factor,
            config=dict(spec.configs),
        )
        for spec in plan.create
    ]
    created = _create(admin, new_topics, timeout)
    increased = _increase(admin, plan.partition_increases, timeout) if increase_partitions else []
    return replace(plan, applied=True, created=tuple(created), increased=tuple(increased))


def describe(
    admin: AdminClient, specs: Iterable[TopicSpec] = (), *, timeout: float = 30.0
) -> list[TopicRow]:
    """Existing non-internal topics with partitions, replication and their configs.

    A declared topic shows its declared config keys; any other topic shows
    :data:`STANDARD_CONFIGS`.
    """
    by_name = {spec.name: spec for spec in specs}
    rows: list[TopicRow] = []
    for name, topic in sorted(fetch_existing(admin, timeout=timeout).items()):
        if is_internal(name):
            continue
        spec = by_name.get(name)
        keys = sorted(spec.configs) if spec is not None and spec.configs else STANDARD_CONFIGS
        rows.append(
            TopicRow(
                name=name,
                partitions=topic.partitions,
                replication_factor=topic.replication_factor,
                configs={k: topic.configs[k] for k in keys if k in topic.configs},
                role=spec.role if spec is not None else None,
                declared=spec is not None,
            )
        )
    return rows


def ensure_topics(
    settings: Settings,
    names_with_partitions: Mapping[str, int],
    configs: Mapping[str, str] | None = None,
    *,
    replication_factor: int | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create any of these topics that are missing, all with the same ``configs``.

    For topics the app owns (Faust changelogs and repartition topics). Safe to call from
    several workers at once. An existing topic with a different partition count is
    logged, not changed.

    Returns:
        The names this call created.
    """
    for name, partitions in names_with_partitions.items():
        if partitions < 1:
            raise TopicError(f"{name}: partitions must be at least 1, got {partitions}")
    replication = replication_override(settings, replication_factor) or 1
    admin = admin_client(settings)
    existing = {
        name: found
        for name, meta in _metadata(admin, timeout).items()
        if (found := _existing_from_metadata(name, meta)) is not None
    }
    missing: list[NewTopic] = []
    for name, partitions in sorted(names_with_partitions.items()):
        found = existing.get(name)
        if found is None:
            missing.append(NewTopic(name, partitions, replication, config=dict(configs or {})))
        elif found.partitions != partitions:
            log.warning(
                "topic %s has %d partitions, expected %d", name, found.partitions, partitions
            )
    return _create(admin, missing, timeout)


def apply_topics(
    settings: Settings,
    directory: str | Path | None = None,
    dry_run: bool = False,
    *,
    increase_partitions: bool = False,
    replication_factor: int | None = None,
    timeout: float = 30.0,
) -> Plan:
    """``batchbridge topics apply``: load the YAML, plan against the broker, apply."""
    specs = load_specs(directory, settings, replication_factor=replication_factor)
    admin = admin_client(settings)
    existing = fetch_existing(admin, [spec.name for spec in specs], timeout=timeout)
    return apply(
        plan(specs, existing),
        admin,
        dry_run=dry_run,
        increase_partitions=increase_partitions,
        timeout=timeout,
    )


def list_topics(
    settings: Settings, directory: str | Path | None = None, *, timeout: float = 30.0
) -> list[TopicRow]:
    """``batchbridge topics list``. Works without a topics directory (nothing declared)."""
    if directory is None and not default_topics_dir(settings).is_dir():
        specs: list[TopicSpec] = []
    else:
        specs = load_specs(directory, settings)
    return describe(admin_client(settings), specs, timeout=timeout)
