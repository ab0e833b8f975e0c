"""Topic definitions as code: ``topics/*.yaml`` → a plan → the broker.

Three layers, so the logic is tested without a broker:

- declarations (pure): :class:`TopicSpec`, parsed and validated from YAML by
  :func:`load_specs`;
- planning (pure): :func:`plan` diffs the declarations against what a broker reported
  (:class:`ExistingTopic`) into topics to create, drift, and topics in sync;
- broker I/O: :func:`fetch_existing`, :func:`apply`, :func:`describe`,
  :func:`ensure_topics`, and the CLI conveniences :func:`apply_topics` / :func:`list_topics`.

``apply`` only ever adds: it creates missing topics and, with an explicit
``increase_partitions=True``, raises partition counts. It never deletes a topic, never
shrinks one, and never rewrites configs — config and replication drift are reported for
an operator to decide, because changing them on a live topic is not a routine step.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic, ResourceType
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from pydantic import ValidationError as PydanticValidationError

from connector.config import Settings
from connector.errors import TopicError

if TYPE_CHECKING:
    from rich.table import Table

log = logging.getLogger(__name__)

ENV_TOPICS_DIR = "BATCHBRIDGE_TOPICS_DIR"
ENV_REPLICATION = "BATCHBRIDGE_TOPICS_REPLICATION"

Role = Literal["deferred", "realtime", "results", "deadletter", "batches"]
ROLES: tuple[str, ...] = get_args(Role)

# The configs `describe` shows for topics no YAML file declares.
STANDARD_CONFIGS = ("cleanup.policy", "retention.ms", "max.message.bytes")

_CONFIG_KEY = re.compile(r"^[a-z][a-z0-9]*([.-][a-z0-9]+)*$")
_CLEANUP_POLICIES = {
    frozenset({"delete"}),
    frozenset({"compact"}),
    frozenset({"compact", "delete"}),
}


# --------------------------------------------------------------------------- declarations


class TopicSpec(BaseModel):
    """One declared topic. ``role`` ties it to a field of ``Settings.topics``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: StrictInt = Field(ge=1)
    replication_factor: StrictInt = Field(1, ge=1)
    configs: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    role: Role | None = None

    @field_validator("configs", mode="before")
    @classmethod
    def _configs_as_strings(cls, value: Any) -> Any:
        # Kafka configs are strings on the wire; YAML gives ints and bools.
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            return value
        configs: dict[str, str] = {}
        for key, raw in value.items():
            if not isinstance(key, str) or not _CONFIG_KEY.match(key):
                raise ValueError(f"config key {key!r} is not a Kafka config name")
            if isinstance(raw, bool):
                configs[key] = "true" if raw else "false"
            elif isinstance(raw, int | float | str):
                configs[key] = str(raw)
            else:
                raise ValueError(f"config {key!r} must be a scalar, not {type(raw).__name__}")
        policy = configs.get("cleanup.policy")
        if policy is not None and _policy_set(policy) not in _CLEANUP_POLICIES:
            raise ValueError(f"cleanup.policy {policy!r} must be delete, compact or compact,delete")
        return configs


def _policy_set(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def parse_spec(data: Any, settings: Settings, source: str = "<spec>") -> TopicSpec:
    """Validate one YAML document into a spec; the name of a ``role`` comes from settings.

    Arguments:
        data: the parsed YAML document.
        settings: supplies ``settings.topics.<role>`` so a deployment that renames its
            topics through the environment applies the renamed topics.
        source: where ``data`` came from, for error messages.
    """
    if not isinstance(data, Mapping):
        raise TopicError(f"{source}: expected a mapping of topic fields, got {type(data).__name__}")
    fields = dict(data)
    role = fields.get("role")
    if role is not None:
        if role not in ROLES:
            raise TopicError(f"{source}: role {role!r} is not one of {', '.join(ROLES)}")
        fields["name"] = getattr(settings.topics, role)
    elif "name" not in fields:
        raise TopicError(f"{source}: needs a 'name' or a 'role'")
    try:
        return TopicSpec.model_validate(fields)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'topic'}: {err['msg']}"
            for err in exc.errors()
        )
        raise TopicError(f"{source}: {problems}") from exc


def default_topics_dir() -> Path:
    """``$BATCHBRIDGE_TOPICS_DIR``, else the repository's ``topics/`` beside the package."""
    explicit = os.environ.get(ENV_TOPICS_DIR)
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parent.parent / "topics"


