"""Admin routes, HTTP fault plumbing, and serving large result files."""

from __future__ import annotations

import asyncio

import httpx
from anthropic import AsyncAnthropic
from emulator_helpers import openai_lines, poll
from openai import AsyncOpenAI

from connector.emulator import Emulator
from connector.emulator.state import RequestRecord


async def test_stats_route_has_the_documented_shape(
    emu: Emulator, url: str, anthropic_client: AsyncAnthropic
) -> None:
    emu.set_faults(processing_seconds=60)  # still in progress when the stats are read
    batch = await anthropic_client.messages.batches.create(
        requests=[
            {
                "custom_id": "a",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "x"}],
                },
            }
        ]
    )
    async with httpx.AsyncClient(base_url=url) as http:
        stats = (await http.get("/_emulator/stats")).json()
    assert stats == {
        "batches_created": {"openai": 0, "anthropic": 1, "gemini": 0},
        "requests_submitted": {"openai": 0, "anthropic": 1, "gemini": 0},
        "sync_calls": {"openai": 0, "anthropic": 0, "gemini": 0},
        "files_uploaded": 0,
        "flex_calls": {"served": 0, "unavailable": 0},
        "openai_enqueued_tokens": {},
        "batches": [
            {
                "provider": "anthropic",
                "id": batch.id,
                "tag": None,
                "state": "in_progress",
                "total": 1,
            }
        ],
    }


async def test_faults_route_merges_validates_and_reset_restores(emu: Emulator, url: str) -> None:
    start = emu.config.processing_seconds
    async with httpx.AsyncClient(base_url=url) as http:
        updated = await http.post(
            "/_emulator/faults", json={"error_rate": 0.5, "error_kinds": ["policy"]}
        )
        assert updated.status_code == 200 and updated.json()["error_rate"] == 0.5
        current = (await http.get("/_emulator/faults")).json()
        assert current["error_kinds"] == ["policy"] and current["processing_seconds"] == start
        assert (await http.post("/_emulator/faults", json={"error_rate": 2})).status_code == 400
        assert (await http.post("/_emulator/faults", json={"bogus": 1})).status_code == 400
        assert (await http.get("/_emulator/faults")).json()["error_rate"] == 0.5
        assert (await http.post("/_emulator/reset")).status_code == 200
        assert (await http.get("/_emulator/faults")).json()["error_rate"] == 0.0


async def test_faults_route_takes_the_transport_faults(emu: Emulator, url: str) -> None:
    fault = {"path_regex": "^/v1/batches$", "status": None, "delay_s": 0.5, "drop_response": True}
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.post(
            "/_emulator/faults",
            json={"http_errors": [fault], "cut_downloads": 1, "download_bytes_per_s": 1000},
        )
    assert answer.status_code == 200
    body = answer.json()
    assert body["http_errors"] == [{**fault, "count": 1, "method": None, "retry_after": None}]
    assert body["cut_downloads"] == 1 and body["download_bytes_per_s"] == 1000
    assert emu.config.http_errors[0].drop_response


async def test_http_fault_applies_only_to_matching_method_and_count(
    emu: Emulator, url: str
) -> None:
    emu.set_faults(
        http_errors=[
            {
                "path_regex": "^/v1/batches$",
                "method": "POST",
                "status": 503,
                "count": 1,
                "retry_after": 2,
            }
        ]
    )
    async with httpx.AsyncClient(base_url=url) as http:
        listed = await http.get("/v1/batches")
        assert listed.status_code == 200
        first = await http.post("/v1/batches", json={})
        assert first.status_code == 503 and first.headers["Retry-After"] == "2"
        assert first.json()["error"]["code"] == "engine_overloaded"
        second = await http.post("/v1/batches", json={})
        assert second.status_code == 400  # the fault is used up; the real validation answers


async def test_no_duplicate_submission_is_visible_in_stats(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    uploaded = await openai_client.files.create(
        file=("in.jsonl", openai_lines([("a", "x")])), purpose="batch"
    )
    for tag in ("bb-1", "bb-2", "bb-1"):
        await openai_client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"batchbridge_batch_id": tag},
        )
    tags = [b["tag"] for b in emu.stats()["batches"]]
    assert tags.count("bb-1") == 2 and tags.count("bb-2") == 1


async def test_large_result_file_streams_every_line(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(processing_seconds=0.05)
    count = 20_000
    content = openai_lines([(f"r{i}", "q") for i in range(count)])
    uploaded = await openai_client.files.create(file=("big.jsonl", content), purpose="batch")
    batch = await openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await asyncio.sleep(0.05)
    done = await poll(
        lambda: openai_client.batches.retrieve(batch.id), lambda b: b.status == "completed"
    )
    lines = 0
    async with openai_client.files.with_streaming_response.content(done.output_file_id) as response:
        assert response.headers.get("transfer-encoding") == "chunked"
        async for _ in response.iter_lines():
            lines += 1
    assert lines == count


async def test_loopback_by_default(url: str) -> None:
    assert url.startswith("http://127.0.0.1:")


async def test_stats_count_and_name_batches_of_a_provider_without_routes(emu: Emulator) -> None:
    # A new provider's module may store batches before it names their states.
    emu.new_batch("other", "b1", [RequestRecord("k", "{}", {})], tag="t", outcome=None)
    stats = emu.stats()
    assert stats["batches_created"]["other"] == 1 and stats["requests_submitted"]["other"] == 1
    assert stats["batches"] == [
        {"provider": "other", "id": "b1", "tag": "t", "state": "queued", "total": 1}
    ]
