"""Memory of reading a 50,000-request batch's results: streamed adapter vs. whole-file read.

Runs the emulator in a child process (so its memory is not counted), submits one batch per
provider through the adapter, then reads every result twice: first streamed through
``Provider.results``, then the naive way (the SDK reads the whole file / collects every
line). Prints the tracemalloc peak and the peak RSS growth of each. Not part of the tests:

    BENCH_SCALE=0.1 .venv/bin/python benchmarks/bench_results_memory.py [--requests 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Event

from _harness import scaled

from connector.config import ProviderSettings
from connector.emulator import EmulatorConfig, EmulatorThread
from connector.providers.anthropic_batch import AnthropicBatchProvider
from connector.providers.base import BatchHandle, BatchItem, Provider
from connector.providers.openai_batch import OpenAIBatchProvider

MB = 1024 * 1024


def serve_emulator(urls: multiprocessing.Queue, stop: Event) -> None:
    with EmulatorThread(EmulatorConfig(processing_seconds=1.0)) as url:
        urls.put(url)
        stop.wait()


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Measurement:
    label: str
    results: int
    tracemalloc_peak: int
    rss_growth: int
    seconds: float


async def measure(label: str, read: Callable[[Callable[[], None]], Awaitable[int]]) -> Measurement:
    """Run ``read``, which calls the sampler it is given now and then and returns a count."""
    gc.collect()
    baseline = rss_bytes()
    peak_rss = baseline

    def sample() -> None:
        nonlocal peak_rss
        peak_rss = max(peak_rss, rss_bytes())

    tracemalloc.start()
    started = time.perf_counter()
    count = await read(sample)
    elapsed = time.perf_counter() - started
    sample()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return Measurement(label, count, traced_peak, peak_rss - baseline, elapsed)


async def streamed(provider: Provider, handle: BatchHandle, sample: Callable[[], None]) -> int:
    count = 0
    async for _ in provider.results(handle):
        count += 1
        if count % 1000 == 0:
            sample()
    return count


async def openai_whole_file(
    provider: OpenAIBatchProvider, handle: BatchHandle, sample: Callable[[], None]
) -> int:
    client = provider._client
    batch = await client.batches.retrieve(handle.batch_id)
    content = await client.files.content(batch.output_file_id)
    lines = [json.loads(line) for line in content.read().splitlines() if line.strip()]
    sample()
    return len(lines)


async def anthropic_collected(
    provider: AnthropicBatchProvider, handle: BatchHandle, sample: Callable[[], None]
) -> int:
    decoder = await provider._client.messages.batches.results(handle.batch_id)
    lines = [line async for line in decoder]
    sample()
    return len(lines)


async def run_provider(
    provider: Provider, items: list[BatchItem], naive: Callable
) -> list[Measurement]:
    handle = await provider.submit(f"bench-{provider.name}", items)
    for _ in range(600):
        if (await provider.poll(handle)).state.is_final:
            break
        await asyncio.sleep(0.5)
    first = await measure(
        f"{provider.name}: streamed (adapter)", lambda s: streamed(provider, handle, s)
    )
    second = await measure(
        f"{provider.name}: whole file (baseline)", lambda s: naive(provider, handle, s)
    )
    return [first, second]


def chat_items(
    model: str, endpoint: str, count: int, body: Callable[[int], dict]
) -> list[BatchItem]:
    return [BatchItem(f"req-{i}", model, endpoint, body(i)) for i in range(count)]


async def main(count: int, url: str) -> None:
    openai_provider = OpenAIBatchProvider(ProviderSettings(base_url=f"{url}/v1", timeout_s=300))
    anthropic_provider = AnthropicBatchProvider(ProviderSettings(base_url=url, timeout_s=300))
    rows: list[Measurement] = []
    rows += await run_provider(
        openai_provider,
        chat_items(
            "gpt-4o-mini",
            "/v1/chat/completions",
            count,
            lambda i: {"messages": [{"role": "user", "content": f"question {i}"}]},
        ),
        openai_whole_file,
    )
    rows += await run_provider(
        anthropic_provider,
        chat_items(
            "claude-haiku-4-5",
            "/v1/messages",
            count,
            lambda i: {
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"question {i}"}],
            },
        ),
        anthropic_collected,
    )
    await openai_provider.aclose()
    await anthropic_provider.aclose()

    print(
        f"\n== results of one {count:,}-request batch: streamed adapter vs whole file (no target)"
    )
    print(
        f"{'reader':<38} {'results':>8} {'tracemalloc peak':>17} {'peak RSS growth':>16} {'seconds':>8}"
    )
    for row in rows:
        print(
            f"{row.label:<38} {row.results:>8} {row.tracemalloc_peak / MB:>14.1f} MB"
            f" {row.rss_growth / MB:>13.1f} MB {row.seconds:>8.1f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=scaled(50_000, minimum=100),
        help="default 50,000 × BENCH_SCALE",
    )
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    urls: multiprocessing.Queue = context.Queue()
    stop = context.Event()
    server = context.Process(target=serve_emulator, args=(urls, stop), daemon=True)
    server.start()
    try:
        asyncio.run(main(args.requests, urls.get(timeout=30)))
    finally:
        stop.set()
        server.join(timeout=10)
