"""The Faust application: agents, tables and the timer that drive both lanes.

Topology (N = ``BATCHBRIDGE_PARTITIONS``):

``inference.deferred`` ─ingest─▶ ``<app>-work`` (keyed by batch key, N partitions)
                                   ▲   │ work agent: pending/batches tables, provider I/O
                      ticks ───────┘   ▼
``inference.realtime`` ─realtime (concurrency K)─▶ ``inference.results`` / ``.deadletter``

The work topic carries both re-keyed requests and per-partition ticks, so one agent owns
each partition's state and every table write happens inside an event of that partition.
"""

from __future__ import annotations

import gc
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

import faust

from connector.config import Settings
from connector.errors import ConfigError
from connector.health import Health
from connector.health import serve as serve_health
from connector.lanes.agents import InputThrottle, Intake, InTransit, WorkLoop
from connector.lanes.deferred import DeferredLane, now_ms
from connector.lanes.ledger import WorkEvent
from connector.lanes.outputs import RECORD_OVERHEAD_BYTES, Outputs
from connector.lanes.realtime import RealtimeLane
from connector.lanes.tables import DirectTable
from connector.lanes.webhooks import WebhookReceiver
from connector.lanes.webhooks import serve as serve_webhooks
from connector.pricing import PriceTable
from connector.providers.registry import build_providers, endpoints_of
from connector.serde import build_codec
from connector.statedir import claim as claim_state_dir
from connector.transport import finish
from connector.transport import register as register_transport

log = logging.getLogger(__name__)

# Intake forwards what arrived within this long as one bundle per work partition.
INTAKE_LINGER_S = 0.05


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    context = None
    if k.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=k.ssl_cafile)
        if k.ssl_certfile:
            context.load_cert_chain(k.ssl_certfile, k.ssl_keyfile)
    if k.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=k.sasl_username,
        password=k.sasl_password.get_secret_value() if k.sasl_password else None,
        mechanism=k.sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


def _is_tansu(settings: Settings) -> bool:
    from connector.topics import admin_client

    try:
        return "tansu" in (admin_client(settings).list_topics(timeout=10).cluster_id or "")
    except Exception:  # noqa: BLE001 - detection only; the worker reports broker errors itself
        return False


def _faust_app(settings: Settings) -> faust.App:
    state = claim_state_dir(settings.data_dir, settings.app_id)
    log.info("state store: %s (%s)", state.path, settings.store)
    servers = ";".join(s.strip() for s in settings.kafka.bootstrap_servers.split(","))
    return faust.App(
        settings.app_id,
        broker=f"{register_transport(bool(settings.kafka.verify_end_offsets))}://{servers}",
        broker_credentials=_credentials(settings),
        store=f"{settings.store}://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee="at_least_once",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(state.path),
        producer_acks=-1,
        producer_max_request_size=settings.kafka.max_request_size,
        producer_linger=settings.kafka.linger_ms / 1000,
        producer_max_batch_size=settings.kafka.batch_size,
        stream_buffer_maxsize=settings.stream_buffer,
        broker_max_poll_records=settings.stream_buffer,
    )


@dataclass
class _Worker:
    """The parts of one worker that the agents, the timer and the rebalance hooks share."""

    settings: Settings
    work: faust.TopicT
    deferred: DeferredLane
    intake: Intake
    throttle: InputThrottle
    in_transit: InTransit
    work_loop: WorkLoop = field(init=False)

    def __post_init__(self) -> None:
        app = self.work.app
        self.work_loop = WorkLoop(
            self.deferred,
            self.follow_up,
            self.in_transit,
            is_current=lambda message: message.generation_id == app.consumer_generation_id,
        )

    async def nudge(self, partition: int) -> None:
        """The periodic tick for ``partition``."""
        await self.work.send(key=None, value=WorkEvent().to_json(), partition=partition)

    async def follow_up(self, partition: int) -> None:
        """A tick for ``partition`` right after a step with more to do."""
        await self.work.send(
            key=None, value=WorkEvent(follow_up=True).to_json(), partition=partition
        )


