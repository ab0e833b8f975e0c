"""The workers' broker connection cut for 10 s mid-run, by a proxy the test controls.

A dedicated embedded broker advertises the proxy's address, so every client — the
workers' and the test's own — reaches it only through the proxy, also after bootstrap.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.broker import EmbeddedBroker, free_port
from connector.emulator import EmulatorConfig
from connector.testing.proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.full_matrix]

CUT_S = 10


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[TcpProxy]:
    """A broker of its own behind a proxy; yields the proxy (its address is the bootstrap)."""
    port = free_port()
    with (
        EmbeddedBroker(advertised_port=port, log_path=tmp_path / "broker.log") as broker,
        TcpProxy("127.0.0.1", broker.port, port=port) as proxy,
    ):
        yield proxy


# The broker fixture comes first, so it is torn down after the run's workers are stopped.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["reset", "blackhole"])
def test_broker_connection_cut_mid_run_loses_nothing_and_submits_nothing_twice(
    proxied_broker, fault_run, mode
):
    proxy = proxied_broker
    run = fault_run(
        f"broker connection cut {CUT_S}s ({mode})",
        EmulatorConfig(processing_seconds=2.0),
        proxy.address,
    )
    run.start_worker()
    requests = run.workload("cut", {"openai": 40, "anthropic": 20, "gemini": 20})
    stream = run.stream(requests, interval_s=0.1)
    run.wait_for(lambda: stream.sent >= len(requests) // 3, "a third of the requests produced")
    with proxy.outage(mode):
        run.notes.append(
            f"{mode} cut after {stream.sent} requests, {proxy.connections} connections so far"
        )
        time.sleep(CUT_S)
    stream.finish()
    run.finish(timeout=300)
