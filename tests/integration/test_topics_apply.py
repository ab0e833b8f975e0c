"""``apply`` against a real broker. Every test names its topics with ``unique_name``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from connector.config import KafkaSettings, Settings, TopicNames
from connector.errors import TopicError
from connector.topics import (
    Plan,
    TopicSpec,
    apply,
    apply_topics,
    describe,
    ensure_topics,
    fetch_existing,
    list_topics,
    plan,
)

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "topics"
TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _no_topic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHBRIDGE_TOPICS_REPLICATION", raising=False)
    monkeypatch.delenv("BATCHBRIDGE_TOPICS_DIR", raising=False)


@pytest.fixture
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def settings(kafka_bootstrap: str, unique_name: str) -> Settings:
    topics = TopicNames(
        **{role: f"{name}.{unique_name}" for role, name in TopicNames().model_dump().items()}
    )
    return Settings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap), topics=topics)


def specs_for(unique_name: str) -> list[TopicSpec]:
    return [
        TopicSpec(
            name=f"orders.{unique_name}",
            partitions=3,
            configs={"cleanup.policy": "delete", "retention.ms": "3600000"},
        ),
        TopicSpec(
            name=f"ledger.{unique_name}",
            partitions=2,
            configs={"cleanup.policy": "compact,delete", "max.message.bytes": "2097152"},
        ),
    ]


def create_raw(admin: AdminClient, name: str, partitions: int, config: dict[str, str]) -> None:
    for future in admin.create_topics([NewTopic(name, partitions, 1, config=config)]).values():
        future.result(TIMEOUT)


def current_plan(admin: AdminClient, specs: list[TopicSpec]) -> Plan:
    return plan(specs, fetch_existing(admin, [s.name for s in specs], timeout=TIMEOUT))


def test_apply_creates_declared_topics_with_their_configs(
    admin: AdminClient, unique_name: str
) -> None:
    specs = specs_for(unique_name)
    planned = current_plan(admin, specs)
    assert sorted(s.name for s in planned.create) == sorted(s.name for s in specs)

    done = apply(planned, admin, timeout=TIMEOUT)

    assert done.applied
    assert sorted(done.created) == sorted(s.name for s in specs)
    found = fetch_existing(admin, [s.name for s in specs], timeout=TIMEOUT)
    for s in specs:
        assert found[s.name].partitions == s.partitions
        for key, value in s.configs.items():
            assert found[s.name].configs[key] == value


def test_second_apply_reports_no_changes(admin: AdminClient, unique_name: str) -> None:
    specs = specs_for(unique_name)
    apply(current_plan(admin, specs), admin, timeout=TIMEOUT)

    again = current_plan(admin, specs)

    assert again.no_changes
    assert sorted(again.in_sync) == sorted(s.name for s in specs)
    assert apply(again, admin, timeout=TIMEOUT).created == ()


def test_applying_a_stale_plan_twice_is_harmless(admin: AdminClient, unique_name: str) -> None:
    planned = current_plan(admin, specs_for(unique_name))
    apply(planned, admin, timeout=TIMEOUT)

    repeat = apply(planned, admin, timeout=TIMEOUT)

    assert repeat.created == ()
    assert current_plan(admin, specs_for(unique_name)).no_changes


def test_drift_fewer_partitions_and_different_config(admin: AdminClient, unique_name: str) -> None:
    name = f"drifted.{unique_name}"
    create_raw(admin, name, 2, {"cleanup.policy": "delete", "retention.ms": "1000"})
    declared = TopicSpec(
        name=name, partitions=4, configs={"cleanup.policy": "delete", "retention.ms": "86400000"}
    )

    planned = current_plan(admin, [declared])

    assert planned.create == ()
    assert [(d.kind, d.key, d.declared, d.actual) for d in planned.drift] == [
        ("partitions", None, 4, 2),
        ("config", "retention.ms", "86400000", "1000"),
    ]
    done = apply(planned, admin, timeout=TIMEOUT)
    assert done.increased == ()
    after = fetch_existing(admin, [name], timeout=TIMEOUT)[name]
    assert after.partitions == 2
    assert after.configs["retention.ms"] == "1000"


def test_more_partitions_than_declared_is_never_shrunk(
    admin: AdminClient, unique_name: str
) -> None:
    name = f"wide.{unique_name}"
    create_raw(admin, name, 5, {})
    planned = current_plan(admin, [TopicSpec(name=name, partitions=2)])

    [drift] = planned.drift
    assert (drift.declared, drift.actual, drift.can_increase) == (2, 5, False)
    apply(planned, admin, increase_partitions=True, timeout=TIMEOUT)
    assert fetch_existing(admin, [name], timeout=TIMEOUT)[name].partitions == 5


def test_increase_partitions_only_when_asked(admin: AdminClient, unique_name: str) -> None:
    name = f"grow.{unique_name}"
    create_raw(admin, name, 1, {})
    planned = current_plan(admin, [TopicSpec(name=name, partitions=3)])
    apply(planned, admin, timeout=TIMEOUT)
    assert fetch_existing(admin, [name], timeout=TIMEOUT)[name].partitions == 1

    try:
        done = apply(planned, admin, increase_partitions=True, timeout=TIMEOUT)
    except TopicError as exc:
        # The embedded tansu broker has no CreatePartitions; the error must say so and
        # leave the topic as it was.
        assert name in str(exc)
        assert "not supported" in str(exc)
        assert fetch_existing(admin, [name], timeout=TIMEOUT)[name].partitions == 1
    else:
        assert done.increased == (name,)
        assert fetch_existing(admin, [name], timeout=TIMEOUT)[name].partitions == 3


def test_dry_run_creates_nothing(admin: AdminClient, unique_name: str) -> None:
    specs = specs_for(unique_name)
    planned = current_plan(admin, specs)

    result = apply(planned, admin, dry_run=True, timeout=TIMEOUT)

    assert not result.applied
    assert len(result.create) == len(specs)
    found = fetch_existing(admin, timeout=TIMEOUT)
    assert not {s.name for s in specs} & set(found)


def test_undeclared_topic_is_never_deleted(admin: AdminClient, unique_name: str) -> None:
    stray = f"stray.{unique_name}"
    create_raw(admin, stray, 1, {})
    specs = specs_for(unique_name)

    planned = current_plan(admin, specs)
    apply(planned, admin, increase_partitions=True, timeout=TIMEOUT)

    assert stray in planned.undeclared
    assert fetch_existing(admin, timeout=TIMEOUT)[stray].partitions == 1


def test_apply_topics_uses_the_shipped_files_and_settings_names(settings: Settings) -> None:
    dry = apply_topics(settings, SHIPPED, dry_run=True)
    assert sorted(s.name for s in dry.create) == sorted(settings.topics.model_dump().values())
    assert not dry.applied

    done = apply_topics(settings, SHIPPED)
    assert sorted(done.created) == sorted(settings.topics.model_dump().values())

    assert apply_topics(settings, SHIPPED).no_changes

    rows = {row.name: row for row in list_topics(settings, SHIPPED)}
    results = rows[settings.topics.results]
    assert (results.role, results.declared, results.partitions) == ("results", True, 6)
    assert results.configs["retention.ms"] == str(7 * 86_400_000)
    assert rows[settings.topics.batches].configs["cleanup.policy"] == "compact,delete"


def test_describe_marks_undeclared_topics(admin: AdminClient, unique_name: str) -> None:
    stray = f"other.{unique_name}"
    create_raw(admin, stray, 2, {"retention.ms": "5000"})

    rows = {row.name: row for row in describe(admin, specs_for(unique_name), timeout=TIMEOUT)}

    assert not rows[stray].declared
    assert rows[stray].partitions == 2
    assert rows[stray].configs.get("retention.ms") == "5000"
    assert not any(name.startswith("__") for name in rows)


def test_ensure_topics_is_idempotent(
    settings: Settings, admin: AdminClient, unique_name: str
) -> None:
    wanted = {f"app-changelog.{unique_name}": 4, f"app-repartition.{unique_name}": 2}

    created = ensure_topics(settings, wanted, {"cleanup.policy": "compact"})

    assert sorted(created) == sorted(wanted)
    assert ensure_topics(settings, wanted) == []
    found = fetch_existing(admin, wanted, timeout=TIMEOUT)
    assert {n: found[n].partitions for n in wanted} == wanted
    assert found[f"app-changelog.{unique_name}"].configs["cleanup.policy"] == "compact"


def test_ensure_topics_tolerates_concurrent_creators(settings: Settings, unique_name: str) -> None:
    wanted = {f"race.{unique_name}.{i}": 1 for i in range(3)}
    created: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            created.extend(ensure_topics(settings, wanted))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)

    assert errors == []
    assert sorted(set(created)) == sorted(wanted)
    assert len(created) == len(wanted)


def test_unreachable_broker_is_a_topic_error() -> None:
    settings = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    with pytest.raises(TopicError, match="could not list topics"):
        apply_topics(settings, SHIPPED, timeout=2.0)
