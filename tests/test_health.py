"""Readiness, liveness and the recovery watchdog against a stand-in for the Faust app."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

from aiohttp.test_utils import TestClient, TestServer

from connector import metrics  # noqa: F401 - registers the connector's metrics
from connector.health import STALLED_EXIT_CODE, Health, routes


def fake_app(*, rebalancing=False, count=1, offsets=None, task_done=False):
    recovery = SimpleNamespace(
        active_offsets=Counter(offsets or {}),
        standby_offsets=Counter(),
        active_highwaters=Counter({"tp": 10}),
        active_remaining=lambda: Counter({"tp": 10 - sum((offsets or {}).values())}),
    )
    task = SimpleNamespace(done=lambda: task_done)
    agent = SimpleNamespace(name="work", _actors=[SimpleNamespace(actor_task=task)])
    return SimpleNamespace(
        rebalancing=rebalancing,
        rebalancing_count=count,
        tables=SimpleNamespace(recovery=recovery),
        agents={"work": agent},
    )


def test_ready_only_after_joining_and_recovering():
    assert not Health(fake_app(count=0), 60).ready()[0]
    assert not Health(fake_app(rebalancing=True), 60).ready()[0]
    assert Health(fake_app(), 60).ready() == (True, "ready")


def test_alive_until_an_agent_dies():
    assert Health(fake_app(), 60).alive()[0]
    ok, reason = Health(fake_app(task_done=True), 60).alive()
    assert not ok and "work" in reason


def test_watchdog_tolerates_slow_progress_but_not_a_stall(caplog):
    app = fake_app(rebalancing=True, offsets={"tp": 1})
    health = Health(app, stall_s=30)
    assert health.check_recovery(now=0)
    assert health.check_recovery(now=29)
    app.tables.recovery.active_offsets["tp"] = 2  # progress resets the clock
    assert health.check_recovery(now=50)
    assert health.check_recovery(now=79)
    assert not health.check_recovery(now=81)
    assert "no progress for 31s" in caplog.text


def test_watchdog_reads_partitions_without_an_offset_yet():
    app = fake_app(rebalancing=True, offsets={"tp": 1})
    app.tables.recovery.active_offsets["other"] = None
    assert Health(app, stall_s=30).check_recovery(now=0)


def test_watchdog_forgets_a_finished_recovery():
    app = fake_app(rebalancing=True)
    health = Health(app, stall_s=10)
    assert health.check_recovery(now=0)
    app.rebalancing = False
    assert health.check_recovery(now=100)
    app.rebalancing, app.rebalancing_count = True, 2
    assert health.check_recovery(now=105)


async def test_watch_exits_with_the_stalled_status(monkeypatch):
    monkeypatch.setattr("connector.health.WATCH_INTERVAL_S", 0.01)
    exited = asyncio.get_running_loop().create_future()
    health = Health(fake_app(rebalancing=True), stall_s=0.02, exit=exited.set_result)
    watcher = asyncio.create_task(health.watch())
    assert await asyncio.wait_for(exited, 5) == STALLED_EXIT_CODE
    watcher.cancel()


async def test_endpoints_answer_with_the_probe_status():
    app = fake_app(rebalancing=True)
    async with TestClient(TestServer(routes(Health(app, 60)))) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503
        app.rebalancing = False
        assert (await client.get("/readyz")).status == 200
        metrics = await client.get("/metrics")
        assert (
            metrics.status == 200 and "batchbridge_oldest_batch_age_seconds" in await metrics.text()
        )
