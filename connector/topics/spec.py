"""Topic declarations: ``topics/*.yaml`` parsed and validated into :class:`TopicSpec`.

Pure apart from reading the YAML files: no broker, no environment (the directory and the
replication override come from :class:`~connector.config.Settings`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from pydantic import ValidationError as PydanticValidationError

from connector.config import Settings
from connector.errors import TopicError
from connector.shipped import shipped_dir

Role = Literal["deferred", "realtime", "results", "deadletter", "batches", "replays"]
ROLES: tuple[str, ...] = get_args(Role)

_CONFIG_KEY = re.compile(r"^[a-z][a-z0-9]*([.-][a-z0-9]+)*$")
_CLEANUP_POLICIES = {
    frozenset({"delete"}),
    frozenset({"compact"}),
    frozenset({"compact", "delete"}),
}


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
        if policy is not None and policy_set(policy) not in _CLEANUP_POLICIES:
            raise ValueError(f"cleanup.policy {policy!r} must be delete, compact or compact,delete")
        return configs


def policy_set(value: str) -> frozenset[str]:
    """A ``cleanup.policy`` value as a set: ``compact,delete`` equals ``delete, compact``."""
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


def default_topics_dir(settings: Settings) -> Path:
    """``settings.topics_dir`` if set, else the declarations shipped with the connector."""
    return Path(settings.topics_dir) if settings.topics_dir else shipped_dir("topics")


def replication_override(settings: Settings, value: int | None = None) -> int | None:
    """An explicit replication factor, else ``settings.topics_replication``, else None."""
    if value is None:
        return settings.topics_replication
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
            ``settings.topics_replication``, then to the files.

    Returns:
        The specs sorted by name.

    Raises:
        TopicError: the directory is missing or empty, a file is not valid YAML, a
            field is missing, unknown or out of range, or two files declare one topic.
    """
    settings = settings if settings is not None else Settings()
    path = Path(directory) if directory is not None else default_topics_dir(settings)
    if not path.is_dir():
        raise TopicError(f"topics directory {path} does not exist (set BATCHBRIDGE_TOPICS_DIR)")
    files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    if not files:
        raise TopicError(f"no topic definitions (*.yaml) in {path}")
    replication = replication_override(settings, replication_factor)
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
