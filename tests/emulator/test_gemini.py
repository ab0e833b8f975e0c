"""The real ``google-genai`` SDK against the emulator: batch mode, Files API, generateContent."""

from __future__ import annotations

import io
import json
import time

import pytest
from emulator_helpers import parse_jsonl, poll
from google import genai
from google.genai import errors, types

from connector.emulator import Emulator, EmulatorConfig, EmulatorThread

MODEL = "gemini-2.5-flash"
FINAL = {
    types.JobState.JOB_STATE_SUCCEEDED,
    types.JobState.JOB_STATE_FAILED,
    types.JobState.JOB_STATE_CANCELLED,
    types.JobState.JOB_STATE_EXPIRED,
}


def inline(*prompts: str) -> list[dict]:
    return [{"contents": [{"parts": [{"text": p}], "role": "user"}]} for p in prompts]


async def wait_final(client: genai.Client, name: str) -> types.BatchJob:
    return await poll(lambda: client.aio.batches.get(name=name), lambda job: job.state in FINAL)


async def test_inline_job_lifecycle(emu: Emulator, genai_client: genai.Client) -> None:
    job = await genai_client.aio.batches.create(
        model=MODEL,
        src=inline("one", "EMULATOR_FAIL:rate_limit", "three"),
        config={"display_name": "bb-42"},
    )
    assert job.name.startswith("batches/") and job.state == types.JobState.JOB_STATE_PENDING
    assert job.display_name == "bb-42" and job.model == f"models/{MODEL}"

    done = await wait_final(genai_client, job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.end_time is not None
    responses = done.dest.inlined_responses
    assert len(responses) == 3
    assert responses[0].response.text.startswith("Emulated answer")
    assert responses[0].response.usage_metadata.prompt_token_count > 0
    assert responses[1].response is None and responses[1].error.code == 8
    assert "RESOURCE_EXHAUSTED" in responses[1].error.message
    assert emu.stats()["batches"] == [
        {
            "provider": "gemini",
            "id": job.name,
            "tag": "bb-42",
            "state": "JOB_STATE_SUCCEEDED",
            "total": 3,
        }
    ]


async def test_v1beta_and_v1_clients_both_work(url: str) -> None:
    for version in ("v1beta", "v1"):
        client = genai.Client(
            api_key="g", http_options=types.HttpOptions(base_url=url, api_version=version)
        )
        job = await client.aio.batches.create(model=MODEL, src=inline("x"))
        assert (await client.aio.batches.get(name=job.name)).name == job.name
        assert job.name in [j.name async for j in await client.aio.batches.list()]


async def test_file_input_job_writes_a_downloadable_results_file(
    emu: Emulator, genai_client: genai.Client
) -> None:
    emu.set_faults(malformed_lines=1)
    lines = [
        {"key": f"k{i}", "request": {"contents": [{"parts": [{"text": f"p{i}"}]}]}}
        for i in range(3)
    ]
    lines[2]["request"]["contents"][0]["parts"][0]["text"] = "EMULATOR_FAIL:invalid_request"
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = await genai_client.aio.files.upload(
        file=io.BytesIO(data),
        config=types.UploadFileConfig(mime_type="jsonl", display_name="input"),
    )
    assert uploaded.name.startswith("files/") and uploaded.size_bytes == len(data)
    assert (await genai_client.aio.files.get(name=uploaded.name)).display_name == "input"

    job = await genai_client.aio.batches.create(model=MODEL, src=uploaded.name)
    done = await wait_final(genai_client, job.name)
    assert done.dest.file_name and done.dest.inlined_responses is None
    good, bad = parse_jsonl(
        (await genai_client.aio.files.download(file=done.dest.file_name)).decode()
    )
    assert len(bad) == 1
    by_key = {line["key"]: line for line in good}
    assert set(by_key) == {"k0", "k1", "k2"}
    assert by_key["k0"]["response"]["candidates"][0]["content"]["parts"][0]["text"].startswith(
        "Emulated answer"
    )
    assert by_key["k2"]["error"]["code"] == 3
    assert emu.stats()["files_uploaded"] == 1


async def test_cancel(emu: Emulator, genai_client: genai.Client) -> None:
    emu.set_faults(processing_seconds=3)  # the cancel must arrive before the batch ends
    job = await genai_client.aio.batches.create(model=MODEL, src=inline("x"))
    await genai_client.aio.batches.cancel(name=job.name)
    done = await wait_final(genai_client, job.name)
    assert done.state == types.JobState.JOB_STATE_CANCELLED and done.dest is None


@pytest.mark.parametrize(
    ("outcome", "state"),
    [("expired", types.JobState.JOB_STATE_EXPIRED), ("failed", types.JobState.JOB_STATE_FAILED)],
)
async def test_expired_and_failed_jobs_have_no_results(
    emu: Emulator, genai_client: genai.Client, outcome: str, state: types.JobState
) -> None:
    emu.set_faults(batch_outcome=outcome)
    job = await genai_client.aio.batches.create(model=MODEL, src=inline("x", "y"))
    done = await wait_final(genai_client, job.name)
    assert done.state == state and done.dest is None


async def test_stuck_job_keeps_running(emu: Emulator, genai_client: genai.Client) -> None:
    emu.set_faults(batch_outcome="stuck", processing_seconds=0.05)
    job = await genai_client.aio.batches.create(model=MODEL, src=inline("x"))
    running = await poll(
        lambda: genai_client.aio.batches.get(name=job.name),
        lambda j: j.state == types.JobState.JOB_STATE_RUNNING,
    )
    assert running.dest is None


async def test_list_pages_with_page_tokens(genai_client: genai.Client) -> None:
    names = [
        (await genai_client.aio.batches.create(model=MODEL, src=inline("x"))).name for _ in range(5)
    ]
    pager = await genai_client.aio.batches.list(config={"page_size": 2})
    assert len(pager.page) == 2
    assert [job.name async for job in pager] == names[::-1]


async def test_http_429_then_success_with_retry_options(emu: Emulator, url: str) -> None:
    emu.set_faults(
        http_errors=[{"path_regex": ":batchGenerateContent$", "status": 429, "count": 2}]
    )
    retrying = genai.Client(
        api_key="g",
        http_options=types.HttpOptions(
            base_url=url,
            retry_options=types.HttpRetryOptions(attempts=3, initial_delay=0.01, max_delay=0.02),
        ),
    )
    job = await retrying.aio.batches.create(model=MODEL, src=inline("x"))
    assert job.name.startswith("batches/")
    assert emu.stats()["batches_created"]["gemini"] == 1


async def test_injected_500_has_google_error_body(
    emu: Emulator, genai_client: genai.Client
) -> None:
    emu.set_faults(
        http_errors=[{"path_regex": "/batches/", "method": "GET", "status": 500, "count": 1}]
    )
    job = await genai_client.aio.batches.create(model=MODEL, src=inline("x"))
    with pytest.raises(errors.ServerError) as info:
        await genai_client.aio.batches.get(name=job.name)
    assert info.value.code == 500 and info.value.status == "INTERNAL"


async def test_generate_content(emu: Emulator, genai_client: genai.Client) -> None:
    response = await genai_client.aio.models.generate_content(model=MODEL, contents="hello")
    assert (
        response.text.startswith("Emulated answer")
        and response.usage_metadata.candidates_token_count >= 20
    )
    with pytest.raises(errors.ClientError) as info:
        await genai_client.aio.models.generate_content(
            model=MODEL, contents="EMULATOR_FAIL:invalid_request"
        )
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert emu.stats()["sync_calls"]["gemini"] == 2


def test_sync_client_against_emulator_thread() -> None:
    thread = EmulatorThread(EmulatorConfig(processing_seconds=0.1))
    url = thread.start()
    try:
        client = genai.Client(api_key="g", http_options=types.HttpOptions(base_url=url))
        uploaded = client.files.upload(
            file=io.BytesIO(
                b'{"key": "a", "request": {"contents": [{"parts": [{"text": "hi"}]}]}}\n'
            ),
            config=types.UploadFileConfig(mime_type="jsonl"),
        )
        job = client.batches.create(
            model=MODEL, src=uploaded.name, config={"display_name": "sync-tag"}
        )
        deadline = time.monotonic() + 5
        while (
            job := client.batches.get(name=job.name)
        ).state not in FINAL and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED
        lines, _ = parse_jsonl(client.files.download(file=job.dest.file_name).decode())
        assert [line["key"] for line in lines] == ["a"]
        assert thread.emulator.stats()["batches"][0]["tag"] == "sync-tag"
    finally:
        thread.stop()