def replication_override(value: int | None = None) -> int | None:
    """An explicit replication factor, else ``$BATCHBRIDGE_TOPICS_REPLICATION``, else None."""
    if value is None:
        raw = os.environ.get(ENV_REPLICATION, "").strip()
        if not raw:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise TopicError(f"{ENV_REPLICATION}={raw!r} is not an integer") from None
    if value < 1:
        raise TopicError(f"replication factor must be at least 1, got {value}")
    return value


def load_specs(
    directory: str | Path | None = None,
    settings: Settings | None = None,
    *,
    replication_factor: int | None = None,
) -> list[TopicSpec]:
    """Read and validate every ``*.yaml`` / ``*.yml`` file of ``directory``.

    Arguments:
        directory: the topics directory; None means :func:`default_topics_dir`.
        settings: resolves ``role`` to a topic name; None means ``Settings()``.
        replication_factor: overrides every file's value; None falls back to
            ``$BATCHBRIDGE_TOPICS_REPLICATION``, then to the files.

    Returns:
        The specs sorted by name.

    Raises:
        TopicError: the directory is missing or empty, a file is not valid YAML, a
            field is missing, unknown or out of range, or two files declare one topic.
    """
    path = Path(directory) if directory is not None else default_topics_dir()
    if not path.is_dir():
        raise TopicError(f"topics directory {path} does not exist (set {ENV_TOPICS_DIR})")
    files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    if not files:
        raise TopicError(f"no topic definitions (*.yaml) in {path}")
    settings = settings if settings is not None else Settings()
    replication = replication_override(replication_factor)
    specs: list[TopicSpec] = []
    seen: dict[str, Path] = {}
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise TopicError(f"{file}: not valid YAML: {exc}") from exc
        spec = parse_spec(data, settings, source=str(file))
        if spec.name in seen:
            raise TopicError(
                f"{file}: topic {spec.name!r} is already declared in {seen[spec.name]}"
            )
        seen[spec.name] = file
        if replication is not None:
            spec = spec.model_copy(update={"replication_factor": replication})
        specs.append(spec)
    return sorted(specs, key=lambda spec: spec.name)


# --------------------------------------------------------------------------- planning


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
    """What applying the declarations would do, and after :func:`apply`, what it did."""

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


def _same_config(key: str, declared: str, actual: str | None) -> bool:
    if actual is None:
        return False
    if key == "cleanup.policy":
        return _policy_set(declared) == _policy_set(actual)
    return declared.strip() == actual.strip()


def topic_drift(spec: TopicSpec, existing: ExistingTopic) -> list[Drift]:
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
    """Diff declarations against the broker's topics. Pure: no broker, no clock."""
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
    undeclared = sorted(name for name in current if name not in declared and not _internal(name))
    return Plan(tuple(create), tuple(drift), tuple(in_sync), tuple(undeclared))


def _internal(name: str) -> bool:
    return name.startswith("__")


# --------------------------------------------------------------------------- reports


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


def render_plan(plan: Plan) -> Table:
    from rich.table import Table

    title = "Topics: applied" if plan.applied else "Topics: plan"
    table = Table(title=title)
    table.add_column("Topic", style="bold")
    table.add_column("Action")
    table.add_column("Detail")
    styles = {"create": "green", "created": "green", "in sync": "dim"}
    for topic, action, detail in plan_rows(plan):
        style = styles.get(action, "yellow" if action.startswith("drift") else None)
        table.add_row(topic, action, detail, style=style)
    notes = []
    if plan.no_changes:
        notes.append("no changes")
    if plan.undeclared:
        notes.append(f"{len(plan.undeclared)} undeclared topic(s) left untouched")
    if notes:
        table.caption = "; ".join(notes)
    return table


@dataclass(frozen=True)
class TopicRow:
    """One existing topic for ``topics list``."""

    name: str
    partitions: int
    replication_factor: int | None
    configs: Mapping[str, str]
    role: str | None = None
    declared: bool = False


def render_topics(rows: Iterable[TopicRow]) -> Table:
    from rich.table import Table

    table = Table(title="Topics")
    for column in ("Topic", "Role", "Partitions", "RF", "Configs"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.name,
            row.role or ("declared" if row.declared else "-"),
            str(row.partitions),
            "?" if row.replication_factor is None else str(row.replication_factor),
            ", ".join(f"{k}={v}" for k, v in sorted(row.configs.items())),
        )
    return table


# --------------------------------------------------------------------------- broker I/O


def admin_client(settings: Settings) -> AdminClient:
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
        [n for n in topics if not _internal(n)]
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
        if _internal(name):
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
    replication = replication_override(replication_factor) or 1
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
    if directory is None and not default_topics_dir().is_dir():
        specs: list[TopicSpec] = []
    else:
        specs = load_specs(directory, settings)
    return describe(admin_client(settings), specs, timeout=timeout)
