"""Cutting a result file's byte chunks into lines and outcomes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from connector.providers.jsonl import lines_of, outcomes_from_lines


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        yield data[start:cut]
        start = cut
    yield data[start:]


def _lines(data: bytes, cuts: list[int]) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [line async for line in lines_of(_chunks(data, cuts))]

    return asyncio.run(collect())


@given(
    st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b""))),
    st.booleans(),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_lines_are_the_same_however_the_bytes_are_cut(
    lines: list[bytes], trailing: bool, cuts: list[int]
) -> None:
    data = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    expected = data.split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    assert _lines(data, cuts) == expected


def test_outcomes_of_crlf_unicode_and_bad_lines() -> None:
    text = "a\u2028b ü"  # a raw line separator inside a JSON string is still one line
    data = (
        json.dumps({"id": 1, "text": text}, ensure_ascii=False).encode()
        + b"\r\n\r\n"
        + b'{"id": 2, "text": "\xff"}\n'  # not UTF-8: read as U+FFFD, as httpx did
        + b"not json\n"
        + b'{"id": 3}'
    )
    malformed: list[int] = []

    async def collect() -> list[Any]:
        return [
            o
            async for o in outcomes_from_lines(
                lines_of(_chunks(data, [5, 17, 40])),
                lambda line: line,
                source="test",
                on_malformed=lambda: malformed.append(1),
            )
        ]

    assert asyncio.run(collect()) == [
        {"id": 1, "text": text},
        {"id": 2, "text": "\ufffd"},
        {"id": 3},
    ]
    assert malformed == [1]
