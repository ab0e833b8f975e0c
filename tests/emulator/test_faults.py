"""Transport faults through the real SDKs: lost responses, delays, transient 404s, cut and
paced result downloads."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import anthropic
import httpx
import httpx2
import openai
import pytest
from anthropic import AsyncAnthropic
from emulator_helpers import FakeTime, openai_lines, parse_jsonl, poll
from google import genai
from google.genai import errors, types
from openai import AsyncOpenAI

from connector.emulator import Emulator

PROVIDERS = ["openai", "anthropic", "gemini"]
CREATE_ROUTES = {
    "openai": r"^/v1/batches$",
    "anthropic": r"^/v1/messages/batches$",
    "gemini": r":batchGenerateContent$",
}
RETRIEVE_ROUTES = {
    "openai": r"^/v1/batches/[^/]+$",
    "anthropic": r"^/v1/messages/batches/[^/]+$",
    "gemini": r"/batches/[^/:]+$",
}
# An SDK call over a connection the server closed without an answer raises one of these.
DISCONNECTED = (openai.APIConnectionError, anthropic.APIConnectionError, aiohttp.ClientError)


class Sdk:
    """One real SDK client per provider, no retries, and what each call looks like."""

    def __init__(self, url: str, **openai_options: Any) -> None:
        self.url = url
        self.openai = AsyncOpenAI(api_key="sk-test", base_url=f"{url}/v1", **openai_options)
        self.anthropic = AsyncAnthropic(api_key="sk-ant-test", base_url=url, max_retries=0)
        # attempts=1: without retry options google-genai resends after a disconnect itself.
        self.genai = genai.Client(
            api_key="g-test",
            http_options=types.HttpOptions(
                base_url=url, retry_options=types.HttpRetryOptions(attempts=1)
            ),
        )

    async def create(self, provider: str, tag: str, n: int = 2) -> str:
        """Submit a batch of ``n`` requests tagged ``tag`` (where the API allows); its id."""
        if provider == "openai":
            content = openai_lines([(f"r{i}", f"question {i}") for i in range(n)])
            uploaded = await self.openai.files.create(file=("in.jsonl", content), purpose="batch")
            batch = await self.openai.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"batchbridge_batch_id": tag},
            )
            return batch.id
        if provider == "anthropic":
            requests: Any = [
                {
                    "custom_id": f"r{i}",
                    "params": {
                        "model": "claude-haiku-4-5",
                        "max_tokens": 16,
                        "messages": [{"role": "user", "content": f"question {i}"}],
                    },
                }
                for i in range(n)
            ]
            return (await self.anthropic.messages.batches.create(requests=requests)).id
        data = "".join(
            json.dumps({"key": f"r{i}", "request": {"contents": [{"parts": [{"text": "q"}]}]}})
            + "\n"
            for i in range(n)
        ).encode()
        uploaded = await self.genai.aio.files.upload(
            file=io.BytesIO(data), config=types.UploadFileConfig(mime_type="jsonl")
        )
        job = await self.genai.aio.batches.create(
            model="gemini-2.5-flash", src=uploaded.name, config={"display_name": tag}
        )
        return str(job.name)

    async def retrieve(self, provider: str, batch_id: str) -> Any:
        if provider == "openai":
            return await self.openai.batches.retrieve(batch_id)
        if provider == "anthropic":
            return await self.anthropic.messages.batches.retrieve(batch_id)
        return await self.genai.aio.batches.get(name=batch_id)

    async def wait_ended(self, provider: str, batch_id: str) -> Any:
        def ended(b: Any) -> bool:
            if provider == "openai":
                return b.status == "completed"
            if provider == "anthropic":
                return b.processing_status == "ended"
            return b.state == types.JobState.JOB_STATE_SUCCEEDED

        return await poll(lambda: self.retrieve(provider, batch_id), ended)

    async def results_text(self, provider: str, batch_id: str) -> str:
        """The whole result download of a finished batch, read by the SDK."""
        done = await self.wait_ended(provider, batch_id)
        if provider == "openai":
            return (await self.openai.files.content(done.output_file_id)).text
        if provider == "anthropic":
            lines = [
                r.to_json(indent=None)
                async for r in await self.anthropic.messages.batches.results(batch_id)
            ]
            return "\n".join(lines)
        return (await self.genai.aio.files.download(file=done.dest.file_name)).decode()

    async def download_url(self, provider: str, batch_id: str) -> tuple[str, dict[str, str]]:
        """The raw result download URL and the headers the SDK would send."""
        done = await self.wait_ended(provider, batch_id)
        if provider == "openai":
            return f"{self.url}/v1/files/{done.output_file_id}/content", {}
        if provider == "anthropic":
            return str(done.results_url), {}
        return (
            f"{self.url}/v1beta/{done.dest.file_name}:download?alt=media",
            {"x-goog-api-key": "g-test"},
        )


@pytest.fixture
def sdk(url: str) -> Sdk:
    return Sdk(url, max_retries=0)


# --- lost responses -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_lost_create_response_leaves_exactly_one_stored_batch(
    emu: Emulator, sdk: Sdk, provider: str
) -> None:
    emu.set_faults(
        http_errors=[
            {"path_regex": CREATE_ROUTES[provider], "method": "POST", "drop_response": True}
        ]
    )
    with pytest.raises(DISCONNECTED):
        await sdk.create(provider, "bb-lost")
    stats = emu.stats()
    assert stats["batches_created"][provider] == 1
    if provider != "anthropic":  # Anthropic batches carry no tag
        assert [b["tag"] for b in stats["batches"]] == ["bb-lost"]
    # The fault is spent: the next create is answered, and makes the second batch.
    assert await sdk.create(provider, "bb-next")
    assert emu.stats()["batches_created"][provider] == 2


async def test_sdk_retries_turn_a_lost_create_response_into_two_batches(
    emu: Emulator, url: str
) -> None:
    # Why the connector must not let the SDK retry a create: the retry is a second create.
    emu.set_faults(
        http_errors=[{"path_regex": r"^/v1/batches$", "method": "POST", "drop_response": True}]
    )
    retrying = Sdk(url, max_retries=1)
    await retrying.create("openai", "bb-dup")
    assert emu.stats()["batches_created"]["openai"] == 2
    assert [b["tag"] for b in emu.stats()["batches"]] == ["bb-dup", "bb-dup"]


async def test_drop_response_ignores_an_error_status(emu: Emulator) -> None:
    emu.set_faults(http_errors=[{"path_regex": "x", "status": 503, "drop_response": True}])
    assert emu.config.http_errors[0].status is None


async def test_a_create_that_outlives_the_client_timeout_still_creates_the_batch(
    emu: Emulator, url: str
) -> None:
    emu.set_faults(http_errors=[{"path_regex": r"^/v1/batches$", "status": None, "delay_s": 1.0}])
    impatient = Sdk(url, max_retries=0, timeout=0.1)
    with pytest.raises(openai.APITimeoutError):
        await impatient.create("openai", "bb-slow")

    async def created() -> int:
        return int(emu.stats()["batches_created"]["openai"])

    # The emulator finishes the create after the client gave up on it.
    await poll(created, lambda n: n == 1)
    assert [b["tag"] for b in emu.stats()["batches"]] == ["bb-slow"]


async def test_a_delay_only_fault_holds_the_request_then_answers_normally(
    emu: Emulator, sdk: Sdk, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTime()
    monkeypatch.setattr(emu, "sleep", fake.sleep)
    emu.set_faults(
        http_errors=[{"path_regex": r"^/v1/messages$", "status": None, "delay_s": 2.5, "count": 1}]
    )
    message = await sdk.anthropic.messages.create(
        model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text.startswith("Emulated answer")
    assert fake.slept == [2.5] and emu.config.http_errors[0].count == 0


# --- transient 404 --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_transient_404_on_retrieve_then_the_batch_again(
    emu: Emulator, sdk: Sdk, provider: str
) -> None:
    batch_id = await sdk.create(provider, "bb-404")
    emu.set_faults(
        http_errors=[
            {"path_regex": RETRIEVE_ROUTES[provider], "method": "GET", "status": 404, "count": 1}
        ]
    )
    if provider == "openai":
        with pytest.raises(openai.NotFoundError) as oinfo:
            await sdk.retrieve(provider, batch_id)
        assert oinfo.value.body["type"] == "invalid_request_error"
        assert batch_id in oinfo.value.body["message"]
    elif provider == "anthropic":
        with pytest.raises(anthropic.NotFoundError) as ainfo:
            await sdk.retrieve(provider, batch_id)
        assert ainfo.value.body["error"]["type"] == "not_found_error"
    else:
        with pytest.raises(errors.ClientError) as ginfo:
            await sdk.retrieve(provider, batch_id)
        assert ginfo.value.code == 404 and ginfo.value.status == "NOT_FOUND"
    again = await sdk.retrieve(provider, batch_id)
    assert (again.name if provider == "gemini" else again.id) == batch_id


# --- result downloads -----------------------------------------------------------------------


async def _raw_download(url: str, headers: dict[str, str]) -> tuple[bytes, Exception | None]:
    """Every byte received from ``url`` and the error that ended the stream, if any."""
    received = bytearray()
    async with httpx.AsyncClient() as http:
        try:
            async with http.stream("GET", url, headers=headers) as response:
                async for chunk in response.aiter_raw():
                    received += chunk
        except httpx.TransportError as exc:
            return bytes(received), exc
    return bytes(received), None


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_cut_download_ends_after_half_its_bytes_without_a_clean_end(
    emu: Emulator, sdk: Sdk, provider: str
) -> None:
    batch_id = await sdk.create(provider, "bb-cut", n=20)
    url, headers = await sdk.download_url(provider, batch_id)
    emu.set_faults(cut_downloads=1)
    partial, error = await _raw_download(url, headers)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert emu.config.cut_downloads == 0
    whole, clean = await _raw_download(url, headers)
    assert clean is None and len(parse_jsonl(whole.decode())[0]) == 20
    assert 0 < len(partial) == len(whole) // 2 and whole.startswith(partial)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_sdks_see_a_cut_download_as_an_error(
    emu: Emulator, sdk: Sdk, provider: str
) -> None:
    batch_id = await sdk.create(provider, "bb-cut", n=5)
    await sdk.wait_ended(provider, batch_id)
    emu.set_faults(cut_downloads=1)
    expected = {
        "openai": openai.APIConnectionError,
        "anthropic": httpx2.RemoteProtocolError,  # the SDK streams through its httpx fork
        "gemini": aiohttp.ClientPayloadError,
    }[provider]
    with pytest.raises(expected):
        await sdk.results_text(provider, batch_id)
    assert len(parse_jsonl(await sdk.results_text(provider, batch_id))[0]) == 5


async def test_uploaded_input_files_are_not_cut(emu: Emulator, sdk: Sdk) -> None:
    content = openai_lines([("a", "x")])
    uploaded = await sdk.openai.files.create(file=("in.jsonl", content), purpose="batch")
    emu.set_faults(cut_downloads=1)
    assert (await sdk.openai.files.content(uploaded.id)).content == content
    assert emu.config.cut_downloads == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_paced_download_arrives_whole_at_the_configured_rate(
    emu: Emulator, sdk: Sdk, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = await sdk.create(provider, "bb-slow", n=30)
    url, headers = await sdk.download_url(provider, batch_id)
    whole, _ = await _raw_download(url, headers)
    fake = FakeTime()
    monkeypatch.setattr(emu, "sleep", fake.sleep)
    monkeypatch.setattr(emu, "monotonic", fake.monotonic)
    emu.set_faults(download_bytes_per_s=2000)
    assert len(parse_jsonl(await sdk.results_text(provider, batch_id))[0]) == 30
    # One wait per 200-byte piece (a tenth of the rate); the whole body takes size / rate.
    assert max(fake.slept) <= 0.1 + 1e-9
    assert sum(fake.slept) == pytest.approx(len(whole) / 2000)
