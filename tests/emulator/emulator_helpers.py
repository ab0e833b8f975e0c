"""Helpers shared by the emulator tests."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google import genai
from google.genai import types

T = TypeVar("T")

POLL_TIMEOUT_SECONDS = 5.0


async def poll(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Call ``fetch`` until ``done`` holds for its result; fail after ``POLL_TIMEOUT_SECONDS``."""
    deadline = time.monotonic() + POLL_TIMEOUT_SECONDS
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not done after {POLL_TIMEOUT_SECONDS}s: {value!r}")
        await asyncio.sleep(0.05)


class Clock:
    """A wall clock the test moves by hand (``clock.now += seconds``)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeTime:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def openai_lines(
    requests: list[tuple[str, str]],
    model: str = "gpt-4o-mini",
    endpoint: str = "/v1/chat/completions",
) -> bytes:
    """An OpenAI batch input file: one chat request per ``(custom_id, prompt)``."""
    rows = []
    for custom_id, prompt in requests:
        if endpoint == "/v1/embeddings":
            body: dict[str, Any] = {"model": model, "input": prompt}
        else:
            body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
        rows.append(
            json.dumps({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body})
        )
    return ("\n".join(rows) + "\n").encode()


def parse_jsonl(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Parsed lines and the lines that are not valid JSON."""
    good, bad = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            good.append(json.loads(line))
        except ValueError:
            bad.append(line)
    return good, bad


async def gemini_file_batch(
    client: genai.Client, lines: list[dict[str, Any]], model: str = "gemini-2.5-flash"
) -> dict[str, dict[str, Any]]:
    """Upload ``lines`` as a JSONL batch file, run it to the end, and its results by key."""
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = await client.aio.files.upload(
        file=io.BytesIO(data), config=types.UploadFileConfig(mime_type="jsonl")
    )
    job = await client.aio.batches.create(model=model, src=uploaded.name)
    done = await poll(
        lambda: client.aio.batches.get(name=str(job.name)),
        lambda j: j.state == types.JobState.JOB_STATE_SUCCEEDED,
    )
    assert done.dest is not None and done.dest.file_name
    text = (await client.aio.files.download(file=done.dest.file_name)).decode()
    return {line["key"]: line for line in parse_jsonl(text)[0]}
