"""Topic declarations and the plan: pure, no broker."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.config import Settings, TopicNames
from connector.errors import TopicError
from connector.render import plan_table
from connector.shipped import shipped_dir
from connector.topics import (
    ROLES,
    ExistingTopic,
    Plan,
    TopicSpec,
    apply,
    default_topics_dir,
    load_specs,
    plan,
    plan_rows,
)

SHIPPED = Path(__file__).resolve().parents[2] / "topics"
DAY_MS = 86_400_000


@pytest.fixture(autouse=True)
def _no_topic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHBRIDGE_TOPICS_REPLICATION", raising=False)
    monkeypatch.delenv("BATCHBRIDGE_TOPICS_DIR", raising=False)


def write(directory: Path, name: str, data: object) -> Path:
    path = directory / name
    text = data if isinstance(data, str) else yaml.safe_dump(data)
    path.write_text(text, encoding="utf-8")
    return path


def spec(name: str = "t", partitions: int = 3, **kwargs: object) -> TopicSpec:
    return TopicSpec(name=name, partitions=partitions, **kwargs)


def existing(name: str = "t", partitions: int = 3, **kwargs: object) -> ExistingTopic:
    return ExistingTopic(name=name, partitions=partitions, **kwargs)


# --------------------------------------------------------------------------- shipped files


def test_default_dir_in_a_checkout_is_the_repository_topics_dir() -> None:
    # The wheel's copy is tested by tests/integration/test_wheel_install.py.
    assert shipped_dir("topics") == SHIPPED
    assert default_topics_dir(Settings()) == SHIPPED


def test_default_dir_follows_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BATCHBRIDGE_TOPICS_DIR", str(tmp_path))
    assert default_topics_dir(Settings()) == tmp_path
    assert default_topics_dir(Settings(topics_dir=str(SHIPPED))) == SHIPPED


def test_shipped_files_declare_one_topic_per_role() -> None:
    specs = load_specs(None, Settings())
    assert sorted(s.role for s in specs) == sorted(ROLES)
    names = TopicNames()
    assert {s.role: s.name for s in specs} == {role: getattr(names, role) for role in ROLES}


def test_shipped_yaml_names_match_the_settings_defaults() -> None:
    # The `name:` in a file documents the default; it must not disagree with Settings.
    names = TopicNames()
    for path in SHIPPED.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert data["name"] == getattr(names, data["role"]), path


def test_shipped_partitions_retention_and_policies() -> None:
    by_role = {s.role: s for s in load_specs(SHIPPED, Settings())}
    assert {r: by_role[r].partitions for r in ROLES} == {
        "deferred": 6,
        "realtime": 6,
        "results": 6,
        "deadletter": 3,
        "batches": 3,
        "replays": 1,
    }
    assert by_role["results"].configs["retention.ms"] == str(7 * DAY_MS)
    assert by_role["deadletter"].configs["retention.ms"] == str(30 * DAY_MS)
    assert by_role["batches"].configs["cleanup.policy"] == "compact,delete"
    # Replay markers outlive the dead letters they mark.
    assert by_role["replays"].configs["cleanup.policy"] == "compact,delete"
    replays_ms = int(by_role["replays"].configs["retention.ms"])
    assert replays_ms >= 2 * int(by_role["deadletter"].configs["retention.ms"])
    for s in by_role.values():
        assert s.replication_factor == 1
        assert s.description
        assert {"cleanup.policy", "retention.ms", "max.message.bytes"} <= set(s.configs)


def test_role_takes_its_name_from_settings() -> None:
    settings = Settings(topics=TopicNames(results="acme.llm.results"))
    names = {s.role: s.name for s in load_specs(SHIPPED, settings)}
    assert names["results"] == "acme.llm.results"
    assert names["deferred"] == "inference.deferred"


def test_role_rename_through_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHBRIDGE_TOPICS__DEADLETTER", "acme.dlq")
    names = {s.role: s.name for s in load_specs(SHIPPED, Settings())}
    assert names["deadletter"] == "acme.dlq"


def test_replication_override_argument_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHBRIDGE_TOPICS_REPLICATION", "3")
    assert {s.replication_factor for s in load_specs(SHIPPED, Settings())} == {3}
    specs = load_specs(SHIPPED, Settings(), replication_factor=2)
    assert {s.replication_factor for s in specs} == {2}


@pytest.mark.parametrize("value", ["zero", "0", "-1", "1.5"])
def test_bad_replication_env_is_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BATCHBRIDGE_TOPICS_REPLICATION", value)
    with pytest.raises(ValidationError, match="topics_replication"):
        Settings()


def test_bad_replication_argument_is_rejected() -> None:
    with pytest.raises(TopicError, match="at least 1"):
        load_specs(SHIPPED, Settings(), replication_factor=0)


# --------------------------------------------------------------------------- validation


def test_configs_become_strings(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        {
            "name": "a",
            "partitions": 2,
            "configs": {"retention.ms": 1000, "unclean.leader.election.enable": False},
        },
    )
    [loaded] = load_specs(tmp_path, Settings())
    assert loaded.configs == {"retention.ms": "1000", "unclean.leader.election.enable": "false"}
    assert loaded.replication_factor == 1
    assert loaded.role is None


def test_yml_extension_is_read_and_specs_sorted(tmp_path: Path) -> None:
    write(tmp_path, "z.yaml", {"name": "b", "partitions": 1})
    write(tmp_path, "a.yml", {"name": "c", "partitions": 1})
    write(tmp_path, "m.yaml", {"name": "a", "partitions": 1})
    write(tmp_path, "notes.txt", "not a topic")
    assert [s.name for s in load_specs(tmp_path, Settings())] == ["a", "b", "c"]


BAD_FILES = [
    pytest.param({"name": "a"}, "partitions", id="missing-partitions"),
    pytest.param({"partitions": 1}, "name.*role", id="neither-name-nor-role"),
    pytest.param({"name": "a", "partitions": -1}, "partitions", id="negative-partitions"),
    pytest.param({"name": "a", "partitions": 0}, "partitions", id="zero-partitions"),
    pytest.param({"name": "a", "partitions": "6"}, "partitions", id="partitions-as-string"),
    pytest.param({"name": "a", "partitions": True}, "partitions", id="partitions-as-bool"),
    pytest.param(
        {"name": "a", "partitions": 1, "replication_factor": 0}, "replication_factor", id="rf-zero"
    ),
    pytest.param({"name": "a", "partitions": 1, "retention": 5}, "retention", id="unknown-key"),
    pytest.param({"role": "archive", "partitions": 1}, "role 'archive'", id="unknown-role"),
    pytest.param({"name": "a b", "partitions": 1}, "name", id="illegal-name"),
    pytest.param({"name": "", "partitions": 1}, "name", id="empty-name"),
    pytest.param({"name": "a" * 250, "partitions": 1}, "name", id="name-too-long"),
    pytest.param(
        {"name": "a", "partitions": 1, "configs": {"cleanup.policy": "forever"}},
        "cleanup.policy",
        id="bad-cleanup-policy",
    ),
    pytest.param(
        {"name": "a", "partitions": 1, "configs": {"retention.ms": {"days": 7}}},
        "scalar",
        id="nested-config-value",
    ),
    pytest.param(
        {"name": "a", "partitions": 1, "configs": {"Retention MS": 1}},
        "config key",
        id="bad-config-key",
    ),
    pytest.param(
        {"name": "a", "partitions": 1, "configs": ["retention.ms"]}, "configs", id="configs-list"
    ),
    pytest.param([{"name": "a", "partitions": 1}], "mapping", id="list-document"),
    pytest.param("", "mapping", id="empty-file"),
    pytest.param("name: [unclosed\n", "not valid YAML", id="yaml-syntax"),
]


@pytest.mark.parametrize(("data", "message"), BAD_FILES)
def test_bad_file_is_a_topic_error_naming_the_file(
    tmp_path: Path, data: object, message: str
) -> None:
    path = write(tmp_path, "bad.yaml", data)
    with pytest.raises(TopicError, match=message) as raised:
        load_specs(tmp_path, Settings())
    assert str(path) in str(raised.value)


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", {"name": "same", "partitions": 1})
    write(tmp_path, "b.yaml", {"name": "same", "partitions": 2})
    with pytest.raises(TopicError, match="'same' is already declared in .*a.yaml"):
        load_specs(tmp_path, Settings())


def test_duplicate_after_role_rename(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", {"role": "results", "partitions": 1})
    write(tmp_path, "b.yaml", {"role": "deadletter", "partitions": 1})
    settings = Settings(topics=TopicNames(results="one", deadletter="one"))
    with pytest.raises(TopicError, match="'one' is already declared"):
        load_specs(tmp_path, settings)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TopicError, match="does not exist"):
        load_specs(tmp_path / "nope", Settings())


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(TopicError, match="no topic definitions"):
        load_specs(tmp_path, Settings())


# --------------------------------------------------------------------------- plan


def test_nothing_exists_creates_everything() -> None:
    specs = [spec("b"), spec("a")]
    result = plan(specs, {})
    assert [s.name for s in result.create] == ["a", "b"]
    assert result.drift == ()
    assert result.in_sync == ()
    assert not result.no_changes


def test_everything_matches_is_no_changes() -> None:
    declared = spec("a", 3, replication_factor=1, configs={"retention.ms": "10"})
    result = plan(
        [declared], [existing("a", 3, replication_factor=1, configs={"retention.ms": "10"})]
    )
    assert result.no_changes
    assert result.in_sync == ("a",)
    assert result.create == ()
    assert plan_rows(result) == [("a", "in sync", "")]


def test_mapping_and_iterable_of_existing_plan_alike() -> None:
    specs = [spec("a", 2), spec("b", 3)]
    found = [existing("a", 1), existing("c", 1)]
    assert plan(specs, found) == plan(specs, {t.name: t for t in found})


def test_fewer_partitions_is_increasable_drift() -> None:
    result = plan([spec("a", 6)], [existing("a", 3)])
    [drift] = result.drift
    assert (drift.kind, drift.declared, drift.actual) == ("partitions", 6, 3)
    assert drift.can_increase
    assert result.partition_increases == (drift,)
    assert result.in_sync == ()
    assert not result.no_changes


def test_more_partitions_is_drift_never_a_shrink() -> None:
    result = plan([spec("a", 3)], [existing("a", 6)])
    [drift] = result.drift
    assert (drift.declared, drift.actual) == (3, 6)
    assert not drift.can_increase
    assert result.partition_increases == ()
    assert "never removed" in drift.describe()


def test_config_value_differs() -> None:
    result = plan(
        [spec("a", configs={"retention.ms": "100", "cleanup.policy": "delete"})],
        [existing("a", configs={"retention.ms": "200", "cleanup.policy": "delete"})],
    )
    [drift] = result.drift
    assert (drift.kind, drift.key, drift.declared, drift.actual) == (
        "config",
        "retention.ms",
        "100",
        "200",
    )
    assert not drift.can_increase
    assert drift.describe() == "retention.ms: declared '100', actual '200'"


def test_declared_config_not_set_on_broker() -> None:
    [drift] = plan([spec("a", configs={"retention.ms": "100"})], [existing("a")]).drift
    assert drift.actual is None
    assert "not set" in drift.describe()


def test_broker_configs_that_are_not_declared_are_ignored() -> None:
    result = plan([spec("a")], [existing("a", configs={"segment.ms": "1", "retention.ms": "5"})])
    assert result.no_changes


@pytest.mark.parametrize(
    ("declared", "actual", "drifts"),
    [
        ("compact,delete", "delete,compact", False),
        ("compact, delete", "compact,delete", False),
        ("compact", "compact,delete", True),
        ("delete", "compact", True),
    ],
)
def test_cleanup_policy_compares_as_a_set(declared: str, actual: str, drifts: bool) -> None:
    result = plan(
        [spec("a", configs={"cleanup.policy": declared})],
        [existing("a", configs={"cleanup.policy": actual})],
    )
    assert bool(result.drift) is drifts


def test_replication_factor_drift_only_when_known() -> None:
    [drift] = plan([spec("a", replication_factor=3)], [existing("a", replication_factor=1)]).drift
    assert (drift.kind, drift.declared, drift.actual) == ("replication_factor", 3, 1)
    assert not drift.can_increase
    assert plan(
        [spec("a", replication_factor=3)], [existing("a", replication_factor=None)]
    ).no_changes


def test_several_drifts_on_one_topic_are_all_reported() -> None:
    result = plan(
        [spec("a", 6, configs={"retention.ms": "1", "max.message.bytes": "2"}), spec("b", 1)],
        [existing("a", 3, configs={"retention.ms": "9"}), existing("b", 1)],
    )
    assert [(d.kind, d.key) for d in result.drift_for("a")] == [
        ("partitions", None),
        ("config", "max.message.bytes"),
        ("config", "retention.ms"),
    ]
    assert result.in_sync == ("b",)


def test_undeclared_topics_are_listed_and_never_planned() -> None:
    result = plan(
        [spec("a")], [existing("a"), existing("other"), existing("__consumer_offsets", 50)]
    )
    assert result.undeclared == ("other",)
    assert result.create == ()
    assert all(d.topic == "a" for d in result.drift)


def test_duplicate_specs_are_rejected() -> None:
    with pytest.raises(TopicError, match="more than once: a"):
        plan([spec("a"), spec("a", 2)], {})


@given(
    declared=st.integers(min_value=1, max_value=64),
    actual=st.integers(min_value=1, max_value=64),
)
def test_partition_drift_property(declared: int, actual: int) -> None:
    result = plan([spec("a", declared)], [existing("a", actual)])
    assert result.no_changes is (declared == actual)
    assert bool(result.partition_increases) is (actual < declared)
    assert result.create == ()


# --------------------------------------------------------------------------- rendering, dry run


def test_rows_and_table_for_a_mixed_plan() -> None:
    result = plan(
        [spec("new", 2, configs={"retention.ms": "5"}), spec("grow", 4), spec("ok", 1)],
        [existing("grow", 2), existing("ok", 1), existing("stray", 1)],
    )
    assert plan_rows(result) == [
        ("grow", "drift (increasable)", "partitions: declared 4, actual 2"),
        ("new", "create", "2 partitions, rf 1, retention.ms=5"),
        ("ok", "in sync", ""),
    ]
    table = plan_table(result)
    assert table.row_count == 3
    assert "1 undeclared" in str(table.caption)


def test_rows_after_apply() -> None:
    planned = plan([spec("mine"), spec("raced"), spec("grow", 4)], [existing("grow", 2)])
    done = Plan(
        create=planned.create,
        drift=planned.drift,
        applied=True,
        created=("mine",),
        increased=("grow",),
    )
    assert plan_rows(done) == [
        ("grow", "increased", "partitions: declared 4, actual 2"),
        ("mine", "created", "3 partitions, rf 1"),
        ("raced", "existed", "3 partitions, rf 1"),
    ]


def test_no_changes_caption() -> None:
    assert plan_table(plan([spec("a")], [existing("a")])).caption == "no changes"


class _Untouchable:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"dry run touched the admin client: {name}")


def test_dry_run_never_touches_the_broker() -> None:
    planned = plan([spec("a"), spec("b", 4)], [existing("b", 2)])
    assert apply(planned, _Untouchable(), dry_run=True, increase_partitions=True) is planned  # type: ignore[arg-type]