def create_app(settings: Settings, topic_limits: dict[str, int] | None = None) -> faust.App:
    """The worker's Faust app: both lanes wired to their topics, tables and timer."""
    app = _faust_app(settings)
    worker = _build(app, settings, topic_limits)
    _register_agents(app, worker)
    _register_rebalance_hooks(app, worker)
    if settings.webhook_port:
        _serve_webhooks(app, settings, worker.deferred)
    _watch_health(app, settings)
    return app


def _tables(app: faust.App, settings: Settings) -> tuple[Any, Any, Any]:
    """The changelog-backed tables: pending, batches, budgets."""
    internal = {"max.message.bytes": settings.kafka.max_request_size}
    tables: dict[str, Any] = {
        "default": None,
        "partitions": settings.partitions,
        "extra_topic_configs": internal,
    }
    if settings.store == "rocksdb":
        # Faust's defaults (64 MB x 3 memtables and a 2 GB block cache per partition and
        # table) would let RocksDB alone outgrow the memory bound.
        tables["options"] = {
            "write_buffer_size": settings.store_write_buffer_bytes,
            "max_write_buffer_number": 2,
            "block_cache_size": settings.store_block_cache_bytes,
        }
    # Budgets: daily spend per budget and work partition.
    return tuple(
        DirectTable.wrap(app.Table(name, **tables)) for name in ("pending", "batches", "budgets")
    )  # type: ignore[return-value]


def work_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    """The internal topic from intake to the work agent; its queue holds WORK_BUFFER events."""
    work = app.topic(
        f"{settings.app_id}-work",
        partitions=settings.partitions,
        internal=True,
        key_serializer="raw",
        value_serializer="json",
        config={"max.message.bytes": settings.kafka.max_request_size},
    )
    # Decoded work events were the worker's largest transient: an intake burst queued up to
    # STREAM_BUFFER of them, each bundling up to STREAM_BUFFER requests. Set on the topic:
    # faust's app.topic() takes ``maxsize`` but does not pass it on.
    work.maxsize = settings.work_buffer
    return work


def _build(app: faust.App, settings: Settings, topic_limits: dict[str, int] | None) -> _Worker:
    codec = build_codec(settings)
    providers = build_providers(settings)
    prices = PriceTable.load(settings.prices_file)
    prices.require(providers)
    outputs = Outputs(app, settings, codec, topic_limits)
    work = work_topic(app, settings)
    pending, batches, budgets = _tables(app, settings)
    deferred = DeferredLane(
        settings,
        providers,
        outputs,
        prices,
        pending,
        batches,
        flush=app.producer.flush,
        budgets=budgets,
    )
    realtime = RealtimeLane(settings, providers, outputs, prices, clock=now_ms)
    in_transit = InTransit()
    intake = Intake(
        codec,
        outputs,
        deferred,
        realtime,
        work,
        partitions=settings.partitions,
        reply_allowlist=frozenset(settings.reply_topic_allowlist),
        max_body={name: p.limits.max_bytes for name, p in providers.items()},
        endpoints=endpoints_of(providers),
        shards_per_key=settings.batching.shards_per_key,
        work_limit=settings.kafka.max_request_size - RECORD_OVERHEAD_BYTES,
        in_transit=in_transit,
    )
    throttle = InputThrottle(
        app,
        settings.topics.deferred,
        lambda: deferred.live_requests() + in_transit.count < settings.max_pending_requests,
        frozenset({settings.topics.realtime, work.get_topic_name()}),
    )
    return _Worker(settings, work, deferred, intake, throttle, in_transit)


