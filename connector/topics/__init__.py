"""Topic definitions as code: ``topics/*.yaml`` → a plan → the broker.

Three layers, so the logic is tested without a broker:

- :mod:`~connector.topics.spec` (pure): :class:`TopicSpec`, parsed and validated from YAML
  by :func:`load_specs`;
- :mod:`~connector.topics.planning` (pure): :func:`plan` diffs the declarations against
  what a broker reported (:class:`ExistingTopic`) into topics to create, drift, and
  topics in sync;
- :mod:`~connector.topics.admin` (broker I/O): :func:`fetch_existing`, :func:`apply`,
  :func:`describe`, :func:`ensure_topics`, and the CLI conveniences
  :func:`apply_topics` / :func:`list_topics`.

Rendering lives with the rest of the CLI's output in :mod:`connector.render`.
"""

from connector.topics.admin import (
    admin_client,
    apply,
    apply_topics,
    describe,
    ensure_topics,
    fetch_existing,
    list_topics,
)
from connector.topics.planning import (
    STANDARD_CONFIGS,
    Drift,
    ExistingTopic,
    Plan,
    TopicRow,
    plan,
    plan_rows,
    topic_drift,
)
from connector.topics.spec import (
    ROLES,
    Role,
    TopicSpec,
    default_topics_dir,
    load_specs,
    parse_spec,
    replication_override,
)

__all__ = [
    "ROLES",
    "STANDARD_CONFIGS",
    "Drift",
    "ExistingTopic",
    "Plan",
    "Role",
    "TopicRow",
    "TopicSpec",
    "admin_client",
    "apply",
    "apply_topics",
    "default_topics_dir",
    "describe",
    "ensure_topics",
    "fetch_existing",
    "list_topics",
    "load_specs",
    "parse_spec",
    "plan",
    "plan_rows",
    "replication_override",
    "topic_drift",
]
