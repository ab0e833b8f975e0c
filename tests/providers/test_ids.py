from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from connector.providers.ids import (
    CUSTOM_ID_PATTERN,
    DIGEST_PREFIX,
    assign_custom_ids,
    custom_id_for,
    is_valid_custom_id,
)

VALID = re.compile(CUSTOM_ID_PATTERN)

safe_ids = st.from_regex(r"\A[a-zA-Z0-9_-]{1,64}\Z")
any_ids = st.text(min_size=0, max_size=256)
long_ids = st.text(alphabet=st.characters(codec="ascii"), min_size=65, max_size=256)
non_ascii_ids = st.text(alphabet=st.characters(min_codepoint=0x80), min_size=1, max_size=80)
request_ids = st.one_of(safe_ids, any_ids, long_ids, non_ascii_ids)


def adversarial_batches() -> st.SearchStrategy[list[str]]:
    """Batches that also contain the digest forms of other members and repeated ids."""

    @st.composite
    def build(draw: st.DrawFn) -> list[str]:
        base = draw(st.lists(request_ids, min_size=1, max_size=30))
        digests = [custom_id_for(rid) for rid in draw(st.lists(st.sampled_from(base), max_size=10))]
        repeats = draw(st.lists(st.sampled_from(base), max_size=10))
        suffixed = [f"{rid}\x00{n}" for rid in repeats for n in (1, 2)]
        return draw(st.permutations(base + digests + repeats + suffixed))

    return build()


def test_valid_ids_pass_through() -> None:
    assert custom_id_for("req-123_ABC") == "req-123_ABC"
    assert custom_id_for("x" * 64) == "x" * 64


def test_digest_form_shape() -> None:
    digest = custom_id_for("x" * 65)
    assert digest.startswith(DIGEST_PREFIX)
    assert len(digest) == 54
    assert is_valid_custom_id(digest)
    assert custom_id_for("x" * 65) == digest  # deterministic


def test_ids_in_the_reserved_prefix_are_digested() -> None:
    digest = custom_id_for("a" * 100)
    assert custom_id_for(digest) != digest
    assert custom_id_for("h-short") != "h-short"


def test_empty_and_unsafe_ids_are_digested() -> None:
    for rid in ("", "a b", "ü", "a/b", "x" * 65, "\ud800"):
        assert is_valid_custom_id(custom_id_for(rid))
        assert custom_id_for(rid).startswith(DIGEST_PREFIX)


def test_repeated_id_gets_a_distinct_custom_id() -> None:
    mapping = assign_custom_ids(["same", "same", "same"])
    assert len(mapping) == 3
    assert list(mapping)[0] == "same"
    assert set(mapping.values()) == {"same"}


def test_caller_id_equal_to_another_digest() -> None:
    long_id = "y" * 80
    mapping = assign_custom_ids([custom_id_for(long_id), long_id])
    assert len(mapping) == 2
    assert sorted(mapping.values()) == sorted([custom_id_for(long_id), long_id])


@given(request_ids)
def test_custom_id_is_always_valid(request_id: str) -> None:
    assert VALID.fullmatch(custom_id_for(request_id))


@given(adversarial_batches())
def test_assignment_is_reversible_and_collision_free(batch: list[str]) -> None:
    mapping = assign_custom_ids(batch)
    assert len(mapping) == len(batch)  # one distinct custom id per input
    assert list(mapping.values()) == batch  # input order, so positions identify repeats
    assert all(VALID.fullmatch(custom_id) for custom_id in mapping)
    assert mapping == assign_custom_ids(batch)  # deterministic


@given(st.lists(request_ids, min_size=1, max_size=20, unique=True))
def test_unique_ids_keep_their_standalone_form(batch: list[str]) -> None:
    mapping = assign_custom_ids(batch)
    assert list(mapping) == [custom_id_for(rid) for rid in batch]