def _register_agents(app: faust.App, worker: _Worker) -> None:
    settings = worker.settings
    deferred_in = app.topic(settings.topics.deferred, key_serializer="raw", value_serializer="raw")
    realtime_in = app.topic(settings.topics.realtime, key_serializer="raw", value_serializer="raw")

    @app.agent(deferred_in, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.stream_buffer, within=INTAKE_LINGER_S):  # type: ignore[attr-defined]
            await worker.intake.forward(events)
            for event in events:
                finish(event.message)
            await worker.throttle.check()

    @app.agent(worker.work, name="work")
    async def work_agent(stream: faust.StreamT) -> None:
        await worker.work_loop.run(stream.events())

    @app.agent(realtime_in, name="realtime", concurrency=settings.realtime_concurrency)
    async def realtime_agent(stream: faust.StreamT) -> None:
        await worker.intake.realtime_stream(stream.events())

    @app.timer(interval=settings.tick_interval_s)
    async def tick() -> None:
        # Every worker ticks the work partitions it owns: no leader to lose.
        await worker.throttle.check()
        for tp in app.assignor.assigned_actives():
            if tp.topic == worker.work.get_topic_name():
                await worker.nudge(tp.partition)


def _register_rebalance_hooks(app: faust.App, worker: _Worker) -> None:
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app_: faust.App, revoked: Any, **kwargs: Any) -> None:
        worker.deferred.reset()
        worker.work_loop.reset()
        worker.throttle.forget()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app_: faust.App, assigned: Any, **kwargs: Any) -> None:
        worker.deferred.reset()
        worker.work_loop.reset()
        worker.throttle.forget()
        worker.intake.resumed.clear()
        owned = sorted(tp.partition for tp in assigned if tp.topic == worker.work.get_topic_name())
        worker.in_transit.reset(frozenset(owned))
        log.info("assigned work partitions %s", owned)


def _watch_health(app: faust.App, settings: Settings) -> None:
    health = Health(app, settings.recovery_stall_s)

    @app.task
    async def recovery_watchdog() -> None:
        await health.watch()

    if settings.metrics_port:
        host, port = settings.metrics_host, settings.metrics_port

        @app.task
        async def health_endpoints() -> None:
            await serve_health(health, host, port)


def _serve_webhooks(app: faust.App, settings: Settings, deferred: DeferredLane) -> None:
    if settings.webhook_secret is None:
        raise ConfigError(
            "BATCHBRIDGE_WEBHOOK_PORT needs BATCHBRIDGE_WEBHOOK_SECRET to verify deliveries"
        )
    receiver = WebhookReceiver(settings.webhook_secret.get_secret_value(), deferred.poke)
    host, port = settings.webhook_host, settings.webhook_port
    assert port is not None

    @app.task
    async def webhooks() -> None:
        await serve_webhooks(receiver, host, port)


def _topic_limits(settings: Settings) -> dict[str, int]:
    """``max.message.bytes`` of the topics the lanes write to, as the broker has them."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    from connector.topics import admin_client

    names = {*settings.topics.model_dump().values(), *settings.reply_topic_allowlist}
    try:
        admin = admin_client(settings)  # held: its futures fail once it is collected
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names])
        limits = {}
        for resource, future in futures.items():
            entry = future.result(10).get("max.message.bytes")
            if entry is not None and entry.value is not None:
                limits[resource.name] = int(entry.value)
        return limits
    except Exception as exc:  # noqa: BLE001 - the producer's own limit still applies
        log.warning(
            "could not read the topics' max.message.bytes (%s); using KAFKA__MAX_REQUEST_SIZE", exc
        )
        return {}


def run_worker(settings: Settings) -> None:
    """Run the worker in the foreground until SIGTERM / Ctrl-C."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.create_topics:
        from connector.topics import apply_topics

        apply_topics(settings)
    if settings.kafka.verify_end_offsets is None:
        verify = _is_tansu(settings)
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"verify_end_offsets": verify})}
        )
        if verify:
            log.info(
                "embedded tansu broker detected: changelog recovery verifies end offsets with a fetch"
            )
    limits = _topic_limits(settings)
    log.info("largest records per topic: %s", limits)
    app = create_app(settings, limits)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    # The SDKs, Faust and the app are ~300,000 objects that live as long as the worker.
    # Every full garbage collection walked all of them (0.15 s each, several a second while
    # a large batch's results are emitted): frozen, the collector no longer looks at them.
    gc.collect()
    gc.freeze()
    worker.execute_from_commandline()
